//go:build unix

package process

import (
	"os"
	"syscall"
)

const (
	sigTerm = syscall.SIGTERM
	sigKill = syscall.SIGKILL
)

// sysProcAttr puts the process in a process group of its own, so that
// signals reach whatever it started too, as the end of a Lambda sandbox
// does.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends sig to p and to its process group. Errors (the process
// already exited) are ignored: the caller waits for the exit either way.
func signalGroup(p *os.Process, sig syscall.Signal) {
	_ = p.Signal(sig)
	_ = syscall.Kill(-p.Pid, sig)
}
