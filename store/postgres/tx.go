package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

var _ store.TxDriver = (*Store)(nil)

// savepoint is the one savepoint name records reuse: each record releases
// the previous record's savepoint and sets its own, with its first
// statement, so the transaction never holds more than one.
const savepoint = "idem_record"

// ErrNoTx is returned by TxFrom and BatchTx when ctx or the batch carries
// no transaction of this store: the store is not PostgreSQL, the function
// is not in-process, or the call is outside a handler invoked by idem.
var ErrNoTx = errors.New("postgres: no idem transaction of the PostgreSQL store here")

// TxFrom returns the transaction in which idem commits the record a
// RecordFunc is handling: its completion, its State writes and the
// checkpoint. What the handler writes with it commits if and only if the
// record commits; when the record fails, its writes are undone, and the
// records before it keep theirs.
//
//	func ship(ctx context.Context, r *idem.Record) error {
//		tx, err := postgres.TxFrom(ctx)
//		if err != nil {
//			return err
//		}
//		_, err = tx.Exec(ctx, `INSERT INTO shop.shipments (order_id, body) VALUES ($1, $2)`,
//			r.IdempotencyKey, r.Data)
//		return err // an error undoes this record's INSERT, and only it
//	}
//
// The transaction takes a connection on the first call of a batch and
// sends BEGIN with its first statement (COMMIT goes with idem's write of
// the batch), so a handler that does not call TxFrom costs nothing, and
// one that does pays no round trip for either. Return every SQL error the
// handler gets (or roll back to a savepoint of its own, tx.Begin): a
// record that leaves the transaction failed fails. The transaction belongs
// to idem: its Commit and Rollback return an error; it must not be kept or
// used after the handler returns, nor from other goroutines concurrently.
//
// Each record that writes runs under a savepoint (a subtransaction), set
// in the same round trip as the record's first statement: a record that
// sends one statement costs one round trip. Every statement still waits
// for its answer, so records run one round trip apart at best; writes
// whose result the function does not need can be deferred instead
// (Defer), the batch's sent in one round trip, and a batch handler that
// writes the whole batch in a few statements (BatchTx) pays a few per
// batch: both run several times faster (BENCHMARKS.md).
func TxFrom(ctx context.Context) (pgx.Tx, error) {
	h, err := idem.TxFrom(ctx)
	return handle(h, err)
}

// BatchTx returns the transaction of a batch handler's whole batch: its
// writes commit if and only if the whole batch succeeds. A batch handler
// that writes in it and reports batchItemFailures fails its whole batch:
// its writes are undone and the batch is retried (records before the
// failed one included), bisected or discarded as for a function error.
func BatchTx(ctx context.Context, b *idem.Batch) (pgx.Tx, error) {
	h, err := b.Tx(ctx)
	return handle(h, err)
}

func handle(h any, err error) (pgx.Tx, error) {
	if errors.Is(err, idem.ErrNoTx) {
		return nil, fmt.Errorf("%w: %w", ErrNoTx, err)
	}
	if err != nil {
		return nil, err
	}
	tx, ok := h.(pgx.Tx)
	if !ok {
		return nil, fmt.Errorf("%w: the store's transaction is a %T", ErrNoTx, h)
	}
	return tx, nil
}

// Tx is a transaction of the Store, as the engine uses it (store.Tx).
type Tx struct {
	s *Store
	// conn is the pool's connection the transaction holds, released
	// (once) when it ends. tx is the transaction as a pgx.Tx, made only
	// for what only pgx's own can do (pgxTx).
	conn *pgxpool.Conn
	tx   pgx.Tx
	h    txHandle

	// begun: BEGIN ran, with the transaction's first statement. It is
	// not the connection's TxStatus, which changes only when a pipeline's
	// answers have all been read: a handler's rows (Query) can hold the
	// answers after BEGIN's for as long as it reads them. pending: the
	// running record's savepoint is still to be set, with its first
	// statement (handle).
	begun, pending bool
	// ctx is BeginRecord's context, the engine's, which outlives the
	// handler's deadline: a savepoint sent alone is sent under it (see
	// pipelines), as are those of the handle's calls that take no context
	// (Conn, LargeObjects).
	ctx context.Context
	// broken says why the transaction can no longer commit what it holds:
	// a savepoint that may or may not have been set.
	broken error
	done   bool

	// rec is the running record, BeginRecord's i: the owner of what Defer
	// holds back. spRec is the record whose savepoint is set (the one
	// savepoint names, the running record's or the one before's); -1
	// none.
	rec, spRec int
	// queue holds the statements Defer held back, in order (deferred.go),
	// their encoded values in the arenas values and bytes.
	queue  []deferred
	values [][]byte
	bytes  []byte
	// failure is the first held-back statement that failed: the
	// transaction holds none of the writes of failure.rec and after, and
	// refuses every later statement.
	failure *deferFailure
	// deferErr is why a Defer of the running record (or of the batch)
	// failed: the record cannot succeed.
	deferErr error
	eqb      pgx.ExtendedQueryBuilder // encodes Defer's arguments
	// preparing holds the joined INSERTs the flush being built prepares,
	// and their names.
	preparing map[joinedKey]string
}

