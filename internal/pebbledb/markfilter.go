package pebbledb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem/store"
)

// # The mark filter
//
// Records keyed by their payload are looked up by mark before they run,
// and nearly all of those lookups are of keys never marked: a Pebble point
// lookup of an absent key still seeks every memtable's skiplist and
// consults each level's bloom filter, which made up a third of the
// engine's time with payload keys. The mark filter answers those lookups
// from memory. It is a Bloom filter over every mark key Pebble may hold,
// so it has false positives (about 0.1% a segment: those keys go on to
// Pebble) and never a false negative:
//
//   - Open builds it from the marks on disk, in one scan of their key
//     range, so it survives a restart or a crash: what a crash took back
//     only leaves false positives behind.
//   - A commit adds its marks before its batch is applied, under markMu
//     shared: no reader can see a mark, or anything the commit ordered
//     after it (the claims it ends), before the filter has it. A commit
//     that then fails leaves false positives.
//   - A Bloom filter cannot forget a key, so it is cut into segments that
//     each know the latest expiry of their keys. Once a sweep has purged
//     every mark expired at t (under markMu exclusive, so that no commit
//     adds to a segment meanwhile), it drops the segments whose keys all
//     expired at t. A mark renewed since lives on in a later segment,
//     which its renewal added it to. The filter therefore holds about the
//     marks of one retention, and its false-positive rate does not grow
//     with time.
//
// A segment is a split-block Bloom filter (as Parquet's and Impala's): a
// key sets one bit in each of the 8 words of one 64-byte block, so that a
// lookup reads one cache line. At 16 bits (2 bytes) a key its
// false-positive rate is about 0.1% when full, against 0.5% at 12 bits and
// 1% at 10 (TestMarkFilterFalsePositives): a false positive costs a Pebble
// lookup, a hundred times a filter's, and a filter of several segments
// adds up their rates. A new segment is sized to the marks the filter
// holds already (at least minSegmentKeys): while marks accumulate,
// segments number about 1+log2(marks/minSegmentKeys) and cost 2 to 4
// bytes a mark beyond the first segment's 2 MiB; under a steady load,
// where expiry drops segments, one to three are live, for 2.5 to 5 bytes
// a live mark (TestMarkFilterSteadyState). A set of the keys (a Go map)
// would need no segments and have no false positives, but costs 36 bytes
// a mark: a gigabyte at thirty million marks.
//
// A lookup tests each segment, newest first, and a segment of megabytes
// is a cache miss a test: that, not the hashing, is the filter's cost.
// So the smallest segment is large. At 128 KiB, a store's first million
// marks took five segments, and its first three million seven; with 2
// MiB they take one and three, and a payload-keyed record beside 2
// million marks costs about 0.2 µs less ("Since: the mark filter's
// smallest segment is 2 MiB" in BENCHMARKS.md). Probing a chunk of keys'
// blocks before testing any, so that the misses overlap, gained nothing
// measurable.
//
// The filter's memory is bounded (WithMarkFilterMemory): at the bound, no
// segment is added, and the last one takes every further key, its
// false-positive rate rising towards 1, so that more and more lookups go
// on to Pebble, as they all did before the filter, until expiry drops
// segments and frees room. It never answers "absent" for a key added. The
// runs' filters (runs.go) share the bound: they take at most a third of
// it, and the segments the rest (runBytes, roomFor).
//
// Mark keys are SHA-256 (store.MarkKeyOf), already uniform, but legacy
// marks (store.LegacyMarkKeyOf, FNV-1a) are not: both halves of a key are
// mixed before use.

const (
	// filterBitsPerKey sets the false-positive rate of a full segment.
	filterBitsPerKey = 16
	// minSegmentKeys is the capacity of the smallest segment: 2 MiB.
	minSegmentKeys = 1 << 20
	// blockWords is the number of 64-bit words of a block: a cache line.
	blockWords = 8
)

