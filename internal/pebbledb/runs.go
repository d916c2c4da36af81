package pebbledb

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem/store"
)

// # Mark runs
//
// A spill once wrote its marks as mark keys ('k' | key), each with an
// expiry entry. Mark keys are SHA-256, spread over the whole key range, so
// every spill's table overlapped every table of marks before it: Pebble
// ingested it into L0 and then compacted it down through the levels with
// all the others, rewriting each mark several times. That rewriting, about
// 0.75 µs a mark of background CPU (BenchmarkSpill), was the largest part
// of what payload keys cost beyond at-least-once.
//
// A spill now writes a run instead: its marks, sorted, under a run number
// of their own, 'r' | u64 run | key, after a header, 'r' | u64 run, that
// counts them and holds the latest of their expiries. Run numbers only
// grow, so a run's tables overlap no other table's keys, and Pebble
// ingests them into its last level, where no compaction reads them again
// (a table there whose bounds span a run without holding a key of it is
// split around the run as it is ingested: see Open). In place of the
// compactions:
//
//   - A lookup that gets past the mark filter and the journal reads each
//     run that may still hold a live mark, newest first, with one
//     iterator. Each run has a Bloom filter of its own in memory (its
//     filter, about 1 byte a mark, 3% false positives), which a key
//     must pass before it is sought there: a seek in Pebble costs a few
//     microseconds even where its table's Bloom filter rules the key out,
//     and a key that got past the mark filter (a false positive, mostly)
//     was otherwise sought in every run.
//   - The sweep deletes a run whole, with one range deletion, once its
//     latest mark has expired: Pebble drops its tables without reading
//     them, and no expiry entry is written or read.
//   - Runs are merged as they accumulate, as in a size-tiered LSM tree:
//     once mergeFanIn runs of one size class exist, the oldest mergeFanIn
//     of them become one run, a class larger, with expired marks left out
//     and of a key's marks the latest. Runs then number at most
//     mergeFanIn-1 a class, a few dozen for billions of marks, and each
//     mark is written once a class rather than several times a level.
//
// A run can keep an expired mark until its latest mark expires (or a
// merge leaves it out); Completed ignores it, as it ignores any expired
// mark.
//
// The rules that keep a mark from being missed:
//
//   - The list of runs (DB.runs) that lookups read changes only under
//     spillMu. A spill lists its run once Pebble holds it, and before the
//     journal forgets the marks (thaw); a lookup reads the journal before
//     the list.
//   - A merge lists its run (ingested) in the same change of the list
//     that takes its inputs out, and deletes the inputs only then, once
//     every lookup that listed them has ended (runReaders): a lookup that
//     read the inputs in the list and then met their deletion would miss
//     the marks the run holds.
//   - A redrive deletes each key it unmarks from every run that holds it,
//     under spillMu; a merge whose inputs a redrive or a purge changed
//     after it began reading is dropped before Pebble ingests it (under
//     spillMu), and tried again after the next spill.
//   - A run's header sorts before its marks, and Pebble ingests it with
//     them in one step (a spill writes it first in its table; a merge, in
//     a table of its own once it knows the count): Open reads the headers
//     and the marks, and a mark without its run's header is corruption.

const (
	// mergeFanIn is how many runs of one size class a merge joins, and
	// the ratio between the sizes of two classes. A merge costs about
	// 0.7 µs a mark (BenchmarkMergeRuns), once a class; a lookup that
	// gets past the mark filter, one run filter's check a run: 16 keeps
	// a billion marks in some 50 runs, each mark merged three times.
	mergeFanInBits = 4
	mergeFanIn     = 1 << mergeFanInBits
	// runTableBytes is the size at which a merge starts a new table, so
	// that a deletion a redrive writes into a large run has Pebble
	// rewrite one table of it, not the run.
	runTableBytes = 64 << 20
	// runKeyLen is len('r' | u64 run | MarkKey).
	runKeyLen = 1 + 8 + len(store.MarkKey{})
)

// errMergeStale reports a merge whose inputs changed while it read them.
var errMergeStale = errors.New("pebbledb: the runs being merged changed")

// markRun is a run of marks, as the list of runs holds it.
type markRun struct {
	id uint64
	// marks is the number of marks written, which a redrive's deletions
	// do not lower: it sizes the run for merges.
	marks      int
	maxExpires int64
	// filter holds the keys of the run's marks; nil, when the filters'
	// memory bound left no room for it, lets every key through.
	filter *runFilter
}