// Begin starts a transaction on a connection of the pool, at the
// database's default isolation level (READ COMMITTED unless configured
// otherwise). The caller ends it with Commit or Rollback.
func (s *Store) Begin(ctx context.Context) (store.Tx, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", err)
	}
	// A connection of its own rather than the pool's Begin, and no BEGIN
	// yet: BEGIN goes with the transaction's first statement, and COMMIT
	// with the batch's write, in the same round trips (which pgx's and
	// pgxpool's Tx, which send each alone, cannot do).
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", s.dbErr(err))
	}
	t := &Tx{s: s, conn: conn, rec: -1, spRec: -1}
	t.h.t = t
	return t, nil
}

// Handle returns the transaction as a pgx.Tx whose Commit and Rollback
// refuse (idem ends it), and whose statements set the running record's
// savepoint.
func (t *Tx) Handle() any { return &t.h }

// BeginRecord starts record i: its savepoint, which releases the previous
// record's, is set with the record's first statement, in the same round
// trip, so BeginRecord itself sends nothing.
func (t *Tx) BeginRecord(ctx context.Context, i int) error {
	if t.done {
		return fmt.Errorf("postgres: the batch's record %d: %w", i+1, pgx.ErrTxClosed)
	}
	if t.broken != nil {
		return t.broken
	}
	t.pending, t.ctx, t.rec, t.deferErr = true, ctx, i, nil
	return nil
}

// AbortRecord rolls back to record i's savepoint. A record that sent no
// statement has no savepoint of its own and nothing to undo.
func (t *Tx) AbortRecord(ctx context.Context, i int) error {
	if t.done {
		return fmt.Errorf("postgres: the batch's record %d: %w", i+1, pgx.ErrTxClosed)
	}
	if t.broken != nil {
		return fmt.Errorf("postgres: undoing the batch's record %d: %w", i+1, t.broken)
	}
	t.deferErr = nil
	if t.failure != nil {
		// A held-back statement failed, at this record or an earlier
		// one: the transaction was rolled back to that record's
		// savepoint, and has refused every statement since.
		t.pending = false
		return nil
	}
	t.dropQueued(i) // never sent: nothing to undo
	if t.pending {
		t.pending = false
		if t.failed() {
			return fmt.Errorf("postgres: undoing the batch's record %d: the transaction failed outside the record's savepoint", i+1)
		}
		return nil
	}
	if t.spRec < 0 {
		return fmt.Errorf("postgres: undoing the batch's record %d: it has no savepoint", i+1)
	}
	if err := t.rollbackToSavepoint(ctx); err != nil {
		return fmt.Errorf("postgres: undoing the batch's record %d: %w", i+1, t.s.dbErr(err))
	}
	return nil
}

// opening returns the statements that go before the next one the
// transaction sends: BEGIN until it is open, then the running record's
// savepoint while it is pending (the previous record's released first, so
// that the transaction holds one at a time).
func (t *Tx) opening() []string {
	return append(t.beginning(), t.recordSavepoint()...)
}

// beginning is BEGIN until it ran, and where New forced custom plans on
// the pool, PostgreSQL's default plan_cache_mode (auto) for the handler's
// statements: a statement run for every record is planned once, as it
// would be outside idem, not at each run. Commit forces custom plans again
// for idem's own write.
func (t *Tx) beginning() []string {
	switch {
	case t.begun:
		return nil
	case t.s.customPlans:
		return []string{"BEGIN", "SET LOCAL plan_cache_mode = auto"}
	default:
		return []string{"BEGIN"}
	}
}

// recordSavepoint is what sets the running record's savepoint while it is
// pending.
func (t *Tx) recordSavepoint() []string {
	switch {
	case !t.pending:
		return nil
	case t.spRec >= 0:
		return []string{"RELEASE SAVEPOINT " + savepoint, "SAVEPOINT " + savepoint}
	default:
		return []string{"SAVEPOINT " + savepoint}
	}
}

// takeOpening returns the opening statements, and whether the record's
// savepoint is among them, for the caller to send (and report with
// noteOpening): the savepoint is no longer pending.
func (t *Tx) takeOpening() (o []string, sp bool) {
	o, sp = t.opening(), t.pending
	t.pending = false
	return o, sp
}

