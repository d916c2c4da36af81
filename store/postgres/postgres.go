// Package postgres is the store driver over PostgreSQL, for running idem
// where the embedded Pebble store does not fit: several idem processes that
// share one store, or operators who want checkpoints, completion marks,
// state and on-failure records in a database they already run, back up and
// query.
//
// # Atomicity and durability
//
// Commit sends a Write's statements as one pipelined batch (pgx.Batch): one
// network round trip (plus one to prepare the statements on a connection's
// first use), run by PostgreSQL as one implicit transaction that
// commits at the batch's end, durably under the server's default
// synchronous_commit. The checkpoint statement comes first and compares
// sequences as numbers in SQL; when it would move the checkpoint backwards
// it raises an error, so the server skips the rest of the batch and rolls
// the transaction back: nothing of the Write is applied and Commit returns
// an error wrapping store.ErrCheckpointBackwards. Concurrent Commits run on
// the pool's connections and share WAL flushes through PostgreSQL's own
// group commit.
//
// If the connection breaks after the batch was sent, whether it committed
// is unknown (as with any database); repeating the same Write is harmless
// for checkpoints, marks and state, but stores its on-failure records twice.
//
// # Transactions
//
// The Store is a store.TxDriver: an in-process Go handler can write its own
// SQL, in the same database, in the transaction that commits its records
// (TxFrom, BatchTx). That transaction runs the statements of Commit (in one
// round trip) and then COMMIT, so the handler's writes, the completion
// marks or progress, the state and the checkpoint commit together or not at
// all. Each record runs under one savepoint, released when the next record
// sets its own; both travel in the pipeline of the record's first
// statement, so a record that sends one statement costs one round trip,
// not two. The transaction begins at the handler's first TxFrom, so a
// handler that writes no SQL costs nothing more. A handler holding the
// transaction reads its State through it, but a journaled step (idem.Step)
// takes a second connection from the pool: size pool_max_conns above the
// number of concurrent invocations (shards times parallelizationFactor) for
// handlers that use both.
//
// # Conflicts, deadlocks and lock waits
//
// A handler's writes hold their row locks until the batch commits, so
// concurrent batches (shards, parallelizationFactor) that write the same
// rows wait for each other, and deadlock when they lock them in different
// orders: PostgreSQL then fails one transaction's statement with SQLSTATE
// 40P01 (after deadlock_timeout, one second by default). Such a failure,
// a serialization failure (40001) and a lock wait cut short by lock_timeout
// (55P03) are conflicts (IsConflict): the handler returns the error, its
// record's savepoint is undone and the records before it commit, and the
// engine runs the batch again from that record after a short jittered
// wait, logged at Warn and counted (idem_store_conflicts_total), without
// counting it against maximumRetryAttempts. A conflict is not a failure of
// the record, but each one costs the batch a round of work, and each
// deadlock first costs a deadlock_timeout, so avoid them:
//
//   - Lock the rows a record writes in one order, by key: update the two
//     accounts of a transfer lower key first, not debit first.
//   - Across the records of a batch, the same order cannot be kept (each
//     record's rows are locked as it runs, and held). Route the records
//     that write the same rows to the same shard (the partition key), so
//     that one shard, not several, writes them; or write in a batch
//     handler (BatchTx) that sorts the whole batch's writes by key first.
//   - Keep batches that write hot rows small (batchSize), since a batch
//     holds every row it wrote until it commits.
//
// With WithLeaseTTL, a session left idle in a transaction for the lease
// ttl (a paused or hung owner) is ended by the server, which releases its
// locks, and no statement waits for a lock longer than the ttl.
//
// # Encodings
//
// Sequences are stored as the text the source gave (zero padding and all,
// byte for byte) and compared in SQL as numeric (the empty sequence as 0),
// so 56-digit Kinesis sequence numbers order correctly. Names and keys (mappings,
// streams, shards, scopes, state namespaces and keys, partition keys) are
// Go strings, any bytes, which PostgreSQL text refuses when they hold a NUL
// byte or invalid UTF-8: they are stored as text escaped injectively (a
// backslash as \\, NUL as \0, a byte of invalid UTF-8 as \xHH), so the usual
// name is stored as it is and the tables stay readable by hand. Timestamps
// are timestamptz, so expiry times are kept to the microsecond.
//
// # Expiry
//
// Completed and Lookup decide expiry from the time passed in, never from a
// background delete, and so do ClaimRecords for the leases of record
// claims. A purge goroutine (WithPurgeInterval) deletes expired marks,
// idempotency records, and range claims a crash left behind, to reclaim
// space only; Close stops it.
//
// A completion mark is a row of marks (key, expires) under a hash index on
// its key (schema version 10; a primary key before): a mark is written
// once, by the commit that held its key's claim, and only looked up by
// equality, which a hash index does at about half a btree's cost. A key
// marked again, once its mark expired, gets a second row; a key is
// completed while any of its rows is live, and the purge deletes rows, not
// keys.
//
// # Progress and record claims
//
// Progress is one row per (scope, stream, shard, mapping): each mapping
// writes only its own, and rows written before there were mappings' rows
// are the scope-wide one, of the empty mapping. A record claim is a
// session-level advisory lock of the Store's lock session, a connection
// of its own, and an entry of the Store's table of who holds what
// (locks.go says what that means across processes): taken by one call of
// the function claim_locks for a whole window, its marks looked up after
// it by marks_of on a connection of the pool, and ended by the Commit that
// marks its key or releases it, or by ReleaseRecordClaims. A Commit that
// marks claimed keys calls commit_gate last, in its transaction: it takes
// the gate of the lock session that holds them and checks that the
// session still lives; lock sessions register in the UNLOGGED table
// lock_sessions (schema version 9). A Commit under a Write's MarkOwner
// lands only if each key it marks is still MarkOwner's claim, whatever
// its lease, or is neither claimed nor marked: the first is decided in
// the Store's table, at no cost in SQL, and the second, for the keys the
// table does not hold, by the function check_unclaimed (schema version
// 11) in the commit's transaction, before its marks. A range claim
// is a row of range_claims (scope, stream, shard, mapping, seq_from,
// seq_to, lease_until), one per mapping and shard, replaced by each call
// of the function claim_range and deleted by the Commit that ends it
// (EndRange). Schema version 8 dropped the record_claims table and the
// claim_records function of earlier versions, so that a process of one of
// them still running fails at its next claim rather than claim where this
// version does not look.
//
// Claims are not durable, on purpose: range_claims is an UNLOGGED table,
// the function that takes a range commits asynchronously
// (synchronous_commit off for its own transaction), and locks live in the
// server's memory, so a claim costs no WAL flush. The price: a PostgreSQL
// crash (or immediate shutdown) ends them all, a failover finds none on
// the promoted replica, an asynchronous commit acknowledged just before a
// crash may be lost, and a lock session cut ends its process's record
// claims; records that were in flight then may run a second time,
// concurrently with their first run. Their completion still commits
// through Commit, durably, so a record completed before the crash is
// never run again and the progress and marks stay exact; and a record's
// commit under a record claim that was lost is refused by its gate, so
// that only one of the runs commits.
//
// # Schema
//
// New creates its tables in one schema (WithSchema, "idem" by default) and
// migrates them with versioned migrations recorded in schema_migrations,
// under a transaction-scoped advisory lock, so several idem processes may
// start at once against one database.
package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idem-run/idem/store"
)