// mayHold reports whether r may hold the key of hashes block and probe
// (runHash).
func (r *markRun) mayHold(block, probe uint64) bool {
	return r.filter == nil || r.filter.mayContain(block, probe)
}

// holds adds the key k to r's filter, if it has one. The caller has not
// listed r yet.
func (r *markRun) holds(k *store.MarkKey) {
	if r.filter != nil {
		r.filter.add(runHash(k))
	}
}

// runHash returns the hashes a run's filter files k under. The block is
// k's first 8 bytes, not a hash of them: a spill or a merge adds a run's
// keys in key order, so that its filter fills block after block, in
// order, where a hash spread them over the whole filter, a cache miss
// each (a sixth of a merge's time, with a filter of 2 MB). Mark keys are
// SHA-256, uniform already; legacy ones (FNV-1a) less so, which only lets
// more of the keys absent through in the blocks they crowd.
func runHash(k *store.MarkKey) (block, probe uint64) {
	_, probe = markHash(k)
	return binary.BigEndian.Uint64(k[:8]), probe
}

// runFilterBits is the size of a run's filter, in bits a mark: 8 lets
// about 3% of the keys absent through, against 0.1% at the mark
// filter's 16. Run filters are only asked about keys that got past the
// mark filter, a few in a thousand, and each that passes costs one seek.
const runFilterBits = 8

// runFilter is a run's Bloom filter, of split blocks as the mark filter's
// segments, but in plain words: it is filled by the one goroutine that
// writes the run, before the run is listed, and only read once it is
// (the list is published atomically), so it needs none of the segments'
// atomic operations, locked instructions each.
type runFilter struct {
	words  []uint64
	blocks uint64
}

// newRunFilter returns an empty filter for a run of marks.
func newRunFilter(marks int) *runFilter {
	blocks := filterBlocks(uint64(marks), runFilterBits)
	return &runFilter{words: make([]uint64, blocks*blockWords), blocks: blocks}
}

// bytes is the memory of the filter's bits.
func (f *runFilter) bytes() int64 { return int64(len(f.words)) * 8 }

// block returns the words of the block that h falls in.
func (f *runFilter) block(h uint64) []uint64 {
	b := blockIndex(h, f.blocks)
	return f.words[b*blockWords : (b+1)*blockWords : (b+1)*blockWords]
}

func (f *runFilter) add(block, probe uint64) {
	w := f.block(block)
	for i := range blockWords {
		w[i] |= probeBit(probe, i)
	}
}

func (f *runFilter) mayContain(block, probe uint64) bool {
	w := f.block(block)
	for i := range blockWords {
		if w[i]&probeBit(probe, i) == 0 {
			return false
		}
	}
	return true
}

// class is r's size class, the log of its marks to the base mergeFanIn:
// runs of one class merge.
func (r markRun) class() int { return bits.Len(uint(r.marks)) / mergeFanInBits }

// runHeaderKey is 'r' | u64 run: it sorts before every mark of the run.
func runHeaderKey(dst *[9]byte, id uint64) []byte {
	dst[0] = prefixRun
	binary.BigEndian.PutUint64(dst[1:], id)
	return dst[:]
}

// runMarkKey is 'r' | u64 run | key.
func runMarkKey(dst *[runKeyLen]byte, id uint64, k *store.MarkKey) []byte {
	runHeaderKey((*[9]byte)(dst[:9]), id)
	copy(dst[9:], k[:])
	return dst[:]
}

// runBounds returns the key range of run id's marks, header excluded.
func runBounds(id uint64) (lower, upper []byte) {
	var kb [9]byte
	header := runHeaderKey(&kb, id)
	return append(bytes.Clone(header), 0), prefixEnd(header)
}

// appendRunHeader appends a run header's value: v | uvarint marks |
// varint maxExpires.
func appendRunHeader(v []byte, r markRun) []byte {
	v = binary.AppendUvarint(append(v, valueVersion), uint64(r.marks))
	return binary.AppendVarint(v, r.maxExpires)
}

// decodeRunHeader decodes the header of run id.
func decodeRunHeader(id uint64, v []byte) (markRun, error) {
	r := reader{b: v}
	r.version("run header")
	marks := r.uvarint("run header: marks")
	maxExpires := r.varint("run header: expires")
	if err := r.end("run header"); err != nil {
		return markRun{}, err
	}
	if marks > math.MaxInt {
		return markRun{}, fmt.Errorf("%w: run header: %d marks", errCorrupt, marks)
	}
	return markRun{id: id, marks: int(marks), maxExpires: maxExpires}, nil
}

