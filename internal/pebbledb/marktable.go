package pebbledb

import (
	"encoding/binary"
	"math/bits"

	"github.com/idem-run/idem/store"
)

// markTable is the journal's in-memory set of marks: an open-addressing
// hash table with linear probing, keyed by mark key.
//
// A Go map did the same job at about twice the cost a mark (a commit files
// one per payload-keyed record): filing a mark took a lookup and a store,
// each hashing the key and missing the cache on the map's control word and
// then its slot. Mark keys are SHA-256, already uniform, so the table
// hashes by mixing the key's two halves with a multiplication, and a
// mark's slot holds its key and value together: filing one costs, in the
// common case, one cache miss. Nothing is ever deleted from a table (a
// spill takes it whole, and empties it whole to reuse it), so probing
// needs no tombstones.
type markTable struct {
	slots []markSlot // a power of two, at most 3/4 full
	shift uint8      // 64 - log2(len(slots))
	n     int
	// sink keeps touch's reads from being left out as unused.
	sink uint64
}

// markSlot is one place of a markTable: 24 bytes, the key and its
// expiry, which is never 0 in a slot that holds a mark (put files a mark
// that expires at the Unix epoch itself as expiring a nanosecond later,
// long gone either way), so that an empty slot is all zeros.
type markSlot struct {
	key     store.MarkKey
	expires int64
}

// newMarkTable returns a table with room for n marks before it grows.
func newMarkTable(n int) *markTable {
	t := &markTable{}
	t.alloc(markTableSlots(n))
	return t
}

// markTableSlots is the number of slots of newMarkTable(n).
func markTableSlots(n int) int {
	return 1 << bits.Len(uint(max(8, n*4/3+1)-1))
}

// alloc makes room for at least n slots, discarding the table's marks.
func (t *markTable) alloc(n int) {
	b := bits.Len(uint(n - 1))
	t.slots = make([]markSlot, 1<<b)
	t.shift = uint8(64 - b)
	t.n = 0
}

// home is k's first slot.
func (t *markTable) home(k *store.MarkKey) uint64 {
	lo := binary.LittleEndian.Uint64(k[:8])
	hi := binary.LittleEndian.Uint64(k[8:])
	// Fibonacci hashing of both halves: SHA-256 keys are uniform already,
	// and this keeps keys that differ in one half only (tests', legacy
	// ones) from piling up in one place.
	return ((lo ^ bits.RotateLeft64(hi, 31)) * 0x9e3779b97f4a7c15) >> t.shift
}

// len is the number of marks in the table.
func (t *markTable) len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// put files the mark of k: of two marks of a key, the one that expires
// later counts (see "Mark runs" in runs.go).
func (t *markTable) put(k *store.MarkKey, m journaled) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	expires := m.expires
	if expires == 0 {
		expires = 1 // 0 is an empty slot's
	}
	mask := uint64(len(t.slots) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		switch {
		case s.expires == 0:
			*s = markSlot{key: *k, expires: expires}
			t.n++
			return
		case s.key == *k:
			s.expires = max(s.expires, expires)
			return
		}
	}
}

// touch reads the first slot of each of marks, so that the cache misses
// of a commit's marks overlap (the reads do not depend on each other) and
// the puts that follow find their slots in the cache: the table is larger
// than the cache, and a mark's slot is anywhere in it.
func (t *markTable) touch(marks []store.Mark) {
	if (t.n+len(marks))*4 > len(t.slots)*3 {
		return // put grows the table first
	}
	var sink uint64
	for i := range marks {
		sink += uint64(t.slots[t.home(&marks[i].Key)].expires)
	}
	t.sink += sink
}

// get returns k's mark, if the table holds one.
func (t *markTable) get(k *store.MarkKey) (journaled, bool) {
	if t == nil {
		return journaled{}, false
	}
	mask := uint64(len(t.slots) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		switch {
		case s.expires == 0:
			return journaled{}, false
		case s.key == *k:
			return journaled{expires: s.expires}, true
		}
	}
}

// grow doubles the table's room.
func (t *markTable) grow() {
	old := t.slots
	t.alloc(len(old) * 2)
	for i := range old {
		if s := &old[i]; s.expires != 0 {
			t.put(&s.key, journaled{expires: s.expires})
		}
	}
}

// all calls f for each mark of the table, in no particular order.
func (t *markTable) all(f func(k *store.MarkKey, m journaled)) {
	if t == nil {
		return
	}
	for i := range t.slots {
		if s := &t.slots[i]; s.expires != 0 {
			f(&s.key, journaled{expires: s.expires})
		}
	}
}

// reset empties the table, keeping its room.
func (t *markTable) reset() {
	if t == nil {
		return
	}
	clear(t.slots)
	t.n = 0
}
