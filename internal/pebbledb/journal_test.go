package pebbledb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// openDir opens dir with opts, closed when the test ends.
func openDir(t testing.TB, dir string, opts ...Option) *DB {
	t.Helper()
	db, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// reopen closes db and opens its directory again with opts.
func reopen(t *testing.T, db *DB, dir string, opts ...Option) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return openDir(t, dir, opts...)
}

// crash stands for a crash of db: it returns a DB opened, with opts, on
// what db's filesystem, fs, held synced (a power loss), and closes db.
func crash(t *testing.T, db *DB, fs *vfs.MemFS, opts ...Option) (*DB, *vfs.MemFS) {
	t.Helper()
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open("db", append([]Option{withFS(crashed)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, crashed
}

// layout returns the layout version db's directory holds.
func layout(t *testing.T, db *DB) []byte {
	t.Helper()
	v, closer, err := db.pdb.Get([]byte{prefixFormat})
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	return append([]byte(nil), v...)
}

// rawPebble opens dir on fs as a bare Pebble database, as an earlier
// version of this package would.
func rawPebble(t *testing.T, dir string, fs vfs.FS) *pebble.DB {
	t.Helper()
	pdb, err := pebble.Open(dir, &pebble.Options{FS: fs, Logger: pebbleLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	return pdb
}

// sweepAlongside sweeps db as of now, over and over, until the returned
// stop is called, which waits for the last sweep.
func sweepAlongside(t *testing.T, db *DB, now time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := db.Sweep(context.Background(), now); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestMarkJournal: a commit's marks are one journal entry, found from
// memory without a Pebble lookup; Open after a crash finds them again
// from the journal; a spill moves them into a run and deletes the
// entries, and they are found there, before and after a restart; a clean
// Close spills the journal, and leaves layout 1 only where no run is
// left.
func TestMarkJournal(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := Open("db", withFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.Now()
	keys := markKeys("scope", 0, 300)
	for i := range 3 {
		commitMarks(t, db, keys[i*100:(i+1)*100], now.Add(time.Hour))
	}
	check := func(stage string, wantGets int64) {
		t.Helper()
		if n := wantMarks(t, db, keys, now, true); n != wantGets {
			t.Errorf("%s: %d Pebble lookups, want %d", stage, n, wantGets)
		}
		wantMarks(t, db, keys, now.Add(2*time.Hour), false)
		wantMarks(t, db, markKeys("scope", 300, 300), now, false)
	}
	check("journaled", 0)
	if n, j := countKeys(t, db, prefixMark)+countKeys(t, db, prefixRun), countKeys(t, db, prefixJournal); n != 0 || j != 3 {
		t.Fatalf("%d mark and run keys and %d journal entries, want 0 and 3", n, j)
	}
	db, fs = crash(t, db, fs)
	check("journaled, after a crash", 0)
	spill(t, db)
	if n, j := countRunMarks(t, db), countKeys(t, db, prefixJournal); n != len(keys) || j != 0 {
		t.Fatalf("after a spill: %d marks in runs and %d journal entries, want %d and 0", n, j, len(keys))
	}
	check("spilled", int64(len(keys)))
	db, fs = crash(t, db, fs)
	check("spilled, after a crash", int64(len(keys)))
	spill(t, db) // nothing to spill
	check("spilled twice", int64(len(keys)))

	// A clean Close spills what the journal holds; the runs keep the
	// layout at 3.
	more := markKeys("scope", 1000, 50)
	commitMarks(t, db, more, now.Add(time.Hour))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	pdb := rawPebble(t, "db", fs)
	v, closer, err := pdb.Get([]byte{prefixFormat})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v, []byte{layoutVersion}) {
		t.Errorf("layout after a clean Close with runs: %x, want %d", v, layoutVersion)
	}
	closer.Close()
	it, err := pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixJournal}, UpperBound: []byte{prefixJournal + 1}})
	if err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Errorf("journal entry %x left after a clean Close", it.Key())
	}
	if err := errors.Join(it.Close(), pdb.Close()); err != nil {
		t.Fatal(err)
	}
	db, err = Open("db", withFS(fs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if v := layout(t, db); !bytes.Equal(v, []byte{layoutVersion}) {
		t.Errorf("layout after Open: %x, want %d", v, layoutVersion)
	}
	wantMarks(t, db, append(keys, more...), now, true)
}

// TestSpillReusesTable: a spill keeps the table it wrote from, and the
// next spill's journal takes it, emptied, rather than a new one (which
// the kernel maps afresh, page by page); the marks of every spill are
// found.
func TestSpillReusesTable(t *testing.T) {
	db := openDir(t, t.TempDir(), withSpillMarksAt(1000))
	tables := func() (cur, spare *markTable) {
		db.journal.mu.RLock()
		defer db.journal.mu.RUnlock()
		return db.journal.cur, db.journal.spare
	}
	now := time.Now()
	var written []*markTable
	for round := range 4 {
		keys := markKeys("scope", round*500, 500)
		commitMarks(t, db, keys, now.Add(time.Hour))
		cur, _ := tables()
		written = append(written, cur)
		spill(t, db)
		if cur, spare := tables(); spare != written[round] || cur.len() != 0 {
			t.Fatalf("round %d: the spill kept %p as its spare, want the table it wrote from, %p; the journal's table holds %d marks", round, spare, written[round], cur.len())
		}
		wantMarks(t, db, markKeys("scope", 0, (round+1)*500), now, true)
		wantMarks(t, db, markKeys("scope", (round+1)*500, 500), now, false)
	}
	// Two tables take turns: the journal's and the spare.
	if written[2] != written[0] || written[3] != written[1] || written[0] == written[1] {
		t.Errorf("tables of the rounds: %p, want two taking turns", written)
	}
	// A table that grew past the journal's size is not kept.
	commitMarks(t, db, markKeys("scope", 10_000, 5000), now.Add(time.Hour))
	spill(t, db)
	if _, spare := tables(); spare != nil {
		t.Errorf("a table grown to %d slots was kept as the spare", len(spare.slots))
	}
	wantMarks(t, db, markKeys("scope", 10_000, 5000), now, true)
}

// TestMarksLatestExpiryCounts: of two writes of one mark, the one that
// expires later counts, whichever came first, and the answer stays the
// same in the journal, after a crash, after a spill into a second run and
// after a merge of the runs. (Mark keys, as earlier versions and
// WithDirectMarks write them, hold the later write.)
func TestMarksLatestExpiryCounts(t *testing.T) {
	for _, l := range markLayouts {
		t.Run(l.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			db, err := Open("db", append([]Option{withFS(fs)}, l.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			now := time.Now()
			keys := markKeys("scope", 0, 2)
			commitMarks(t, db, keys[:1], now.Add(time.Hour))
			commitMarks(t, db, keys[1:], now.Add(-time.Hour))
			spill(t, db)
			// Renewed in reverse: the first now expired, the second live.
			commitMarks(t, db, keys[:1], now.Add(-time.Hour))
			commitMarks(t, db, keys[1:], now.Add(time.Hour))
			want := "[true true]"
			if l.name == "direct" {
				want = "[false true]"
			}
			check := func(stage string) {
				t.Helper()
				done := make([]bool, 2)
				if err := db.Completed(context.Background(), keys, now, done); err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(done) != want {
					t.Fatalf("%s: done = %v, want %s", stage, done, want)
				}
			}
			check("written")
			db, fs = crash(t, db, fs, l.opts...)
			check("after a crash")
			spill(t, db)
			check("spilled")
			db, fs = crash(t, db, fs, l.opts...)
			check("spilled, after a crash")
			if err := db.merge(db.listedRuns(), db.runEdits); err != nil {
				t.Fatal(err)
			}
			check("merged")
			db, _ = crash(t, db, fs, l.opts...)
			check("merged, after a crash")
		})
	}
}

// TestSpillWhileCommitting: with spills and sweeps running all along, a
// mark is found as soon as its commit returns, and every one after a
// restart. Run it with -race.
func TestSpillWhileCommitting(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir, withSpillMarksAt(37))
	ctx := context.Background()
	now := time.Now()
	const writers, commits, perCommit = 4, 150, 7
	stopSweeps := sweepAlongside(t, db, now)
	var wg sync.WaitGroup
	all := make([][]store.MarkKey, writers)
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range commits {
				keys := markKeys(fmt.Sprint("writer ", g), c*perCommit, perCommit)
				w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: fmt.Sprint(g)}, NewCheckpoint: store.Checkpoint{Sequence: idem.Sequence(fmt.Sprint(c + 1))}}
				for _, k := range keys {
					w.Marks = append(w.Marks, store.Mark{Key: k, Expires: now.Add(time.Hour)})
				}
				if err := db.Commit(ctx, w); err != nil {
					t.Error(err)
					return
				}
				done := make([]bool, len(keys))
				if err := db.Completed(ctx, keys, now, done); err != nil {
					t.Error(err)
					return
				}
				for i, d := range done {
					if !d {
						t.Errorf("writer %d commit %d: mark %d not found once committed", g, c, i)
						return
					}
				}
				all[g] = append(all[g], keys...)
			}
		}()
	}
	wg.Wait()
	stopSweeps()
	if t.Failed() {
		return
	}
	db = reopen(t, db, dir)
	for g := range writers {
		wantMarks(t, db, all[g], now, true)
	}
	spill(t, db)
	if j := countKeys(t, db, prefixJournal); j != 0 {
		t.Fatalf("%d journal entries after the last spill, want none", j)
	}
	for g := range writers {
		wantMarks(t, db, all[g], now, true)
	}
}