// listRuns replaces the list of runs: it holds drop (which have left
// Pebble, or are about to) no longer, and add (which Pebble holds), in
// run order. A run added keeps its filter only if the filters' memory
// bound has room for it. The caller holds spillMu.
func (db *DB) listRuns(drop []markRun, add ...markRun) {
	var list []markRun
	if old := db.runs.Load(); old != nil {
		list = make([]markRun, 0, len(*old)+len(add))
		for _, r := range *old {
			if !slices.ContainsFunc(drop, func(d markRun) bool { return d.id == r.id }) {
				list = append(list, r)
			}
		}
	}
	var used int64
	for _, r := range list {
		if r.filter != nil {
			used += r.filter.bytes()
		}
	}
	for _, r := range add {
		if r.filter != nil && !db.marks.roomFor(used+r.filter.bytes()) {
			r.filter = nil
		}
		if r.filter != nil {
			used += r.filter.bytes()
		}
		list = append(list, r)
	}
	db.marks.runBytes.Store(used)
	slices.SortFunc(list, func(a, b markRun) int { return cmp.Compare(a.id, b.id) })
	db.runs.Store(&list)
}

// listedRuns returns the runs lookups read, oldest first.
func (db *DB) listedRuns() []markRun {
	if l := db.runs.Load(); l != nil {
		return *l
	}
	return nil
}

// lookupRuns sets done[i] for each keys[i], i in cand (sorted by key),
// that some run holds with an expiry after t, and returns the candidates
// none holds live, in cand's array. It reads the runs that may hold a live
// mark, newest first, seeking in each only the keys its filter may hold,
// with one iterator for them all, made at the first seek: a seek checks
// the Bloom filter of the one table of a run that may hold the key, where
// a Get would build an iterator of its own each time.
func (db *DB) lookupRuns(keys []store.MarkKey, cand []int32, t int64, done []bool) ([]int32, error) {
	if len(cand) == 0 {
		return cand, nil
	}
	// Until the last seek: a merge deletes its inputs only once no lookup
	// that listed them reads on (runReaders).
	db.runReaders.RLock()
	defer db.runReaders.RUnlock()
	var live []markRun
	for _, r := range db.listedRuns() {
		if r.maxExpires > t {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return cand, nil
	}
	var it *pebble.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	block, probe := make([]uint64, len(keys)), make([]uint64, len(keys))
	for _, i := range cand {
		block[i], probe[i] = runHash(&keys[i])
	}
	var hk [9]byte
	var seek []int32
	for r := len(live) - 1; r >= 0 && len(cand) > 0; r-- {
		seek = seek[:0]
		for _, i := range cand {
			if live[r].mayHold(block[i], probe[i]) {
				seek = append(seek, i)
			}
		}
		if len(seek) == 0 {
			continue
		}
		if it == nil {
			var err error
			if it, err = db.markIter(prefixRun); err != nil {
				return nil, fmt.Errorf("looking up %d marks: %w", len(cand), err)
			}
		}
		db.runSeeks.Add(int64(len(seek)))
		if _, err := seekMarks(it, runHeaderKey(&hk, live[r].id), keys, seek, t, done); err != nil {
			return nil, fmt.Errorf("run %d: %w", live[r].id, err)
		}
		cand = slices.DeleteFunc(cand, func(i int32) bool { return done[i] })
	}
	return cand, nil
}

// markIter returns an iterator over the keyspace prefix (of marks: 'k' or
// 'r') for seekMarks. Marks lie mostly in Pebble's last level, whose Bloom
// filters a seek skips unless asked: without them, each seek read the data
// block where the key would be.
func (db *DB) markIter(prefix byte) (*pebble.Iterator, error) {
	return db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}, UseL6Filters: true})
}

// seekMarks looks up, with it, the marks prefix | keys[i] for i in cand
// (sorted by key, so that each seek goes on from where the last one
// ended), sets done[i] for those that expire after t, and returns the
// others, in cand's array.
func seekMarks(it *pebble.Iterator, prefix []byte, keys []store.MarkKey, cand []int32, t int64, done []bool) ([]int32, error) {
	var kb [runKeyLen]byte
	n := copy(kb[:], prefix)
	rest := cand[:0]
	for _, i := range cand {
		copy(kb[n:], keys[i][:])
		if it.SeekPrefixGE(kb[:n+len(keys[i])]) {
			v, err := it.ValueAndErr()
			if err != nil {
				return nil, fmt.Errorf("mark %x: %w", keys[i][:], err)
			}
			expires, err := decodeMark(v)
			if err != nil {
				return nil, fmt.Errorf("mark %x: %w", keys[i][:], err)
			}
			if done[i] = expires > t; done[i] {
				continue
			}
		} else if err := it.Error(); err != nil {
			return nil, fmt.Errorf("mark %x: %w", keys[i][:], err)
		}
		rest = append(rest, i)
	}
	return rest, nil
}

