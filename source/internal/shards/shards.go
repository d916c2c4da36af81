// Package shards is what the sources over AWS streams whose shards close
// and have children (Kinesis, after a split or merge; DynamoDB Streams, at
// every rollover) share: a shard's lineage and end, the order the engine
// reads shards in, and reading through expiring shard iterators from a
// position the engine checkpointed.
//
// Both services read a shard through iterators: GetShardIterator makes one
// at a position, GetRecords returns records and the iterator after them,
// and an iterator expires after a while (five minutes on Kinesis, fifteen
// on DynamoDB Streams). A Shard keeps a few Cursors, each a reader's place:
// the iterator that follows the last record it handed out and the records
// fetched beyond. A Cursor is found by the position it continues from, so
// the engine's next Read from the last record returned goes on without a
// GetShardIterator; a Read from any other position (a retry from the
// checkpoint, another mapping) gets a Cursor of its own. An iterator that
// expired, or is older than its service allows, is made again from the
// Cursor's position, which is where the engine's checkpoint is: nothing is
// skipped and nothing read twice.
//
// A closed shard ends: its last GetRecords answer has no next iterator,
// and its listing gives an ending sequence number. The engine (through
// source.Lineage) reads a child only once every parent is read to its end,
// so the records of one key (a partition key, a table item) stay in order
// across a reshard or a rollover.
package shards

import (
	"slices"
	"sync"

	"github.com/idem-run/idem"
)

// Info describes one shard as its service lists it.
type Info struct {
	// ID is the shard ID, "shardId-000000000000" on Kinesis,
	// "shardId-00000001536019433427-a9ef5e8f" on DynamoDB Streams.
	ID string
	// ParentID is the shard this one was split or merged from (Kinesis)
	// or rolled over from (DynamoDB Streams); "" for a shard the stream was
	// created with. The parent may have expired and no longer be listed.
	ParentID string
	// AdjacentParentID is the other parent of a Kinesis merge; ""
	// otherwise.
	AdjacentParentID string
	// StartingSequence is the first sequence number the shard can hold.
	StartingSequence idem.Sequence
	// EndingSequence is the last sequence number of a closed shard; "" for
	// an open one.
	EndingSequence idem.Sequence
}

// Closed reports whether the shard was closed: it takes no new records,
// and its children do.
func (i Info) Closed() bool { return i.EndingSequence != "" }

// Parents returns the IDs of the shard's parents, none for an original
// shard.
func (i Info) Parents() []string {
	var p []string
	for _, id := range []string{i.ParentID, i.AdjacentParentID} {
		if id != "" {
			p = append(p, id)
		}
	}
	return p
}

// Ended reports whether after is at or beyond the ending sequence number of
// a closed shard: no record of the shard is above it, and the service, which
// may have expired the shard by now, need not be asked.
func (i Info) Ended(after idem.Sequence) bool {
	return i.Closed() && after.Compare(i.EndingSequence) >= 0
}

// CompareIDs orders shard IDs by their number when they have the same
// prefix, so that "shardId-000000000010" follows "shardId-000000000009";
// DynamoDB Streams' IDs, which hold their creation time, sort by it.
func CompareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Sort puts infos in reading order: by ID (CompareIDs), except that a shard
// always comes after its listed parents, whatever their IDs.
func Sort(infos []Info) {
	slices.SortFunc(infos, func(a, b Info) int { return CompareIDs(a.ID, b.ID) })
	index := make(map[string]int, len(infos))
	for i, in := range infos {
		index[in.ID] = i
	}
	out := make([]Info, 0, len(infos))
	state := make([]byte, len(infos)) // 0 new, 1 visiting, 2 placed
	var visit func(i int)
	visit = func(i int) {
		if state[i] != 0 {
			return // placed, or a cycle no service makes: keep ID order
		}
		state[i] = 1
		for _, p := range infos[i].Parents() {
			if j, ok := index[p]; ok {
				visit(j)
			}
		}
		state[i] = 2
		out = append(out, infos[i])
	}
	for i := range infos {
		visit(i)
	}
	copy(infos, out)
}

// Set is the shards a source knows, by ID, each with its reading state. It
// is safe for concurrent use.
type Set[R any] struct {
	mu     sync.Mutex
	shards map[string]*Shard[R]
	closed bool
}

// Update records a listing of the shards: known shards get their new Info
// (a shard closes), new ones are added. It reports false once the Set is
// closed.
func (s *Set[R]) Update(infos []Info) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.shards == nil {
		s.shards = make(map[string]*Shard[R])
	}
	for _, in := range infos {
		if sh, ok := s.shards[in.ID]; ok {
			sh.SetInfo(in)
			continue
		}
		s.shards[in.ID] = &Shard[R]{ID: in.ID, info: in}
	}
	return true
}

// Get returns the shard id, or nil when it was never listed.
func (s *Set[R]) Get(id string) *Shard[R] {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shards[id]
}

// Close forgets every shard and its buffered records; Update refuses
// listings from then on.
func (s *Set[R]) Close() {
	s.mu.Lock()
	s.closed = true
	s.shards = nil
	s.mu.Unlock()
}
