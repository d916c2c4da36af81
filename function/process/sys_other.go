//go:build !unix

package process

import (
	"os"
	"syscall"
)

// Without Unix signals, stopping is killing.
const (
	sigTerm = syscall.Signal(0xf)
	sigKill = syscall.Signal(0x9)
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, _ syscall.Signal) { _ = p.Kill() }

// startTime is only known on Linux: elsewhere no pid file is written, and
// so no leftover process is ever killed by its pid.
func startTime(int) (start uint64, zombie bool, err error) { return 0, false, errNoStartTime }

func killLeftover(int) {}