// scanRuns reads the runs on disk: it lists them, and adds their marks'
// keys to keys (for the mark filter), their expiries to maxExpires.
func (db *DB) scanRuns(keys []store.MarkKey, maxExpires int64) ([]store.MarkKey, int64, error) {
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRun}, UpperBound: []byte{prefixRun + 1}})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	var runs []markRun
	// filled files the keys read since the last header, keys[from:], in
	// the filter of the run they belong to: sized for them, not for the
	// header's count, which is not to be trusted with memory.
	from := len(keys)
	filled := func() {
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			r.filter = newRunFilter(len(keys) - from)
			for i := from; i < len(keys); i++ {
				r.holds(&keys[i])
			}
		}
		from = len(keys)
	}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, 0, err
		}
		switch len(k) {
		case 9:
			r, err := decodeRunHeader(binary.BigEndian.Uint64(k[1:]), v)
			if err != nil {
				return nil, 0, fmt.Errorf("run %d: %w", binary.BigEndian.Uint64(k[1:]), err)
			}
			filled()
			runs = append(runs, r)
		case runKeyLen:
			id := binary.BigEndian.Uint64(k[1:9])
			if len(runs) == 0 || runs[len(runs)-1].id != id {
				return nil, 0, fmt.Errorf("%w: mark %x of run %d, which has no header", errCorrupt, k[9:], id)
			}
			expires, err := decodeMark(v)
			if err != nil {
				return nil, 0, fmt.Errorf("run %d: mark %x: %w", id, k[9:], err)
			}
			keys = append(keys, store.MarkKey(k[9:]))
			maxExpires = max(maxExpires, expires)
		default:
			return nil, 0, fmt.Errorf("%w: run key %x", errCorrupt, k)
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	filled()
	db.listRuns(nil, runs...)
	if len(runs) > 0 {
		db.lastRun.Store(runs[len(runs)-1].id)
	}
	return keys, maxExpires, nil
}

// runTables writes a run's keys, in order, into tables under the spill
// directory, for one ingest.
type runTables struct {
	db    *DB
	name  string // of the spill or merge, unique among the DB's
	paths []string
	w     *sstable.Writer
	// split is the size at which a new table starts (0: never); written
	// what the current one holds.
	split, written int
}

func (t *runTables) set(k, v []byte) error {
	if t.w == nil {
		fs := t.db.opts.fs
		dir := fs.PathJoin(t.db.dir, spillDir)
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		path := fs.PathJoin(dir, fmt.Sprintf("%s-%d.sst", t.name, len(t.paths)))
		f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		t.paths = append(t.paths, path)
		t.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), t.db.tableOptions())
	}
	if err := t.w.Set(k, v); err != nil {
		return err
	}
	t.written += len(k) + len(v)
	if t.split > 0 && t.written >= t.split {
		return t.closeTable()
	}
	return nil
}

// closeTable finishes the current table.
func (t *runTables) closeTable() error {
	if t.w == nil {
		return nil
	}
	err := t.w.Close()
	t.w, t.written = nil, 0
	return err
}

// ingest has Pebble ingest the tables written, in one step.
func (t *runTables) ingest() error {
	if err := t.closeTable(); err != nil {
		return err
	}
	if len(t.paths) == 0 {
		return nil
	}
	return t.db.pdb.Ingest(context.Background(), t.paths)
}

// remove removes the tables' files: linked into Pebble, or abandoned.
func (t *runTables) remove() {
	if t.w != nil {
		t.w.Close()
		t.w = nil
	}
	for _, path := range t.paths {
		t.db.opts.fs.Remove(path)
	}
}

