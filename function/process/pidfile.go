package process

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Pid files let a restarted idem end the processes that an earlier run left
// behind: on Linux the kernel kills a process when idem dies (see
// sysProcAttr), but not what the process started in its group after
// leaving it, nor a process of an idem whose parent-death signal could not
// be delivered. Each process has a file <dir>/<function>-<process>.pid
// while it runs, holding one line of four decimal numbers:
//
//	<pid> <start time> <idem's pid> <idem's start time>
//
// Start times are in clock ticks since boot (field 22 of /proc/<pid>/stat);
// a pid with its start time names one process, where a pid alone may have
// been reused since. A file is left behind when idem dies without closing
// its Functions. Pid files exist only on Linux, where start times can be
// read.

// errNoStartTime is startTime's error where start times cannot be read.
var errNoStartTime = errors.New("process: process start times are only read on Linux")

// self is idem's own pid and start time, the owner of the pid files it
// writes.
var self = sync.OnceValues(func() (string, error) {
	pid := os.Getpid()
	st, _, err := startTime(pid)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(pid) + " " + strconv.FormatUint(st, 10), nil
})

// writePIDFile records the running process pid in path, replacing the file
// at once so that a reader never sees half of it.
func writePIDFile(path string, pid int) error {
	owner, err := self()
	if err != nil {
		return err
	}
	st, _, err := startTime(pid)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	line := strconv.Itoa(pid) + " " + strconv.FormatUint(st, 10) + " " + owner + "\n"
	if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// leftover is one pid file's content.
type leftover struct {
	pid, ownerPID     int
	start, ownerStart uint64
}

func parsePIDFile(b []byte) (leftover, error) {
	f := strings.Fields(string(b))
	if len(f) != 4 {
		return leftover{}, fmt.Errorf("want 4 numbers, found %d fields", len(f))
	}
	var l leftover
	var errs [4]error
	l.pid, errs[0] = strconv.Atoi(f[0])
	l.start, errs[1] = strconv.ParseUint(f[1], 10, 64)
	l.ownerPID, errs[2] = strconv.Atoi(f[2])
	l.ownerStart, errs[3] = strconv.ParseUint(f[3], 10, 64)
	return l, errors.Join(errs[:]...)
}

// running reports whether the process pid that started at start runs (a
// zombie has exited).
func running(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, zombie, err := startTime(pid)
	return err == nil && !zombie && st == start
}

// reap ends the processes whose pid files an earlier idem, no longer
// running, left in dir, and removes their files. A process is killed
// (with its process group) only if its pid still names the process the
// file recorded, with the same start time: a reused pid is never killed.
// Files of a running idem, this one included, are left alone, so that
// Functions sharing dir may start in any order.
func reap(dir string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".pid") && !strings.HasSuffix(name, ".pid.tmp") {
			continue
		}
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // its process exited meanwhile
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l, perr := parsePIDFile(b)
		switch {
		case perr == nil && running(l.ownerPID, l.ownerStart):
			continue // a running idem's
		case perr != nil && strings.HasSuffix(name, ".tmp"):
			// Being written, by this idem perhaps: whose it is cannot be
			// told, and a file that never became a .pid file recorded no
			// process anyway.
			continue
		}
		switch {
		case perr != nil:
			log.Warn("removing an unreadable pid file", "file", path, "err", perr)
		case l.pid > 1 && l.pid != os.Getpid() && running(l.pid, l.start):
			killLeftover(l.pid)
			log.Warn("killed a process an earlier run of idem left behind", "pid", l.pid, "file", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
