package engine

import (
	"context"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// batchState is the state one invocation sees: committed values from the
// store under an overlay of the batch's own writes, with each record's writes
// logged apart so that only the records that commit carry theirs into the
// Write.
type batchState struct {
	st        store.Driver
	namespace string
	overlay   map[string]*store.StateOp // latest write per key in the batch
	ops       [][]store.StateOp         // per record, in order; nil until a write
	n         int                       // records in the batch
	// tx is the invocation's store transaction, when the handler may write
	// in it; its commit carries this state.
	tx *invocationTx
}

// rollback undoes the invocation's transaction, if it has one.
func (b *batchState) rollback() {
	if b != nil && b.tx != nil {
		b.tx.rollback()
	}
}

func newBatchState(st store.Driver, namespace string, n int) (*batchState, []idem.State) {
	b := &batchState{st: st, namespace: namespace, n: n}
	// One allocation for all views: most batches never touch state, and a
	// batch of ten thousand records would otherwise allocate as many.
	rs := make([]recordState, n)
	views := make([]idem.State, n)
	for i := range views {
		rs[i] = recordState{b: b, i: i}
		views[i] = &rs[i]
	}
	return b, views
}

// appendCommitted adds the writes of records [0, n) to w, in order.
func (b *batchState) appendCommitted(w *store.Write, n int) {
	if b.overlay == nil {
		return // nothing written
	}
	for i := 0; i < n && i < len(b.ops); i++ {
		w.State = append(w.State, b.ops[i]...)
	}
}

// recordState is record i's view.
type recordState struct {
	b *batchState
	i int
}

func (s *recordState) Get(ctx context.Context, key string) ([]byte, error) {
	if op, ok := s.b.overlay[key]; ok {
		if op.Delete {
			return nil, idem.ErrNotFound
		}
		return append([]byte(nil), op.Value...), nil
	}
	if s.b.tx != nil {
		if v, err, ok := s.b.tx.state(ctx, s.b.namespace, key); ok {
			return v, err
		}
	}
	return s.b.st.State(ctx, s.b.namespace, key)
}

func (s *recordState) Put(_ context.Context, key string, value []byte) error {
	s.write(store.StateOp{Namespace: s.b.namespace, Key: key, Value: append([]byte(nil), value...)})
	return nil
}

func (s *recordState) Delete(_ context.Context, key string) error {
	s.write(store.StateOp{Namespace: s.b.namespace, Key: key, Delete: true})
	return nil
}

func (s *recordState) write(op store.StateOp) {
	if s.b.overlay == nil {
		s.b.overlay = make(map[string]*store.StateOp)
		s.b.ops = make([][]store.StateOp, s.b.n)
	}
	s.b.ops[s.i] = append(s.b.ops[s.i], op)
	o := op
	s.b.overlay[op.Key] = &o
}
