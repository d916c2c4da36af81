package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// errDead is what a crashed engine's store calls fail with.
var errDead = errors.New("test: the process is dead")

// leaseSpy is one engine's view of a shared store, with faults to inject:
// dead makes every write and claim fail (the process crashed: its lease is
// never released); frozen makes lease renewals hang until thaw is closed
// (the process stalled). It counts commits refused as fenced.
type leaseSpy struct {
	store.Driver
	store.Claims
	dead   atomic.Bool
	frozen atomic.Bool
	thaw   chan struct{}
	fenced atomic.Int32
}

func newLeaseSpy(st store.Driver) *leaseSpy {
	return &leaseSpy{Driver: st, Claims: st.(store.Claims), thaw: make(chan struct{})}
}

func (s *leaseSpy) Commit(ctx context.Context, w *store.Write) error {
	if s.dead.Load() {
		return errDead
	}
	err := s.Driver.Commit(ctx, w)
	if errors.Is(err, store.ErrFenced) {
		s.fenced.Add(1)
	}
	return err
}

func (s *leaseSpy) Claim(ctx context.Context, key store.MarkKey, p store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	if s.dead.Load() {
		return store.Claim{}, errDead
	}
	return s.Claims.Claim(ctx, key, p, lease, now)
}

func (s *leaseSpy) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	if s.dead.Load() {
		return errDead
	}
	if s.frozen.Load() {
		<-s.thaw
	}
	return s.Claims.Extend(ctx, c, until)
}

func (s *leaseSpy) Release(ctx context.Context, c store.Claim) error {
	if s.dead.Load() {
		return errDead
	}
	return s.Claims.Release(ctx, c)
}

// countingHandler adds one to the state key "n/<data>" for every record it
// commits: a count of 1 per record is exactly-once.
func countingHandler(before func(ctx context.Context, r *idem.Record)) idem.Handler {
	return idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		if before != nil {
			before(ctx, r)
		}
		st := idem.StateFrom(ctx)
		key := "n/" + string(r.Data)
		n := 0
		if v, err := st.Get(ctx, key); err == nil {
			n, _ = strconv.Atoi(string(v))
		} else if !errors.Is(err, idem.ErrNotFound) {
			return err
		}
		return st.Put(ctx, key, []byte(strconv.Itoa(n+1)))
	})
}

// runLeasedEngine starts an engine with shard leases over st; stop cancels
// it and waits for Run to return.
func runLeasedEngine(t *testing.T, v *env, st store.Driver, owner string, ttl time.Duration, h idem.Handler) (*engine.Engine, func()) {
	t.Helper()
	e := engine.New(st, engine.WithLogger(testLogger(t)), engine.WithDrainTimeout(2*time.Second), engine.WithShardLeases(owner, ttl))
	m := engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "count", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 1, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 10 * time.Millisecond}
	if err := e.Add(m); err != nil {
		t.Fatal(err)
	}
	stop := startEngine(t, e, owner)
	t.Cleanup(stop)
	return e, stop
}

// startEngine runs e until stop, which cancels it and waits for Run to
// return; stop may be called again, and does nothing then.
func startEngine(t *testing.T, e *engine.Engine, owner string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("engine %s: Run did not return", owner)
		}
	}
}

// allStates reports whether every shard of e is in state.
func allStates(e *engine.Engine, state string) bool {
	ss := e.Status()
	for _, s := range ss {
		if s.State != state {
			return false
		}
	}
	return len(ss) > 0
}

func putN(v *env, from, to int) {
	for i := from; i < to; i++ {
		v.put("s", fmt.Sprintf("key-%d", i), strconv.Itoa(i))
	}
}

// wantCounts checks that each record 0..n-1 committed its state write
// exactly once.
func wantCounts(t *testing.T, st store.Driver, n int) {
	t.Helper()
	for i := range n {
		got, err := st.State(context.Background(), "count", "n/"+strconv.Itoa(i))
		if err != nil || string(got) != "1" {
			t.Errorf("record %d: count = %q, %v; want 1", i, got, err)
		}
	}
}

