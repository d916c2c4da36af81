package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// A mapping's starting position applies to the shards it found when it
// first started, and only to them: a shard that appears later (a Kafka
// partition added, the children of a Kinesis reshard) holds only records
// the mapping has not seen, and is read from its beginning, as Lambda
// reads new child shards. The first set of shards is kept in the store, so
// that a restart is not taken for a first start.

// startedNamespace is the state namespace of the mappings' first shards.
const startedNamespace = "\x00started"

// startedShard names the checkpoint the first-shards write carries (a
// store.Write always moves one).
const startedShard = "\x00started"

// loadStarted reads the shards the mapping found when it first started, or,
// on its first start, records ids as those.
func (m *mapping) loadStarted(ctx context.Context, ids []string) error {
	st := m.e.store
	key := m.cfg.Name + "\x00" + m.cfg.Stream
	v, err := st.State(ctx, startedNamespace, key)
	switch {
	case err == nil:
		var first []string
		if err := json.Unmarshal(v, &first); err != nil {
			return fmt.Errorf("reading the shards of the mapping's first start: %w", err)
		}
		m.setInitial(first)
		return nil
	case !errors.Is(err, idem.ErrNotFound):
		return fmt.Errorf("reading the shards of the mapping's first start: %w", err)
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	b, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("encoding the shards of the mapping's first start: %w", err)
	}
	w := &store.Write{
		Checkpoint:    store.CheckpointKey{Mapping: m.cfg.Name, Stream: m.cfg.Stream, Shard: startedShard},
		NewCheckpoint: store.Checkpoint{Sequence: "0"},
		State:         []store.StateOp{{Namespace: startedNamespace, Key: key, Value: b}},
	}
	if err := st.Commit(ctx, w); err != nil {
		return fmt.Errorf("recording the shards of the mapping's first start: %w", err)
	}
	m.setInitial(ids)
	return nil
}

func (m *mapping) setInitial(ids []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.initial = make(map[string]bool, len(ids))
	for _, id := range ids {
		m.initial[id] = true
	}
}

// initialShard reports whether id was among the mapping's shards when it
// first started. A mapping not started by Run (tests that drive a shard
// alone) treats every shard as initial.
func (m *mapping) initialShard(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.initial == nil || m.initial[id]
}
