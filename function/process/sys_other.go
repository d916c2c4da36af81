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
