//go:build unix

package testsvc

import (
	"os/exec"
	"syscall"
	"testing"
)

// Sleeper starts `sleep 3600` in a process group of its own, as idem
// starts a function's process, for tests of what ends leftover processes.
// It returns the command and a channel closed once the process exited; a
// cleanup kills it. Without a sleep command the test is Absent.
func Sleeper(t testing.TB) (*exec.Cmd, chan struct{}) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		Absent(t, "no sleep command: %v", err)
	}
	cmd := exec.Command(sleep, "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, done
}
