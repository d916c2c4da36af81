package engine_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

const (
	parentShard = "shardId-000000000000"
	childShard  = "shardId-000000000001"
)

// expiredParentSource is an embedded stream of two shards seen as a Kinesis
// stream after a split whose parent expired: Shards lists only the child,
// whose parent is shard 0.
type expiredParentSource struct{ source.Driver }

func (expiredParentSource) Shards(context.Context) ([]string, error) {
	return []string{childShard}, nil
}

func (expiredParentSource) Parents(_ context.Context, shard string) ([]string, error) {
	if shard == childShard {
		return []string{parentShard}, nil
	}
	return nil, nil
}

func (expiredParentSource) Finished(_ context.Context, shard string, _ idem.Sequence) (bool, error) {
	if shard == parentShard {
		return false, fmt.Errorf("Finished of the expired parent: it is not listed")
	}
	return false, nil // the child is open
}

var _ source.Lineage = expiredParentSource{}

// TestDiscoveryExpiredParentLoss: a parent that expired with its reader
// behind (its checkpoint below its end) lost its remaining records: one is
// counted on its checkpoint, once, also across a restart, and its child is
// read. A parent without a checkpoint (never read by the mapping) counts
// nothing.
func TestDiscoveryExpiredParentLoss(t *testing.T) {
	for _, tc := range []struct {
		name       string
		checkpoint bool
		wantLost   uint64
	}{
		{"reader behind", true, 1},
		{"never read", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t)
			v.stream("s", 2)
			st := stembedded.New(v.db)
			v.store = st
			ctx := context.Background()
			key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: parentShard}
			if tc.checkpoint {
				if err := st.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(3), Processed: 3}}); err != nil {
					t.Fatal(err)
				}
			}
			// Records in the child: partition keys hash to either shard,
			// so put until the child holds some.
			var childRecs int
			for i := 0; childRecs < 3; i++ {
				v.put("s", fmt.Sprint("k", i), "x")
				childRecs = 0
				for _, r := range v.records("s") {
					if r.ShardID == childShard {
						childRecs++
					}
				}
			}
			var mu sync.Mutex
			seen := 0
			h := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
				mu.Lock()
				defer mu.Unlock()
				if r.ShardID != childShard {
					return fmt.Errorf("record of shard %s delivered", r.ShardID)
				}
				seen++
				return nil
			})
			m := engine.Mapping{Name: "m", Stream: "s", Source: expiredParentSource{v.source("s")}, Function: "f",
				Invoker: gofunc.New(h), StartingPosition: source.TrimHorizon}
			for run := range 2 { // the second run is a restart
				e, stop := v.run(m)
				waitFor(t, "the child's records, and the child running", func() bool {
					mu.Lock()
					n := seen
					mu.Unlock()
					for _, st := range e.Status() {
						if st.Shard == childShard && st.State == "running" {
							return n >= childRecs
						}
					}
					return false
				})
				stop()
				cp, ok, err := st.Checkpoint(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if ok != tc.checkpoint || cp.Lost != tc.wantLost {
					t.Fatalf("run %d: parent checkpoint %+v (present %v); want Lost %d (present %v)", run, cp, ok, tc.wantLost, tc.checkpoint)
				}
				if tc.checkpoint && cp.Processed != 3 {
					t.Fatalf("run %d: parent checkpoint %+v lost its counters", run, cp)
				}
			}
			if seen != childRecs {
				t.Fatalf("child records delivered %d times, want %d", seen, childRecs)
			}
		})
	}
}
