package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr puts the process in a process group of its own, so that
// signals reach whatever it started too, as the end of a Lambda sandbox
// does; and has the kernel SIGKILL it when idem dies, even of SIGKILL, so
// that no process outlives the idem that serves its Runtime API.
//
// The parent-death signal follows the thread that started the process, not
// idem's process: it fires when that OS thread ends. So the process is
// started (and waited for) by a goroutine locked to its thread for the
// process's whole life (see instance.run): the Go runtime ends a thread
// only when a goroutine locked to it exits, and no other goroutine runs on
// a locked thread.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// startTime returns the start time of the process pid, in clock ticks since
// boot (field 22 of /proc/<pid>/stat), and whether it is a zombie: it has
// exited, and its parent has not waited for it yet. With the pid, the start
// time names one process for as long as the machine runs, where a pid alone
// may be reused.
func startTime(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// Field 2, the command's name, is in parentheses and may hold spaces
	// and parentheses itself: the fields after it follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := bytes.Fields(b[i+1:]) // from field 3, the state
	if len(fields) < 22-2 {
		return 0, false, errors.New("/proc/" + strconv.Itoa(pid) + "/stat: too few fields")
	}
	start, err = strconv.ParseUint(string(fields[22-3]), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	state := string(fields[0])
	return start, state == "Z" || state == "X", nil
}