// probeSalts pick a key's bit in each word of its block from one 64-bit
// hash: bit i is the top 6 bits of hash*probeSalts[i], multiplicative
// hashing by odd constants as in Parquet's split-block Bloom filters.
var probeSalts = [blockWords]uint64{
	0x47b6137b44974d91, 0x8824ad5ba2b7289d, 0x705495c72df1424b, 0x9efc49475c6bfb31,
	0xa2b7289d8824ad5b, 0x2df1424b705495c7, 0x5c6bfb319efc4947, 0x44974d9147b6137b,
}

// probeBit is the bit that probe sets in word i of its block.
func probeBit(probe uint64, i int) uint64 { return 1 << ((probe * probeSalts[i]) >> 58) }

// markHash returns the two hashes a mark key is filed under: block picks
// the block, probe the bits in it.
func markHash(k *store.MarkKey) (block, probe uint64) {
	a := binary.LittleEndian.Uint64(k[:8])
	b := binary.LittleEndian.Uint64(k[8:])
	// wyhash's mixing step: a 128-bit product folded to 64 bits.
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	block = hi ^ lo
	hi, lo = bits.Mul64(block^0x8ebc6af09c88c6e3, a^b^0x589965cc75374cc3)
	return block, hi ^ lo
}

// filterSegment is one fixed-size Bloom filter of the mark filter. Its
// bits are set and read with atomic operations: commits add keys while
// lookups read, with no lock between them.
type filterSegment struct {
	words    []atomic.Uint64
	blocks   uint64
	capacity int64 // the keys it is sized for
	// growAt is the count at which an add makes a new segment: capacity,
	// or math.MaxInt64 while the filter is at its memory bound.
	growAt atomic.Int64
	// count is the number of keys added; maxExpires the latest expiry
	// among them, Unix nanoseconds.
	count      atomic.Int64
	maxExpires atomic.Int64
}

// filterBlocks is how many blocks a split-block filter of keys at
// bitsPerKey takes (a segment, or a run's filter), at least one.
func filterBlocks(keys, bitsPerKey uint64) uint64 {
	return max((keys*bitsPerKey+64*blockWords-1)/(64*blockWords), 1)
}

// blockIndex scales h to [0, blocks), as Lemire's fastrange: the block a
// key falls in.
func blockIndex(h, blocks uint64) uint64 {
	b, _ := bits.Mul64(h, blocks)
	return b
}

func newFilterSegment(capacity int64) *filterSegment {
	blocks := filterBlocks(uint64(capacity), filterBitsPerKey)
	s := &filterSegment{words: make([]atomic.Uint64, blocks*blockWords), blocks: blocks, capacity: capacity}
	s.growAt.Store(capacity)
	s.maxExpires.Store(math.MinInt64)
	return s
}

// bytes is the memory of the segment's bits.
func (s *filterSegment) bytes() int64 { return int64(len(s.words)) * 8 }

// block returns the words of the block that hash h falls in.
func (s *filterSegment) block(h uint64) []atomic.Uint64 {
	b := blockIndex(h, s.blocks)
	return s.words[b*blockWords : (b+1)*blockWords : (b+1)*blockWords]
}

func (s *filterSegment) add(block, probe uint64, expires int64) {
	w := s.block(block)
	for i := range blockWords {
		bit := probeBit(probe, i)
		if w[i].Load()&bit == 0 {
			w[i].Or(bit)
		}
	}
	s.count.Add(1)
	for {
		cur := s.maxExpires.Load()
		if expires <= cur || s.maxExpires.CompareAndSwap(cur, expires) {
			return
		}
	}
}

func (s *filterSegment) mayContain(block, probe uint64) bool {
	w := s.block(block)
	for i := range blockWords {
		if w[i].Load()&probeBit(probe, i) == 0 {
			return false
		}
	}
	return true
}

// markFilter is the in-memory filter of mark keys; see above. Its zero
// value is an empty filter. It is safe for concurrent use, with one rule
// the DB keeps through markMu: drop runs while no add does.
type markFilter struct {
	// segs is the current list of segments, oldest first. A change
	// replaces the slice, under mu; readers load it without a lock.
	segs atomic.Pointer[[]*filterSegment]
	mu   sync.Mutex
	// maxBytes bounds the segments' memory; 0: no bound.
	maxBytes int64
	// minKeys, when set, replaces minSegmentKeys, for tests.
	minKeys int64
	// runBytes is the memory of the runs' filters (runs.go), which the
	// bound counts with the segments'.
	runBytes atomic.Int64
}

