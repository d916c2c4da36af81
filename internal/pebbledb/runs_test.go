package pebbledb

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem/store"
)

// runIDs returns the numbers of the runs db lists.
func runIDs(db *DB) []uint64 {
	var ids []uint64
	for _, r := range db.listedRuns() {
		ids = append(ids, r.id)
	}
	return ids
}

// TestRunsMerge: spills add a run each, and runs of one size class merge
// mergeFanIn at a time, so that they stay few; every mark is found in
// them, before and after a restart, and no table is left in the spill
// directory.
func TestRunsMerge(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir, withoutMerger())
	now := time.Now()
	var all []store.MarkKey
	const spills = mergeFanIn*mergeFanIn + 5
	for i := range spills {
		keys := markKeys("scope", i*10, 10)
		commitMarks(t, db, keys, now.Add(time.Hour))
		spill(t, db)
		if err := db.mergeRuns(); err != nil { // as the merger would
			t.Fatal(err)
		}
		all = append(all, keys...)
		if pickMerge(db.listedRuns()) != nil {
			t.Fatalf("after spill %d: runs %v, which merges leave with fewer than %d in each class", i, db.listedRuns(), mergeFanIn)
		}
	}
	// 16 spills of 10 marks (class 1) merge into one of 160 (class 2),
	// and 16 of those into one of 2,560 (class 3).
	classes := map[int]int{}
	total := 0
	for _, r := range db.listedRuns() {
		classes[r.class()]++
		total += r.marks
	}
	if want := map[int]int{3: 1, 1: 5}; !maps.Equal(classes, want) || total != len(all) {
		t.Fatalf("runs by class %v holding %d marks, want %v and %d", classes, total, want, len(all))
	}
	if n := countRunMarks(t, db); n != len(all) {
		t.Fatalf("%d marks in runs on disk, want %d", n, len(all))
	}
	wantMarks(t, db, all, now, true)
	wantMarks(t, db, markKeys("scope", len(all), 100), now, false)
	ids := runIDs(db)
	db = reopen(t, db, dir)
	if got := runIDs(db); !slices.Equal(got, ids) {
		t.Fatalf("runs after a restart %v, want %v", got, ids)
	}
	wantMarks(t, db, all, now, true)
	if names, err := vfs.Default.List(vfs.Default.PathJoin(dir, spillDir)); err != nil || len(names) > 0 {
		t.Fatalf("spill directory holds %v (%v), want nothing", names, err)
	}
}

// TestRunsLookup: lookups in runs, of one key and of windows of several,
// find live marks and pass over expired ones, in any run, with the mark
// filter and without.
func TestRunsLookup(t *testing.T) {
	for _, opts := range [][]Option{nil, {withoutMarkFilter()}} {
		db := openMem(t, opts...)
		now := time.Now()
		keys := markKeys("scope", 0, 64)
		for i := 0; i < len(keys); i += 16 {
			commitMarks(t, db, keys[i:i+8], now.Add(time.Hour))
			commitMarks(t, db, keys[i+8:i+16], now.Add(-time.Hour))
			spill(t, db)
		}
		for _, n := range []int{1, 7, 8, len(keys)} {
			done := make([]bool, n)
			if err := db.Completed(context.Background(), keys[:n], now, done); err != nil {
				t.Fatal(err)
			}
			for i, d := range done {
				if want := i%16 < 8; d != want {
					t.Fatalf("lookup of %d keys: key %d done = %v, want %v", n, i, d, want)
				}
			}
		}
		wantMarks(t, db, markKeys("scope", 64, 64), now, false)
	}
}

// TestRunFilters: a key is sought only in the runs whose filter may hold
// it, which a merge and Open fill again; with no room for the filters
// under the memory bound, every run is sought, and every mark still
// found.
func TestRunFilters(t *testing.T) {
	for _, bound := range []int64{0, 1} {
		dir := t.TempDir()
		opts := []Option{withoutMarkFilter(), withoutMerger(), WithMarkFilterMemory(bound)}
		db := openDir(t, dir, opts...)
		now := time.Now()
		const runs, perRun = 10, 200
		keys := markKeys("scope", 0, runs*perRun)
		for i := 0; i < len(keys); i += perRun {
			commitMarks(t, db, keys[i:i+perRun], now.Add(time.Hour))
			spill(t, db)
		}
		absent := markKeys("scope", len(keys), 1000)
		check := func(when string) {
			t.Helper()
			wantMarks(t, db, keys, now, true)
			before := db.runSeeks.Load()
			wantMarks(t, db, absent, now, false)
			seeks, all := db.runSeeks.Load()-before, int64(len(absent)*len(db.listedRuns()))
			if bound == 0 && seeks > all/10 {
				t.Errorf("%s: %d seeks in runs for %d absent keys in %d runs, want at most a tenth", when, seeks, len(absent), len(db.listedRuns()))
			}
			if bound == 1 && seeks != all {
				t.Errorf("%s, no room for filters: %d seeks, want one a key a run, %d", when, seeks, all)
			}
		}
		check("spilled")
		if err := db.merge(db.listedRuns()[:4], db.runEdits); err != nil {
			t.Fatal(err)
		}
		check("merged")
		db = reopen(t, db, dir, opts...)
		check("reopened")
	}
}