// TestUnmarkJournaled: a redrive's unmarking removes a mark still in the
// journal for good: the journal is spilled in its batch without it, so
// Open does not bring it back.
func TestUnmarkJournaled(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir)
	mustCreate(t, db, "s", 1)
	now := time.Now()
	keys := markKeys("scope", 0, 4)
	commitMarks(t, db, keys[:2], now.Add(time.Hour))
	spill(t, db)
	commitMarks(t, db, keys[2:], now.Add(time.Hour))
	// One unmarked from the mark keys, one from the journal.
	unmark(t, db, keys[0], keys[2])
	check := func(stage string) {
		t.Helper()
		wantDone(t, db, stage, keys, now, false, true, false, true)
	}
	check("unmarked")
	if j := countKeys(t, db, prefixJournal); j != 0 {
		t.Fatalf("%d journal entries after unmarking, want none", j)
	}
	db = reopen(t, db, dir)
	check("reopened")
}

// unmark has db append a record to shard 0 of stream "s" as a redrive
// does, unmarking keys in the same write: once a DB, the redrive's first
// checkpoint.
func unmark(t *testing.T, db *DB, keys ...store.MarkKey) {
	t.Helper()
	cpKey := store.CheckpointKey{Mapping: "redrive", Stream: "s", Shard: ShardID(0)}
	if _, err := db.PutCheckpointUnmarking(context.Background(), "s", []PutRecord{{PartitionKey: "k", Data: []byte("again")}}, cpKey, "", store.Checkpoint{Sequence: sq(1)}, keys); err != nil {
		t.Fatal(err)
	}
}

