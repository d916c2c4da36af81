package pebbledb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// Errors callers branch on. They are the source and store packages'
// sentinels, so that code holding a source.Driver or a store.Driver over a
// DB tests for the same values as code holding the DB.
var (
	// ErrStreamNotFound is returned, wrapped with the name, by every method
	// given a stream that CreateStream never made, including Commit for an
	// on-failure destination.
	ErrStreamNotFound = source.ErrStreamNotFound
	// ErrShardNotFound is returned, wrapped with the stream and shard, by
	// Start, Read and Wait for a shard ID the stream does not have.
	ErrShardNotFound = source.ErrShardNotFound
	// ErrClosed is returned by the methods that read or write the database
	// (and by Wait) once Close was called; Shards, Retention, Streams and
	// StreamInfo keep answering from memory.
	ErrClosed = store.ErrClosed
)

// Option configures Open.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	fs            vfs.FS
	cacheSize     int64
	memTableSize  uint64
	sweepInterval time.Duration
	pollInterval  time.Duration
	logger        *slog.Logger
	diskReserve   uint64
	fatal         func(msg string)
	// diskFree, when set, replaces the statfs of the data directory: tests
	// fill and free a disk at will.
	diskFree func() (uint64, error)
	// closeTimeout bounds Close once the DB failed.
	closeTimeout time.Duration
	// markFilterMemory bounds the mark filter; noMarkFilter sends every
	// mark lookup to Pebble, for benchmarks that measure what the filter
	// saves.
	markFilterMemory int64
	noMarkFilter     bool
	// spillMarksAt, when set, replaces defaultSpillMarksAt; directMarks
	// writes each mark as a key of its own at commit, as before the
	// journal, for tests and benchmarks that compare the two.
	spillMarksAt int
	directMarks  bool
	// noMerger leaves merges of runs to the test that calls mergeRuns.
	noMerger bool
	// afterPin, when set, is called by a commit with a MarkOwner once its
	// claims are checked and pinned, before anything else: tests race
	// takeovers against the commit there.
	afterPin func(w *store.Write)
}

// Defaults, in one place. The cache and memtables bound Pebble's memory:
// writing a million 200-byte records stays well under 300 MB of RSS.
func defaultOptions() options {
	return options{
		fs:            vfs.Default,
		cacheSize:     64 << 20,
		memTableSize:  16 << 20,
		sweepInterval: time.Minute,
		pollInterval:  time.Second,
		diskReserve:   DefaultDiskReserve,
		fatal:         exitFatal,
		closeTimeout:  10 * time.Second,

		markFilterMemory: DefaultMarkFilterMemory,
	}
}

func (o *options) validate() error {
	var errs []error
	if o.cacheSize < 1<<20 {
		errs = append(errs, fmt.Errorf("pebbledb: cache size %d bytes is below the minimum 1 MiB", o.cacheSize))
	}
	if o.sweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("pebbledb: sweep interval %s must be positive", o.sweepInterval))
	}
	if o.pollInterval <= 0 {
		errs = append(errs, fmt.Errorf("pebbledb: poll interval %s must be positive", o.pollInterval))
	}
	if o.markFilterMemory < 0 {
		errs = append(errs, fmt.Errorf("pebbledb: mark filter memory %d bytes must not be negative", o.markFilterMemory))
	}
	if o.fatal == nil {
		errs = append(errs, errors.New("pebbledb: the fatal hook must not be nil"))
	}
	return errors.Join(errs...)
}

// InMemory keeps the database in memory (Pebble's vfs.NewMem) instead of
// dir, for tests: nothing survives Close. Default: on disk.
func InMemory() Option {
	return optionFunc(func(o *options) { o.fs = vfs.NewMem() })
}

// WithCacheSize sets the size of Pebble's block cache in bytes, at least
// 1 MiB. Default: 64 MiB, enough for the working set of marks and recent
// records without making the process large.
func WithCacheSize(bytes int64) Option {
	return optionFunc(func(o *options) { o.cacheSize = bytes })
}

