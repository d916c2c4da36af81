package engine

import (
	"sync"

	"github.com/idem-run/idem/store"
)

// mapping is a Mapping at run time.
type mapping struct {
	e         *Engine
	cfg       Mapping
	keyer     *keyer
	filters   *filterSet // filterCriteria
	permanent map[string]bool
	journal   *journal // nil when the store keeps no claims
	// txd offers the store's transactions to the handler; nil when the
	// store has none or the function is not in-process.
	txd store.TxDriver

	mu     sync.Mutex
	shards []*shard
	// scopeFilters caches the filters of the scope's other mappings, by
	// their encoding (store.Progress.Filter); guarded by mu.
	scopeFilters map[string]*filterSet
	// initial are the shards of the mapping's first start (loadStarted);
	// guarded by mu.
	initial map[string]bool
	// alone is set when no run but this mapping's can take the records
	// it reads in its scope (claimsNeeded): keys by identity then need no
	// claims, and the scope's other progress is read once per start.
	alone bool

	// rediscover asks discover to list the shards now, rather than at
	// its next tick: a shard was read to its end, and its children are
	// to start. shardEnded is closed, and replaced, each time a shard of
	// the mapping is read to its end, waking the children waiting for
	// their parents (waitForParents). Both guarded by mu.
	rediscover chan struct{}
	shardEnded chan struct{}
}

// shardFinished tells the mapping that one of its shards, closed, was read
// to its end: its children, which may wait for it or not be listed yet,
// start at once rather than at the next discovery (30 s by default, the
// latency of every reshard and every DynamoDB Streams shard rollover).
func (m *mapping) shardFinished() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.shardEnded)
	m.shardEnded = make(chan struct{})
	select {
	case m.rediscover <- struct{}{}:
	default:
	}
}

// shardEndedSignal returns the channel the next shardFinished closes.
func (m *mapping) shardEndedSignal() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shardEnded
}