// wantDone fails the test unless Completed of keys as of now is want.
func wantDone(t *testing.T, db *DB, stage string, keys []store.MarkKey, now time.Time, want ...bool) {
	t.Helper()
	done := make([]bool, len(keys))
	if err := db.Completed(context.Background(), keys, now, done); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(done, want) {
		t.Fatalf("%s: done = %v, want %v", stage, done, want)
	}
}

// TestLayoutVersion: Open upgrades a directory of layout 1 (marks as keys
// of their own, no journal) or 2 (a journal) to 3, reading its marks;
// Close writes layout 1 back while no run holds a mark, and leaves 3 once
// one does; Open refuses a layout it does not know.
func TestLayoutVersion(t *testing.T) {
	dir := t.TempDir()
	db := openDir(t, dir, withDirectMarks())
	now := time.Now()
	keys := markKeys("scope", 0, 10)
	commitMarks(t, db, keys, now.Add(time.Hour))
	for _, from := range []byte{1, 2} {
		if err := db.pdb.Set([]byte{prefixFormat}, []byte{from}, pebble.Sync); err != nil {
			t.Fatal(err)
		}
		db = reopen(t, db, dir)
		wantMarks(t, db, keys, now, true)
		if v := layout(t, db); !bytes.Equal(v, []byte{layoutVersion}) {
			t.Errorf("layout %d after Open: %x, want %d", from, v, layoutVersion)
		}
	}
	closedAt := func() []byte {
		t.Helper()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		pdb := rawPebble(t, dir, vfs.Default)
		defer pdb.Close()
		v, closer, err := pdb.Get([]byte{prefixFormat})
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return bytes.Clone(v)
	}
	if v := closedAt(); !bytes.Equal(v, []byte{1}) {
		t.Errorf("layout after a clean Close without runs: %x, want 1", v)
	}
	db = openDir(t, dir)
	commitMarks(t, db, markKeys("scope", 10, 10), now.Add(time.Hour))
	if v := closedAt(); !bytes.Equal(v, []byte{layoutVersion}) {
		t.Errorf("layout after a clean Close with a run: %x, want %d", v, layoutVersion)
	}
	pdb := rawPebble(t, dir, vfs.Default)
	if err := errors.Join(pdb.Set([]byte{prefixFormat}, []byte{layoutVersion + 1}, pebble.Sync), pdb.Close()); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(dir); !errors.Is(err, errCorrupt) {
		if err == nil {
			db.Close()
		}
		t.Fatalf("Open of layout %d: %v, want %v", layoutVersion+1, err, errCorrupt)
	}
}