// DefaultSchema is the schema New uses without WithSchema.
const DefaultSchema = "idem"

// DefaultPurgeInterval is how often expired marks and idempotency records
// are deleted without WithPurgeInterval.
const DefaultPurgeInterval = time.Minute

// purgeChunk bounds how many rows one purge statement deletes, so that a
// purge never holds many row locks at once.
const purgeChunk = 5000

// abandonedClaimGrace is how long after its lease ended an in-progress
// idempotency record is kept before the purge deletes it: an owner whose
// lease ran out without a takeover may still Complete within it.
const abandonedClaimGrace = time.Hour

// schemaName is what WithSchema accepts: a plain SQL identifier, so that
// it can be quoted safely everywhere, string literals included.
var schemaName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Store is the PostgreSQL store.Driver, store.TxDriver and store.Claims.
// It is safe for concurrent use. After Close its methods return errors
// wrapping store.ErrClosed.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	q      queries
	log    *slog.Logger
	// customPlans: New set plan_cache_mode to force_custom_plan (the
	// connection string did not set it); a handler's transaction runs
	// with PostgreSQL's default until idem's write (Tx.beginning).
	customPlans bool
	// joinInserts: a flush joins runs of deferred INSERTs (multirow.go).
	joinInserts bool

	// locks holds the record claims (locks.go).
	locks *lockSession

	closed    atomic.Bool
	closeOnce sync.Once
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

