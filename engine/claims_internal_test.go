package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// TestRenewedClaimSkipsWhatCompletedMeanwhile: a window's records are
// claimed together (here two batches of one partition key under
// parallelizationFactor 2), but a batch's retries renew only that batch's claims.
// When they run long, the claims of the window's later batches run out,
// and another shard with the same payload key takes the key, runs it and
// marks it completed (which ends its claim). Renewing the later batch's
// claim must then find the mark, not run the key a second time.
func TestRenewedClaimSkipsWhatCompletedMeanwhile(t *testing.T) {
	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateStream("orders", 1, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put(context.Background(), "orders", []pebbledb.PutRecord{
		{PartitionKey: "p", Data: []byte(`{"id":"A"}`)},
		{PartitionKey: "p", Data: []byte(`{"id":"K"}`)},
	}); err != nil {
		t.Fatal(err)
	}
	src, err := srcembedded.New(db, "orders")
	if err != nil {
		t.Fatal(err)
	}
	st := stembedded.New(db)

	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	var mu sync.Mutex
	runs := map[string]int{}
	kMark := store.MarkKeyOf("ship", "K")
	fn := gofunc.New(idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		mu.Lock()
		runs[r.IdempotencyKey]++
		n := runs[r.IdempotencyKey]
		mu.Unlock()
		if r.IdempotencyKey != "A" || n > 1 {
			return nil
		}
		// A's retries take longer than the window's claims: time passes,
		// and another shard (another owner) runs K and completes it.
		clock.Add(int64(10 * time.Minute))
		t0 := now()
		other := store.RecordClaims{Owner: store.MarkKeyOf("\x00owner", "other shard"), Keys: []store.MarkKey{kMark},
			Marks: true, Now: t0, LeaseUntil: t0.Add(time.Minute)}
		if err := st.ClaimRecords(ctx, &other); err != nil {
			return err
		}
		if other.Held() != 1 || other.Status[0] != store.Acquired {
			t.Errorf("the other shard could not claim K: %v", other.Status)
			return nil
		}
		w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "orders", Shard: "other"},
			NewCheckpoint: store.Checkpoint{Sequence: "1"},
			Marks:         []store.Mark{{Key: kMark, Expires: t0.Add(24 * time.Hour)}}}
		if err := st.Commit(ctx, w); err != nil {
			return err
		}
		return errors.New("A fails once")
	}))

	e := New(st)
	e.now = now
	if err := e.Add(Mapping{Name: "m", Stream: "orders", Source: src, Function: "ship", Invoker: fn,
		StartingPosition: source.TrimHorizon, KeyExpression: "id", BatchSize: 1, ParallelizationFactor: 2,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var resolved uint64
		for _, s := range e.Status() {
			resolved += s.Processed + s.Skipped
		}
		if resolved == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records not resolved: %+v", e.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs["K"] != 0 {
		t.Errorf("K ran %d times here after another shard completed it", runs["K"])
	}
}
