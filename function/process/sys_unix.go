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

// signalGroup sends sig to p and to its process group. Errors (the process
// already exited) are ignored: the caller waits for the exit either way.
func signalGroup(p *os.Process, sig syscall.Signal) {
	_ = p.Signal(sig)
	_ = syscall.Kill(-p.Pid, sig)
}

// killLeftover sends SIGKILL to the process pid, which an earlier run of
// idem started, and to its process group, as signalGroup does.
func killLeftover(pid int) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}
