package pebbledb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem/store"
)

// # The mark journal
//
// A mark written as a Pebble key of its own costs an insert into the
// memtable's skiplist at a random place (cache misses at every level),
// then a flush and compactions: with keys taken from the payload, one a
// record, that was the largest part of the engine's time. So a commit
// writes its marks as one journal entry instead, 'j' | u64 seq, a single
// key whatever their number, in the same atomic batch as its checkpoint,
// and files them in memory once the batch is applied, where lookups find
// them. The sweeper later spills the journal into the mark keys ('k', with
// their expiry entries), all of it in one batch that also deletes the
// entries it spilled: the marks sorted by key, and a batch large enough
// that Pebble turns it into a table of its own instead of inserting each
// key into the memtable.
//
// The rules that keep a mark from being missed:
//
//   - A commit takes its journal sequence, and adds its marks to the mark
//     filter, under markMu shared; it files the marks in memory after its
//     batch is applied and before it ends the record claims of their keys,
//     so that anyone who waited for such a claim finds the mark. A commit
//     that fails files nothing (its sequence is skipped).
//   - The in-memory marks are authoritative for their keys: they are the
//     latest written (Pebble's mark keys can only hold older ones), so a
//     lookup that finds a key there does not read Pebble.
//   - A spill freezes the in-memory marks under markMu exclusive: every
//     commit with a sequence up to the spill's has then filed its marks,
//     and later ones go to a fresh map. Lookups see the frozen map until
//     the spill's batch is applied, and Pebble after.
//   - The spill's batch is committed under markMu shared, so that a purge
//     of expired marks (markMu exclusive) never deletes a mark the spill
//     is writing anew; spills and redrives are serialized by spillMu.
//   - Open files the journal's entries in memory again, in sequence order:
//     a crash between a commit and its spill loses nothing, and a crash
//     before a spill's batch lands leaves the journal as it was.

// defaultSpillMarksAt is how many marks the journal holds in memory
// before the sweeper spills them: about 5 MB of memory, and a spill batch
// above Pebble's large-batch threshold for the default memtable (half of
// it), which Pebble then writes as a table of its own.
const defaultSpillMarksAt = 1 << 17

// journaled is a mark the journal holds in memory: its expiry, and the
// journal sequence of the commit that wrote it, so that of two writes of
// one key the later one wins, as it would in Pebble.
type journaled struct {
	expires int64
	seq     uint64
}

// markJournal holds the marks committed since the last spill.
type markJournal struct {
	// seq is the last journal sequence given to a commit.
	seq atomic.Uint64
	mu  sync.RWMutex
	// cur takes the marks of new commits; frozen holds those a spill is
	// writing into Pebble, nil between spills.
	cur, frozen map[store.MarkKey]journaled
}

// init makes the journal's map, sized for spillAt marks: growing a map
// rehashes it.
func (j *markJournal) init(spillAt int) {
	j.cur = make(map[store.MarkKey]journaled, spillAt)
}

// file records marks written by the commit of journal sequence seq, once
// its batch is applied, and returns the number of marks cur holds.
func (j *markJournal) file(marks []store.Mark, seq uint64) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := range marks {
		putJournaled(j.cur, marks[i].Key, journaled{expires: marks[i].Expires.UnixNano(), seq: seq})
	}
	return len(j.cur)
}

// putJournaled sets m[k] to v unless m holds a later write of k.
func putJournaled(m map[store.MarkKey]journaled, k store.MarkKey, v journaled) {
	if old, ok := m[k]; !ok || old.seq <= v.seq {
		m[k] = v
	}
}

// size is the number of marks held in memory.
func (j *markJournal) size() int {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return len(j.cur) + len(j.frozen)
}

// maxExpires returns the latest expiry of the marks held in memory, 0 if
// none.
func (j *markJournal) maxExpires() int64 {
	j.mu.RLock()
	defer j.mu.RUnlock()
	var latest int64
	for _, m := range j.cur {
		latest = max(latest, m.expires)
	}
	for _, m := range j.frozen {
		latest = max(latest, m.expires)
	}
	return latest
}

// lookup answers, for each keys[i] with i in cand, whether the journal
// holds its mark: if so, it sets done[i] to whether the mark expires after
// t. It returns the candidates the journal does not hold, in cand's array.
func (j *markJournal) lookup(keys []store.MarkKey, cand []int32, t int64, done []bool) []int32 {
	rest := cand[:0]
	j.mu.RLock()
	defer j.mu.RUnlock()
	for _, i := range cand {
		m, ok := j.cur[keys[i]]
		if !ok && j.frozen != nil {
			m, ok = j.frozen[keys[i]]
		}
		if ok {
			done[i] = m.expires > t
			continue
		}
		rest = append(rest, i)
	}
	return rest
}

