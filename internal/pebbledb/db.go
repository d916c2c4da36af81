package pebbledb

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
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
// deletes expired marks every sweep interval; Close stops it and waits for
// it, along with Pebble's own goroutines.
type DB struct {
	pdb  *pebble.DB
	opts options

	// closeMu is held shared by every method that touches pdb and
	// exclusively by Close, so that Pebble is never closed under a reader.
	closeMu sync.RWMutex
	closed  bool
	// failed holds the error of a write-ahead log sync that failed (see
	// CommitPipelined): every later method returns it.
	failed atomic.Pointer[error]
	// done is closed by Close: it wakes waiters and stops the sweeper.
	done chan struct{}
	wg   sync.WaitGroup

	streamsMu sync.RWMutex
	streams   map[string]*stream

	// markMu orders mark purging against commits that write marks: the
	// sweeper holds it exclusively while it re-checks and deletes expired
	// marks, so it never deletes a mark a concurrent Commit just renewed.
	markMu sync.RWMutex

	// sweepMu serializes sweeps.
	sweepMu sync.Mutex

	// claimMu makes each idempotency claim's read-modify-write atomic: the
	// DB has one process as its only writer, so a mutex is the whole of
	// the compare-and-set a shared store does with a transaction.
	claimMu sync.Mutex

	// records are the record claims (store.RecordClaims), under claimMu.
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
	popts := &pebble.Options{
		FS:                          o.fs,
		CacheSize:                   o.cacheSize,
		MemTableSize:                o.memTableSize,
		MemTableStopWritesThreshold: 4,
		Logger:                      pebbleLogger{o.logger},
	}
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("pebbledb: open %s: %w", dir, err)
	}
	db := &DB{pdb: pdb, opts: o, done: make(chan struct{}), streams: make(map[string]*stream), records: make(map[store.MarkKey]recordClaim), ranges: make(map[string]map[string]rangeClaim)}
	if err := db.load(); err != nil {
		pdb.Close()
		return nil, fmt.Errorf("pebbledb: open %s: %w", dir, err)
	}
	db.wg.Add(1)
	go db.sweeper()
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
		ok := len(v) == 1 && v[0] == layoutVersion
		got := append([]byte(nil), v...)
		closer.Close()
		if !ok {
			return fmt.Errorf("%w: layout version %x, this program reads %d", errCorrupt, got, layoutVersion)
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

// enter is called by every method that uses Pebble; the returned release
// must be called when it is done.
func (db *DB) enter() (release func(), err error) {
	if err := db.failed.Load(); err != nil {
		return nil, *err
	}
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return db.closeMu.RUnlock, nil
}

// fail makes every later use of db return err: a write it applied may not
// be durable, so nothing it shows can be trusted.
func (db *DB) fail(err error) {
	db.failed.CompareAndSwap(nil, &err)
}

// Close stops the sweeper, waits for methods in progress, and closes Pebble.
// Waiters return ErrClosed. Closing twice returns nil.
func (db *DB) Close() error {
	db.closeMu.Lock()
	if db.closed {
		db.closeMu.Unlock()
		return nil
	}
	db.closed = true
	close(db.done)
	db.closeMu.Unlock()
	db.wg.Wait()
	if err := db.pdb.Close(); err != nil {
		return fmt.Errorf("pebbledb: close: %w", err)
	}
	return nil
}

// pebbleLogger hands Pebble's messages to an optional slog.Logger. Fatalf
// panics: Pebble calls it when continuing would risk the data, so it must
// not return.
type pebbleLogger struct{ l *slog.Logger }

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
	panic(fmt.Sprintf("pebble: "+format, args...))
}