// merger merges runs, when a spill asks, until Close. It runs apart from
// the sweeper, so that spills go on during a long merge (a merge of
// larger runs reads and writes gigabytes): the journal would otherwise
// grow in memory meanwhile.
func (db *DB) merger() {
	defer db.wg.Done()
	for {
		select {
		case <-db.done:
			return
		case <-db.mergeCh:
			err := db.mergeRuns()
			if err != nil && !errors.Is(err, ErrClosed) && db.opts.logger != nil {
				db.opts.logger.Error("pebbledb: merging runs of marks failed; the next spill retries", "err", err)
			}
		}
	}
}

// mergeRuns merges runs while a size class holds mergeFanIn of them.
func (db *DB) mergeRuns() error {
	for {
		db.spillMu.Lock()
		in := pickMerge(db.listedRuns())
		edits := db.runEdits
		db.spillMu.Unlock()
		if in == nil {
			return nil
		}
		if err := db.merge(in, edits); err != nil {
			if errors.Is(err, errMergeStale) {
				return nil // the next spill tries again
			}
			return fmt.Errorf("pebbledb: merging %d runs of marks: %w", len(in), err)
		}
	}
}

// pickMerge returns the runs to merge next: the oldest mergeFanIn of the
// smallest size class that has that many, or nil.
func pickMerge(runs []markRun) []markRun {
	var count [64]int
	for _, r := range runs {
		count[r.class()]++
	}
	for class, n := range count {
		if n < mergeFanIn {
			continue
		}
		in := make([]markRun, 0, mergeFanIn)
		for _, r := range runs {
			if r.class() == class && len(in) < mergeFanIn {
				in = append(in, r)
			}
		}
		return in
	}
	return nil
}

// merge writes the marks of runs in as one new run, leaving out those
// expired, and of a key's marks keeping the latest; lists it in their
// place, and deletes them. edits is runEdits when in was picked: if a
// redrive or a purge changed the runs since, the merge is dropped
// (errMergeStale).
func (db *DB) merge(in []markRun, edits uint64) error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	// The run is written before its inputs go: it needs room for itself
	// above half the reserve, as the sweeper's deletions do, or it waits
	// for a later spill.
	size := 0
	for _, r := range in {
		size += r.marks * (runKeyLen + 10)
	}
	if err := db.space.admit(size, db.space.reserve/2+uint64(size)); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	its := make([]*pebble.Iterator, 0, len(in))
	defer func() {
		for _, it := range its {
			it.Close()
		}
	}()
	var h runHeap
	for i, r := range in {
		lower, upper := runBounds(r.id)
		it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return err
		}
		its = append(its, it)
		if it.First() {
			h.at = append(h.at, i)
		}
	}
	h.its = its
	h.init()
	out := markRun{id: db.lastRun.Add(1), maxExpires: math.MinInt64}
	inMarks := 0
	for _, r := range in {
		inMarks += r.marks
	}
	out.filter = newRunFilter(inMarks) // sized for the most it may hold
	tables := runTables{db: db, name: fmt.Sprintf("merge-%d", out.id), split: runTableBytes}
	defer tables.remove()
	var kb [runKeyLen]byte
	var vb [16]byte
	for n := 0; ; n++ {
		if n%(1<<16) == 0 {
			select {
			case <-db.done:
				return ErrClosed
			default:
			}
		}
		// The smallest key of the runs, and its latest expiry.
		if len(h.at) == 0 {
			break
		}
		k := store.MarkKey(h.key(h.at[0]))
		expires := int64(math.MinInt64)
		for len(h.at) > 0 && store.MarkKey(h.key(h.at[0])) == k {
			i := h.at[0]
			v, err := its[i].ValueAndErr()
			if err != nil {
				return err
			}
			e, err := decodeMark(v)
			if err != nil {
				return fmt.Errorf("run %d: mark %x: %w", in[i].id, k[:], err)
			}
			expires = max(expires, e)
			h.next()
		}
		if expires <= now {
			continue
		}
		if err := tables.set(runMarkKey(&kb, out.id, &k), appendMark(vb[:0], expires)); err != nil {
			return err
		}
		out.marks++
		out.maxExpires = max(out.maxExpires, expires)
		out.holds(&k)
	}
	for i, it := range its {
		if err := it.Error(); err != nil {
			return fmt.Errorf("run %d: %w", in[i].id, err)
		}
	}
	// The header goes last, in a table of its own, once the run's count
	// and latest expiry are known: it sorts before the marks, and Pebble
	// ingests it with them.
	if out.marks > 0 {
		if err := tables.closeTable(); err != nil {
			return err
		}
		var hk [9]byte
		if err := tables.set(runHeaderKey(&hk, out.id), appendRunHeader(vb[:0], out)); err != nil {
			return err
		}
	}

	db.spillMu.Lock()
	defer db.spillMu.Unlock()
	listed := db.listedRuns()
	for _, r := range in {
		if !slices.ContainsFunc(listed, func(l markRun) bool { return l.id == r.id }) {
			return errMergeStale
		}
	}
	if db.runEdits != edits {
		return errMergeStale
	}
	if err := tables.ingest(); err != nil {
		return err
	}
	// A lookup that listed the inputs may still seek them: wait for it
	// before they go. One that lists the run after sees it ingested.
	db.runReaders.Lock()
	if out.marks > 0 {
		db.listRuns(in, out)
	} else {
		db.listRuns(in)
	}
	db.runReaders.Unlock()
	db.runEdits++
	// Losing the deletion to a crash only leaves the inputs' marks twice,
	// which lookups and merges take as one.
	return db.deleteRuns(in)
}