var (
	_ store.Driver = (*Store)(nil)
	_ store.Claims = (*Store)(nil)
)

// Option configures New.
type Option func(*options)

type options struct {
	schema        string
	logger        *slog.Logger
	purgeInterval time.Duration
	leaseTTL      time.Duration
	noJoin        bool // WithoutJoinedInserts
}

// WithSchema sets the PostgreSQL schema that holds idem's tables (default
// DefaultSchema). It must be a plain identifier: letters, digits and
// underscores, not starting with a digit, at most 63 characters. Two
// stores on different schemas of one database share nothing.
func WithSchema(name string) Option { return func(o *options) { o.schema = name } }

// WithLogger sets where the background purge reports failures (default
// slog.Default()). The driver's methods never log: they return errors.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithPurgeInterval sets how often expired marks and idempotency records
// are deleted (default DefaultPurgeInterval); zero or less turns the purge
// goroutine off (call Purge yourself, or let another process purge).
func WithPurgeInterval(d time.Duration) Option { return func(o *options) { o.purgeInterval = d } }

// WithLeaseTTL bounds every transaction of the store by the shard lease
// ttl (the configuration's lease.ttl), so that an owner that stalls holding
// row locks cannot stop the shard's new owner for longer than the stall
// that cost it its lease. Each of the pool's sessions starts with
// idle_in_transaction_session_timeout and lock_timeout set to ttl, in the
// connection's startup message (no round trip per transaction): the server
// ends the session of a transaction left idle for ttl (a paused or hung
// process), which releases its locks and rolls it back, and a statement
// that waits for a lock longer than ttl fails with SQLSTATE 55P03, which
// IsConflict reports, so that its batch runs again rather than sleeping
// behind a holder that may never return. A handler must then not keep
// idem's transaction idle (between its statements, or in a journaled step)
// for as long as ttl. Settings of the same names in the DSN win. Default:
// off (the server's settings, usually no limit).
func WithLeaseTTL(ttl time.Duration) Option { return func(o *options) { o.leaseTTL = ttl } }

// WithoutJoinedInserts sends every deferred statement (Defer) as it was
// deferred. By default a run of deferred INSERTs of one SQL text and one
// VALUES row is sent as one INSERT of their rows, which PostgreSQL runs
// several times faster, with the same rows inserted in the same order and
// the same outcome for each record; what runs at a statement's end
// differs (a statement-level trigger fires once for the run, AFTER ROW
// triggers and foreign-key checks run after all its rows), and this option
// is for tables whose triggers, rules or self-referencing foreign keys
// care.
func WithoutJoinedInserts() Option { return func(o *options) { o.noJoin = true } }

// cancelGrace is how long a statement whose context is done may take to
// end once the server was asked to cancel it, before its connection is
// closed.
const cancelGrace = 2 * time.Second