// roomFor reports whether the runs' filters may take runBytes of memory
// within the bound, beside the segments': at most a third of it, so that
// the segments, which answer nearly every lookup, keep two thirds (the
// runs' filters take 1 byte a mark, the segments 2 or more).
func (f *markFilter) roomFor(runBytes int64) bool {
	if f.maxBytes <= 0 {
		return true
	}
	if runBytes > f.maxBytes/3 {
		return false
	}
	var used int64
	for _, s := range f.segments() {
		used += s.bytes()
	}
	return used+runBytes <= f.maxBytes
}

// minSegment is the capacity of the smallest segment.
func (f *markFilter) minSegment() int64 {
	if f.minKeys > 0 {
		return f.minKeys
	}
	return minSegmentKeys
}

// room returns how many keys a new segment may be sized for, given the
// memory the segments take already.
func (f *markFilter) room(used int64) int64 {
	if f.maxBytes <= 0 {
		return math.MaxInt64
	}
	blocks := max(f.maxBytes-used-f.runBytes.Load(), 0) / (8 * blockWords) // whole blocks: no rounding up
	return blocks * 64 * blockWords / filterBitsPerKey
}

func (f *markFilter) segments() []*filterSegment {
	if p := f.segs.Load(); p != nil {
		return *p
	}
	return nil
}

// add files k, a mark expiring at expires (Unix nanoseconds). The caller
// holds markMu shared, and has not yet applied the batch writing the mark.
func (f *markFilter) add(k *store.MarkKey, expires int64) {
	segs := f.segments()
	var s *filterSegment
	if n := len(segs); n > 0 {
		s = segs[n-1]
	}
	if s == nil || s.count.Load() >= s.growAt.Load() {
		s = f.grow(s)
	}
	block, probe := markHash(k)
	s.add(block, probe, expires)
}

// grow returns the segment to add to now that full, the last segment, is
// full (or there is none): a new one, sized to the keys the filter holds,
// unless a concurrent add made one already, or the memory bound leaves
// no room for one, where full takes the keys beyond its capacity.
func (f *markFilter) grow(full *filterSegment) *filterSegment {
	f.mu.Lock()
	defer f.mu.Unlock()
	segs := f.segments()
	n := len(segs)
	if n > 0 && (segs[n-1] != full || full.count.Load() < full.growAt.Load()) {
		return segs[n-1]
	}
	var held, used int64
	for _, s := range segs {
		held += s.count.Load()
		used += s.bytes()
	}
	capacity := min(max(held, f.minSegment()), f.room(used))
	if capacity < f.minSegment() && n > 0 {
		full.growAt.Store(math.MaxInt64)
		return full
	}
	s := newFilterSegment(max(capacity, 1))
	next := append(segs[:n:n], s)
	f.segs.Store(&next)
	return s
}

// mayContain reports whether k may have been added: false means it never
// was (since the segment that held it, if any, was dropped).
func (f *markFilter) mayContain(k *store.MarkKey) bool {
	block, probe := markHash(k)
	segs := f.segments()
	// Newest first: a key looked up again soon after its mark was written
	// is most likely there.
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i].mayContain(block, probe) {
			return true
		}
	}
	return false
}

// drop forgets the segments whose keys all expire at or before t. The
// caller holds markMu exclusively, and has just deleted every mark expired
// at t: no add is in flight, and none of the keys dropped has a mark left.
func (f *markFilter) drop(t int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	segs := f.segments()
	keep := make([]*filterSegment, 0, len(segs))
	for _, s := range segs {
		if s.count.Load() > 0 && s.maxExpires.Load() <= t {
			continue
		}
		keep = append(keep, s)
	}
	if len(keep) == len(segs) {
		return
	}
	f.segs.Store(&keep)
	if n := len(keep); n > 0 {
		// Room was freed: let the next add try a new segment.
		keep[n-1].growAt.Store(keep[n-1].capacity)
	}
}

