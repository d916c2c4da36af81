package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/postgres"
)

// TestShardStopEndsRecordClaims: on PostgreSQL, whose record claims stay
// with the process that took them, a shard that stops in the middle of a
// batch ends the claims of its window (store.RecordClaimReleaser): another
// process (a second Store over the same schema) takes the record's key at
// once, not when the claim's lease of two function timeouts ends.
func TestShardStopEndsRecordClaims(t *testing.T) {
	v := newEnv(t)
	pg := storeKinds[1].open(t, v).(*postgres.Store)
	v.store = pg
	v.stream("orders", 1)
	v.put("orders", "p", `{"id": "order-1"}`)
	started := make(chan struct{}, 1)
	block := gofunc.New(idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return idem.BatchResult{}, ctx.Err()
	}))
	_, stop := v.run(engine.Mapping{Name: "m", Stream: "orders", Source: v.source("orders"), Function: "ship", Invoker: block,
		StartingPosition: source.TrimHorizon, KeyExpression: "id", FunctionTimeout: 10 * time.Minute})
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("the record never ran")
	}
	stop()

	other, err := postgres.New(context.Background(), testsvc.PostgresDSN(t), postgres.WithSchema(pg.Schema()), postgres.WithPurgeInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	key := store.MarkKeyOf("ship", "order-1")
	deadline := time.Now().Add(time.Minute) // the lease is over 20 minutes
	for {
		now := time.Now()
		c := &store.RecordClaims{Owner: store.MarkKeyOf("owner", "other"), Keys: []store.MarkKey{key}, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
		if err := other.ClaimRecords(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		if c.Status[0] == store.Acquired {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped shard's claim still holds the key: %v", c.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
