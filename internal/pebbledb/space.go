package pebbledb

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem/store"
)

// ErrFatal is wrapped by every error of a DB that Pebble declared unable to
// go on (see Health): what it applied last may not be durable, so nothing
// is read or written any more and the process must restart. When the cause
// was a full disk the error wraps store.ErrNoSpace too.
var ErrFatal = errors.New("pebbledb: storage failed and cannot go on; restart the process")

// ErrLocked is returned by Open, wrapped with the directory and the pid of
// the process holding it when known, when another DB (in this process or
// another one) has the data directory open: two writers would corrupt it.
var ErrLocked = errors.New("data directory is in use")

// DefaultDiskReserve is the free space below which writes are refused by
// default (see WithDiskReserve): room for Pebble to flush its memtables and
// compact, which is what frees space once records expire or are deleted.
const DefaultDiskReserve = 64 << 20

// Free-space probing: the cached answer is refreshed at most every
// probeInterval, and sooner once a sixteenth of the reserve was admitted
// since, so that writes can overshoot the reserve by little.
const probeInterval = 100 * time.Millisecond

// pidFile names the file holding the pid of the process that has the data
// directory open, so that a second one can say who holds the lock.
const pidFile = "idem.pid"

// space is the admission control of writes: it refuses them while the data
// directory's filesystem has less free space than the reserve. Free space is
// probed with statfs (through the vfs), cached, and re-probed at most every
// probeInterval or every reserve/16 bytes admitted, so a write costs two
// atomic operations and a clock read.
type space struct {
	dir     string
	reserve uint64
	probe   func() (free uint64, err error)

	free    atomic.Uint64 // free bytes at the last probe
	known   atomic.Bool   // a probe ever succeeded
	probed  atomic.Int64  // time of the last probe, Unix nanoseconds
	written atomic.Int64  // bytes admitted since the last probe
	// full is set when Pebble met ENOSPC in the background: writes are
	// refused until a probe finds the reserve free again.
	full atomic.Bool

	mu     sync.Mutex // one probe at a time
	warned bool       // under mu: a probe error was logged
	logf   func(msg string, args ...any)
}

func newSpace(dir string, fs vfs.FS, reserve uint64, probe func() (uint64, error), logf func(string, ...any)) *space {
	s := &space{dir: dir, reserve: reserve, probe: probe, logf: logf}
	if s.probe == nil {
		s.probe = func() (uint64, error) {
			u, err := fs.GetDiskUsage(dir)
			return u.AvailBytes, err
		}
	}
	return s
}

// refresh re-probes the free space if the cached answer is stale, unless
// another caller is probing right now (its answer will do).
func (s *space) refresh(now int64) {
	if now-s.probed.Load() < int64(probeInterval) && uint64(s.written.Load()) < s.reserve/16 {
		return
	}
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	free, err := s.probe()
	s.probed.Store(now)
	s.written.Store(0)
	if err != nil {
		// Fail open: a probe that cannot answer (an in-memory FS, an
		// exotic filesystem) must not stop every write; Pebble's own
		// ENOSPC is still mapped to store.ErrNoSpace.
		if !s.warned && !errors.Is(err, vfs.ErrUnsupported) {
			s.warned = true
			s.logf("pebbledb: cannot read the free space of the data directory; writes are admitted without checking it", "dir", s.dir, "err", err)
		}
		return
	}
	s.free.Store(free)
	s.known.Store(true)
	if free >= s.reserve {
		s.full.Store(false)
	}
}

// admit accounts n bytes about to be written and returns an error wrapping
// store.ErrNoSpace if free space is below floor, the reserve or, for the
// deletions that eventually free space, half of it.
func (s *space) admit(n int, floor uint64) error {
	if s.reserve == 0 {
		return nil
	}
	s.written.Add(int64(n))
	s.refresh(time.Now().UnixNano())
	if s.full.Load() {
		return fmt.Errorf("%w: pebble ran out of space in the background; writes resume once %d bytes are free in %s", store.ErrNoSpace, s.reserve, s.dir)
	}
	if !s.known.Load() {
		return nil
	}
	if free := s.free.Load(); free < floor {
		return fmt.Errorf("%w: %d bytes free in %s, below the reserve of %d; nothing was written, and writes resume once space is freed", store.ErrNoSpace, free, s.dir, floor)
	}
	return nil
}

