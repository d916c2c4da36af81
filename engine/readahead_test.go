package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// readsSeen is a source that tells when a Read after a given position
// starts.
type readsSeen struct {
	source.Driver
	mu     sync.Mutex
	after  map[idem.Sequence]chan struct{}
	closed map[idem.Sequence]bool
}

// started returns a channel closed once a Read after the position starts.
func (r *readsSeen) started(after idem.Sequence) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.channel(after)
}

func (r *readsSeen) channel(after idem.Sequence) chan struct{} {
	ch, ok := r.after[after]
	if !ok {
		ch = make(chan struct{})
		r.after[after] = ch
	}
	return ch
}

func (r *readsSeen) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	r.mu.Lock()
	if !r.closed[after] {
		r.closed[after] = true
		close(r.channel(after))
	}
	r.mu.Unlock()
	return r.Driver.Read(ctx, shard, after, limit, maxBytes)
}

// TestReadsAheadWhileProcessing: a shard's next records are read while its
// function still runs over the last batch, and every record is processed
// once, in order, all the same.
func TestReadsAheadWhileProcessing(t *testing.T) {
	v := newEnv(t)
	recs := v.numbered("s", 30)
	src := &readsSeen{Driver: v.source("s"), after: make(map[idem.Sequence]chan struct{}), closed: make(map[idem.Sequence]bool)}
	var mu sync.Mutex
	var got []string
	var aheadSeen []bool
	h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		last := b.Records[len(b.Records)-1].Sequence
		seen := false
		select {
		case <-src.started(last):
			seen = true
		case <-time.After(10 * time.Second):
		}
		mu.Lock()
		defer mu.Unlock()
		aheadSeen = append(aheadSeen, seen)
		for _, r := range b.Records {
			got = append(got, string(r.Data))
		}
		return idem.BatchResult{}, nil
	})
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "s", Source: src, Function: "f", Invoker: gofunc.New(h),
		BatchSize: 10, StartingPosition: source.TrimHorizon})
	waitFor(t, "all 30 processed", func() bool { return totals(e).Processed == 30 })
	mu.Lock()
	defer mu.Unlock()
	for i, d := range got {
		if d != fmt.Sprint(i) {
			t.Fatalf("processed %q, want records 0 to 29 once each, in order", got)
		}
	}
	for i, seen := range aheadSeen {
		if !seen {
			t.Errorf("batch %d (after %s): no Read of the records after it while it ran", i, recs[10*i+9].Sequence)
		}
	}
}

// waitHeld is a source whose Wait after a given position tells that it
// started, then waits for a go-ahead before waiting on the stream.
type waitHeld struct {
	source.Driver
	after   idem.Sequence
	waiting chan struct{} // closed at the first Wait after after
	release chan struct{}
	once    sync.Once
}

func (w *waitHeld) Wait(ctx context.Context, shard string, after idem.Sequence) error {
	if after == w.after {
		w.once.Do(func() { close(w.waiting) })
		select {
		case <-w.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return w.Driver.Wait(ctx, shard, after)
}

// TestLossWithinBatchingWindowReported: records trimmed while a batching
// window gathers records are reported lost, not stepped over: the read that
// found them gone ends the gathering, and the next read, from the
// checkpoint, reports them.
func TestLossWithinBatchingWindowReported(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	v.put("s", "k", "0", "1", "2")
	first := v.records("s")
	src := &waitHeld{Driver: v.source("s"), after: first[2].Sequence, waiting: make(chan struct{}), release: make(chan struct{})}
	var mu sync.Mutex
	var got []string
	h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records {
			got = append(got, string(r.Data))
		}
		return idem.BatchResult{}, nil
	})
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "s", Source: src, Function: "f", Invoker: gofunc.New(h),
		BatchSize: 100, MaximumBatchingWindow: time.Second, StartingPosition: source.TrimHorizon})
	select {
	case <-src.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the mapping never waited for more records after the first three")
	}
	v.put("s", "k", "3", "4", "5")
	all := v.records("s")
	if err := v.db.TrimThrough(context.Background(), "s", all[0].ShardID, all[4].Sequence); err != nil {
		t.Fatal(err)
	}
	close(src.release)
	waitFor(t, "4 processed and 2 lost", func() bool { s := totals(e); return s.Processed == 4 && s.Lost == 2 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[0 1 2 5]" {
		t.Fatalf("processed %q, want 0 1 2 5", got)
	}
}