// FuzzDecodeJournal: a journal entry decodes to the marks it was made
// of, and any bytes decode without panicking, to marks or to an error.
func FuzzDecodeJournal(f *testing.F) {
	f.Add([]byte{}, int64(0), int64(0), uint8(3))
	f.Add([]byte{valueVersion, 2, 1}, int64(-5), int64(1<<40), uint8(0))
	f.Fuzz(func(t *testing.T, raw []byte, exp1, exp2 int64, n uint8) {
		var got int
		_ = decodeJournal(raw, func(store.MarkKey, int64) { got++ })
		if got > len(raw)/len(store.MarkKey{}) {
			t.Fatalf("%d marks from %d bytes", got, len(raw))
		}

		marks := make([]store.Mark, n)
		for i := range marks {
			marks[i].Key = store.MarkKeyOf("fuzz", fmt.Sprint(i, raw))
			marks[i].Expires = time.Unix(0, exp1)
			if i%3 == 2 {
				marks[i].Expires = time.Unix(0, exp2)
			}
		}
		v := appendJournalValue(nil, marks)
		if len(v) != journalValueLen(marks) {
			t.Fatalf("entry of %d bytes, journalValueLen says %d", len(v), journalValueLen(marks))
		}
		i := 0
		if err := decodeJournal(v, func(k store.MarkKey, exp int64) {
			if i >= len(marks) || k != marks[i].Key || exp != marks[i].Expires.UnixNano() {
				t.Fatalf("mark %d decoded as %x at %d", i, k, exp)
			}
			i++
		}); err != nil {
			t.Fatal(err)
		}
		if i != len(marks) {
			t.Fatalf("%d marks decoded, want %d", i, len(marks))
		}
	})
}

// TestSpillPlanSize: a spill's batch is exactly the size its plan says,
// whatever the expiries (negative, large) and the skipped marks.
func TestSpillPlanSize(t *testing.T) {
	db := openMem(t)
	marks := newMarkTable(0)
	for i, k := range markKeys("scope", 0, 1000) {
		marks.put(&k, journaled{expires: int64(i%7-3) << (i % 60)})
	}
	for _, skip := range []func(*store.MarkKey) bool{nil, func(k *store.MarkKey) bool { return k[0]&1 == 0 }} {
		plan := planSpill(marks, skip)
		b := db.pdb.NewBatch()
		if _, err := plan.appendTo(b, 7, 12345); err != nil {
			t.Fatal(err)
		}
		if got, want := len(b.Repr()), batchHeaderLen+plan.size; got != want {
			t.Errorf("batch of %d bytes, plan says %d", got, want)
		}
		b.Close()
	}
}