// WithSweepInterval sets how often the background sweeper deletes records
// past their stream's retention and expired completion marks. Default: one
// minute. Tests that need a sweep at a chosen instant call Sweep instead.
func WithSweepInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.sweepInterval = d })
}

// WithPollInterval sets the longest time Wait blocks without news. Default:
// one second.
func WithPollInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.pollInterval = d })
}

// WithDiskReserve sets the free space, in bytes, below which writes are
// refused with an error wrapping store.ErrNoSpace instead of being handed to
// Pebble: a write that meets a full disk inside Pebble's write-ahead log
// leaves Pebble no safe way on (see WithFatal), and Pebble needs room of its
// own to flush and compact, which is what frees space again. Writes resume
// by themselves once space is freed. The sweeper's deletions go on down to
// half the reserve. 0 turns the check off. Default: DefaultDiskReserve
// (64 MiB).
func WithDiskReserve(bytes uint64) Option {
	return optionFunc(func(o *options) { o.diskReserve = bytes })
}

// WithFatal sets what happens where Pebble's state leaves no safe way on (it
// calls its Logger.Fatalf: a write-ahead log write or sync failed, most
// often for a full disk that the reserve did not foresee). By then the DB
// has failed: every method returns an error wrapping ErrFatal (and
// store.ErrNoSpace for a full disk), Health reports it, and Close gives up
// on Pebble after a bounded wait. fatal receives a one-line message; it
// should end the process. If it returns, the goroutine Pebble called from
// exits (runtime.Goexit), for Pebble must not go on. Default: print the
// message to stderr and exit with status 70 (EX_SOFTWARE), rather than wedge
// with writes hanging in Pebble's commit pipeline.
func WithFatal(fatal func(msg string)) Option {
	return optionFunc(func(o *options) { o.fatal = fatal })
}

// DefaultMarkFilterMemory is the default bound of the mark filter's
// memory: room for about 85 million marks at once with their runs'
// filters, 40 to 70 million live marks under a steady load.
const DefaultMarkFilterMemory = 256 << 20

// WithMarkFilterMemory bounds, in bytes, the memory of the filter that
// answers most lookups of completion marks never written without reading
// Pebble: about 2 bytes a mark (2 to 5 counting what expiry has not freed
// yet), and 1 byte more for each mark spilled to a run, whose filter tells
// which runs a key that got past it is sought in. Beyond the bound, the
// filter rules out ever fewer keys, which go on to Pebble as they all
// would without it, and new runs have no filter, so that such a key is
// sought in each (the runs' filters take at most a third of the bound);
// no mark is ever missed. 0: no bound. Default: DefaultMarkFilterMemory.
func WithMarkFilterMemory(bytes int64) Option {
	return optionFunc(func(o *options) { o.markFilterMemory = bytes })
}

// withSpillMarksAt spills the mark journal once it holds n marks.
func withSpillMarksAt(n int) Option {
	return optionFunc(func(o *options) { o.spillMarksAt = n })
}

// withDirectMarks writes marks as keys of their own at commit.
func withDirectMarks() Option {
	return optionFunc(func(o *options) { o.directMarks = true })
}

// withoutMerger starts no merger: the test merges runs itself.
func withoutMerger() Option {
	return optionFunc(func(o *options) { o.noMerger = true })
}

// withAfterPin calls f from each commit with a MarkOwner once its claims
// are pinned (options.afterPin).
func withAfterPin(f func(w *store.Write)) Option {
	return optionFunc(func(o *options) { o.afterPin = f })
}

// withoutMarkFilter turns the mark filter off, for benchmarks.
func withoutMarkFilter() Option {
	return optionFunc(func(o *options) { o.noMarkFilter = true })
}

// withFS makes the DB use fs, for tests that crash a vfs.MemFS.
func withFS(fs vfs.FS) Option {
	return optionFunc(func(o *options) { o.fs = fs })
}