// freeze moves the marks of cur to frozen, where a spill writes them from,
// and returns frozen. A frozen map left by a spill that failed takes cur's
// marks too. The caller holds markMu exclusively.
func (j *markJournal) freeze() map[store.MarkKey]journaled {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.frozen == nil {
		j.frozen, j.cur = j.cur, make(map[store.MarkKey]journaled, len(j.cur))
		return j.frozen
	}
	for k, v := range j.cur {
		putJournaled(j.frozen, k, v)
	}
	clear(j.cur)
	return j.frozen
}

// thaw forgets the frozen marks once their spill is applied.
func (j *markJournal) thaw() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.frozen = nil
}

// journalKey is 'j' | u64 seq.
func journalKey(dst *[9]byte, seq uint64) []byte {
	dst[0] = prefixJournal
	binary.BigEndian.PutUint64(dst[1:], seq)
	return dst[:]
}

// journalValueLen is the length of marks' journal entry.
func journalValueLen(marks []store.Mark) int {
	n := 1
	for i := 0; i < len(marks); {
		j := runEnd(marks, i)
		n += varintLen(marks[i].Expires.UnixNano()) + uvarintLen(uint64(j-i)) + (j-i)*len(store.MarkKey{})
		i = j
	}
	return n
}

// runEnd returns the end of the run of marks from i with one expiry.
func runEnd(marks []store.Mark, i int) int {
	exp := marks[i].Expires.UnixNano()
	j := i + 1
	for j < len(marks) && marks[j].Expires.UnixNano() == exp {
		j++
	}
	return j
}

// appendJournal writes marks to b as the journal entry of sequence seq.
func appendJournal(b *pebble.Batch, seq uint64, marks []store.Mark) error {
	var kb [9]byte
	d := b.SetDeferred(len(kb), journalValueLen(marks))
	copy(d.Key, journalKey(&kb, seq))
	appendJournalValue(d.Value[:0], marks)
	return d.Finish()
}

// appendJournalValue appends the journal entry of marks to v: v | runs,
// each run of marks with one expiry as varint expires | uvarint n | n keys
// of 16 bytes.
func appendJournalValue(v []byte, marks []store.Mark) []byte {
	v = append(v, valueVersion)
	for i := 0; i < len(marks); {
		j := runEnd(marks, i)
		v = binary.AppendVarint(v, marks[i].Expires.UnixNano())
		v = binary.AppendUvarint(v, uint64(j-i))
		for _, m := range marks[i:j] {
			v = append(v, m.Key[:]...)
		}
		i = j
	}
	return v
}

// decodeJournal calls f for each mark of a journal entry.
func decodeJournal(v []byte, f func(k store.MarkKey, expires int64)) error {
	r := reader{b: v}
	r.version("journal entry")
	for r.err == nil && len(r.b) > 0 {
		exp := r.varint("journal entry: expires")
		n := r.uvarint("journal entry: marks")
		if r.err == nil && n > uint64(len(r.b))/uint64(len(store.MarkKey{})) {
			r.fail("journal entry: marks beyond its end")
		}
		keys := r.bytes(n*uint64(len(store.MarkKey{})), "journal entry: keys")
		for ; len(keys) > 0; keys = keys[len(store.MarkKey{}):] {
			f(store.MarkKey(keys[:len(store.MarkKey{})]), exp)
		}
	}
	return r.err
}

// loadJournal files the journal's entries in memory, in sequence order,
// adds their keys to keys (for the mark filter), and sets the journal's
// sequence to the last.
func (db *DB) loadJournal(keys []store.MarkKey, maxExpires int64) ([]store.MarkKey, int64, error) {
	db.journal.init(db.spillMarksAt())
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixJournal}, UpperBound: []byte{prefixJournal + 1}})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return nil, 0, fmt.Errorf("%w: journal key %x", errCorrupt, k)
		}
		seq := binary.BigEndian.Uint64(k[1:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		if err := decodeJournal(v, func(mk store.MarkKey, exp int64) {
			putJournaled(db.journal.cur, mk, journaled{expires: exp, seq: seq})
			keys = append(keys, mk)
			maxExpires = max(maxExpires, exp)
		}); err != nil {
			return nil, 0, fmt.Errorf("journal entry %d: %w", seq, err)
		}
		db.journal.seq.Store(seq)
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	return keys, maxExpires, nil
}

// spillMarks writes the journal's marks into Pebble's mark keys and
// deletes the journal entries they came from, in one batch; see above.
func (db *DB) spillMarks() error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	return db.spill()
}