// BenchmarkSpill spills a journal of a spill's worth of marks (131,072, of
// one expiry, as one mapping's commits leave them): the sort, the run's
// table, the ingest and the journal's deletion; per mark.
//
//	go test -run '^$' -bench Spill -benchtime 20x ./internal/pebbledb/
func BenchmarkSpill(b *testing.B) {
	db := openDir(b, b.TempDir())
	round := 0
	for b.Loop() {
		b.StopTimer()
		journalMarks(db, round)
		round++
		b.StartTimer()
		if err := db.spill(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*defaultSpillMarksAt), "ns/mark")
}

// journalMarks files a spill's worth of marks, the round-th, in db's
// journal, as commits would.
func journalMarks(db *DB, round int) {
	const n = defaultSpillMarksAt
	exp := time.Now().Add(time.Hour).UnixNano()
	keys := markKeys("bench", round*n, n)
	db.journal.mu.Lock()
	defer db.journal.mu.Unlock()
	db.journal.makeCur()
	for i := range keys {
		db.journal.seq.Add(1)
		db.journal.cur.put(&keys[i], journaled{expires: exp})
	}
}

// BenchmarkMergeRuns merges mergeFanIn runs of a spill's worth of marks
// each, as the sweeper does once that many accumulate: reading them,
// writing the merged run, its ingest and the inputs' deletion; per mark
// merged.
//
//	go test -run '^$' -bench MergeRuns -benchtime 5x ./internal/pebbledb/
func BenchmarkMergeRuns(b *testing.B) {
	db := openDir(b, b.TempDir())
	round := 0
	for b.Loop() {
		b.StopTimer()
		for range mergeFanIn {
			journalMarks(db, round)
			round++
			if err := db.spill(); err != nil {
				b.Fatal(err)
			}
		}
		runs := db.listedRuns()
		b.StartTimer()
		if err := db.merge(runs[len(runs)-mergeFanIn:], db.runEdits); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*mergeFanIn*defaultSpillMarksAt), "ns/mark")
}

// TestUnmarkedBeforeVisible: a shard that reads a record a redrive appends
// as soon as it is visible finds its key unmarked, though the mark was in
// the journal: the redrive forgets the frozen journal, which lookups
// believe over Pebble, before its records become visible.
func TestUnmarkedBeforeVisible(t *testing.T) {
	db := openMem(t)
	ctx := context.Background()
	mustCreate(t, db, "s", 1)
	now := time.Now()
	keys := markKeys("scope", 0, 50)
	cpKey := store.CheckpointKey{Mapping: "redrive", Stream: "s", Shard: ShardID(0)}
	var after idem.Sequence
	prev := idem.Sequence("")
	for i, k := range keys {
		commitMarks(t, db, keys[i:i+1], now.Add(time.Hour))
		seen := make(chan bool, 1)
		go func() {
			for {
				res, err := db.Read(ctx, "s", ShardID(0), after, 1, 0)
				if err != nil {
					t.Error(err)
					seen <- false
					return
				}
				if len(res.Records) > 0 {
					after = res.Records[0].Sequence
					done := make([]bool, 1)
					if err := db.Completed(ctx, []store.MarkKey{k}, now, done); err != nil {
						t.Error(err)
					}
					seen <- done[0]
					return
				}
				// Poll rather than Wait, to look as soon as it shows.
			}
		}()
		cp := idem.SequenceOf(uint64(i + 1))
		if _, err := db.PutCheckpointUnmarking(ctx, "s", []PutRecord{{PartitionKey: "k", Data: []byte("again")}}, cpKey, prev, store.Checkpoint{Sequence: cp}, []store.MarkKey{k}); err != nil {
			t.Fatal(err)
		}
		prev = cp
		if <-seen {
			t.Fatalf("round %d: the record appended was visible while its key was still marked", i)
		}
	}
}
