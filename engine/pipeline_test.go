package engine_test

import (
	"context"
	"sync"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// mirrored is a source that records the checkpoints the engine mirrors.
type mirrored struct {
	source.Driver
	mu   sync.Mutex
	last idem.Sequence
}

func (m *mirrored) MirrorCheckpoint(_ string, after idem.Sequence) {
	m.mu.Lock()
	m.last = after
	m.mu.Unlock()
}

// TestPipelinedCommitsDurableAtStop: with the embedded store a shard's
// commits sync in the background while it goes on, and by the time the
// engine stops every one is durable (the checkpoint survives reopening the
// store) and mirrored.
func TestPipelinedCommitsDurableAtStop(t *testing.T) {
	v := newEnv(t)
	recs := v.numbered("s", 50)
	last := recs[len(recs)-1].Sequence
	src := &mirrored{Driver: v.source("s")}
	h := idem.HandlerFunc(func(context.Context, *idem.Batch) (idem.BatchResult, error) { return idem.BatchResult{}, nil })
	e, stop := v.run(engine.Mapping{Name: "m", Stream: "s", Source: src, Function: "f", Invoker: gofunc.New(h),
		BatchSize: 5, StartingPosition: source.TrimHorizon})
	waitFor(t, "all 50 processed", func() bool { return totals(e).Processed == 50 })
	stop()
	src.mu.Lock()
	mirroredLast := src.last
	src.mu.Unlock()
	if mirroredLast != last {
		t.Errorf("mirrored checkpoint at the stop = %q, want %q", mirroredLast, last)
	}
	if err := v.db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebbledb.Open(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cp, ok, err := db.Checkpoint(context.Background(), store.CheckpointKey{Mapping: "m", Stream: "s", Shard: recs[0].ShardID})
	if err != nil || !ok || cp.Sequence != last || cp.Processed != 50 {
		t.Fatalf("checkpoint after reopening = %+v, %v, %v; want %s with 50 processed", cp, ok, err, last)
	}
}