// spill is spillMarks for a caller that keeps Pebble open.
func (db *DB) spill() error {
	db.spillMu.Lock()
	defer db.spillMu.Unlock()
	db.markMu.Lock()
	upTo := db.journal.seq.Load()
	frozen := db.journal.freeze()
	db.markMu.Unlock()
	if len(frozen) == 0 {
		db.journal.thaw()
		return nil
	}
	b := db.pdb.NewBatchWithSize(len(frozen) * (1 + len(store.MarkKey{}) + 12 + 16))
	defer b.Close()
	if err := appendSpill(b, frozen, nil, upTo); err != nil {
		return fmt.Errorf("pebbledb: spilling %d marks: %w", len(frozen), err)
	}
	if err := db.admitMaintenance(); err != nil {
		return fmt.Errorf("pebbledb: spilling %d marks: %w", len(frozen), err)
	}
	db.markMu.RLock()
	defer db.markMu.RUnlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("pebbledb: spilling %d marks: %w", len(frozen), noSpace(err))
	}
	db.journal.thaw()
	return nil
}

// closeJournal spills the journal as Close begins, with no method in
// progress, and then writes layout 1 into the directory: without journal
// entries, layout 2 is layout 1, and an earlier version of idem can open
// a directory closed cleanly (Open upgrades it again). A directory left
// by a crash, or by a spill that failed here, stays at layout 2, which
// such a version refuses rather than miss the journal's marks.
func (db *DB) closeJournal() error {
	if err := db.spill(); err != nil {
		return err
	}
	if n := db.journal.size(); n > 0 {
		return fmt.Errorf("pebbledb: %d marks left in the journal after its last spill", n)
	}
	return db.pdb.Set([]byte{prefixFormat}, []byte{1}, pebble.Sync)
}

// spillMarksAt is the number of marks in memory past which a commit asks
// the sweeper to spill.
func (db *DB) spillMarksAt() int {
	if db.opts.spillMarksAt > 0 {
		return db.opts.spillMarksAt
	}
	return defaultSpillMarksAt
}

// spilled is a mark a spill writes.
type spilled struct {
	key     store.MarkKey
	expires int64
}

// sortSpill returns marks in key order, leaving out those skip reports.
// Mark keys are SHA-256, uniform: a counting sort by their first two
// bytes puts them in buckets of two or so, which a comparison sort then
// orders (legacy FNV-1a keys, not uniform, only make some buckets larger).
// A comparison sort of them all took most of a spill's time.
func sortSpill(marks map[store.MarkKey]journaled, skip func(*store.MarkKey) bool) []spilled {
	var count [1<<16 + 1]int32
	n := 0
	for k := range marks {
		if skip == nil || !skip(&k) {
			count[int(k[0])<<8|int(k[1])+1]++
			n++
		}
	}
	for i := 1; i < len(count); i++ {
		count[i] += count[i-1]
	}
	all := make([]spilled, n)
	next := count
	for k, m := range marks {
		if skip == nil || !skip(&k) {
			b := int(k[0])<<8 | int(k[1])
			all[next[b]] = spilled{key: k, expires: m.expires}
			next[b]++
		}
	}
	for b := range 1 << 16 {
		if lo, hi := count[b], count[b+1]; hi-lo > 1 {
			slices.SortFunc(all[lo:hi], func(x, y spilled) int { return bytes.Compare(x.key[:], y.key[:]) })
		}
	}
	return all
}

// appendSpill writes marks to b as mark keys in key order, with one expiry
// entry for each expiry (keyed by its first mark, listing the others),
// leaving out those skip reports, and deletes the journal entries up to
// sequence upTo.
func appendSpill(b *pebble.Batch, marks map[store.MarkKey]journaled, skip func(*store.MarkKey) bool, upTo uint64) error {
	all := sortSpill(marks, skip)
	var kb [17]byte
	var scratch [16]byte
	// Marks of one expiry, in key order: the first names the entry.
	groups := make(map[int64][]store.MarkKey)
	for i := range all {
		m := &all[i]
		if err := b.Set(markKey(&kb, m.key), appendMark(scratch[:0], m.expires), nil); err != nil {
			return err
		}
		groups[m.expires] = append(groups[m.expires], m.key)
	}
	expiries := make([]int64, 0, len(groups))
	for exp := range groups {
		expiries = append(expiries, exp)
	}
	slices.Sort(expiries)
	var xb [expiryKeyLen]byte
	for _, exp := range expiries {
		keys := groups[exp]
		d := b.SetDeferred(expiryKeyLen, len(store.MarkKey{})*(len(keys)-1))
		copy(d.Key, expiryKey(&xb, exp, keys[0]))
		v := d.Value[:0]
		for _, k := range keys[1:] {
			v = append(v, k[:]...)
		}
		if err := d.Finish(); err != nil {
			return err
		}
	}
	var hi [9]byte
	end := []byte{prefixJournal + 1}
	if upTo < math.MaxUint64 {
		end = journalKey(&hi, upTo+1)
	}
	return b.DeleteRange([]byte{prefixJournal}, end, nil)
}
