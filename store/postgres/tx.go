package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

var _ store.TxDriver = (*Store)(nil)

// savepoint is the one savepoint name records reuse: each record's
// BeginRecord releases the previous record's savepoint and sets its own, in
// one round trip, so the transaction never holds more than one.
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
// The transaction is begun on the first call of a batch, so a handler
// that does not call TxFrom costs nothing. Return every SQL error the
// handler gets (or roll back to a savepoint of its own, tx.Begin): a
// record that leaves the transaction failed fails. The transaction belongs
// to idem: its Commit and Rollback return an error; it must not be kept or
// used after the handler returns, nor from other goroutines concurrently.
//
// Each record that writes uses a savepoint (a subtransaction): PostgreSQL
// slows down for every session while a transaction holds more than 64
// subtransactions that wrote, so keep batchSize at or below 64 for
// mappings that write in most records.
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

// errOwned is what a handler's Commit or Rollback of idem's transaction
// returns.
var errOwned = errors.New("postgres: idem commits and rolls back this transaction itself; return an error to undo the record's writes")

// ownedTx is the pgx.Tx a handler gets: the transaction without its
// Commit and Rollback. Nested transactions (Begin, a savepoint) are the
// handler's to commit or roll back.
type ownedTx struct{ pgx.Tx }

func (ownedTx) Commit(context.Context) error   { return errOwned }
func (ownedTx) Rollback(context.Context) error { return errOwned }

// Tx is a transaction of the Store, as the engine uses it (store.Tx).
type Tx struct {
	s         *Store
	tx        pgx.Tx
	savepoint bool // the savepoint is set
	done      bool
}

// Begin starts a transaction on a connection of the pool, at the
// database's default isolation level (READ COMMITTED unless configured
// otherwise). The caller ends it with Commit or Rollback.
func (s *Store) Begin(ctx context.Context) (store.Tx, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", s.dbErr(err))
	}
	return &Tx{s: s, tx: tx}, nil
}

// Handle returns the transaction as a pgx.Tx whose Commit and Rollback
// refuse: idem ends it.
func (t *Tx) Handle() any { return ownedTx{t.tx} }

// BeginRecord releases the previous record's savepoint, if any, and sets
// record i's, in one round trip.
func (t *Tx) BeginRecord(ctx context.Context, i int) error {
	if t.done {
		return fmt.Errorf("postgres: the batch's record %d: %w", i+1, pgx.ErrTxClosed)
	}
	q := "SAVEPOINT " + savepoint
	if t.savepoint {
		q = "RELEASE SAVEPOINT " + savepoint + "; " + q
	}
	if _, err := t.tx.Exec(ctx, q); err != nil {
		return fmt.Errorf("postgres: savepoint for the batch's record %d: %w", i+1, t.s.dbErr(err))
	}
	t.savepoint = true
	return nil
}

// AbortRecord rolls back to record i's savepoint.
func (t *Tx) AbortRecord(ctx context.Context, i int) error {
	if t.done {
		return fmt.Errorf("postgres: the batch's record %d: %w", i+1, pgx.ErrTxClosed)
	}
	if !t.savepoint {
		return fmt.Errorf("postgres: undoing the batch's record %d: it has no savepoint", i+1)
	}
	if _, err := t.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint); err != nil {
		return fmt.Errorf("postgres: undoing the batch's record %d: %w", i+1, t.s.dbErr(err))
	}
	return nil
}

// Check reports a transaction left failed by a statement's error, from the
// status the server sent with its last answer.
func (t *Tx) Check() error {
	if t.done {
		return pgx.ErrTxClosed
	}
	if t.tx.Conn().PgConn().TxStatus() == 'E' {
		return errors.New("postgres: a statement failed in the transaction and was not rolled back: it can no longer commit")
	}
	return nil
}

// State reads a committed state value in the transaction.
func (t *Tx) State(ctx context.Context, namespace, key string) ([]byte, error) {
	return t.s.readState(ctx, t.tx, namespace, key)
}

// Commit sends w's statements (those Store.Commit sends) in the
// transaction, in one round trip, then commits it. On any error the
// transaction is rolled back and its connection released.
func (t *Tx) Commit(ctx context.Context, w *store.Write) error {
	if t.done {
		return commitErr(w, pgx.ErrTxClosed)
	}
	err := t.commit(ctx, w)
	t.done = true
	if err != nil {
		// After a failed COMMIT pgx has ended the transaction already;
		// otherwise this undoes it. Either way the connection goes back.
		_ = t.tx.Rollback(ctx)
		return commitErr(w, err)
	}
	return nil
}

func (t *Tx) commit(ctx context.Context, w *store.Write) error {
	if err := t.s.enter(); err != nil {
		return err
	}
	if err := t.Check(); err != nil {
		return err
	}
	b, err := t.s.writeBatch(w)
	if err != nil {
		return err
	}
	if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
		return t.s.batchErr(w, err)
	}
	if err := t.tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing: %w", t.s.dbErr(err))
	}
	return nil
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
	if err := t.tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("postgres: rollback: %w", t.s.dbErr(err))
	}
	return nil
}
