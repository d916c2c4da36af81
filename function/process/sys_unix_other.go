//go:build unix && !linux

package process

import "syscall"

// sysProcAttr puts the process in a process group of its own, so that
// signals reach whatever it started too, as the end of a Lambda sandbox
// does.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// startTime is only known on Linux: elsewhere no pid file is written, and
// so no leftover process is ever killed by its pid.
func startTime(int) (start uint64, zombie bool, err error) { return 0, false, errNoStartTime }
