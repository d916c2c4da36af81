//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/idem-run/idem/internal/testsvc"
)

// TestOrphans kills `idem serve` with SIGKILL and checks that the processes
// of its process function die with it (the kernel's parent-death signal),
// and that a restarted idem on the same data directory ends a process the
// earlier run left behind in a way that signal misses, from its pid file.
func TestOrphans(t *testing.T) {
	idemBin, _ := binaries(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		testsvc.Absent(t, "no sleep command: %v", err)
	}
	// The function's name, unique to this run, finds its processes: each
	// has it in its environment as AWS_LAMBDA_FUNCTION_NAME. sleep ignores
	// the Runtime API, as a runtime busy initializing does, so only a
	// signal ends it.
	name := "orphans-" + strconv.Itoa(os.Getpid())
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "idem-data")
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
functions:
  - {name: %s, process: {command: %s, args: ["3600"], concurrency: 3}}
`, dataDir, addr, name, sleep))
	t.Cleanup(func() {
		for _, pid := range functionProcesses(t, name) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	srv := startServe(t, idemBin, cfg, addr)
	first := waitProcesses(t, name, 3, srv)
	srv.kill() // SIGKILL
	waitProcesses(t, name, 0, nil)

	// A process the parent-death signal missed (here, one the test
	// started), recorded in a pid file by the dead idem, and one whose pid
	// file's start time is not its own (its pid was reused): the restarted
	// idem kills the first only.
	left, leftDone := testsvc.Sleeper(t)
	other, otherDone := testsvc.Sleeper(t)
	pidDir := filepath.Join(dataDir, "process")
	dead := srv.cmd.Process.Pid
	writeFile(t, filepath.Join(pidDir, name+"-7.pid"),
		fmt.Sprintf("%d %d %d 1\n", left.Process.Pid, procStartTime(t, left.Process.Pid), dead))
	writeFile(t, filepath.Join(pidDir, name+"-8.pid"),
		fmt.Sprintf("%d %d %d 1\n", other.Process.Pid, procStartTime(t, other.Process.Pid)+1, dead))

	srv = startServe(t, idemBin, cfg, addr)
	select {
	case <-leftDone:
	case <-time.After(time.Minute):
		t.Fatalf("the leftover process %d still runs after idem restarted", left.Process.Pid)
	}
	select {
	case <-otherDone:
		t.Fatal("the process of a reused pid was killed")
	default:
	}
	second := waitProcesses(t, name, 3, srv)
	if slices.ContainsFunc(second, func(pid int) bool { return slices.Contains(first, pid) }) {
		t.Fatalf("processes %v after the restart, %v before: some survived", second, first)
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
	waitProcesses(t, name, 0, nil)
	// The processes that exited took their pid files with them.
	entries, err := os.ReadDir(pidDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %q after idem stopped, want nothing", pidDir, names)
	}
}

// waitProcesses waits up to a minute until exactly n processes of function
// name run, and returns their pids. srv, if not nil, must stay up meanwhile.
func waitProcesses(t *testing.T, name string, n int, srv *serveProc) []int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		pids := functionProcesses(t, name)
		if len(pids) == n {
			return pids
		}
		if srv != nil {
			select {
			case <-srv.done:
				t.Fatalf("serve exited: %v\n%s", srv.cmd.ProcessState, srv.tail(20))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of %s run (%v), want %d", len(pids), name, pids, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// functionProcesses returns the pids of the live processes whose
// environment names function name. A zombie's environment reads empty.
func functionProcesses(t *testing.T, name string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("AWS_LAMBDA_FUNCTION_NAME=" + name + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue // exited, or not ours
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStartTime returns field 22 of /proc/<pid>/stat, the process's start
// time in clock ticks since boot, which idem's pid files record.
func procStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:]) // from field 3
	st, err := strconv.ParseUint(string(fields[22-3]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