// reset replaces the filter's contents with one segment holding keys,
// which expire at or before maxExpires, sized for them within the memory
// bound.
func (f *markFilter) reset(keys []store.MarkKey, maxExpires int64) {
	var segs []*filterSegment
	if len(keys) > 0 {
		n := int64(len(keys))
		s := newFilterSegment(max(min(max(n, f.minSegment()), f.room(0)), 1))
		if s.capacity < n {
			s.growAt.Store(math.MaxInt64)
		}
		for i := range keys {
			block, probe := markHash(&keys[i])
			s.add(block, probe, maxExpires)
		}
		segs = append(segs, s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.segs.Store(&segs)
}

// markFilterStats describes the mark filter.
type markFilterStats struct {
	Segments int
	Keys     int64 // keys added to the live segments, renewals included
	Bytes    int64 // the segments' bits
}

func (f *markFilter) stats() markFilterStats {
	var st markFilterStats
	for _, s := range f.segments() {
		st.Segments++
		st.Keys += s.count.Load()
		st.Bytes += s.bytes()
	}
	return st
}

// loadMarks lists the runs of marks, files the mark journal in memory and
// builds the mark filter from the marks on disk and in the journal,
// expired ones included: expiry is decided at lookup, against the
// caller's time, and only a sweep deletes marks.
func (db *DB) loadMarks() error {
	keys, maxExpires, err := db.scanMarks()
	if err != nil {
		return fmt.Errorf("reading the mark keys: %w", err)
	}
	db.legacyMarks.Store(len(keys) > 0 || db.opts.directMarks)
	if keys, maxExpires, err = db.scanRuns(keys, maxExpires); err != nil {
		return fmt.Errorf("reading the runs of marks: %w", err)
	}
	if keys, maxExpires, err = db.loadJournal(keys, maxExpires); err != nil {
		return fmt.Errorf("reading the mark journal: %w", err)
	}
	if !db.opts.noMarkFilter {
		db.marks.reset(keys, maxExpires)
	}
	return nil
}

// scanMarks returns the keys of the mark keys ('k': written by earlier
// versions, and with WithDirectMarks) and their latest expiry.
func (db *DB) scanMarks() (keys []store.MarkKey, maxExpires int64, err error) {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixMark}, UpperBound: []byte{prefixMark + 1}})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	maxExpires = math.MinInt64
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != 1+len(store.MarkKey{}) {
			return nil, 0, fmt.Errorf("%w: mark key %x", errCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		expires, err := decodeMark(v)
		if err != nil {
			return nil, 0, fmt.Errorf("mark %x: %w", k[1:], err)
		}
		keys = append(keys, store.MarkKey(k[1:]))
		maxExpires = max(maxExpires, expires)
	}
	return keys, maxExpires, it.Error()
}

// lookupMarks sets done[i] to whether keys[i] holds a mark that expires
// after t (Unix nanoseconds). Keys the mark filter rules out are answered
// from memory, then those the mark journal holds; the rest are looked up
// in Pebble: in its mark keys, if it may hold any, and in the runs.
func (db *DB) lookupMarks(keys []store.MarkKey, t int64, done []bool) error {
	var buf [128]int32
	cand := buf[:0]
	for i := range keys {
		done[i] = false
		if db.opts.noMarkFilter || db.marks.mayContain(&keys[i]) {
			cand = append(cand, int32(i))
		}
	}
	if len(cand) > 0 {
		cand = db.journal.lookup(keys, cand, t, done)
	}
	if len(cand) == 0 {
		return nil
	}
	db.markGets.Add(int64(len(cand)))
	slices.SortFunc(cand, func(a, b int32) int { return bytes.Compare(keys[a][:], keys[b][:]) })
	if db.legacyMarks.Load() {
		it, err := db.markIter(prefixMark)
		if err != nil {
			return fmt.Errorf("pebbledb: looking up %d marks: %w", len(cand), err)
		}
		cand, err = seekMarks(it, []byte{prefixMark}, keys, cand, t, done)
		if cerr := it.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("pebbledb: %w", err)
		}
	}
	if _, err := db.lookupRuns(keys, cand, t, done); err != nil {
		return fmt.Errorf("pebbledb: %w", err)
	}
	return nil
}
