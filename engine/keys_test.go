package engine

import (
	"testing"

	"github.com/idem-run/idem"
)

// TestIdentities: a window's keys are its records' identities, whichever
// stream and shard each names.
func TestIdentities(t *testing.T) {
	recs := []idem.Record{
		{Stream: "s", ShardID: "shard-0", Sequence: "001"},
		{Stream: "s", ShardID: "shard-0", Sequence: "002"},
		{Stream: "other", ShardID: "shard-10", Sequence: "3"},
		{Stream: "s", ShardID: "shard-0", Sequence: "00000000000000000004"},
	}
	identities(recs)
	for _, r := range recs {
		if want := r.Stream + "/" + r.ShardID + "/" + string(r.Sequence); r.IdempotencyKey != want {
			t.Errorf("key of %s = %q, want %q", r.Sequence, r.IdempotencyKey, want)
		}
	}
	identities(nil)
}
