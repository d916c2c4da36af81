//go:build linux

package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/idem-run/idem/internal/testsvc"
)

func mustStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	st, zombie, err := startTime(pid)
	if err != nil || zombie {
		t.Fatalf("startTime(%d) = %d, %t, %v", pid, st, zombie, err)
	}
	return st
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestReapLeftovers(t *testing.T) {
	dir := t.TempDir()
	me := os.Getpid()
	myStart := mustStartTime(t, me)
	write := func(name string, pid int, start uint64, owner int, ownerStart uint64) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, fmt.Appendf(nil, "%d %d %d %d\n", pid, start, owner, ownerStart), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// An earlier idem (this process's pid with another start time: no
	// longer running) left a process behind, which must be killed...
	left, leftDone := testsvc.Sleeper(t)
	leftFile := write("fn-1.pid", left.Process.Pid, mustStartTime(t, left.Process.Pid), me, myStart+1)
	// ...and a file whose pid now names another process (the start time
	// differs): that process must live.
	reused, reusedDone := testsvc.Sleeper(t)
	reusedFile := write("fn-2.pid", reused.Process.Pid, mustStartTime(t, reused.Process.Pid)+1, me, myStart+1)
	// A running idem's (this one's) process is not touched.
	mine, mineDone := testsvc.Sleeper(t)
	mineFile := write("other-1.pid", mine.Process.Pid, mustStartTime(t, mine.Process.Pid), me, myStart)
	junk := write("junk.pid", 0, 0, 0, 0)
	if err := os.WriteFile(junk, []byte("not a pid file"), 0o644); err != nil {
		t.Fatal(err)
	}

	f, _ := start(t, "noop", Config{Concurrency: 2}, WithPIDDir(dir))
	select {
	case <-leftDone:
		if ws := left.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the leftover process ended with %v, want SIGKILL", left.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leftover process still runs")
	}
	select {
	case <-reusedDone:
		t.Fatal("the process of a reused pid was killed")
	case <-mineDone:
		t.Fatal("a running idem's process was killed")
	default:
	}
	if exists(leftFile) || exists(reusedFile) || exists(junk) || !exists(mineFile) {
		t.Fatalf("after New: fn-1.pid %t, fn-2.pid %t, junk.pid %t, other-1.pid %t; want only other-1.pid left",
			exists(leftFile), exists(reusedFile), exists(junk), exists(mineFile))
	}

	// The Function's own processes have pid files while they run, naming
	// them, and lose them when they exit.
	succeeds(t, f, "x")
	pids := func() []int {
		f.mu.Lock()
		defer f.mu.Unlock()
		var pids []int
		for _, inst := range f.instances {
			pids = append(pids, inst.cmd.Process.Pid)
		}
		return pids
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pids()) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the function's 2 processes did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var recorded []int
	for _, name := range []string{"noop-1.pid", "noop-2.pid"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		l, err := parsePIDFile(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !running(l.pid, l.start) || l.ownerPID != me || l.ownerStart != myStart {
			t.Fatalf("%s = %q: not a running process of this idem", name, b)
		}
		recorded = append(recorded, l.pid)
	}
	slices.Sort(recorded)
	if !slices.Equal(recorded, slices.Sorted(slices.Values(pids()))) {
		t.Fatalf("pid files name %v, the processes are %v", recorded, pids())
	}
	f.Close()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "other-1.pid" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("after Close the directory holds %q, want only other-1.pid", names)
	}
}

func TestStartTime(t *testing.T) {
	st := mustStartTime(t, os.Getpid())
	if again := mustStartTime(t, os.Getpid()); again != st || st == 0 {
		t.Fatalf("start times %d and %d", st, again)
	}
	if _, _, err := startTime(1 << 30); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("startTime of no process: %v, want ErrNotExist", err)
	}

	// A process that exited and was not waited for is a zombie: it does
	// not run, though its pid and start time still read.
	cmd, done := testsvc.Sleeper(t)
	st = mustStartTime(t, cmd.Process.Pid)
	_ = cmd.Process.Kill()
	<-done // waited for: gone
	if running(cmd.Process.Pid, st) {
		t.Fatal("a process that was waited for still runs")
	}
	exit := exec.Command(os.Args[0], "-test.run=^$")
	if err := exit.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = exit.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		start, zombie, err := startTime(exit.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if zombie {
			if running(exit.Process.Pid, start) {
				t.Fatal("a zombie runs")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the process never became a zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