// New connects to the database named by dsn (a PostgreSQL URL or keyword/
// value string; pgx's pool settings such as pool_max_conns apply), creates
// or migrates the schema, and starts the purge goroutine. It returns once
// the schema is ready, so a database that cannot be reached is an error
// here rather than at the first Commit.
func New(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{schema: DefaultSchema, logger: slog.Default(), purgeInterval: DefaultPurgeInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if !schemaName.MatchString(o.schema) {
		return nil, fmt.Errorf("postgres: schema name %q is not a plain identifier (letters, digits, underscores)", o.schema)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from the string its error quotes.
		return nil, fmt.Errorf("postgres: parsing the connection string: %w", err)
	}
	// Plan every statement for the table sizes of the moment: a generic
	// plan cached while a fresh table was empty keeps scanning it whole as
	// it grows to millions of marks, until an ANALYZE that a busy first
	// minute may not see. Planning the few statements idem sends costs
	// microseconds. A handler's statements run with PostgreSQL's default
	// (Tx.beginning); a batch's checkpoint and progress, upserts by
	// primary key whose plan is always the same, are planned once a
	// session (put_checkpoint_progress).
	_, planMode := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]
	if !planMode {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	if o.leaseTTL > 0 {
		ms := strconv.FormatInt(max(o.leaseTTL.Milliseconds(), 1), 10) + "ms"
		for _, p := range []string{"idle_in_transaction_session_timeout", "lock_timeout"} {
			if _, ok := cfg.ConnConfig.RuntimeParams[p]; !ok {
				cfg.ConnConfig.RuntimeParams[p] = ms
			}
		}
	}
	// A statement whose context is done (a handler's deadline, a lease
	// lost) is cancelled by the server rather than by closing its
	// connection, pgx's default: the transaction survives it, so the
	// record's savepoint undoes the record alone and the records before it
	// still commit, and the connection's cache of prepared statements,
	// which an error invalidates, is deallocated on a live connection
	// instead of failing with "failed to deallocate cached statement(s):
	// conn closed" at the next statement. A server that does not answer
	// the cancellation within cancelGrace has its connection closed.
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: creating the connection pool: %w", err)
	}
	ident := pgx.Identifier{o.schema}.Sanitize()
	if err := migrate(ctx, pool, o.schema, ident); err != nil {
		pool.Close()
		return nil, err
	}
	pctx, stop := context.WithCancel(context.Background())
	s := &Store{pool: pool, schema: o.schema, q: newQueries(ident), log: o.logger, stop: stop, customPlans: !planMode, joinInserts: !o.noJoin}
	s.locks = newLockSession(s)
	s.wg.Add(1)
	go s.locks.loop(pctx)
	if o.purgeInterval > 0 {
		s.wg.Add(1)
		go s.purgeLoop(pctx, o.purgeInterval)
	}
	return s, nil
}

// Schema returns the name of the schema the store keeps its tables in.
func (s *Store) Schema() string { return s.schema }

// Close stops the purge goroutine and the lock session's, waits for them,
// ends the lock session (and so every record claim this Store held), and
// closes the pool (waiting for connections in use to be released). It is
// safe to call more than once; later calls do nothing.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		s.wg.Wait()
		s.locks.close()
		s.pool.Close()
	})
}

// enter refuses calls after Close.
func (s *Store) enter() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// dbErr turns an error of a call that raced with Close into ErrClosed.
func (s *Store) dbErr(err error) error {
	if err != nil && s.closed.Load() {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

// purgeLoop runs Purge every interval until Close.
func (s *Store) purgeLoop(ctx context.Context, interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, _, err := s.Purge(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.log.Error("postgres: purge of expired marks and idempotency records failed; the next one retries",
					"schema", s.schema, "err", err)
			}
		}
	}
}

// Purge deletes, as of now, the completion marks that expired and the
// idempotency records that no longer count (completed ones past their
// expiry; in-progress ones whose lease ended over an hour ago), a chunk at a
// time, and reports how many of each it deleted; claims counts range
// claims (ClaimRange) whose lease ended over an hour ago too, which a crash
// or a shard that ended left behind. The purge goroutine calls
// it; tests and operators may call it directly. Purging changes no answer
// of Completed or Lookup, which decide expiry from timestamps; fencing
// tokens come from a sequence, so they keep increasing for a key whose
// record was purged. Rows locked by a concurrent Commit are left for the
// next purge.
func (s *Store) Purge(ctx context.Context, now time.Time) (marks, claims int64, err error) {
	if err := s.enter(); err != nil {
		return 0, 0, fmt.Errorf("postgres: purge: %w", err)
	}
	del := func(what, sql string, at time.Time) (int64, error) {
		var total int64
		for {
			tag, err := s.pool.Exec(ctx, sql, at, purgeChunk)
			if err != nil {
				return total, fmt.Errorf("postgres: purging expired %s: %w", what, s.dbErr(err))
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() < purgeChunk {
				return total, nil
			}
		}
	}
	if marks, err = del("marks", s.q.purgeMarks, now); err != nil {
		return marks, 0, err
	}
	done, err := del("completed idempotency records", s.q.purgeCompletedClaims, now)
	if err != nil {
		return marks, done, err
	}
	abandoned, err := del("abandoned idempotency records", s.q.purgeAbandonedClaims, now.Add(-abandonedClaimGrace))
	if err != nil {
		return marks, done + abandoned, err
	}
	ranges, err := del("abandoned range claims", s.q.purgeRangeClaims, now.Add(-abandonedClaimGrace))
	return marks, done + abandoned + ranges, err
}
