package engine_test

import (
	"context"
	"errors"
	"strconv"
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

// failOnce fails the first write of the state key victim, every attempt
// of it, so that the engine gives the commit up: the first attempt either
// writes nothing (lost) or lands although the caller hears an error
// (landed, as when a connection drops during COMMIT).
type failOnce struct {
	store.Driver
	victim string
	landed bool
	fired  atomic.Bool
	done   atomic.Bool // the engine gave the failing write up
	seen   atomic.Int32
}

// attempts is how many times the engine tries one write.
const attempts = 5

func (f *failOnce) Commit(ctx context.Context, w *store.Write) error {
	hit := false
	for _, op := range w.State {
		hit = hit || op.Key == f.victim
	}
	if !hit || f.done.Load() {
		return f.Driver.Commit(ctx, w)
	}
	f.fired.Store(true)
	if f.seen.Add(1) == 1 && f.landed {
		if err := f.Driver.Commit(ctx, w); err != nil {
			return err
		}
	}
	if f.seen.Load() >= attempts {
		f.done.Store(true)
	}
	return errors.New("test: connection lost during commit")
}

// TestFailedCommitUnderParallelization: with parallelizationFactor 2, a
// shard's two key groups commit separately. When one group's commit fails,
// the other must not move the checkpoint over the failed records (they
// would be lost), nor commit progress that forgets them if the failed
// commit landed after all (they would run twice): every record's state
// write lands exactly once.
func TestFailedCommitUnderParallelization(t *testing.T) {
	for _, landed := range []bool{false, true} {
		t.Run(map[bool]string{false: "commit lost", true: "commit landed"}[landed], func(t *testing.T) {
			v := newEnv(t)
			v.stream("s", 1)
			const n = 40
			for i := range n {
				v.put("s", "key-"+strconv.Itoa(i%4), strconv.Itoa(i))
			}
			st := &failOnce{Driver: stembedded.New(v.db), victim: "n/5", landed: landed}
			v.store = st
			slow := countingHandler(func(ctx context.Context, r *idem.Record) {
				// Spread the commits out, so that both groups keep
				// committing after the failure.
				time.Sleep(2 * time.Millisecond)
			})
			e, _ := v.run(engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "count", Invoker: gofunc.New(slow),
				StartingPosition: source.TrimHorizon, BatchSize: 1, ParallelizationFactor: 2,
				RetryBaseDelay: time.Millisecond, RetryMaxDelay: 10 * time.Millisecond})
			waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(n) })
			if !st.fired.Load() {
				t.Fatal("the commit of record 5 never failed")
			}
			wantCounts(t, st, n)
		})
	}
}