// WithLogger receives what happens in the background, where no caller can
// be handed an error: the sweeper's failures (the next sweep retries) and
// Pebble's own messages (background errors such as a full disk at Error,
// the rest at Debug). Default: they are discarded; the errors that matter to
// a caller are returned by the method that meets them.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// DB is one data directory holding the embedded streams and the embedded
// store. It is safe for concurrent use.
//
// # Goroutines
//
// Open starts one goroutine, the sweeper, which enforces retention and
// deletes expired marks every sweep interval, and spills the mark journal
// when a commit asks; Close stops it and waits for
// it, along with Pebble's own goroutines. The one exception is a DB that
// failed (ErrFatal): Pebble may then hold goroutines that never finish, and
// Close returns after a bounded wait, leaving them for the process's exit.
//
// # A full disk
//
// Writes are refused with store.ErrNoSpace while the data directory's
// filesystem has less free space than the reserve (WithDiskReserve), before
// anything reaches Pebble; they resume once space is freed. Where Pebble
// still meets a full disk writing its write-ahead log, its state leaves no
// safe way on: the DB says so, fails every later call, and exits the
// process with a clear message (WithFatal) rather than wedge.
type DB struct {
	pdb   *pebble.DB
	lock  *pebble.Lock
	dir   string
	opts  options
	space *space

	// users counts the methods using pdb, and has the closing bit set once
	// Close began: Pebble is closed only when no method uses it.
	users atomic.Int64
	// idle is closed by the last method out once Close began.
	idle      chan struct{}
	idleOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	// failed holds the error that failed the DB: a write-ahead log sync
	// that failed (see CommitPipelined), or Pebble's fatal error; every
	// later method returns it. failedCh is closed when it is set.
	failed   atomic.Pointer[error]
	failedCh chan struct{}
	// done is closed by Close: it wakes waiters and stops the sweeper.
	done chan struct{}
	wg   sync.WaitGroup

	streamsMu sync.RWMutex
	streams   map[string]*stream

	// markMu orders mark purging against commits that write marks: the
	// sweeper holds it exclusively while it re-checks and deletes expired
	// marks, so it never deletes a mark a concurrent Commit just renewed,
	// and while it drops segments of the mark filter, so that no Commit
	// adds to one meanwhile.
	markMu sync.RWMutex
	// marks answers most lookups of absent marks without Pebble
	// (markfilter.go).
	marks markFilter
	// markGets counts the marks looked up in Pebble, and runSeeks their
	// seeks in runs, for tests.
	markGets, runSeeks atomic.Int64
	// journal holds the marks committed since the last spill
	// (journal.go); spillMu serializes spills and redrives, and spillCh
	// asks the sweeper for a spill.
	journal markJournal
	spillMu sync.Mutex
	spillCh chan struct{}
	// spills numbers the tables of spills; popts are Pebble's options,
	// which the spills' tables are written with.
	spills atomic.Uint64
	popts  *pebble.Options
	// runs lists the runs of marks that lookups read, oldest first
	// (runs.go); it changes under spillMu, as does runEdits, which
	// counts the changes to runs other than new ones (a redrive's
	// deletions, a purge, a merge). lastRun is the number last given to
	// a run. runReaders is held shared by lookups from the list they
	// read until their last seek, and exclusively by a merge while it
	// replaces its inputs in the list: inputs are deleted only once no
	// lookup may still read them. legacyMarks says whether Pebble may
	// hold mark keys ('k'), which lookups then read too.
	runs        atomic.Pointer[[]markRun]
	runReaders  sync.RWMutex
	runEdits    uint64
	lastRun     atomic.Uint64
	legacyMarks atomic.Bool
	// mergeCh asks the merger for a look at the runs after a spill.
	mergeCh chan struct{}

	// sweepMu serializes sweeps.
	sweepMu sync.Mutex

	// claimMu makes each idempotency claim's read-modify-write atomic: the
	// DB has one process as its only writer, so a mutex is the whole of
	// the compare-and-set a shared store does with a transaction.
	claimMu sync.Mutex

	// records are the record claims (store.RecordClaims), and the
	// placeholders of keys that commits in flight pinned (recordClaim),
	// under claimMu.
	// They live in memory only: one process owns the data directory, so a
	// claim can only ever be contended by that process, and a crash that
	// forgets them also ends every run they guarded.
	records map[store.MarkKey]recordClaim
	// ranges are the range claims (store.RangeClaim) by the progress key
	// of their shard (Mapping "") and then by mapping, under claimMu, in
	// memory for the same reason.
	ranges map[string]map[string]rangeClaim
}