// TestRunFilterFalsePositives: a run's filter, full, lets about 3% of
// absent keys through, SHA-256 or legacy FNV-1a ones (less uniform in
// their first bytes, which pick the block: 3.5%), and never misses a key
// added.
func TestRunFilterFalsePositives(t *testing.T) {
	for _, tc := range []struct {
		kind    string
		key     func(scope string, i int) store.MarkKey
		maxRate float64
	}{
		{"sha256", func(scope string, i int) store.MarkKey { return store.MarkKeyOf(scope, strconv.Itoa(i)) }, 0.04},
		{"fnv", func(scope string, i int) store.MarkKey { return store.LegacyMarkKeyOf(scope, strconv.Itoa(i)) }, 0.1},
	} {
		const n, probes = 50_000, 200_000
		f := newRunFilter(n)
		for i := range n {
			f.add(runHash(new(tc.key("scope", i))))
		}
		for i := range n {
			if !f.mayContain(runHash(new(tc.key("scope", i)))) {
				t.Fatalf("%s key %d added, not found", tc.kind, i)
			}
		}
		fp := 0
		// Absent keys of other scopes, of the same lengths.
		for i := range probes {
			if f.mayContain(runHash(new(tc.key("other"+strconv.Itoa(i%4), i%n)))) {
				fp++
			}
		}
		rate := float64(fp) / probes
		t.Logf("%s keys: %.2f%% false positives at %d bits a key", tc.kind, 100*rate, runFilterBits)
		if rate > tc.maxRate {
			t.Errorf("%s keys: false-positive rate %.2f%%, want under %.0f%%", tc.kind, 100*rate, 100*tc.maxRate)
		}
	}
}

// TestRunFiltersRoom: the runs' filters take at most a third of the
// bound, and no more than the segments leave.
func TestRunFiltersRoom(t *testing.T) {
	f := markFilter{maxBytes: 3 << 20}
	if !f.roomFor(1<<20) || f.roomFor(1<<20+1) {
		t.Errorf("with no segment: room for 1 MiB of runs' filters %v, for a byte more %v; want a third of 3 MiB", f.roomFor(1<<20), f.roomFor(1<<20+1))
	}
	f.minKeys = 5 << 18 // a segment of 2.5 MiB: the rest is under a third
	var k store.MarkKey
	f.add(&k, 0)
	if used := f.segments()[0].bytes(); !f.roomFor(3<<20-used) || f.roomFor(3<<20-used+1) {
		t.Errorf("beside %d bytes of segments: want room for the rest of the bound, no more", used)
	}
	if f := (markFilter{}); !f.roomFor(1 << 40) {
		t.Error("no bound: want room for any filters")
	}
}