// TestShardLeaseTakeoverAfterCrash: two engines share a PostgreSQL store
// and one stream. A holds the shards' leases and B waits; A crashes (its
// store calls fail from then on, so it never releases its leases); B takes
// the shards over within the lease's ttl and processes the rest, and every
// record's state write lands exactly once.
func TestShardLeaseTakeoverAfterCrash(t *testing.T) {
	v := newEnv(t)
	pg := storeKinds[1].open(t, v)
	v.stream("s", 2)
	putN(v, 0, 20)
	const ttl = 600 * time.Millisecond

	spyA := newLeaseSpy(pg)
	a, stopA := runLeasedEngine(t, v, spyA, "A", ttl, countingHandler(nil))
	waitFor(t, "A to process the first records", func() bool { return totals(a).Processed == 20 })
	b, stopB := runLeasedEngine(t, v, pg, "B", ttl, countingHandler(nil))
	waitFor(t, "B to wait for A's leases", func() bool { return allStates(b, "leased elsewhere") })

	// More records while A is up; then A crashes mid-stream.
	putN(v, 20, 30)
	spyA.dead.Store(true)
	stopA()
	putN(v, 30, 40)

	waitFor(t, "B to take the shards over", func() bool { return allStates(b, "running") })
	waitFor(t, "all 40 records committed", func() bool {
		cps := map[string]idem.Sequence{}
		for _, s := range b.Status() {
			cps[s.Shard] = s.Checkpoint
		}
		for _, r := range v.records("s") {
			if r.Sequence.Compare(cps[r.ShardID]) > 0 {
				return false
			}
		}
		return true
	})
	stopB()
	wantCounts(t, pg, 40)
}

// TestShardLeaseFencesAStalledOwner: A stalls in its handler with its
// lease renewals stuck too (a long GC pause, a partition); its lease runs
// out and B takes the shard over and processes the records. When A wakes
// up, its commit is refused with ErrFenced: the state its handler wrote
// does not land, A stops processing and waits for the lease again.
func TestShardLeaseFencesAStalledOwner(t *testing.T) {
	v := newEnv(t)
	pg := storeKinds[1].open(t, v)
	v.stream("s", 1)
	putN(v, 0, 2)
	const ttl = 500 * time.Millisecond

	spyA := newLeaseSpy(pg)
	stuck := make(chan struct{})
	wake := make(chan struct{})
	var stalled atomic.Bool
	a, stopA := runLeasedEngine(t, v, spyA, "A", ttl, countingHandler(func(_ context.Context, r *idem.Record) {
		if string(r.Data) == "2" && stalled.CompareAndSwap(false, true) {
			spyA.frozen.Store(true)
			close(stuck)
			<-wake // stalled: deaf to its context too
		}
	}))
	waitFor(t, "A to process the first records", func() bool { return totals(a).Processed == 2 })
	b, stopB := runLeasedEngine(t, v, pg, "B", ttl, countingHandler(nil))
	waitFor(t, "B to wait for A's lease", func() bool { return allStates(b, "leased elsewhere") })

	putN(v, 2, 5)
	<-stuck
	waitFor(t, "B to take the shard over and process the records", func() bool {
		st := b.Status()
		return len(st) == 1 && st[0].State == "running" && st[0].Processed == 5
	})

	// A wakes up: its handler's commit is fenced.
	close(wake)
	waitFor(t, "A's commit to be refused", func() bool { return spyA.fenced.Load() > 0 })
	close(spyA.thaw)
	waitFor(t, "A to wait for the lease again", func() bool { return allStates(a, "leased elsewhere") })
	if st := a.Status()[0]; !strings.Contains(st.LastError, store.ErrFenced.Error()) {
		t.Errorf("A's last error = %q; want the fencing", st.LastError)
	}
	if st := a.Status()[0]; st.Processed != 2 {
		t.Errorf("A processed %d records; want 2 (its third commit was fenced)", st.Processed)
	}
	wantCounts(t, pg, 5)

	// B stops cleanly and releases the lease: A takes over at once and
	// finds nothing left to do.
	stopB()
	waitFor(t, "A to take the shard back", func() bool { return allStates(a, "running") })
	putN(v, 5, 6)
	waitFor(t, "A to process the new record", func() bool { return totals(a).Processed == 6 })
	stopA()
	wantCounts(t, pg, 6)
}

// TestShardLeasesNeedClaims: leases over a store without claims are refused
// by Add.
func TestShardLeasesNeedClaims(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	type noClaims struct{ store.Driver }
	e := engine.New(noClaims{stembedded.New(v.db)}, engine.WithShardLeases("x", time.Second))
	err := e.Add(engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New(countingHandler(nil)), StartingPosition: source.TrimHorizon})
	if err == nil || !strings.Contains(err.Error(), "store.Claims") {
		t.Fatalf("Add = %v; want an error naming store.Claims", err)
	}
}
