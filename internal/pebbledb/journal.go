package pebbledb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
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
// them. The sweeper later spills the journal into the mark keys ('k', with
// their expiry entries): it writes them, sorted, as two tables that Pebble
// ingests in one step (no memtable insert, no write-ahead log of their
// own), then deletes the journal entries it spilled.
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
//     and later ones go to a fresh table. Lookups see the frozen table until
//     Pebble has ingested the spill's tables, and Pebble after.
//   - Before the ingest, the write-ahead log is synced: a table is
//     durable once ingested, and a pipelined commit whose marks it holds
//     may not be yet, which a crash would otherwise split.
//   - The tables are ingested under markMu shared, so that a purge of
//     expired marks (markMu exclusive) never deletes a mark the spill is
//     writing anew; spills and redrives are serialized by spillMu.
//   - The journal entries spilled are deleted only after the ingest: a
//     crash before leaves them, and their marks are filed again at Open
//     and spilled a second time, which changes nothing. A redrive spills
//     the journal in its own batch instead, with the entries' deletion.
//   - Open files the journal's entries in memory again, in sequence order:
//     a crash between a commit and its spill loses nothing.

// defaultSpillMarksAt is how many marks the journal holds in memory
// before the sweeper spills them: 8 MB of markTable, and tables of some
// 4 MB.
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
	// cur takes the marks of new commits, nil until the first; frozen
	// holds those a spill is writing into Pebble, nil between spills.
	cur, frozen *markTable
	// spillAt sizes cur when it is made: growing a table rehashes it.
	spillAt int
}