// TestRunsIngestSplit: a run whose key range a table of the last level
// spans (keys below and above 'r', and none in between) is still
// ingested into the last level, that table split around it, so that no
// compaction rewrites it; an older directory's format is raised to allow
// the split.
func TestRunsIngestSplit(t *testing.T) {
	dir := t.TempDir()
	// A directory at the format Pebble makes by default, as idem made
	// them before, whose one table spans the runs' key range.
	pdb, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"q-below", "t-above"} {
		if err := pdb.Set([]byte(k), []byte("v"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := pdb.Compact(context.Background(), []byte("a"), []byte("z"), true); err != nil {
		t.Fatal(err)
	}
	if err := pdb.Close(); err != nil {
		t.Fatal(err)
	}
	db := openDir(t, dir)
	if v := db.pdb.FormatMajorVersion(); v < pebble.FormatVirtualSSTables {
		t.Fatalf("format %s after Open, want at least %s", v, pebble.FormatVirtualSSTables)
	}
	keys := markKeys("scope", 0, 100)
	now := time.Now()
	commitMarks(t, db, keys, now.Add(time.Hour))
	spill(t, db)
	levels, err := db.pdb.SSTables()
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	for level, tables := range levels {
		for _, tb := range tables {
			if tb.Smallest.UserKey[0] == prefixRun {
				runs++
				if level != len(levels)-1 {
					t.Errorf("the run's table is in L%d, want the last level, L%d", level, len(levels)-1)
				}
			}
		}
	}
	if runs != 1 {
		t.Fatalf("%d tables of runs, want 1", runs)
	}
	wantMarks(t, db, keys, now, true)
	for _, k := range []string{"q-below", "t-above"} {
		if _, closer, err := db.pdb.Get([]byte(k)); err != nil {
			t.Fatalf("%s after the split: %v", k, err)
		} else {
			closer.Close()
		}
	}
}

// TestRunsPurge: a sweep deletes the runs whose marks all expired, whole,
// and keeps a run any of whose marks is live, expired ones with it (a
// lookup ignores those); a merge leaves the expired marks out.
func TestRunsPurge(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	ctx := context.Background()
	// In the past, so that a merge (which decides expiry by the clock)
	// finds the marks of base+1m expired.
	base := time.Now().Add(-10 * time.Minute)
	old, mixed := markKeys("scope", 0, 10), markKeys("scope", 10, 10)
	commitMarks(t, db, old, base.Add(time.Minute))
	spill(t, db)
	commitMarks(t, db, mixed[:5], base.Add(time.Minute))
	commitMarks(t, db, mixed[5:], base.Add(time.Hour))
	spill(t, db)
	if err := db.Sweep(ctx, base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	runs := db.listedRuns()
	if len(runs) != 1 || runs[0].maxExpires != base.Add(time.Hour).UnixNano() {
		t.Fatalf("runs after the sweep: %+v, want the mixed one", runs)
	}
	if n := countRunMarks(t, db); n != len(mixed) {
		t.Fatalf("%d marks on disk after the sweep, want the mixed run's %d", n, len(mixed))
	}
	wantMarks(t, db, old, base.Add(2*time.Minute), false)
	wantMarks(t, db, mixed[:5], base.Add(2*time.Minute), false)
	wantMarks(t, db, mixed[5:], base.Add(2*time.Minute), true)
	// Merged with a new run after the sweep's time has come: the expired
	// marks stay behind.
	if err := db.merge(db.listedRuns(), db.runEdits); err != nil {
		t.Fatal(err)
	}
	if n := countRunMarks(t, db); n != 5 {
		t.Fatalf("%d marks on disk after a merge, want 5", n)
	}
	wantMarks(t, db, mixed[5:], base.Add(2*time.Minute), true)
	if err := db.Sweep(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, r := countKeys(t, db, prefixRun), len(db.listedRuns()); n != 0 || r != 0 {
		t.Fatalf("%d run keys and %d runs after every mark expired, want none", n, r)
	}
	db = reopen(t, db, dir)
	if r := len(db.listedRuns()); r != 0 {
		t.Fatalf("%d runs after a restart, want none", r)
	}
}

// TestRunsUnmark: a redrive's unmarking deletes the key from every run
// that holds it, for good: after a restart, and after a merge. A merge
// that read its runs before the redrive is dropped.
func TestRunsUnmark(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	mustCreate(t, db, "s", 1)
	now := time.Now()
	keys := markKeys("scope", 0, 4)
	commitMarks(t, db, keys[:2], now.Add(time.Hour))
	spill(t, db)
	commitMarks(t, db, keys, now.Add(2*time.Hour)) // key 0 in both runs
	spill(t, db)
	stale := db.runEdits
	unmark(t, db, keys[0])
	want := func(stage string) {
		t.Helper()
		wantDone(t, db, stage, keys, now, false, true, true, true)
	}
	want("unmarked")
	ids := runIDs(db)
	if err := db.merge(db.listedRuns(), stale); !errors.Is(err, errMergeStale) {
		t.Fatalf("merge of runs read before the redrive: %v, want %v", err, errMergeStale)
	}
	if got := runIDs(db); !slices.Equal(got, ids) {
		t.Fatalf("runs after a stale merge: %v, want %v", got, ids)
	}
	want("after a stale merge")
	db = reopen(t, db, dir)
	want("reopened")
	if err := db.merge(db.listedRuns(), db.runEdits); err != nil {
		t.Fatal(err)
	}
	want("merged")
	db = reopen(t, db, dir)
	want("merged, reopened")
}

// TestRunsCorrupt: Open refuses a run's mark without its header, and a
// header it cannot read, naming the run.
func TestRunsCorrupt(t *testing.T) {
	for name, kv := range map[string][2][]byte{
		"mark without header": {runMarkKey(new([runKeyLen]byte), 3, &store.MarkKey{1}), appendMark(nil, 1)},
		"bad header":          {runHeaderKey(new([9]byte), 3), {valueVersion, 0xff}},
		"short key":           {[]byte{prefixRun, 1}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db := openDir(t, dir)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			pdb := rawPebble(t, dir, vfs.Default)
			if err := errors.Join(pdb.Set(kv[0], kv[1], pebble.Sync), pdb.Close()); err != nil {
				t.Fatal(err)
			}
			if db, err := Open(dir); !errors.Is(err, errCorrupt) {
				if err == nil {
					db.Close()
				}
				t.Fatalf("Open: %v, want %v", err, errCorrupt)
			}
		})
	}
}

// TestPickMerge: the oldest mergeFanIn runs of the smallest class that has
// that many.
func TestPickMerge(t *testing.T) {
	var runs []markRun
	add := func(n, marks int) {
		for range n {
			runs = append(runs, markRun{id: uint64(len(runs) + 1), marks: marks})
		}
	}
	add(mergeFanIn-1, 10)   // class 1, one short
	add(mergeFanIn+2, 1000) // class 2
	add(1, 10)
	got := pickMerge(runs)
	if len(got) != mergeFanIn || got[0].id != 1 || got[mergeFanIn-1].id != uint64(len(runs)) {
		t.Fatalf("picked %+v, want the class 1 runs", got)
	}
	got = pickMerge(runs[:len(runs)-1])
	if len(got) != mergeFanIn || got[0].id != mergeFanIn {
		t.Fatalf("picked %+v, want the oldest class 2 runs", got)
	}
	if got := pickMerge(runs[:mergeFanIn]); got != nil {
		t.Fatalf("picked %+v from too few of each class, want none", got)
	}
}

// TestRunsMergeWhileLooking: lookups running alongside merges find every
// mark, whether they listed the runs before a merge replaced them or
// after. Run it with -race.
func TestRunsMergeWhileLooking(t *testing.T) {
	db := openMem(t, withoutMerger())
	now := time.Now()
	var all []store.MarkKey
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make([]bool, 100)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				from := 0
				if len(all) > len(done) {
					from = n * 37 % (len(all) - len(done))
				}
				keys := all[from:min(len(all), from+len(done))]
				mu.Unlock()
				if err := db.lookupMarks(keys, now.UnixNano(), done[:len(keys)]); err != nil {
					t.Error(err)
					return
				}
				if i := slices.Index(done[:len(keys)], false); i >= 0 {
					t.Errorf("mark %x not found during merges", keys[i][:])
					return
				}
			}
		}()
	}
	for round := range 4 * mergeFanIn {
		keys := markKeys("scope", round*50, 50)
		commitMarks(t, db, keys, now.Add(time.Hour))
		spill(t, db)
		mu.Lock()
		all = append(all, keys...)
		mu.Unlock()
		if err := db.mergeRuns(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestRunsMergeNeedsRoom: a merge that would leave less than half the
// disk reserve free once its run is written is refused with
// store.ErrNoSpace, changing nothing, and goes through once there is room.
func TestRunsMergeNeedsRoom(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	const reserve = 1 << 20
	db := openDir(t, t.TempDir(), WithDiskReserve(reserve), withDiskFree(&free), withoutMerger())
	now := time.Now()
	for i := range mergeFanIn {
		commitMarks(t, db, markKeys("scope", i*10, 10), now.Add(time.Hour))
		spill(t, db)
	}
	ids := runIDs(db)
	need := uint64(mergeFanIn * 10 * (runKeyLen + 10))
	free.Store(reserve/2 + need - 1)
	db.space.probed.Store(0) // the next admission probes anew
	if err := db.mergeRuns(); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("merge without room: %v, want %v", err, store.ErrNoSpace)
	}
	if got := runIDs(db); !slices.Equal(got, ids) {
		t.Fatalf("runs after a refused merge: %v, want %v", got, ids)
	}
	free.Store(1 << 40)
	db.space.probed.Store(0)
	if err := db.mergeRuns(); err != nil {
		t.Fatal(err)
	}
	if n := len(db.listedRuns()); n != 1 {
		t.Fatalf("%d runs after the merge, want 1", n)
	}
	wantMarks(t, db, markKeys("scope", 0, mergeFanIn*10), now, true)
}

// FuzzDecodeRunHeader: any bytes decode to a run header or an error
// wrapping errCorrupt, never a panic; a header written decodes to itself.
func FuzzDecodeRunHeader(f *testing.F) {
	f.Add([]byte{}, uint64(1), uint32(0), int64(0))
	f.Add([]byte{valueVersion, 0x80}, uint64(7), uint32(1<<17), int64(-1))
	f.Fuzz(func(t *testing.T, raw []byte, id uint64, marks uint32, maxExpires int64) {
		if r, err := decodeRunHeader(id, raw); err != nil && !errors.Is(err, errCorrupt) {
			t.Fatalf("decoding %x: %v, which does not wrap errCorrupt", raw, err)
		} else if err == nil && (r.id != id || r.marks < 0) {
			t.Fatalf("decoding %x gave %+v", raw, r)
		}
		want := markRun{id: id, marks: int(marks & math.MaxInt32), maxExpires: maxExpires}
		got, err := decodeRunHeader(id, appendRunHeader(nil, want))
		if err != nil || got != want {
			t.Fatalf("header %+v decoded as %+v, %v", want, got, err)
		}
	})
}