// Open opens (creating if needed) the database in dir and starts the
// sweeper. It recovers each shard's next sequence from its last record.
func Open(dir string, opts ...Option) (*DB, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	db := &DB{dir: dir, opts: o, idle: make(chan struct{}), failedCh: make(chan struct{}), done: make(chan struct{}), spillCh: make(chan struct{}, 1), mergeCh: make(chan struct{}, 1), streams: make(map[string]*stream), records: make(map[store.MarkKey]recordClaim), ranges: make(map[string]map[string]rangeClaim)}
	db.marks.maxBytes = o.markFilterMemory
	warn := func(msg string, args ...any) {
		if o.logger != nil {
			o.logger.Warn(msg, args...)
		}
	}
	db.space = newSpace(dir, o.fs, o.diskReserve, o.diskFree, warn)
	if err := o.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pebbledb: open %s: %w", dir, noSpace(err))
	}
	// Take Pebble's lock first, to say who holds it if it is refused.
	lock, err := pebble.LockDirectory(dir, o.fs)
	if err != nil {
		return nil, lockedError(dir, o.fs, err)
	}
	logger := pebbleLogger{l: o.logger, db: db}
	popts := &pebble.Options{
		FS:                          o.fs,
		Lock:                        lock,
		CacheSize:                   o.cacheSize,
		MemTableSize:                o.memTableSize,
		MemTableStopWritesThreshold: 4,
		// Pebble runs one compaction at a time by default. A stream
		// written as fast as the shards commit (hundreds of MB/s with
		// 16 cores) leaves one compaction thread behind, and writes
		// then stall on L0; Pebble starts more, up to half the cores,
		// once L0 or the compaction debt grows past its thresholds.
		CompactionConcurrencyRange: func() (int, int) { return 1, max(2, runtime.GOMAXPROCS(0)/2) },
		Logger:                     logger,
		EventListener: &pebble.EventListener{BackgroundError: func(err error) {
			logger.Errorf("background error: %s", err)
			if errors.Is(err, syscall.ENOSPC) {
				// A flush or compaction ran out of space: refuse
				// writes until a probe finds the reserve free.
				db.space.full.Store(true)
			}
		}},
	}
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// A run of marks (runs.go) lies between other key ranges, and a
	// table of the last level may span it (one holding a stream's meta
	// key and the first of its records does): Pebble would then ingest
	// the run a level up and compact it down again, with that table, and
	// more runs with every later one (4,000,000 records: 225 MB ingested
	// into L5, 4.75 s of compactions). Ingest-time splitting cuts such a
	// table in two virtual tables around the run instead, which needs a
	// format that has them: every idem's Pebble has it, so the one-way
	// change of format shuts no version of idem out.
	popts.FormatMajorVersion = pebble.FormatVirtualSSTables
	popts.Experimental.IngestSplit = func() bool { return true }
	popts.EnsureDefaults()
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("pebbledb: open %s: %w", dir, noSpace(err))
	}
	db.pdb, db.lock, db.popts = pdb, lock, popts
	if err := removeSpillTables(o.fs, dir); err != nil {
		pdb.Close()
		lock.Close()
		return nil, fmt.Errorf("pebbledb: open %s: removing the tables of a spill a crash cut short: %w", dir, err)
	}
	if err := writePID(o.fs, dir); err != nil {
		warn("pebbledb: cannot write the pid file; a second process will not learn who holds the directory", "dir", dir, "err", err)
	}
	err = db.load()
	if err == nil {
		err = db.loadMarks()
	}
	if err != nil {
		pdb.Close()
		lock.Close()
		return nil, fmt.Errorf("pebbledb: open %s: %w", dir, noSpace(err))
	}
	db.wg.Add(1)
	go db.sweeper()
	if !o.noMerger {
		db.wg.Add(1)
		go db.merger()
	}
	return db, nil
}