// runHeap orders a merge's inputs by the key each is at, least first: a
// binary heap of their indexes, so that finding the next key takes a few
// comparisons, not one an input.
type runHeap struct {
	its []*pebble.Iterator
	at  []int // indexes into its, of the inputs not yet at their end
}

// key is the mark key input i is at.
func (h *runHeap) key(i int) []byte { return h.its[i].Key()[9:] }

func (h *runHeap) less(a, b int) bool {
	ka, kb := h.key(h.at[a]), h.key(h.at[b])
	if x, y := binary.BigEndian.Uint64(ka), binary.BigEndian.Uint64(kb); x != y {
		return x < y
	}
	return binary.BigEndian.Uint64(ka[8:]) < binary.BigEndian.Uint64(kb[8:])
}

func (h *runHeap) init() {
	for i := len(h.at)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *runHeap) down(i int) {
	for {
		least, l := i, 2*i+1
		if l < len(h.at) && h.less(l, least) {
			least = l
		}
		if r := l + 1; r < len(h.at) && h.less(r, least) {
			least = r
		}
		if least == i {
			return
		}
		h.at[i], h.at[least] = h.at[least], h.at[i]
		i = least
	}
}

// next moves the least input on, dropping it at its end (its error, if
// any, is read once the merge is done).
func (h *runHeap) next() {
	if !h.its[h.at[0]].Next() {
		n := len(h.at) - 1
		h.at[0] = h.at[n]
		h.at = h.at[:n]
	}
	h.down(0)
}

// deleteRuns deletes runs whole, without a sync. The caller holds spillMu.
func (db *DB) deleteRuns(runs []markRun) error {
	b := db.pdb.NewBatch()
	defer b.Close()
	var hk [9]byte
	for _, r := range runs {
		_, upper := runBounds(r.id)
		if err := b.DeleteRange(runHeaderKey(&hk, r.id), upper, nil); err != nil {
			return err
		}
	}
	return noSpace(b.Commit(pebble.NoSync))
}

// purgeRuns deletes the runs whose marks have all expired at now.
func (db *DB) purgeRuns(now int64) error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	db.spillMu.Lock()
	defer db.spillMu.Unlock()
	var expired []markRun
	for _, r := range db.listedRuns() {
		if r.maxExpires <= now {
			expired = append(expired, r)
		}
	}
	if len(expired) == 0 {
		return nil
	}
	if err := db.admitMaintenance(); err != nil {
		return err
	}
	db.listRuns(expired)
	db.runEdits++
	if err := db.deleteRuns(expired); err != nil {
		return fmt.Errorf("pebbledb: deleting %d runs of expired marks: %w", len(expired), err)
	}
	return nil
}

// unmarkRuns deletes, in b, each key of unmark from every run that holds
// it. The caller holds spillMu.
func (db *DB) unmarkRuns(b *pebble.Batch, unmark []store.MarkKey) error {
	var kb [runKeyLen]byte
	block, probe := make([]uint64, len(unmark)), make([]uint64, len(unmark))
	for i := range unmark {
		block[i], probe[i] = runHash(&unmark[i])
	}
	for _, r := range db.listedRuns() {
		for i := range unmark {
			if !r.mayHold(block[i], probe[i]) {
				continue
			}
			k := runMarkKey(&kb, r.id, &unmark[i])
			found, err := db.get(k, func([]byte) error { return nil })
			if err != nil {
				return fmt.Errorf("run %d: mark %x: %w", r.id, unmark[i][:], err)
			}
			if found {
				if err := b.Delete(k, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
