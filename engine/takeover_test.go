package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// TestTakenOverClaimIsNotCommitted: a record whose run stalls past its
// claim's lease, while another owner takes the claim over, runs the
// record and commits its mark, commits nothing of that run (the store
// refuses it: store.Write.MarkOwner). The shard runs the window again,
// finds the other run's mark and skips the record: its effects land once,
// the other run's.
func TestTakenOverClaimIsNotCommitted(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testTakenOverClaimIsNotCommitted(t, v)
		})
	}
}

func testTakenOverClaimIsNotCommitted(t *testing.T, v *env) {
	reg := prometheus.NewRegistry()
	v.opts = append(v.opts, engine.WithRegisterer(reg))
	v.stream("orders", 1)
	v.put("orders", "p", `{"id": "order-1"}`)
	var runs atomic.Int32
	h := gofunc.New(idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		runs.Add(1)
		// The stall: another owner takes the claim over once its lease
		// ran out (an hour on, in the claims' own terms), runs the record
		// and commits its mark.
		later := time.Now().Add(time.Hour)
		other := store.MarkKeyOf("owner", "other")
		key := store.MarkKeyOf("ship", r.IdempotencyKey)
		c := &store.RecordClaims{Owner: other, Keys: []store.MarkKey{key}, Now: later, LeaseUntil: later.Add(time.Minute)}
		if err := v.store.ClaimRecords(ctx, c); err != nil || c.Status[0] != store.Acquired {
			t.Errorf("taking the claim over: %v, %v", c.Status, err)
		}
		w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "other", Stream: "orders", Shard: "0"},
			NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(1)},
			Marks:         []store.Mark{{Key: key, Expires: later.Add(24 * time.Hour)}}, MarkOwner: other}
		if err := v.store.Commit(ctx, w); err != nil {
			t.Errorf("the other owner's commit: %v", err)
		}
		return idem.StateFrom(ctx).Put(ctx, r.IdempotencyKey, []byte("stalled run"))
	}))
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "orders", Source: v.source("orders"), Function: "ship", Invoker: h,
		StartingPosition: source.TrimHorizon, KeyExpression: "id"})
	waitFor(t, "the record to be skipped", func() bool { return totals(e).Skipped == 1 })
	if st := totals(e); st.Processed != 0 || runs.Load() != 1 {
		t.Errorf("processed %d, ran %d times; want 0 and once: the other owner's run counts", st.Processed, runs.Load())
	}
	if got, err := v.store.State(context.Background(), "ship", "order-1"); !errors.Is(err, idem.ErrNotFound) {
		t.Errorf("state = %q, %v; want none: the stalled run's commit must not land", got, err)
	}
	if n := shardErrors(t, reg, "claim_lost"); n != 1 {
		t.Errorf("idem_shard_errors_total{cause=\"claim_lost\"} = %v, want 1", n)
	}
}