// load checks the layout version and rebuilds the in-memory stream state.
func (db *DB) load() error {
	v, closer, err := db.pdb.Get([]byte{prefixFormat})
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.pdb.Set([]byte{prefixFormat}, []byte{layoutVersion}, pebble.Sync); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		got := append([]byte(nil), v...)
		closer.Close()
		switch {
		case len(got) == 1 && got[0] == layoutVersion:
		case len(got) == 1 && got[0] >= 1 && got[0] < layoutVersion:
			if err := db.pdb.Set([]byte{prefixFormat}, []byte{layoutVersion}, pebble.Sync); err != nil {
				return fmt.Errorf("upgrading the layout from version %d: %w", got[0], err)
			}
		default:
			return fmt.Errorf("%w: layout version %x, this program reads 1 to %d", errCorrupt, got, layoutVersion)
		}
	}

	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMeta}, UpperBound: []byte{prefixMeta + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		r := reader{b: it.Key()[1:]}
		name := string(r.bytes(r.uvarint("stream meta key"), "stream meta key"))
		if err := r.end("stream meta key"); err != nil {
			return err
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		m, err := decodeStreamMeta(val)
		if err != nil {
			return fmt.Errorf("stream %q: %w", name, err)
		}
		st := newStream(name, m)
		if err := db.recover(st); err != nil {
			return fmt.Errorf("stream %q: %w", name, err)
		}
		db.streams[name] = st
	}
	return it.Error()
}

// recover reads each shard's horizon and last record.
func (db *DB) recover(st *stream) error {
	for _, sh := range st.shards {
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: sh.lower, UpperBound: sh.upper})
		if err != nil {
			return err
		}
		err = sh.recover(it)
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("shard %s: %w", sh.id, err)
		}
	}
	return nil
}

