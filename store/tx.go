package store

import "context"

// TxDriver is a store whose Commit is a database transaction that an
// in-process handler can write in: the handler's own SQL then commits if and
// only if the records it wrote for commit, in the same transaction as their
// completion and the checkpoint. The PostgreSQL store is one.
//
// The engine uses it only for in-process functions (function.InProcess),
// and begins a Tx only when the handler asks for it (idem.TxFrom); every
// other write goes through Driver.Commit.
type TxDriver interface {
	Driver
	// Begin starts a transaction on a connection of its own. The caller
	// must end it with Commit or Rollback, on every path: until then it
	// holds a connection, and Close waits for it.
	Begin(ctx context.Context) (Tx, error)
}

// Tx is a transaction of a TxDriver, used by one goroutine at a time.
//
// Records run in order, each after BeginRecord and, when it fails, undone
// by AbortRecord: a record's writes are undone without undoing the records
// before it. A Tx whose BeginRecord or AbortRecord failed can no longer
// commit what it holds: the caller must roll it back.
type Tx interface {
	// Handle returns what a handler writes with: a pgx.Tx for PostgreSQL.
	// It must not be used after Commit or Rollback.
	Handle() any

	// BeginRecord marks the start of record i (a savepoint): AbortRecord(i)
	// undoes everything written after it. It forgets the mark of the record
	// before.
	BeginRecord(ctx context.Context, i int) error

	// AbortRecord undoes what was written since BeginRecord(i), and clears
	// a failed statement's error state, so that the transaction can commit
	// the records before i.
	AbortRecord(ctx context.Context, i int) error

	// Check reports, without a round trip, an error when a statement
	// failed in the transaction and was not undone (by AbortRecord or a
	// savepoint of the handler's own): such a transaction cannot commit.
	Check() error

	// State returns the committed value of key in namespace, as
	// Driver.State does, read in the transaction: a handler that holds the
	// transaction's connection needs no second one to read its state.
	State(ctx context.Context, namespace, key string) ([]byte, error)

	// Commit applies w in the transaction, with the same rules as
	// Driver.Commit (including an error wrapping ErrCheckpointBackwards),
	// and commits. On error nothing of the transaction is applied, unless
	// the connection broke during the final commit, when the outcome is
	// unknown, as with any database. The Tx is finished either way: it
	// must not be committed again.
	Commit(ctx context.Context, w *Write) error

	// Rollback undoes the whole transaction and releases its connection.
	// After Commit or Rollback it does nothing and returns nil.
	Rollback(ctx context.Context) error
}

// DeferTx is a Tx that can hold a handler's statements back and send many
// records' in one round trip (postgres.Defer), rather than one round trip
// per statement. The statements are sent, in order, at Flush, and before
// any statement the handler waits for. The engine flushes before it
// judges an invocation, and idem.RecordFunc when its records have run.
type DeferTx interface {
	Tx

	// Flush sends the statements held back and returns the first that
	// failed: the index of its record (BeginRecord's i; -1 for a statement
	// of the whole batch, or when the transaction can no longer commit)
	// and its error; (-1, nil) when all succeeded or none was held back.
	// When record k's statement failed, the transaction holds the writes
	// of the records before k and none of k's or of any later record's,
	// and refuses every later statement. Once a flush failed, Flush
	// returns that failure again without a round trip.
	//
	// running is the record still running, -1 if none: it may yet fail,
	// so its statements are sent under its own savepoint, for
	// AbortRecord to undo.
	Flush(ctx context.Context, running int) (rec int, err error)

	// FlushFailure returns, without a round trip, the failure an earlier
	// Flush found, as Flush returned it; (-1, nil) if none did.
	FlushFailure() (rec int, err error)
}
