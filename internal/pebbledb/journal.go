package pebbledb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

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
// them. The sweeper later spills the journal into a run (runs.go): it
// writes the marks, sorted, as a table that Pebble ingests (no memtable
// insert, no write-ahead log of their own), then deletes the journal
// entries it spilled.
//
// The rules that keep a mark from being missed:
//
//   - A commit takes its journal sequence, and adds its marks to the mark
//     filter, under markMu shared; it files the marks in memory after its
//     batch is applied and before it ends the record claims of their keys,
//     so that anyone who waited for such a claim finds the mark. A commit
//     that fails files nothing (its sequence is skipped).
//   - A lookup that finds a live mark in memory does not read Pebble;
//     one that finds an expired one reads on, for a mark of the key that
//     expires later.
//   - A spill freezes the in-memory marks under markMu exclusive: every
//     commit with a sequence up to the spill's has then filed its marks,
//     and later ones go to an empty table: the previous spill's, kept
//     as the spare. A new one would be fresh memory, whose every page
//     the kernel maps at its first touch: some 40,000 page faults a
//     million payload-keyed records in `idem bench`, which took a fifth
//     more CPU than with the table reused ("Since: a spill reuses the
//     journal's table of marks" in BENCHMARKS.md). The spare costs 6
//     MiB held between spills. Lookups see the frozen table
//     until the spill's run is ingested and listed, and the run after.
//   - Before the ingest, the write-ahead log is synced: a table is
//     durable once ingested, and a pipelined commit whose marks it holds
//     may not be yet, which a crash would otherwise split.
//   - Spills, redrives and the changes to the list of runs are
//     serialized by spillMu.
//   - The journal entries spilled are deleted only after the ingest: a
//     crash before leaves them, and their marks are filed again at Open
//     and spilled a second time, which changes nothing. A redrive spills
//     the journal in its own batch instead, with the entries' deletion.
//   - Open files the journal's entries in memory again, in sequence order:
//     a crash between a commit and its spill loses nothing.

// defaultSpillMarksAt is how many marks the journal holds in memory
// before the sweeper spills them: 6 MiB of markTable, twice (the
// journal's and the spare a spill takes), and tables of some 4 MB.
const defaultSpillMarksAt = 1 << 17

// journaled is a mark the journal holds in memory: its expiry (of two
// writes of one key, the later expiry).
type journaled struct {
	expires int64
}

// markJournal holds the marks committed since the last spill.
type markJournal struct {
	// seq is the last journal sequence given to a commit.
	seq atomic.Uint64
	mu  sync.RWMutex
	// cur takes the marks of new commits, nil until the first; frozen
	// holds those a spill is writing into Pebble, nil between spills.
	cur, frozen *markTable
	// spare is the table of the last spill, kept for the next one to
	// take, emptied: a new table of the journal's size is megabytes the
	// kernel maps afresh, page by page (see "A spill freezes" above).
	spare *markTable
	// spillAt sizes cur when it is made: growing a table rehashes it.
	spillAt int
}

// file records marks written by a commit, once its batch is applied, and
// returns the number of marks cur holds.
func (j *markJournal) file(marks []store.Mark) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.makeCur()
	j.cur.touch(marks)
	for i := range marks {
		j.cur.put(&marks[i].Key, journaled{expires: marks[i].Expires.UnixNano()})
	}
	return j.cur.len()
}

// makeCur makes cur, unless it is made already: a DB that writes no
// mark keeps no table. The caller holds mu.
func (j *markJournal) makeCur() {
	if j.cur == nil {
		j.cur = newMarkTable(j.spillAt)
	}
}

// size is the number of marks held in memory.
func (j *markJournal) size() int {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.cur.len() + j.frozen.len()
}

// maxExpires returns the latest expiry of the marks held in memory, 0 if
// none.
func (j *markJournal) maxExpires() int64 {
	j.mu.RLock()
	defer j.mu.RUnlock()
	var latest int64
	f := func(_ *store.MarkKey, m journaled) { latest = max(latest, m.expires) }
	j.cur.all(f)
	j.frozen.all(f)
	return latest
}