// file records marks written by the commit of journal sequence seq, once
// its batch is applied, and returns the number of marks cur holds.
func (j *markJournal) file(marks []store.Mark, seq uint64) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.makeCur()
	j.cur.touch(marks)
	for i := range marks {
		j.cur.put(&marks[i].Key, journaled{expires: marks[i].Expires.UnixNano(), seq: seq})
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

// lookup answers, for each keys[i] with i in cand, whether the journal
// holds its mark: if so, it sets done[i] to whether the mark expires after
// t. It returns the candidates the journal does not hold, in cand's array.
func (j *markJournal) lookup(keys []store.MarkKey, cand []int32, t int64, done []bool) []int32 {
	rest := cand[:0]
	j.mu.RLock()
	defer j.mu.RUnlock()
	for _, i := range cand {
		m, ok := j.cur.get(&keys[i])
		if !ok {
			m, ok = j.frozen.get(&keys[i])
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
			// No commit takes it (journalEnd's bound), and the table
			// cannot hold it.
			return nil, 0, fmt.Errorf("%w: journal key %x", errCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		db.journal.makeCur()
		if err := decodeJournal(v, func(mk store.MarkKey, exp int64) {
			db.journal.cur.put(&mk, journaled{expires: exp, seq: seq})
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

// spillMarks writes the journal's marks into Pebble's mark keys, then
// deletes the journal entries they came from; see above.
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
	if db.journal.size() == 0 {
		return nil
	}
	next := newMarkTable(db.spillMarksAt())
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
	db.journal.thaw()
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

// ingestSpill writes p's marks and expiry entries as two tables (their key
// ranges apart) and has Pebble ingest both in one step: they appear
// together, atomically, with no memtable insert and no write-ahead log
// of their own; a crash before the ingest leaves the journal to spill
// again. It holds markMu shared while Pebble ingests, so that a purge of
// expired marks never deletes a mark the spill writes anew.
func (db *DB) ingestSpill(p *spillPlan) error {
	fs := db.opts.fs
	dir := fs.PathJoin(db.dir, spillDir)
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := db.spills.Add(1)
	var paths []string
	defer func() {
		for _, path := range paths {
			fs.Remove(path) // linked into Pebble, or abandoned
		}
	}()
	write := func(name string, keys int, kv func(i int) (k, v []byte)) error {
		if keys == 0 {
			return nil
		}
		path := fs.PathJoin(dir, fmt.Sprintf("%d-%s.sst", n, name))
		f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		paths = append(paths, path)
		w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), db.tableOptions())
		for i := range keys {
			if err := w.Set(kv(i)); err != nil {
				w.Close()
				return err
			}
		}
		return w.Close()
	}
	var enc spillEncoder
	if err := write("marks", len(p.all), func(i int) (k, v []byte) { return enc.mark(p, i) }); err != nil {
		return err
	}
	if err := write("expiry", len(p.expiries), func(i int) (k, v []byte) { return enc.expiry(p, i) }); err != nil {
		return err
	}
	if len(paths) == 0 {
		return nil
	}
	db.markMu.RLock()
	defer db.markMu.RUnlock()
	return db.pdb.Ingest(context.Background(), paths)
}

// tableOptions are the options of a table a spill writes: those of
// Pebble's tables, for the DB's format, without compression: a spill's
// keys are SHA-256, which no compressor shrinks, and trying cost about a
// tenth of a spill's time. (Compactions compress them later with the rest
// of their level.)
func (db *DB) tableOptions() sstable.WriterOptions {
	o := db.popts.MakeWriterOptions(0, db.pdb.FormatMajorVersion().MaxTableFormat())
	o.Compression = sstable.NoCompression
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

// spillPlan is what a spill writes: its marks in key order, grouped by
// expiry, and the exact size of its batch, so that the batch (as large as
// the spill) is made once, at its size.
type spillPlan struct {
	all []spilled
	// groups holds, for each expiry, the places in all of its marks, in
	// key order: the first names the expiry entry.
	groups   map[int64][]int32
	expiries []int64 // groups' keys, in order
	size     int     // the bytes appendTo adds to a batch
}

// planSpill plans the spill of marks, leaving out those skip reports.
func planSpill(marks *markTable, skip func(*store.MarkKey) bool) *spillPlan {
	p := &spillPlan{all: sortSpill(marks, skip), groups: make(map[int64][]int32)}
	const keyLen = 1 + len(store.MarkKey{})
	for i := range p.all {
		m := &p.all[i]
		p.groups[m.expires] = append(p.groups[m.expires], int32(i))
		// A batch entry: kind, uvarint key length, key, uvarint value
		// length, value.
		v := 1 + varintLen(m.expires)
		p.size += 1 + uvarintLen(uint64(keyLen)) + keyLen + uvarintLen(uint64(v)) + v
	}
	p.expiries = make([]int64, 0, len(p.groups))
	for exp, at := range p.groups {
		p.expiries = append(p.expiries, exp)
		v := len(store.MarkKey{}) * (len(at) - 1)
		p.size += 1 + uvarintLen(expiryKeyLen) + expiryKeyLen + uvarintLen(uint64(v)) + v
	}
	slices.Sort(p.expiries)
	// The journal's range deletion: from 'j' to 'j' | u64.
	p.size += 1 + (1 + 1) + (1 + 9)
	return p
}

// appendTo writes p to b as mark keys in key order, with one expiry entry
// for each expiry (keyed by its first mark, listing the others), and
// deletes the journal entries up to sequence upTo.
func (p *spillPlan) appendTo(b *pebble.Batch, upTo uint64) error {
	var enc spillEncoder
	for i := range p.all {
		k, v := enc.mark(p, i)
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
	}
	for i := range p.expiries {
		k, v := enc.expiry(p, i)
		if err := b.Set(k, v, nil); err != nil {
			return err
		}
	}
	return b.DeleteRange([]byte{prefixJournal}, journalEnd(upTo), nil)
}

// spillEncoder encodes a spill plan's keys and values, into buffers of its
// own that each call reuses: what it returns is valid until its next call.
type spillEncoder struct {
	key    [expiryKeyLen]byte
	value  []byte
	marked [17]byte
}

// mark returns the key and value of p's i-th mark.
func (e *spillEncoder) mark(p *spillPlan, i int) (k, v []byte) {
	m := &p.all[i]
	e.value = appendMark(e.value[:0], m.expires)
	return markKey(&e.marked, m.key), e.value
}

// expiry returns the key and value of p's i-th expiry entry: keyed by its
// first mark, listing the others.
func (e *spillEncoder) expiry(p *spillPlan, i int) (k, v []byte) {
	exp := p.expiries[i]
	at := p.groups[exp]
	e.value = e.value[:0]
	for _, j := range at[1:] {
		e.value = append(e.value, p.all[j].key[:]...)
	}
	return expiryKey(&e.key, exp, p.all[at[0]].key), e.value
}
