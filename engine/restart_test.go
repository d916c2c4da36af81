package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// cutReads is a source whose every third read before last fails, as
// when the connection to a stream's broker is cut now and then.
type cutReads struct {
	source.Driver
	last  idem.Sequence
	reads atomic.Int32
}

func (c *cutReads) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if after.Compare(c.last) < 0 && c.reads.Add(1)%3 == 0 {
		return source.ReadResult{}, errors.New("test: connection cut")
	}
	return c.Driver.Read(ctx, shard, after, limit, maxBytes)
}

// restarts collects the failures count of each "shard stopped" log.
type restarts struct {
	slog.Handler
	mu     sync.Mutex
	counts []int64
}

func (r *restarts) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "shard stopped; restarting from its last checkpoint" {
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "failures" {
				r.mu.Lock()
				r.counts = append(r.counts, a.Value.Int64())
				r.mu.Unlock()
			}
			return true
		})
	}
	return nil
}

func (r *restarts) Enabled(context.Context, slog.Level) bool { return true }

func (r *restarts) WithAttrs([]slog.Attr) slog.Handler { return r }

// TestRestartBackoffStartsAgainAfterProgress: a shard whose reads fail now
// and then, and which commits between the failures, restarts each time
// after the first step of its backoff, not after a wait that grew with
// every failure since it started.
func TestRestartBackoffStartsAgainAfterProgress(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	const n = 30
	for i := range n {
		v.put("s", "k", strconv.Itoa(i))
	}
	log := &restarts{Handler: slog.DiscardHandler}
	v.opts = append(v.opts, engine.WithLogger(slog.New(log)))
	h := gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	e, stop := v.run(engine.Mapping{Name: "m", Stream: "s", Source: &cutReads{Driver: v.source("s"), last: idem.SequenceOf(n)}, Function: "f", Invoker: h,
		StartingPosition: source.TrimHorizon, BatchSize: 1, RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(n) })
	stop()
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.counts) < 3 {
		t.Fatalf("%d restarts, want several: the reads did not fail as planned", len(log.counts))
	}
	for i, c := range log.counts {
		if c != 1 {
			t.Fatalf("restart %d counted %d failures in a row, want 1: the shard committed before each (all: %v)", i+1, c, log.counts)
		}
	}
}