// noSpace maps an error Pebble returned for ENOSPC to one wrapping
// store.ErrNoSpace, so that callers branch on one value.
func noSpace(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, store.ErrNoSpace) {
		return fmt.Errorf("%w: %w", store.ErrNoSpace, err)
	}
	return err
}

// admit refuses a write of about n bytes while the disk is below the
// reserve; see WithDiskReserve.
func (db *DB) admit(n int) error { return db.space.admit(n, db.space.reserve) }

// admitMaintenance is admit for the sweeper's deletions, which are small
// and are what frees space: they go on down to half the reserve.
func (db *DB) admitMaintenance() error { return db.space.admit(0, db.space.reserve/2) }

// Health reports whether the DB can take writes: nil, or the error the next
// write would meet. It wraps store.ErrNoSpace while free space is below the
// reserve (writes resume on their own once space is freed), ErrFatal (and
// store.ErrNoSpace when the disk filled) once Pebble could not go on, or
// ErrClosed. It is cheap: at most one statfs every 100ms. Readiness checks
// and metrics call it.
func (db *DB) Health() error {
	if err := db.failed.Load(); err != nil {
		return *err
	}
	if db.users.Load()&closing != 0 {
		return ErrClosed
	}
	return db.space.admit(0, db.space.reserve)
}

// fatal handles Pebble's Logger.Fatalf, which Pebble calls where its state
// leaves no safe way on (a write-ahead log write or sync that failed, a
// MANIFEST that could not be written): the DB fails, so that every later
// method returns the error, the message is logged, and the fatal hook runs.
// Fatalf must not return into Pebble, which would go on with a broken
// commit pipeline: if the hook returns, the calling goroutine exits.
func (db *DB) fatal(format string, args ...any) {
	msg := "pebble: " + strings.TrimPrefix(fmt.Sprintf(format, args...), "pebble: ")
	nospace := strings.Contains(msg, syscall.ENOSPC.Error())
	for _, a := range args {
		if e, ok := a.(error); ok && errors.Is(e, syscall.ENOSPC) {
			nospace = true
		}
	}
	var err error
	if nospace {
		err = fmt.Errorf("%w (%w): %s", ErrFatal, store.ErrNoSpace, msg)
	} else {
		err = fmt.Errorf("%w: %s", ErrFatal, msg)
	}
	db.fail(err)
	if l := db.opts.logger; l != nil {
		l.Error("pebbledb: storage failed; the process must restart", "err", err)
	}
	db.opts.fatal(err.Error())
	runtime.Goexit()
}

// exitFatal is the default fatal hook: say why on stderr and exit with
// EX_SOFTWARE, for a supervisor to restart the process once the cause (most
// often a full disk) is dealt with.
func exitFatal(msg string) {
	fmt.Fprintf(os.Stderr, "idem: fatal: %s\nidem: exiting rather than risk acknowledging writes that are not durable\n", msg)
	os.Exit(70)
}

// lockedError explains a refused directory lock: who holds it, if its pid
// file says.
func lockedError(dir string, fs vfs.FS, err error) error {
	who := "another process (its pid is unknown)"
	if pid, ok := readPID(fs, dir); ok {
		if pid == os.Getpid() {
			who = fmt.Sprintf("this process (pid %d) already", pid)
		} else {
			who = fmt.Sprintf("another idem process (pid %d)", pid)
		}
	}
	return fmt.Errorf("pebbledb: open %s: %w: %s holds its lock, %s: %v", dir, ErrLocked, who, fs.PathJoin(dir, "LOCK"), err)
}

// readPID reads the pid file of dir.
func readPID(fs vfs.FS, dir string) (int, bool) {
	f, err := fs.Open(fs.PathJoin(dir, pidFile))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	var b [32]byte
	n, _ := f.ReadAt(b[:], 0)
	var pid int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b[:n])), "%d", &pid); err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// writePID records this process's pid in dir, once it holds the lock.
func writePID(fs vfs.FS, dir string) error {
	f, err := fs.Create(fs.PathJoin(dir, pidFile), vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