// lookup sets done[i], for each keys[i] with i in cand, whose mark the
// journal holds with an expiry after t, and returns the other candidates,
// in cand's array: Pebble may hold a mark of theirs that expires later.
func (j *markJournal) lookup(keys []store.MarkKey, cand []int32, t int64, done []bool) []int32 {
	rest := cand[:0]
	j.mu.RLock()
	defer j.mu.RUnlock()
	for _, i := range cand {
		if m, ok := j.cur.get(&keys[i]); ok && m.expires > t {
			done[i] = true
			continue
		}
		if m, ok := j.frozen.get(&keys[i]); ok && m.expires > t {
			done[i] = true
			continue
		}
		rest = append(rest, i)
	}
	return rest
}

// freeze moves the marks of cur to frozen, where a spill writes them from,
// next (empty, made before the caller took markMu: making a table of the
// journal's size takes milliseconds, every commit with a mark waiting)
// becoming cur, and returns frozen. A frozen table left by a spill that
// failed takes cur's marks instead. The caller holds markMu exclusively.
func (j *markJournal) freeze(next *markTable) *markTable {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.frozen == nil {
		if j.cur.len() == 0 {
			return nil
		}
		j.frozen, j.cur = j.cur, next
		return j.frozen
	}
	j.cur.all(j.frozen.put)
	j.cur.reset()
	return j.frozen
}

// thaw forgets the frozen marks once their spill is applied, keeping
// their table, if it has the room newMarkTable(spillAt) gives, as the
// spare the next spill takes.
func (j *markJournal) thaw() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if t := j.frozen; t != nil && len(t.slots) == markTableSlots(j.spillAt) {
		j.spare = t
	}
	j.frozen = nil
}