// pipelines reports whether the opening statements are to travel with the
// statement about to be sent under ctx. A statement sent after its context
// ended (a handler past its deadline) gets them sent first, under the
// engine's context, so that a cancellation can only ever hit the
// handler's statement: a savepoint cancelled half way (released the
// previous record's, set no new one) would leave no way to undo the record
// alone. A deadline that ends during the savepoint's own microseconds
// still can, and breaks the transaction: its commit is then refused and
// the batch runs again.
func (t *Tx) pipelines(ctx context.Context) bool {
	return (!t.begun || t.pending) && t.broken == nil && ctx.Err() == nil
}

// setOpening sends the opening statements, in a round trip of their own
// under the engine's context, when there are any.
func (t *Tx) setOpening() error {
	if t.broken != nil {
		return t.broken
	}
	o, sp := t.takeOpening()
	if len(o) == 0 {
		return nil
	}
	_, err := t.conn.Exec(t.engineCtx(), strings.Join(o, "; "))
	return t.noteOpening(err, sp)
}

// noteOpening records the outcome of sending the opening statements (sp:
// the record's savepoint among them): once they ran, the transaction is
// open and the record can be undone alone; when they failed, what was set
// is unknown, so the transaction can no longer commit.
func (t *Tx) noteOpening(err error, sp bool) error {
	if err != nil {
		t.broken = errSavepoint(t.s.dbErr(err))
		return t.broken
	}
	t.begun = true
	if sp {
		t.pending, t.spRec = false, t.rec
	}
	return nil
}

// start readies the transaction for a statement the running record sends
// under ctx: what is deferred goes first. It reports whether the opening
// statements are to travel with the statement (with: the caller sends
// them with sendOpening or execSimple); otherwise they were sent alone,
// as they are for a statement that cannot share its round trip (alone).
func (t *Tx) start(ctx context.Context, alone bool) (with bool, err error) {
	if err := t.flushFirst(ctx); err != nil {
		return false, err
	}
	if !alone && t.pipelines(ctx) {
		return true, nil
	}
	return false, t.setOpening()
}

// sendOpening sends b's statements after the opening ones, in one
// pipeline, and reads the opening ones' results; on error the batch is
// closed. The caller checked pipelines (start).
func (t *Tx) sendOpening(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	o, sp := t.takeOpening()
	qs := make([]*pgx.QueuedQuery, 0, len(o)+len(b.QueuedQueries))
	for _, sql := range o {
		qs = append(qs, &pgx.QueuedQuery{SQL: sql})
	}
	br := t.conn.SendBatch(ctx, &pgx.Batch{QueuedQueries: append(qs, b.QueuedQueries...)})
	for range o {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return nil, t.noteOpening(err, sp)
		}
	}
	return br, t.noteOpening(nil, sp)
}

// execSimple runs sql, a statement without arguments, which pgx sends by
// the simple protocol: it may hold several statements, and so may the
// opening ones before it, in the same round trip. The command tag is the
// last statement's, as pgx's Exec returns it. The caller checked
// pipelines (start).
func (t *Tx) execSimple(ctx context.Context, sql string) (pgconn.CommandTag, error) {
	o, sp := t.takeOpening()
	mrr := t.conn.Conn().PgConn().Exec(ctx, strings.Join(o, "; ")+";\n"+sql)
	var tag pgconn.CommandTag
	var err error
	done := 0 // statements that succeeded
	for mrr.NextResult() {
		if tag, err = mrr.ResultReader().Close(); err == nil {
			done++
		}
	}
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	if done < len(o) {
		// The opening statements came first: one of them failed.
		return pgconn.CommandTag{}, t.noteOpening(err, sp)
	}
	t.noteOpening(nil, sp)
	return tag, err
}

// pgxTx returns the transaction as a pgx.Tx, for what only pgx's own can
// do: a handler's nested transactions and large objects. It is made once,
// over the transaction already open (an empty statement stands for its
// BEGIN), at the cost of a round trip.
func (t *Tx) pgxTx(ctx context.Context) (pgx.Tx, error) {
	if err := t.setOpening(); err != nil {
		return nil, err
	}
	if t.tx != nil {
		return t.tx, nil
	}
	tx, err := t.conn.Conn().BeginTx(ctx, pgx.TxOptions{BeginQuery: ";"})
	if err != nil {
		t.broken = fmt.Errorf("postgres: the transaction's pgx handle: %w", t.s.dbErr(err))
		return nil, t.broken
	}
	t.tx = tx
	return tx, nil
}