// Settle spills the mark journal and merges the runs that call for it, as
// the background would, then flushes what Pebble holds in memory and waits
// until it has no flush or compaction running, and either owes none or has
// started none for settleQuiet (Pebble may estimate some debt it does not
// act on), or until ctx is done. Benchmarks call it once they have filled
// a stream or a store's marks, so that the fill's spills, merges and
// compactions do not run inside what they time (and inside the slower
// scenario's time more than the faster one's).
//
// Errors: ErrClosed, ctx.Err(), and Pebble's errors.
func (db *DB) Settle(ctx context.Context) error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	if err := db.spill(); err != nil {
		return fmt.Errorf("pebbledb: settle: %w", err)
	}
	if err := db.mergeRuns(); err != nil {
		return fmt.Errorf("pebbledb: settle: %w", err)
	}
	if err := db.pdb.Flush(); err != nil {
		return fmt.Errorf("pebbledb: settle: %w", err)
	}
	const poll = 10 * time.Millisecond
	t := time.NewTicker(poll)
	defer t.Stop()
	quiet := time.Duration(0)
	for {
		m := db.pdb.Metrics()
		switch {
		case m.Compact.NumInProgress > 0 || m.Flush.NumInProgress > 0:
			quiet = 0
		case m.Compact.EstimatedDebt == 0 || quiet >= settleQuiet:
			return nil
		default:
			quiet += poll
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// settleQuiet is how long Settle waits, with compaction debt left, for a
// compaction to start before it takes the debt as one Pebble will not act
// on.
const settleQuiet = time.Second

// enter is called by every method that uses Pebble; the returned release
// must be called when it is done.
func (db *DB) enter() (release func(), err error) {
	if err := db.failed.Load(); err != nil {
		return nil, *err
	}
	if db.users.Add(1)&closing != 0 {
		db.leave()
		return nil, ErrClosed
	}
	return db.leave, nil
}

// closing is the bit of DB.users that Close sets.
const closing = 1 << 62

// leave ends a method's use of pdb.
func (db *DB) leave() {
	if db.users.Add(-1) == closing {
		db.idleOnce.Do(func() { close(db.idle) })
	}
}

// fail makes every later use of db return err: a write it applied may not
// be durable, so nothing it shows can be trusted.
func (db *DB) fail(err error) {
	if db.failed.CompareAndSwap(nil, &err) {
		close(db.failedCh)
	}
}

// Close stops the sweeper, waits for methods in progress, spills the mark
// journal (and writes layout 1 back where it can, see closeJournal), closes Pebble and
// removes the pid file. Waiters return ErrClosed. Closing twice returns nil.
//
// Once the DB failed (ErrFatal), methods and Pebble's own goroutines may be
// stuck for good in Pebble's broken commit pipeline: Close then waits for
// them a bounded time (10s), and returns an error saying Pebble could not be
// closed cleanly, leaving them, and the directory lock, to the process's
// exit.
func (db *DB) Close() error {
	first := false
	db.closeOnce.Do(func() {
		first = true
		db.closeErr = db.close()
	})
	if !first {
		return nil
	}
	return db.closeErr
}

func (db *DB) close() error {
	if db.users.Or(closing) == 0 {
		db.idleOnce.Do(func() { close(db.idle) })
	}
	close(db.done)
	stopped := make(chan struct{})
	go func() {
		// Exits once the sweeper does; only a failed DB's stuck
		// sweeper keeps it.
		db.wg.Wait()
		close(stopped)
	}()
	select {
	case <-db.idle:
		select {
		case <-stopped:
			if err := db.closeJournal(); err != nil && db.opts.logger != nil {
				db.opts.logger.Warn("pebbledb: the mark journal was not spilled at close; an earlier idem cannot open the directory until this one opens and closes it again", "dir", db.dir, "err", err)
			}
			return db.closePebble()
		case <-db.failedCh:
		}
	case <-db.failedCh:
	}

	// Failed: nothing more is written, and Pebble may never finish.
	timer := time.NewTimer(db.opts.closeTimeout)
	defer timer.Stop()
	for _, c := range []chan struct{}{db.idle, stopped} {
		select {
		case <-c:
		case <-timer.C:
			return db.abandon("methods in progress are stuck in it")
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- db.closePebble() }()
	select {
	case err := <-closed:
		return errors.Join(*db.failed.Load(), err)
	case <-timer.C:
		return db.abandon("its Close is stuck")
	}
}

// abandon is the error of a failed DB whose Pebble could not be closed.
func (db *DB) abandon(why string) error {
	return fmt.Errorf("pebbledb: close %s: pebble could not be closed cleanly within %s (%s); its goroutines are left to the process's exit: %w", db.dir, db.opts.closeTimeout, why, *db.failed.Load())
}

// closePebble closes Pebble, then removes the pid file and releases the
// directory lock.
func (db *DB) closePebble() error {
	err := db.pdb.Close()
	if rerr := db.opts.fs.Remove(db.opts.fs.PathJoin(db.dir, pidFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	if lerr := db.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("pebbledb: close: %w", err)
	}
	return nil
}

// pebbleLogger hands Pebble's messages to an optional slog.Logger, and its
// Fatalf to DB.fatal: Pebble calls it when continuing would risk the data,
// so it must not return.
type pebbleLogger struct {
	l  *slog.Logger
	db *DB
}

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l != nil {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.l != nil {
		p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.db.fatal(format, args...)
}