// next returns an empty table for freeze: the spare, emptied, or a new
// one. Only spills, under spillMu, call it.
func (j *markJournal) next() *markTable {
	j.mu.Lock()
	t := j.spare
	j.spare = nil
	j.mu.Unlock()
	if t == nil {
		return newMarkTable(j.spillAt)
	}
	t.reset() // out of mu: emptying megabytes takes a while
	return t
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
	db.journal.spillAt = db.spillMarksAt()
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
		if seq == math.MaxUint64 {
			// No commit takes it (journalEnd's bound).
			return nil, 0, fmt.Errorf("%w: journal key %x", errCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		db.journal.makeCur()
		if err := decodeJournal(v, func(mk store.MarkKey, exp int64) {
			db.journal.cur.put(&mk, journaled{expires: exp})
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

// spillMarks writes the journal's marks into a run, then deletes the
// journal entries they came from (see above), and has the merger look at
// the runs.
func (db *DB) spillMarks() error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	if err := db.spill(); err != nil {
		return err
	}
	select {
	case db.mergeCh <- struct{}{}:
	default: // the merger has a look pending already
	}
	return nil
}

// spill is spillMarks for a caller that keeps Pebble open.
func (db *DB) spill() error {
	db.spillMu.Lock()
	defer db.spillMu.Unlock()
	if db.journal.size() == 0 {
		return nil
	}
	next := db.journal.next()
	db.markMu.Lock()
	upTo := db.journal.seq.Load()
	frozen := db.journal.freeze(next) // not empty: only spills and redrives, under spillMu, empty it
	db.markMu.Unlock()
	if err := db.admitMaintenance(); err != nil {
		return fmt.Errorf("pebbledb: spilling %d marks: %w", frozen.len(), err)
	}
	// The commits of the frozen marks are applied, but a pipelined one
	// may not be synced yet, and an ingested table is durable at once:
	// without this sync, a crash could keep a commit's marks and lose its
	// checkpoint (TestPowerLoss).
	if err := db.pdb.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("pebbledb: syncing the write-ahead log before spilling %d marks: %w", frozen.len(), noSpace(err))
	}
	if err := db.ingestSpill(planSpill(frozen, nil)); err != nil {
		return fmt.Errorf("pebbledb: spilling %d marks: %w", frozen.len(), noSpace(err))
	}
	db.journal.thaw() // the spill's run is listed
	// The entries spilled go, synced (a sync a spill) so that a spill
	// that returned is done for good: a crash before it lands only has
	// Open file the entries again, and the next spill write their marks
	// a second time.
	if err := db.pdb.DeleteRange([]byte{prefixJournal}, journalEnd(upTo), pebble.Sync); err != nil {
		return fmt.Errorf("pebbledb: deleting journal entries up to %d: %w", upTo, noSpace(err))
	}
	return nil
}

// spillDir is where a spill writes its tables before Pebble ingests them,
// under the data directory; Open empties it of what a crash left.
const spillDir = "spill"

// removeSpillTables removes what a spill cut short by a crash left in
// spillDir: tables never ingested, whose marks the journal still holds.
func removeSpillTables(fs vfs.FS, dir string) error {
	dir = fs.PathJoin(dir, spillDir)
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := fs.Remove(fs.PathJoin(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ingestSpill writes p's marks as a run (runs.go), in one table that
// Pebble ingests: they appear at once, with no memtable insert and no
// write-ahead log of their own, and a crash before the ingest leaves the
// journal to spill again. Once ingested, the run is listed, for lookups.
// The caller holds spillMu.
func (db *DB) ingestSpill(p *spillPlan) error {
	if len(p.all) == 0 {
		return nil
	}
	run := p.run(db.lastRun.Add(1))
	tables := runTables{db: db, name: fmt.Sprintf("spill-%d", db.spills.Add(1))}
	defer tables.remove()
	var enc spillEncoder
	if err := tables.set(enc.header(run)); err != nil {
		return err
	}
	for i := range p.all {
		if err := tables.set(enc.mark(p, run.id, i)); err != nil {
			return err
		}
	}
	if err := tables.ingest(); err != nil {
		return err
	}
	db.listRuns(nil, run)
	return nil
}

// tableOptions are the options of a table of a run, which a spill or a
// merge writes: those of Pebble's tables, for the DB's format, without
// compression (a run's keys are SHA-256, which no compressor shrinks, and
// trying cost about a tenth of a spill's time), in blocks of 32 KiB
// rather than 4: fewer blocks and index entries to write made a merge
// about a tenth faster (BenchmarkMergeRuns), and a lookup that reaches a
// run, past its filter, read no slower (BenchmarkLookupMarks).
func (db *DB) tableOptions() sstable.WriterOptions {
	o := db.popts.MakeWriterOptions(0, db.pdb.FormatMajorVersion().MaxTableFormat())
	o.Compression = sstable.NoCompression
	o.BlockSize = 32 << 10
	o.IndexBlockSize = 32 << 10
	return o
}

// journalEnd is the end of the journal entries up to upTo.
func journalEnd(upTo uint64) []byte {
	if upTo == math.MaxUint64 {
		return []byte{prefixJournal + 1}
	}
	var hi [9]byte
	return journalKey(&hi, upTo+1)
}

// closeJournal spills the journal as Close begins, with no method in
// progress. A directory then left without runs of marks (one that never
// held a mark, or whose marks all expired) is of layout 1, which it
// writes, so that an earlier version of idem can open it (Open upgrades
// it again); one with runs stays at layout 3, which such a version
// refuses rather than miss their marks.
func (db *DB) closeJournal() error {
	if err := db.spill(); err != nil {
		return err
	}
	if n := db.journal.size(); n > 0 {
		return fmt.Errorf("pebbledb: %d marks left in the journal after its last spill", n)
	}
	if len(db.listedRuns()) > 0 {
		return nil
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

// batchHeaderLen is the length of a Pebble batch's header.
const batchHeaderLen = 12

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
func sortSpill(marks *markTable, skip func(*store.MarkKey) bool) []spilled {
	var count [1<<16 + 1]int32
	n := 0
	marks.all(func(k *store.MarkKey, _ journaled) {
		if skip == nil || !skip(k) {
			count[int(k[0])<<8|int(k[1])+1]++
			n++
		}
	})
	for i := 1; i < len(count); i++ {
		count[i] += count[i-1]
	}
	all := make([]spilled, n)
	next := count
	marks.all(func(k *store.MarkKey, m journaled) {
		if skip == nil || !skip(k) {
			b := int(k[0])<<8 | int(k[1])
			all[next[b]] = spilled{key: *k, expires: m.expires}
			next[b]++
		}
	})
	for b := range 1 << 16 {
		if lo, hi := count[b], count[b+1]; hi-lo > 1 {
			slices.SortFunc(all[lo:hi], func(x, y spilled) int { return bytes.Compare(x.key[:], y.key[:]) })
		}
	}
	return all
}

// spillPlan is what a spill writes: its marks in key order, their latest
// expiry, and the exact size of a batch that writes them as a run, so
// that such a batch (as large as the spill) is made once, at its size.
type spillPlan struct {
	all        []spilled
	maxExpires int64
	size       int // the bytes appendTo adds to a batch
}

// planSpill plans the spill of marks, leaving out those skip reports.
func planSpill(marks *markTable, skip func(*store.MarkKey) bool) *spillPlan {
	p := &spillPlan{all: sortSpill(marks, skip), maxExpires: math.MinInt64}
	// A batch entry: kind, uvarint key length, key, uvarint value
	// length, value.
	entry := func(k, v int) int { return 1 + uvarintLen(uint64(k)) + k + uvarintLen(uint64(v)) + v }
	for i := range p.all {
		m := &p.all[i]
		p.maxExpires = max(p.maxExpires, m.expires)
		p.size += entry(runKeyLen, 1+varintLen(m.expires))
	}
	p.size += entry(9, 1+uvarintLen(uint64(len(p.all)))+varintLen(p.maxExpires))
	// The journal's range deletion: from 'j' to 'j' | u64.
	p.size += 1 + (1 + 1) + (1 + 9)
	return p
}

// appendTo writes p to b as run id, its header and then its marks in key
// order, and deletes the journal entries up to sequence upTo. It returns
// the run, which the caller lists once b is applied; none (id 0) for a
// plan without marks.
func (p *spillPlan) appendTo(b *pebble.Batch, id, upTo uint64) (markRun, error) {
	var run markRun
	if len(p.all) > 0 {
		run = p.run(id)
		var enc spillEncoder
		k, v := enc.header(run)
		if err := b.Set(k, v, nil); err != nil {
			return markRun{}, err
		}
		for i := range p.all {
			k, v := enc.mark(p, id, i)
			if err := b.Set(k, v, nil); err != nil {
				return markRun{}, err
			}
		}
	}
	return run, b.DeleteRange([]byte{prefixJournal}, journalEnd(upTo), nil)
}

// run returns the run p writes as run id, its filter filled.
func (p *spillPlan) run(id uint64) markRun {
	r := markRun{id: id, marks: len(p.all), maxExpires: p.maxExpires, filter: newRunFilter(len(p.all))}
	for i := range p.all {
		r.holds(&p.all[i].key)
	}
	return r
}

// spillEncoder encodes a run's keys and values, into buffers of its own
// that each call reuses: what it returns is valid until its next call.
type spillEncoder struct {
	key   [runKeyLen]byte
	value [24]byte
}

// header returns the key and value of run's header.
func (e *spillEncoder) header(run markRun) (k, v []byte) {
	return runHeaderKey((*[9]byte)(e.key[:9]), run.id), appendRunHeader(e.value[:0], run)
}

// mark returns the key and value of p's i-th mark in run id.
func (e *spillEncoder) mark(p *spillPlan, id uint64, i int) (k, v []byte) {
	m := &p.all[i]
	return runMarkKey(&e.key, id, &m.key), appendMark(e.value[:0], m.expires)
}