// failed reports whether a statement failed and left the transaction
// unable to commit.
func (t *Tx) failed() bool { return t.conn.Conn().PgConn().TxStatus() == 'E' }

// Check reports a transaction left failed by a statement's error, from the
// status the server sent with its last answer.
func (t *Tx) Check() error {
	if t.done {
		return pgx.ErrTxClosed
	}
	if t.broken != nil {
		return t.broken
	}
	if t.deferErr != nil {
		return t.deferErr
	}
	if t.failed() {
		return errors.New("postgres: a statement failed in the transaction and was not rolled back: it can no longer commit")
	}
	return nil
}

// State reads a committed state value in the transaction.
func (t *Tx) State(ctx context.Context, namespace, key string) ([]byte, error) {
	return t.s.readState(ctx, &t.h, namespace, key)
}

// Commit sends w's statements (those Store.Commit sends) in the
// transaction, in one round trip, then commits it. On any error the
// transaction is rolled back and its connection released. As Store.Commit,
// it refuses w with store.ErrRecordClaimLost, before it sends anything,
// when w marks a key whose record claim was lost, or that another owner
// of the Store claims instead of w.MarkOwner; and, under w.MarkOwner,
// check_unclaimed refuses in the transaction, before the marks, a key no
// claim of the Store holds that is claimed elsewhere or marked already:
// the handler's writes are then rolled back with the rest, for another
// run of the record may have made them, or be making them.
func (t *Tx) Commit(ctx context.Context, w *store.Write) error {
	if t.done {
		return commitErr(w, pgx.ErrTxClosed)
	}
	g, err := t.commit(ctx, w)
	t.done = true
	if err != nil {
		// The transaction is failed, or a statement before COMMIT was
		// refused (so COMMIT never ran), or the connection broke: this
		// undoes what is left, and the connection goes back (a broken
		// one is closed by the pool).
		t.rollback(ctx)
	}
	t.release()
	t.s.locks.done(g, w, err == nil)
	if err != nil {
		return commitErr(w, err)
	}
	return nil
}

// release hands the connection back to the pool, which keeps it only if
// no transaction is open on it.
func (t *Tx) release() {
	if t.conn != nil {
		t.conn.Release()
		t.conn = nil
	}
}

func (t *Tx) commit(ctx context.Context, w *store.Write) (*commitGate, error) {
	if err := t.s.enter(); err != nil {
		return nil, err
	}
	if err := t.Check(); err != nil {
		return nil, err
	}
	if len(t.queue) > 0 {
		// The engine flushes before it decides what commits: these came
		// later, from a handler that kept the transaction.
		return nil, errors.New("postgres: statements were deferred after the batch's last flush and never sent")
	}
	b, g, err := t.s.writeBatch(w)
	if err != nil {
		return nil, err
	}
	// COMMIT travels with the writes (and BEGIN, if the handler sent
	// nothing): a statement that fails skips it (the server ignores the
	// rest of the pipeline), and the caller then rolls back.
	switch {
	case !t.begun:
		b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, b.QueuedQueries...)
	case t.s.customPlans:
		// The handler's statements ran with generic plans allowed
		// (beginning); idem's own are planned for the tables as they are.
		b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: "SET LOCAL plan_cache_mode = force_custom_plan"}}, b.QueuedQueries...)
	}
	writes := b.Len()
	b.Queue("COMMIT")
	br := t.conn.SendBatch(ctx, b)
	for range writes {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return g, t.s.batchErr(w, err)
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return g, fmt.Errorf("committing: %w", t.s.dbErr(err))
	}
	if tag.String() != "COMMIT" {
		return g, fmt.Errorf("committing: the server answered %q: %w", tag.String(), pgx.ErrTxCommitRollback)
	}
	return g, nil
}

// Rollback undoes the transaction and releases its connection; after
// Commit or Rollback it does nothing. A rollback that fails (a broken
// connection) still releases the connection, which the pool then closes:
// the server undoes the transaction when the session ends.
func (t *Tx) Rollback(ctx context.Context) error {
	if t.done {
		return nil
	}
	t.done = true
	clear(t.queue)
	t.queue = nil
	err := t.rollback(ctx)
	t.release()
	if err != nil {
		return fmt.Errorf("postgres: rollback: %w", t.s.dbErr(err))
	}
	return nil
}

// rollback sends ROLLBACK when a transaction is open on the connection
// (BEGIN may never have been sent; after a failed COMMIT none is). A
// connection it cannot roll back is closed by the pool on release.
func (t *Tx) rollback(ctx context.Context) error {
	if t.conn == nil || t.conn.Conn().PgConn().TxStatus() == 'I' {
		return nil
	}
	_, err := t.conn.Exec(ctx, "ROLLBACK")
	return err
}
