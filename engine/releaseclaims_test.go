package engine_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

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
	v, pg := oneOrder(t)
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

// TestPayloadKeysAcrossProcesses: two engines, each over its own Store of
// one PostgreSQL schema (two processes), run two mappings of one scope
// over one stream whose every payload key comes twice, in two shards: four
// claimers race for each key, two of them in each process. Every key runs
// exactly once in all, and each mapping resolves every record.
func TestPayloadKeysAcrossProcesses(t *testing.T) {
	v := newEnv(t)
	pg1 := storeKinds[1].open(t, v).(*postgres.Store)
	pg2, err := postgres.New(context.Background(), testsvc.PostgresDSN(t), postgres.WithSchema(pg1.Schema()), postgres.WithPurgeInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg2.Close)
	const keys, shards = 300, 4
	v.stream("orders", shards)
	// Two partition keys of different shards, found by putting a probe
	// record under each of a few.
	pks := make([]string, 0, 2)
	for i := 0; len(pks) < 2; i++ {
		if i == 64 {
			t.Fatal("no two partition keys of different shards")
		}
		pk := fmt.Sprint("pk-", i)
		v.put("orders", pk, `{"id": "probe"}`)
		if len(pks) == 0 || shardOf(v, pk) != shardOf(v, pks[0]) {
			pks = append(pks, pk)
		}
	}
	var mu sync.Mutex
	runs := map[string]int{}
	count := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		mu.Lock()
		runs[r.IdempotencyKey]++
		mu.Unlock()
		time.Sleep(100 * time.Microsecond) // so that the claimers' windows overlap
		return nil
	}))
	mapping := func(name string) engine.Mapping {
		return engine.Mapping{Name: name, Stream: "orders", Source: v.source("orders"), Function: "ship", Invoker: count,
			StartingPosition: source.TrimHorizon, KeyExpression: "id", Scope: "orders", BatchSize: 10}
	}
	v.store = pg1
	e1, _ := v.run(mapping("a"))
	v.store = pg2
	e2, _ := v.run(mapping("b"))
	// The records go in while both engines read.
	for i := range keys {
		for _, pk := range pks {
			v.put("orders", pk, fmt.Sprintf(`{"id": "order-%d"}`, i))
		}
	}
	total := len(v.records("orders"))
	waitFor(t, "both mappings to resolve every record", func() bool {
		t1, t2 := totals(e1), totals(e2)
		return t1.Processed+t1.Skipped == uint64(total) && t2.Processed+t2.Skipped == uint64(total)
	})
	t.Logf("a: %+v; b: %+v", totals(e1), totals(e2))
	mu.Lock()
	defer mu.Unlock()
	for k, n := range runs {
		if n != 1 && k != "probe" {
			t.Errorf("key %s ran %d times", k, n)
		}
	}
	if len(runs) != keys+1 {
		t.Errorf("%d keys ran, want %d", len(runs), keys+1)
	}
}

// shardOf returns the shard the last record put under pk went to.
func shardOf(v *env, pk string) string {
	recs := v.records("orders")
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].PartitionKey == pk {
			return recs[i].ShardID
		}
	}
	return ""
}

// TestLostClaimIsRunAgain: when the lock session holding a record's claim
// ends while the record runs (here the server ends it), the commit is
// refused, for another process may have run the record meanwhile, and the
// shard runs it again under a new claim: its state write commits once.
// The Store learns of the loss before the commit (through another owner's
// claim), or only from the commit's gate.
func TestLostClaimIsRunAgain(t *testing.T) {
	for _, noticed := range []bool{true, false} {
		t.Run(fmt.Sprintf("noticed=%v", noticed), func(t *testing.T) { testLostClaimIsRunAgain(t, noticed) })
	}
}

func testLostClaimIsRunAgain(t *testing.T, noticed bool) {
	v, pg := oneOrder(t)
	reg := prometheus.NewRegistry()
	v.opts = append(v.opts, engine.WithRegisterer(reg))
	var runs atomic.Int32
	h := gofunc.New(idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		if runs.Add(1) == 1 {
			var ended bool
			conn, err := pgx.Connect(ctx, testsvc.PostgresDSN(t))
			if err == nil {
				err = conn.QueryRow(ctx, "SELECT coalesce(bool_and(pg_terminate_backend(pid, 60000)), false) FROM pg_stat_activity WHERE application_name = $1",
					postgres.LockSessionName(pg.Schema())).Scan(&ended)
				conn.Close(ctx)
			}
			if err != nil || !ended {
				t.Errorf("ending the lock session: %v, %v", ended, err)
			}
			now := time.Now()
			other := &store.RecordClaims{Owner: store.MarkKeyOf("owner", "other"), Keys: []store.MarkKey{store.MarkKeyOf("ship", "other")},
				Now: now, LeaseUntil: now.Add(time.Minute)}
			if noticed && pg.ClaimRecords(ctx, other) == nil {
				t.Error("the claim after the lock session ended did not report it")
			}
		}
		st := idem.StateFrom(ctx)
		n := 0
		if b, err := st.Get(ctx, r.IdempotencyKey); err == nil {
			n, _ = strconv.Atoi(string(b))
		}
		return st.Put(ctx, r.IdempotencyKey, []byte(strconv.Itoa(n+1)))
	}))
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "orders", Source: v.source("orders"), Function: "ship", Invoker: h,
		StartingPosition: source.TrimHorizon, KeyExpression: "id"})
	waitFor(t, "the record to commit", func() bool { return totals(e).Processed == 1 })
	if n := runs.Load(); n < 2 {
		t.Errorf("the record ran %d times, want again after its claim was lost", n)
	}
	got, err := pg.State(context.Background(), "ship", "order-1")
	if err != nil || string(got) != "1" {
		t.Fatalf("state = %q, %v; want 1, committed once", got, err)
	}
	if n := shardErrors(t, reg, "claim_lost"); n != 1 {
		t.Errorf("idem_shard_errors_total{cause=\"claim_lost\"} = %v, want 1", n)
	}
}

// shardErrors returns idem_shard_errors_total for cause in reg.
func shardErrors(t *testing.T, reg *prometheus.Registry, cause string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "idem_shard_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cause" && l.GetValue() == cause {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// oneOrder makes an engine environment over a PostgreSQL store, with a
// stream of one shard that holds one order, {"id": "order-1"}.
func oneOrder(t *testing.T) (*env, *postgres.Store) {
	v := newEnv(t)
	pg := storeKinds[1].open(t, v).(*postgres.Store)
	v.store = pg
	v.stream("orders", 1)
	v.put("orders", "p", `{"id": "order-1"}`)
	return v, pg
}
