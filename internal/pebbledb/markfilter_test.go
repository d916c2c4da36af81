package pebbledb

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// markKeys returns n SHA-256 mark keys of scope, as the engine makes them.
func markKeys(scope string, from, n int) []store.MarkKey {
	keys := make([]store.MarkKey, n)
	for i := range keys {
		keys[i] = store.MarkKeyOf(scope, fmt.Sprintf("%012d", from+i))
	}
	return keys
}

// commitMarks commits marks of keys expiring at exp, in one Write.
func commitMarks(t testing.TB, db *DB, keys []store.MarkKey, exp time.Time) {
	t.Helper()
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: "1"}}
	for _, k := range keys {
		w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
	}
	if err := db.Commit(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}

// wantMarks checks that Completed finds exactly the keys of want at now,
// and returns how many marks it looked up in Pebble.
func wantMarks(t *testing.T, db *DB, keys []store.MarkKey, now time.Time, want bool) int64 {
	t.Helper()
	before := db.markGets.Load()
	done := make([]bool, len(keys))
	if err := db.Completed(context.Background(), keys, now, done); err != nil {
		t.Fatal(err)
	}
	for i, d := range done {
		if d != want {
			t.Fatalf("mark %d (%x) present = %v, want %v", i, keys[i][:], d, want)
		}
	}
	return db.markGets.Load() - before
}

