package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// txDriver returns the store's transactions when a mapping's handlers can
// write in them: a store.TxDriver, and an in-process function.
func txDriver(st store.Driver, fn function.Driver) store.TxDriver {
	txd, ok := st.(store.TxDriver)
	if !ok {
		return nil
	}
	if ip, ok := fn.(function.InProcess); !ok || !ip.InProcess() {
		return nil
	}
	return txd
}

// rollbackTimeout bounds a rollback, which runs even when the engine's
// context is done: a connection must never stay in a transaction.
const rollbackTimeout = 10 * time.Second

// errTxEnded is what a handler gets for a transaction it uses after its
// invocation ended.
var errTxEnded = errors.New("engine: the invocation's transaction has ended")

// invocationTx is one invocation's store transaction as its handler sees it
// (idem.Transaction). The store.Tx begins at the handler's first
// idem.TxFrom or Batch.Tx: an invocation that writes no SQL holds no
// connection and commits through store.Commit, as without transactions.
// Once begun, every record runs under a savepoint of its own, so that a
// record that fails is undone alone.
//
// Savepoints and the end use the engine's context, work, which outlives the
// handler's deadline: undoing a record that timed out must still happen.
type invocationTx struct {
	drv  store.TxDriver
	work context.Context

	mu    sync.Mutex
	tx    store.Tx // nil until the handler asks
	rec   int      // the record running; -1 between records
	sp    int      // the record whose savepoint is set; -1 none
	whole bool     // written through Batch.Tx: the batch commits whole or not at all
	err   error    // why the transaction can no longer commit what it holds
	done  bool     // the invocation ended: the transaction is the engine's
}

func newInvocationTx(drv store.TxDriver, work context.Context) *invocationTx {
	return &invocationTx{drv: drv, work: work, rec: -1, sp: -1}
}

var _ idem.Transaction = (*invocationTx)(nil)

// Handle begins the transaction on first use, and record i's savepoint.
func (t *invocationTx) Handle(ctx context.Context, i int) (any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.done:
		return nil, errTxEnded
	case t.err != nil:
		return nil, t.err
	case i >= 0 && i != t.rec:
		return nil, fmt.Errorf("engine: the transaction of the batch's record %d is used outside that record's handler call", i+1)
	}
	if t.tx == nil {
		tx, err := t.drv.Begin(ctx)
		if err != nil {
			return nil, err
		}
		t.tx = tx
	}
	if i < 0 {
		t.whole = true
	} else if t.sp != i {
		if err := t.tx.BeginRecord(t.work, i); err != nil {
			t.err = err
			return nil, err
		}
		t.sp = i
	}
	return t.tx.Handle(), nil
}

// BeginRecord marks record i as running. Its savepoint is set only when
// it first asks for the transaction (Handle): a record that writes no SQL
// costs no round trip. A record that writes through a handle an earlier
// record obtained, without asking for its own, writes outside any
// savepoint of its own: if it fails, its writes cannot be told from the
// record's before it (README: get the transaction with TxFrom in each
// record).
func (t *invocationTx) BeginRecord(_ context.Context, i int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return errTxEnded
	}
	t.rec = i
	return t.err
}

// EndRecord fails a record that left the transaction unable to commit,
// and any record that ran after a held-back statement of its own or of
// an earlier record failed (store.DeferTx): its writes were refused.
func (t *invocationTx) EndRecord(context.Context, int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rec = -1
	if t.err != nil {
		return t.err
	}
	if t.tx == nil || t.done {
		return nil
	}
	if dt, ok := t.tx.(store.DeferTx); ok {
		if _, err := dt.FlushFailure(); err != nil {
			return err
		}
	}
	return t.tx.Check()
}

var _ idem.Flusher = (*invocationTx)(nil)

// Flush sends the statements the handler held back (store.DeferTx), for
// idem.RecordFunc and for the engine itself, before it judges the
// invocation.
func (t *invocationTx) Flush(ctx context.Context) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return -1, errTxEnded
	}
	dt, ok := t.tx.(store.DeferTx)
	if !ok { // not begun, or a store that holds nothing back
		return -1, nil
	}
	return dt.Flush(ctx, t.rec)
}

// AbortRecord rolls back to record i's savepoint. When it cannot, the
// transaction holds writes of a failed record: it must not commit.
func (t *invocationTx) AbortRecord(_ context.Context, i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rec = -1
	if t.tx == nil || t.err != nil || t.done {
		return
	}
	if t.sp != i {
		return // the record never asked for the transaction: nothing of it to undo
	}
	if err := t.tx.AbortRecord(t.work, i); err != nil {
		t.err = err
	}
}

// state reads committed state in the transaction once it has begun, so a
// handler holding its connection needs no second one; ok is false when the
// read must go to the store.
func (t *invocationTx) state(ctx context.Context, namespace, key string) (v []byte, err error, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tx == nil || t.done || t.err != nil {
		return nil, nil, false
	}
	v, err = t.tx.State(ctx, namespace, key)
	return v, err, true
}

// judge applies the transaction's rules to an invocation's outcome: a
// handler that left the transaction failed, or that wrote through
// Batch.Tx and reported a partial failure, failed its whole batch, since
// its writes cannot be split by record.
func (t *invocationTx) judge(out outcome, n int) outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tx == nil || out.failedAt == n || t.err != nil {
		// Nothing written, nothing committed, or a transaction that can
		// no longer commit: its commit fails and the shard restarts.
		return out
	}
	if dt, ok := t.tx.(store.DeferTx); ok {
		// A held-back statement that failed fails its record, as a
		// function error there would (idem.RecordFunc reports it so
		// already), or the whole batch when it was the batch's.
		if k, err := dt.FlushFailure(); err != nil {
			conflict := isConflict(t.drv, err)
			if k < 0 || k >= n || t.whole {
				return outcome{failedAt: n, errType: "Function.TransactionFailed", errMsg: err.Error(), permanent: out.permanent, conflict: conflict}
			}
			if out.failedAt < 0 || k < out.failedAt {
				out = outcome{failedAt: k, errType: "Function.TransactionFailed", errMsg: err.Error(), conflict: conflict}
			}
		}
	}
	if err := t.tx.Check(); err != nil {
		return outcome{failedAt: n, errType: "Function.TransactionFailed", errMsg: err.Error(), permanent: out.permanent}
	}
	if t.whole && out.failedAt > 0 {
		return outcome{failedAt: n, errType: "Function.PartialBatchInTransaction",
			errMsg:    fmt.Sprintf("the handler wrote through the batch's transaction and reported record %d of %d failed: the whole batch's writes are undone", out.failedAt+1, n),
			permanent: out.permanent}
	}
	return out
}

// end ends the invocation's use of the transaction: later calls of the
// handler's fail. It returns the store.Tx, nil if it never began, for the
// caller to commit or roll back, and why it cannot commit, if so.
func (t *invocationTx) end() (store.Tx, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	tx := t.tx
	t.tx = nil
	return tx, t.err
}

// rollback ends the transaction, undoing every write of the invocation.
func (t *invocationTx) rollback() {
	if tx, _ := t.end(); tx != nil {
		rollback(t.work, tx)
	}
}

// rollback rolls tx back even when ctx is done. A rollback that fails
// closes the connection, which ends the transaction on the server.
func rollback(ctx context.Context, tx store.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}