// TestMarkFilter: a mark written is found, in Pebble once spilled; a key
// never marked is answered absent by the filter alone, through Completed
// and through ClaimRecords.
func TestMarkFilter(t *testing.T) {
	db := openMem(t)
	now := time.Now()
	marked, absent := markKeys("scope", 0, 500), markKeys("scope", 500, 2000)
	commitMarks(t, db, marked, now.Add(time.Hour))
	if n := wantMarks(t, db, marked, now, true); n != 0 {
		t.Errorf("%d Pebble lookups for %d marks in the journal, want none", n, len(marked))
	}
	spill(t, db)

	if n := wantMarks(t, db, marked, now, true); n != int64(len(marked)) {
		t.Errorf("%d Pebble lookups for %d marks, want one each", n, len(marked))
	}
	if n := wantMarks(t, db, marked, now.Add(2*time.Hour), false); n != int64(len(marked)) {
		t.Errorf("expired: %d Pebble lookups for %d marks, want one each", n, len(marked))
	}
	// 2,000 absent keys against 500 in a segment sized for 65,536: the
	// filter's false-positive rate is about 1e-9 here, and its hashing is
	// deterministic, so any lookup at all is a bug.
	if n := wantMarks(t, db, absent, now, false); n != 0 {
		t.Errorf("%d Pebble lookups for keys never marked, want 0", n)
	}

	before := db.markGets.Load()
	c := &store.RecordClaims{Keys: absent[:100], Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
	copy(c.Owner[:], "owner")
	if err := db.ClaimRecords(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if c.Held() != 100 || c.Status[0] != store.Acquired || c.Status[99] != store.Acquired {
		t.Fatalf("claims %v", c.Status)
	}
	if n := db.markGets.Load() - before; n != 0 {
		t.Errorf("ClaimRecords: %d Pebble lookups for keys never marked, want 0", n)
	}
	c = &store.RecordClaims{Keys: append(append([]store.MarkKey{}, marked[:50]...), absent[100:150]...), Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
	copy(c.Owner[:], "owner")
	if err := db.ClaimRecords(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.Status {
		if want := map[bool]store.ClaimStatus{true: store.Completed, false: store.Acquired}[i < 50]; s != want {
			t.Fatalf("key %d: status %v, want %v", i, s, want)
		}
	}
}

// TestMarkFilterReopen: the filter is rebuilt from the marks on disk when
// the DB opens, after a Close and after a crash that kept only what was
// synced; marks a crash took back leave at most false positives.
func TestMarkFilterReopen(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	marked, absent := markKeys("scope", 0, 300), markKeys("scope", 300, 1000)

	t.Run("close", func(t *testing.T) {
		dir := t.TempDir()
		db, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		commitMarks(t, db, marked, now.Add(time.Hour))
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err = Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if st := db.marks.stats(); st.Keys != int64(len(marked)) {
			t.Errorf("rebuilt filter %+v, want %d keys", st, len(marked))
		}
		wantMarks(t, db, marked, now, true)
		if n := wantMarks(t, db, absent, now, false); n != 0 {
			t.Errorf("%d Pebble lookups for keys never marked, want 0", n)
		}
	})

	t.Run("crash", func(t *testing.T) {
		fs := vfs.NewCrashableMem()
		db, err := Open("db", withFS(fs), WithDiskReserve(0))
		if err != nil {
			t.Fatal(err)
		}
		commitMarks(t, db, marked, now.Add(time.Hour)) // synced
		// Applied, not synced: a power cut may take these back.
		w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: "2"}}
		for _, k := range absent {
			w.Marks = append(w.Marks, store.Mark{Key: k, Expires: now.Add(time.Hour)})
		}
		synced, err := db.CommitPipelined(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		if err := synced(); err != nil {
			t.Fatal(err)
		}
		db.Close()

		db, err = Open("db", withFS(crashed), WithDiskReserve(0))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		wantMarks(t, db, marked, now, true)
		// The unsynced commit is there whole or not at all, and the
		// filter agrees with Pebble either way.
		done := make([]bool, len(absent))
		if err := db.Completed(ctx, absent, now, done); err != nil {
			t.Fatal(err)
		}
		for i := range done {
			if done[i] != done[0] {
				t.Fatalf("unsynced commit survived in part: mark %d %v, mark 0 %v", i, done[i], done[0])
			}
		}
		t.Logf("the unsynced commit survived the crash: %v", done[0])
	})
}

// TestMarkFilterLegacy: marks an earlier version left under FNV-1a keys,
// which are not uniform, are found after a reopen, and their neighbours
// are still told apart by the filter.
func TestMarkFilterLegacy(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	legacy := make([]store.MarkKey, 1000)
	near := make([]store.MarkKey, 5000)
	for i := range legacy {
		legacy[i] = store.LegacyMarkKeyOf("scope", fmt.Sprintf("%012d", i))
	}
	for i := range near {
		near[i] = store.LegacyMarkKeyOf("scope", fmt.Sprintf("%012d", len(legacy)+i))
	}
	commitMarks(t, db, legacy, now.Add(time.Hour))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	wantMarks(t, db, legacy, now, true)
	if n := wantMarks(t, db, near, now, false); n > 5 {
		t.Errorf("%d of %d neighbouring legacy keys passed the filter: their bits are not mixed", n, len(near))
	}

	// And through store.Legacy, as the engine looks them up.
	until, err := db.LegacyKeysUntil(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !until.After(now) {
		t.Fatalf("LegacyKeysUntil %v, want after %v", until, now)
	}
	l, err := store.LegacyOf(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]store.MarkKey, 20)
	for i := range keys {
		keys[i] = store.MarkKeyOf("scope", fmt.Sprintf("%012d", i+990))
	}
	c := &store.RecordClaims{Keys: keys, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
	if err := l.ClaimRecords(context.Background(), db, c, "scope", func(i int) string { return fmt.Sprintf("%012d", i+990) }); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.Status {
		if want := map[bool]store.ClaimStatus{true: store.Completed, false: store.Acquired}[i < 10]; s != want {
			t.Fatalf("key %d: status %v, want %v", i, s, want)
		}
	}
}

// TestMarkFilterSweep: once a sweep purged the marks expired at t, the
// segments whose keys all expired at t are dropped; a mark renewed past t
// stays found, and one added after the sweep too.
func TestMarkFilterSweep(t *testing.T) {
	ctx := context.Background()
	db := openMem(t)
	db.marks.minKeys = 1000
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	old := markKeys("scope", 0, 1000) // fills the first segment
	commitMarks(t, db, old, base)
	renewed := old[:10]
	commitMarks(t, db, renewed, base.Add(time.Hour)) // into a second segment
	if st := db.marks.stats(); st.Segments != 2 {
		t.Fatalf("filter %+v, want 2 segments", st)
	}

	if err := db.Sweep(ctx, base.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st := db.marks.stats(); st.Segments != 2 {
		t.Fatalf("after a sweep before any expiry: filter %+v, want 2 segments", st)
	}
	if err := db.Sweep(ctx, base); err != nil {
		t.Fatal(err)
	}
	if st := db.marks.stats(); st.Segments != 1 || st.Keys != int64(len(renewed)) {
		t.Fatalf("after the sweep: filter %+v, want the second segment alone", st)
	}
	wantMarks(t, db, renewed, base.Add(-time.Hour), true)
	if n := wantMarks(t, db, old[10:], base.Add(-time.Hour), false); n != 0 {
		t.Errorf("%d Pebble lookups for purged marks, want 0", n)
	}
	later := markKeys("scope", 1000, 10)
	commitMarks(t, db, later, base.Add(2*time.Hour))
	wantMarks(t, db, later, base, true)

	if err := db.Sweep(ctx, base.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st := db.marks.stats(); st.Segments != 0 {
		t.Fatalf("after every mark expired: filter %+v, want empty", st)
	}
	wantMarks(t, db, append(later, renewed...), base, false)
	commitMarks(t, db, later, base.Add(4*time.Hour))
	wantMarks(t, db, later, base, true)
}

// TestMarkFilterConcurrent: a mark whose commit returned is found by every
// lookup after it, while other commits add to the filter, grow it and
// sweeps drop from it.
func TestMarkFilterConcurrent(t *testing.T) {
	ctx := context.Background()
	db := openMem(t)
	db.marks.minKeys = 256 // so that segments fill, and are dropped
	now := time.Now()
	stopSweeps := sweepAlongside(t, db, now)
	var writers sync.WaitGroup
	for g := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 16 {
				keys := markKeys("scope/"+strconv.Itoa(g), i*500, 500)
				// The first half already expired at now: the sweeps
				// purge them, and drop their segments.
				exp := now.Add(time.Hour)
				if i < 8 {
					exp = now.Add(-time.Hour)
				}
				w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: strconv.Itoa(g)}, NewCheckpoint: store.Checkpoint{Sequence: "1"}}
				for _, k := range keys {
					w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
				}
				if err := db.Commit(ctx, w); err != nil {
					t.Error(err)
					return
				}
				done := make([]bool, len(keys))
				if err := db.Completed(ctx, keys, now.Add(-2*time.Hour), done); err != nil {
					t.Error(err)
					return
				}
				for j, d := range done {
					if !d && exp.After(now) {
						t.Errorf("writer %d batch %d: mark %d missing right after its commit", g, i, j)
						return
					}
				}
			}
		}()
	}
	writers.Wait()
	stopSweeps()
	if err := db.Sweep(ctx, now); err != nil {
		t.Fatal(err)
	}
	st := db.marks.stats()
	for _, s := range db.marks.segments() {
		if s.maxExpires.Load() <= now.UnixNano() {
			t.Errorf("a segment of expired marks outlived the sweep: filter %+v", st)
		}
	}
	t.Logf("filter after the sweeps: %+v", st)
	if st.Keys >= 4*16*500 {
		t.Errorf("no segment was dropped: filter %+v", st)
	}
	for g := range 4 {
		for i := 8; i < 16; i++ {
			wantMarks(t, db, markKeys("scope/"+strconv.Itoa(g), i*500, 500), now, true)
		}
	}
}

// TestMarkFilterFalsePositives measures a full segment's false-positive
// rate, on SHA-256 keys and on FNV-1a ones of sequential ids.
func TestMarkFilterFalsePositives(t *testing.T) {
	for _, kind := range []string{"sha256", "fnv"} {
		t.Run(kind, func(t *testing.T) {
			key := func(i int) store.MarkKey {
				if kind == "fnv" {
					return store.LegacyMarkKeyOf("scope", strconv.Itoa(i))
				}
				return store.MarkKeyOf("scope", strconv.Itoa(i))
			}
			const n = 1 << 16
			f := markFilter{minKeys: n / 4}
			for i := range n {
				k := key(i)
				f.add(&k, 0)
			}
			if st := f.stats(); st.Segments != 3 || st.Keys != n {
				t.Fatalf("filter %+v", st)
			}
			for i := range n {
				if k := key(i); !f.mayContain(&k) {
					t.Fatalf("false negative for key %d", i)
				}
			}
			// The last segment, sized for the n/2 keys before it, is
			// full: measure it alone.
			last := f.segments()[2]
			const probes = 100_000
			fp := 0
			for i := range probes {
				k := key(n + i)
				if last.mayContain(markHash(&k)) {
					fp++
				}
			}
			rate := float64(fp) / probes
			t.Logf("%s keys: %.2f%% false positives in a full segment, %.2f bits a key", kind, 100*rate, float64(len(last.words)*64)/float64(last.count.Load()))
			if rate > 0.02 {
				t.Errorf("false-positive rate %.2f%%, want under 2%%", 100*rate)
			}
		})
	}
}

// fillMarks commits n marks of scope "bench" in Writes of 1,000, and
// returns the DB's directory.
func fillMarks(b *testing.B, n int, opts ...Option) string {
	b.Helper()
	dir := b.TempDir()
	db, err := Open(dir, opts...)
	if err != nil {
		b.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for i := 0; i < n; i += 1000 {
		commitMarks(b, db, markKeys("bench", i, min(1000, n-i)), exp)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkLookupMarks looks up windows of mark keys, as ClaimRecords
// does, in a directory of 200,000 marks, with and without the filter: in
// 16 runs (runs.go), and in mark keys as earlier versions wrote them.
// Absent keys are what payload keys mostly look up; present ones what a
// replay does, and the keys a filter lets through. The absent keys sought
// in the runs (no mark filter: as if each were a false positive of it)
// are sought with the runs' filters and without (no room for them).
//
//	go test -run '^$' -bench LookupMarks -benchtime 2000x ./internal/pebbledb/
func BenchmarkLookupMarks(b *testing.B) {
	const n = 200_000
	runs := fillMarks(b, n, withSpillMarksAt(n/16), withoutMerger())
	keyed := fillMarks(b, n, withDirectMarks())
	present, absent := markKeys("bench", 0, n), markKeys("bench", n, n)
	type variant struct {
		name    string
		present bool
		opts    []Option
		window  int
		dir     string
	}
	unfiltered := []Option{withoutMarkFilter()}
	variants := []variant{
		{"absent/filter/100", false, nil, 100, runs},
		{"absent/runs/100", false, unfiltered, 100, runs},
		{"absent/runs-no-run-filters/100", false, append(unfiltered, WithMarkFilterMemory(1)), 100, runs},
		{"absent/keys/100", false, unfiltered, 100, keyed},
	}
	for _, w := range []int{1, 2, 4, 8, 16, 100} {
		variants = append(variants,
			variant{fmt.Sprintf("present/runs/%d", w), true, nil, w, runs},
			variant{fmt.Sprintf("present/keys/%d", w), true, nil, w, keyed})
	}
	for _, bm := range variants {
		b.Run(bm.name, func(b *testing.B) {
			db := openDir(b, bm.dir, append(bm.opts, withoutMerger())...)
			now := time.Now()
			keys := absent
			if bm.present {
				keys = present
			}
			done := make([]bool, bm.window)
			b.ResetTimer()
			for i := range b.N {
				from := (i * bm.window) % (n - bm.window)
				if err := db.Completed(context.Background(), keys[from:from+bm.window], now, done); err != nil {
					b.Fatal(err)
				}
				if done[0] != bm.present {
					b.Fatalf("mark %d present = %v", from, done[0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bm.window), "ns/key")
		})
	}
}

// BenchmarkOpenMarks measures how long Open takes with 1,000,000 marks on
// disk, with the mark filter (rebuilt from them) and without: the
// difference is the rebuild.
//
//	go test -run '^$' -bench OpenMarks -benchtime 5x ./internal/pebbledb/
func BenchmarkOpenMarks(b *testing.B) {
	const n = 1_000_000
	dir := fillMarks(b, n)
	for _, filter := range []bool{true, false} {
		b.Run(map[bool]string{true: "filter", false: "none"}[filter], func(b *testing.B) {
			var opts []Option
			if !filter {
				opts = append(opts, withoutMarkFilter())
			}
			var st markFilterStats
			for range b.N {
				db, err := Open(dir, opts...)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				st = db.marks.stats()
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if filter && st.Keys != n {
				b.Fatalf("filter %+v, want %d keys", st, n)
			}
			b.ReportMetric(float64(st.Bytes)/n, "filter-bytes/mark")
		})
	}
}

// BenchmarkMarkFilter compares the filter with the alternative of a set
// of the keys (a Go map) at 1,000,000 marks: the time to add a key and to
// look up one never added, and the memory a key takes.
func BenchmarkMarkFilter(b *testing.B) {
	const n = 1 << 20
	keys := markKeys("bench", 0, n)
	absent := markKeys("bench", n, n)
	b.Run("bloom", func(b *testing.B) {
		var f markFilter
		for i := range keys {
			f.add(&keys[i], 0)
		}
		st := f.stats()
		b.ResetTimer()
		fp := 0
		for i := range b.N {
			if f.mayContain(&absent[i%n]) {
				fp++
			}
		}
		b.ReportMetric(float64(st.Bytes)/n, "bytes/mark")
		b.ReportMetric(float64(st.Segments), "segments")
		b.ReportMetric(100*float64(fp)/float64(b.N), "%fp")
	})
	b.Run("bloom/add", func(b *testing.B) {
		var f markFilter
		for i := range b.N {
			f.add(&keys[i%n], 0)
		}
	})
	b.Run("map", func(b *testing.B) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		set := make(map[store.MarkKey]struct{})
		for i := range keys {
			set[keys[i]] = struct{}{}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		var mu sync.RWMutex // what concurrent adds would need
		b.ResetTimer()
		for i := range b.N {
			mu.RLock()
			_, ok := set[absent[i%n]]
			mu.RUnlock()
			if ok {
				b.Fatal()
			}
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/mark")
		runtime.KeepAlive(set)
	})
}

// BenchmarkCommitMarks commits Writes of 100 marks of new keys, pipelined,
// as a payload-keyed mapping's batches do: what a mark costs to write,
// Pebble's flushes and compactions included (cpu-ns/mark).
//
//	go test -run '^$' -bench CommitMarks -benchtime 3000x ./internal/pebbledb/
func BenchmarkCommitMarks(b *testing.B) {
	db, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const window = 100
	keys := markKeys("bench", 0, b.N*window)
	exp := time.Now().Add(time.Hour)
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}}
	var synced func() error
	b.ResetTimer()
	cpu := cpuTime()
	for i := range b.N {
		w.NewCheckpoint.Sequence = idem.SequenceOf(uint64(i + 1))
		w.Marks = w.Marks[:0]
		for _, k := range keys[i*window : (i+1)*window] {
			w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
		}
		if synced, err = db.CommitPipelined(context.Background(), w); err != nil {
			b.Fatal(err)
		}
	}
	if err := synced(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*window), "ns/mark")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*window), "cpu-ns/mark")
}

// cpuTime is the CPU time the process has used, Pebble's background work
// included: what a benchmark costs whatever else loads the machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestMarkFilterSteadyState: under a steady rate of marks that expire
// after a fixed retention, swept every so often, the filter stops growing:
// one to three segments live, their capacity between about 1.2 and 2.5
// times the marks live, however long it runs.
func TestMarkFilterSteadyState(t *testing.T) {
	const retention, sweepEvery = 20_000, 600 // in marks added
	f := markFilter{minKeys: 256}
	var k store.MarkKey
	lo, hi := 1e9, 0.0
	for i := range 12 * retention {
		if i%sweepEvery == 0 {
			f.drop(int64(i))
		}
		binary.LittleEndian.PutUint64(k[:], uint64(i))
		f.add(&k, int64(i+retention))
		if i < 4*retention || i%101 != 0 {
			continue
		}
		var capacity int64
		segs := f.segments()
		for _, s := range segs {
			capacity += s.capacity
		}
		r := float64(capacity) / retention
		lo, hi = min(lo, r), max(hi, r)
		if len(segs) > 3 || r > 3 {
			t.Fatalf("after %d marks: %d segments of %d keys in all, for %d live marks", i, len(segs), capacity, retention)
		}
	}
	t.Logf("capacity %.2f to %.2f times the live marks, %d bits a key: %.1f to %.1f bytes a live mark", lo, hi, filterBitsPerKey, lo*filterBitsPerKey/8, hi*filterBitsPerKey/8)
}

// TestMarkFilterMemoryBound: at its memory bound the filter adds no
// segment, and its last one takes the keys beyond its capacity: lookups
// go on to Pebble more often, and never miss a mark. Dropping segments
// frees room for new ones.
func TestMarkFilterMemoryBound(t *testing.T) {
	const bound = 10_000 // bytes: 5,000 keys at 16 bits
	f := markFilter{minKeys: 1000, maxBytes: bound}
	key := func(i int) store.MarkKey { return store.MarkKeyOf("scope", strconv.Itoa(i)) }
	for i := range 20_000 {
		k := key(i)
		f.add(&k, int64(i))
	}
	st := f.stats()
	if st.Bytes > bound || st.Keys != 20_000 {
		t.Fatalf("filter %+v, want at most %d bytes", st, bound)
	}
	for i := range 20_000 {
		if k := key(i); !f.mayContain(&k) {
			t.Fatalf("false negative for key %d", i)
		}
	}
	fp := 0
	for i := range 10_000 {
		if k := key(100_000 + i); f.mayContain(&k) {
			fp++
		}
	}
	t.Logf("at the bound: %+v, %.1f%% false positives", st, float64(fp)/100)
	if fp < 1000 {
		t.Errorf("%d false positives in 10,000: the segments hold more than their capacity, so expected many", fp)
	}

	// Segments of keys 0 to 999 and 1,000 to 1,999 expire; the overfilled
	// last one does not, and the next add finds room for a new segment.
	f.drop(2500)
	segs := len(f.segments())
	k := key(20_000)
	f.add(&k, 20_000)
	if st := f.stats(); len(f.segments()) != segs+1 || st.Bytes > bound {
		t.Fatalf("after the drop: filter %+v, %d segments before the add", st, segs)
	}
	for i := 2000; i <= 20_000; i++ {
		if k := key(i); !f.mayContain(&k) {
			t.Fatalf("false negative for key %d after the drop", i)
		}
	}

	// Through the DB, and a rebuild larger than the bound.
	dir := t.TempDir()
	db, err := Open(dir, WithMarkFilterMemory(4096))
	if err != nil {
		t.Fatal(err)
	}
	db.marks.minKeys = 256
	now := time.Now()
	marked := markKeys("scope", 0, 5000)
	commitMarks(t, db, marked, now.Add(time.Hour))
	wantMarks(t, db, marked, now, true)
	if st := db.marks.stats(); st.Bytes > 4096 {
		t.Errorf("filter %+v over its bound", st)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, WithMarkFilterMemory(4096))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if st := db.marks.stats(); st.Bytes > 4096 || st.Keys != 5000 {
		t.Errorf("rebuilt filter %+v, want 5000 keys in 4096 bytes", st)
	}
	wantMarks(t, db, marked, now, true)
	wantMarks(t, db, markKeys("scope", 5000, 1000), now, false)
}
