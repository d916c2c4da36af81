package pebbledb

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

func openMem(t *testing.T, opts ...Option) *DB {
	t.Helper()
	db, err := Open("", append([]Option{InMemory()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustCreate(t *testing.T, db *DB, name string, shards int) {
	t.Helper()
	if err := db.CreateStream(name, shards, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
}

func TestOpenValidatesOptions(t *testing.T) {
	_, err := Open("", InMemory(), WithCacheSize(10), WithSweepInterval(0), WithPollInterval(-1), WithMarkFilterMemory(-1))
	if err == nil {
		t.Fatal("Open accepted invalid options")
	}
	for _, want := range []string{"cache size 10", "sweep interval 0s", "poll interval -1ns", "mark filter memory -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestCreateStream(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CreateStream("s", 4, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateStream("s", 4, time.Hour); err != nil {
		t.Fatalf("creating the same stream again: %v", err)
	}
	if err := db.CreateStream("s", 4, 2*time.Hour); err != nil {
		t.Fatalf("changing the retention: %v", err)
	}
	err = db.CreateStream("s", 2, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "4 shards") || !strings.Contains(err.Error(), "to 2") {
		t.Fatalf("changing the shard count: %v", err)
	}
	if err := db.CreateStream("one", 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name      string
		shards    int
		retention time.Duration
	}{{"", 1, time.Hour}, {"x", -1, time.Hour}, {"x", MaxShards + 1, time.Hour}, {"x", 1, 0}, {strings.Repeat("n", 256), 1, time.Hour}} {
		if err := db.CreateStream(bad.name, bad.shards, bad.retention); err == nil {
			t.Errorf("CreateStream(%q, %d, %s) accepted", bad.name, bad.shards, bad.retention)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	infos, err := db.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Name != "one" || len(infos[0].Shards) != 1 || infos[1].Name != "s" || len(infos[1].Shards) != 4 || infos[1].Retention != 2*time.Hour {
		t.Fatalf("streams after reopen = %+v", infos)
	}
	if infos[1].Shards[3].ID != "shardId-000000000003" || infos[1].Shards[3].LowestRetained != 1 || infos[1].Shards[3].Latest != 0 {
		t.Fatalf("shard info = %+v", infos[1].Shards[3])
	}
	// The CLI reads name and shards[].id.
	j, _ := json.Marshal(infos[0])
	if !bytes.Contains(j, []byte(`"name":"one"`)) || !bytes.Contains(j, []byte(`"shards":[{"id":"shardId-000000000000"`)) {
		t.Fatalf("JSON = %s", j)
	}
	if _, err := db.StreamInfo(context.Background(), "missing"); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("StreamInfo of a missing stream: %v", err)
	}
}

func TestPutValidates(t *testing.T) {
	ctx := context.Background()
	db := openMem(t)
	mustCreate(t, db, "s", 1)
	_, err := db.Put(ctx, "s", []PutRecord{
		{PartitionKey: "ok", Data: []byte("fine")},
		{PartitionKey: "big", Data: make([]byte, MaxRecordBytes+1)},
	})
	if !errors.Is(err, ErrRecordTooLarge) || !strings.Contains(err.Error(), `"s"`) || !strings.Contains(err.Error(), "1048577") {
		t.Fatalf("Put of a too large record: %v", err)
	}
	for _, pk := range []string{"", strings.Repeat("k", MaxPartitionKeyBytes+1)} {
		if _, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: pk}}); !errors.Is(err, ErrInvalidPartitionKey) {
			t.Fatalf("Put with a %d-byte key: %v", len(pk), err)
		}
	}
	if _, err := db.Put(ctx, "missing", []PutRecord{{PartitionKey: "k"}}); !errors.Is(err, ErrStreamNotFound) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Put to a missing stream: %v", err)
	}
	if res, err := db.Read(ctx, "s", ShardID(0), sq(0), 10, 1<<20); err != nil || len(res.Records) != 0 || res.Latest != "" {
		t.Fatalf("a refused Put wrote %+v, %v", res, err)
	}
	res, err := db.Put(ctx, "s", []PutRecord{
		{PartitionKey: strings.Repeat("k", MaxPartitionKeyBytes), Data: make([]byte, MaxRecordBytes)},
		{PartitionKey: "empty"},
	})
	if err != nil || res[0].Sequence != 1 || res[1].Sequence != 2 {
		t.Fatalf("Put at the limits = %+v, %v", res, err)
	}
	got, err := db.Read(ctx, "s", ShardID(0), sq(0), 10, 1<<30)
	if err != nil || len(got.Records) != 2 || len(got.Records[0].Data) != MaxRecordBytes || len(got.Records[1].Data) != 0 {
		t.Fatalf("Read = %d records, %v", len(got.Records), err)
	}
}

// TestConcurrentPutsStayOrdered: concurrent Puts (and Commits appending
// failures to the same stream) share fsyncs, yet readers never see a
// sequence before every lower one is there, and every acknowledged record
// is read exactly once.
func TestConcurrentPutsStayOrdered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := openMem(t)
	const shards = 2
	mustCreate(t, db, "s", shards)
	writers, puts := 8, 60
	if testing.Short() {
		puts = 20
	}

	var readErrs [shards]error
	var readers sync.WaitGroup
	var seenCount atomic.Int64
	seen := make([][]idem.Record, shards)
	for i := range shards {
		readers.Go(func() {
			var after uint64
			for {
				res, err := db.Read(ctx, "s", ShardID(i), sq(after), 1000, 1<<30)
				if err != nil {
					if ctx.Err() == nil {
						readErrs[i] = err
					}
					return
				}
				for _, r := range res.Records {
					if r.Sequence != sq(after+1) {
						readErrs[i] = fmt.Errorf("shard %d: read sequence %s after %d", i, r.Sequence, after)
						return
					}
					if r.Sequence.Compare(res.Latest) > 0 {
						readErrs[i] = fmt.Errorf("shard %d: read sequence %s above latest %s", i, r.Sequence, res.Latest)
						return
					}
					after = num(r.Sequence)
					r.Data = bytes.Clone(r.Data)
					seen[i] = append(seen[i], r)
					seenCount.Add(1)
				}
				if len(res.Records) == 0 {
					if err := db.Wait(ctx, "s", ShardID(i), sq(after)); err != nil {
						return
					}
				}
			}
		})
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]PutResult{}
	errs := make(chan error, writers)
	for g := range writers {
		wg.Go(func() {
			for p := range puts {
				if g%4 == 3 {
					// A Commit appending a failure to the same stream.
					data := fmt.Sprintf("fail-%d-%d", g, p)
					err := db.Commit(ctx, &store.Write{
						Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "in", Shard: fmt.Sprint(g)},
						Failures:   []store.Failure{{Destination: "s", Metadata: []byte(data)}},
					})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					acked[data] = PutResult{}
					mu.Unlock()
					continue
				}
				recs := make([]PutRecord, 3)
				for j := range recs {
					recs[j] = PutRecord{PartitionKey: fmt.Sprintf("k%d", j+g), Data: fmt.Appendf(nil, "%d-%d-%d", g, p, j)}
				}
				res, err := db.Put(ctx, "s", recs)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for j, r := range res {
					acked[string(recs[j].Data)] = r
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Let the readers catch up, then stop them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, info := range mustInfo(t, db, "s").Shards {
			n += int(info.Latest)
		}
		if n != len(acked) {
			t.Fatalf("%d records visible, %d acknowledged", n, len(acked))
		}
		if int(seenCount.Load()) == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	readers.Wait()
	for _, err := range readErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	found := 0
	for i := range shards {
		for _, r := range seen[i] {
			want, ok := acked[string(r.Data)]
			if !ok {
				t.Fatalf("read unacknowledged %q", r.Data)
			}
			if want.Shard != "" && (want.Shard != r.ShardID || sq(want.Sequence) != r.Sequence) {
				t.Fatalf("%q read at %s/%s, acknowledged at %s/%d", r.Data, r.ShardID, r.Sequence, want.Shard, want.Sequence)
			}
			found++
		}
	}
	if found != len(acked) {
		t.Fatalf("read %d records, acknowledged %d", found, len(acked))
	}
}

func mustInfo(t *testing.T, db *DB, name string) StreamInfo {
	t.Helper()
	in, err := db.StreamInfo(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestWait(t *testing.T) {
	ctx := context.Background()
	db := openMem(t, WithPollInterval(time.Hour))
	mustCreate(t, db, "s", 1)
	done := make(chan error, 1)
	go func() { done <- db.Wait(ctx, "s", ShardID(0), sq(0)) }()
	time.Sleep(10 * time.Millisecond)
	if _, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake on Put")
	}
	// Already above: at once.
	if err := db.Wait(ctx, "s", ShardID(0), sq(0)); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := db.Wait(cctx, "s", ShardID(0), sq(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with an expiring context: %v", err)
	}
	go func() { done <- db.Wait(ctx, "s", ShardID(0), sq(1)) }()
	time.Sleep(10 * time.Millisecond)
	db.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait during Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return on Close")
	}
	if _, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestPositions: the embedded stream numbers records in 64 bits, but a
// position is any idem.Sequence: "" and any zero padding name the same
// position; one this stream cannot have numbered (beyond 64 bits, not
// decimal) is an error, not a silent read from somewhere else.
func TestPositions(t *testing.T) {
	ctx := context.Background()
	db := openMem(t, WithPollInterval(time.Hour))
	mustCreate(t, db, "s", 1)
	shard := ShardID(0)
	for _, pos := range []source.StartingPosition{source.TrimHorizon, source.Latest, source.AtTimestamp} {
		if s, err := db.Start(ctx, "s", shard, pos, time.Now()); err != nil || s != "" {
			t.Fatalf("%s on an empty shard = %q, %v; want the zero Sequence", pos, s, err)
		}
	}
	if res, err := db.Read(ctx, "s", shard, "", 10, 1<<20); err != nil || len(res.Records) != 0 || res.Latest != "" || res.Lost != 0 || res.Trimmed != "" {
		t.Fatalf("Read of an empty shard = %+v, %v", res, err)
	}
	recs := make([]PutRecord, 5)
	for i := range recs {
		recs[i] = PutRecord{PartitionKey: "k", Data: []byte{byte('a' + i)}}
	}
	if _, err := db.Put(ctx, "s", recs); err != nil {
		t.Fatal(err)
	}
	if s, err := db.Start(ctx, "s", shard, source.Latest, time.Time{}); err != nil || s != sq(5) {
		t.Fatalf("LATEST = %q, %v; want %q", s, err, sq(5))
	}
	for _, c := range []struct {
		after idem.Sequence
		first uint64
	}{
		{"", 1}, {"0", 1}, {sq(0), 1}, {"000000000000000000000000000000", 1},
		{"2", 3}, {sq(2), 3}, {"0000000000000000000000002", 3},
		{"5", 6}, {"18446744073709551615", 6},
	} {
		res, err := db.Read(ctx, "s", shard, c.after, 10, 1<<20)
		if err != nil {
			t.Fatalf("Read after %q: %v", c.after, err)
		}
		if res.Latest != sq(5) {
			t.Fatalf("Read after %q: Latest = %q, want %q", c.after, res.Latest, sq(5))
		}
		if want := 5 - int(c.first) + 1; len(res.Records) != want {
			t.Fatalf("Read after %q: %d records, want %d", c.after, len(res.Records), want)
		}
		for i, r := range res.Records {
			if want := sq(c.first + uint64(i)); r.Sequence != want || !r.Sequence.Valid() {
				t.Fatalf("Read after %q: record %d has sequence %q, want %q", c.after, i, r.Sequence, want)
			}
		}
	}
	// Below the newest record: Wait returns at once, however it is spelled.
	for _, after := range []idem.Sequence{"", "4", sq(4)} {
		if err := db.Wait(ctx, "s", shard, after); err != nil {
			t.Fatalf("Wait after %q: %v", after, err)
		}
	}
	for _, bad := range []idem.Sequence{
		"18446744073709551616", // one past 64 bits
		"49590338271490256608559692538361571095921575989136588898",
		"-1", "0x10", "1e3", " 1", "1 ", "+1", "1_000", "١",
	} {
		if _, err := db.Read(ctx, "s", shard, bad, 10, 1<<20); err == nil || !strings.Contains(err.Error(), "not a sequence of this stream") {
			t.Fatalf("Read after %q: %v, want an error", bad, err)
		}
		if err := db.Wait(ctx, "s", shard, bad); err == nil || !strings.Contains(err.Error(), "not a sequence of this stream") {
			t.Fatalf("Wait after %q: %v, want an error", bad, err)
		}
	}
}

func TestStartAtTimestamp(t *testing.T) {
	ctx := context.Background()
	db := openMem(t)
	mustCreate(t, db, "s", 1)
	var marks []time.Time
	for i := range 20 {
		marks = append(marks, time.Now())
		time.Sleep(time.Millisecond)
		if _, err := db.Put(ctx, "s", []PutRecord{{PartitionKey: "k", Data: []byte{byte(i)}}, {PartitionKey: "k", Data: []byte{byte(i)}}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	for i, ts := range marks {
		pos, err := db.Start(ctx, "s", ShardID(0), source.AtTimestamp, ts)
		if err != nil || pos.Compare(sq(uint64(2*i))) != 0 {
			t.Fatalf("AT_TIMESTAMP before put %v = %v, %v; want %v", i, pos, err, 2*i)
		}
	}
	if pos, err := db.Start(ctx, "s", ShardID(0), source.AtTimestamp, time.Now()); err != nil || pos != sq(40) {
		t.Fatalf("AT_TIMESTAMP now = %v, %v; want 40", pos, err)
	}
	if _, err := db.Start(ctx, "s", ShardID(0), "SOMEWHERE", time.Time{}); err == nil {
		t.Fatal("unknown starting position accepted")
	}
	// After retention deleted the first half, AT_TIMESTAMP before them
	// starts at the horizon.
	if err := db.Sweep(ctx, marks[10].Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if pos, err := db.Start(ctx, "s", ShardID(0), source.AtTimestamp, marks[0]); err != nil || pos != sq(20) {
		t.Fatalf("AT_TIMESTAMP before the horizon = %v, %v; want 20", pos, err)
	}
	if pos, err := db.Start(ctx, "s", ShardID(0), source.AtTimestamp, marks[15]); err != nil || pos != sq(30) {
		t.Fatalf("AT_TIMESTAMP after the horizon = %v, %v; want 30", pos, err)
	}
}

// TestReopenRecovers: sequences and visibility continue after a reopen.
func TestReopenRecovers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "s", 3)
	recs := make([]PutRecord, 100)
	for i := range recs {
		recs[i] = PutRecord{PartitionKey: fmt.Sprint(i), Data: []byte(fmt.Sprint(i))}
	}
	first, err := db.Put(ctx, "s", recs)
	if err != nil {
		t.Fatal(err)
	}
	before := mustInfo(t, db, "s")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if after := mustInfo(t, db, "s"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("after reopen %+v, before %+v", after, before)
	}
	second, err := db.Put(ctx, "s", recs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		// The same key lands in the same shard, one record later... after
		// every record of the first Put in that shard.
		if second[i].Shard != first[i].Shard {
			t.Fatalf("key %d moved from %s to %s", i, first[i].Shard, second[i].Shard)
		}
	}
	for _, sh := range before.Shards {
		res, err := db.Read(ctx, "s", sh.ID, sq(0), 1000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(res.Records)) != 2*sh.Latest || res.Latest != sq(2*sh.Latest) {
			t.Fatalf("shard %s: %v records, latest %v; want %v", sh.ID, len(res.Records), res.Latest, 2*sh.Latest)
		}
		for i, r := range res.Records {
			if r.Sequence != sq(uint64(i+1)) {
				t.Fatalf("shard %s: record %v has sequence %v", sh.ID, i, r.Sequence)
			}
		}
	}
}

// TestCloseStopsGoroutines: no goroutine of the DB outlives Close.
func TestCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	db, err := Open(t.TempDir(), WithSweepInterval(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "s", 2)
	if _, err := db.Put(context.Background(), "s", []PutRecord{{PartitionKey: "k", Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countKeys counts the keys of a keyspace.
func countKeys(t *testing.T, db *DB, prefix byte) int {
	t.Helper()
	return countKeysOf(t, db, prefix, 0)
}

// countKeysOf counts the keys under prefix of length n (any, if 0).
func countKeysOf(t *testing.T, db *DB, prefix byte, n int) int {
	t.Helper()
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	count := 0
	for valid := it.First(); valid; valid = it.Next() {
		if n == 0 || len(it.Key()) == n {
			count++
		}
	}
	return count
}

// countRunMarks counts the marks of db's runs, on disk.
func countRunMarks(t *testing.T, db *DB) int {
	t.Helper()
	return countKeysOf(t, db, prefixRun, runKeyLen)
}

// markLayouts are the two ways a commit writes marks: through the journal,
// and as keys of their own, as before the journal (what a directory
// written by an earlier version holds).
var markLayouts = []struct {
	name string
	opts []Option
}{
	{"journal", nil},
	{"direct", []Option{withDirectMarks()}},
}

// spill spills db's mark journal.
func spill(t testing.TB, db *DB) {
	t.Helper()
	if err := db.spillMarks(); err != nil {
		t.Fatal(err)
	}
}

// TestPurgeMarks: a sweep deletes exactly the expired mark keys and their
// expiry entries, over several chunks, and keeps a mark renewed after its
// first expiry entry was written. (Spills write runs, whose purge
// TestRunsPurge covers; mark keys are what earlier versions left.)
func TestPurgeMarks(t *testing.T) {
	testPurgeMarks(t, openMem(t, withDirectMarks()))
}

func testPurgeMarks(t *testing.T, db *DB) {
	ctx := context.Background()
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 3*markChunk + 7
	keys := make([]store.MarkKey, n)
	w := &store.Write{}
	for i := range keys {
		binary.BigEndian.PutUint64(keys[i][:], uint64(i))
		exp := base.Add(time.Duration(i%3-1) * time.Hour) // -1h, 0, +1h
		w.Marks = append(w.Marks, store.Mark{Key: keys[i], Expires: exp})
	}
	if err := db.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	// Renew mark 0 (expired at -1h) to +2h, and a pre-1970 expiry sorts first.
	var old store.MarkKey
	copy(old[:], "before the epoch")
	if err := db.Commit(ctx, &store.Write{Marks: []store.Mark{
		{Key: keys[0], Expires: base.Add(2 * time.Hour)},
		{Key: old, Expires: time.Unix(-100, 0)},
	}}); err != nil {
		t.Fatal(err)
	}
	// Directly, an entry a run of a commit's marks with one expiry: each
	// mark here, and the renewal beside mark 0's stale entry. A spill
	// writes an entry an expiry (-1h, 0, +1h, mark 0's renewal at +2h,
	// and the one before the epoch), and no stale one.
	want, wantLeft := 5, 2
	if db.opts.directMarks {
		want = n + 2
	}
	spill(t, db)
	if got := countKeys(t, db, prefixExpiry); got != want {
		t.Fatalf("%d expiry entries, want %d", got, want)
	}
	if got := countKeys(t, db, prefixJournal); got != 0 {
		t.Fatalf("%d journal entries after a spill, want none", got)
	}
	if err := db.Sweep(ctx, base); err != nil {
		t.Fatal(err)
	}
	done := make([]bool, n)
	if err := db.Completed(ctx, keys, base.Add(-2*time.Hour), done); err != nil {
		t.Fatal(err)
	}
	live := 0
	for i, ok := range done {
		want := i%3 == 2 || i == 0
		if ok != want {
			t.Fatalf("mark %d present = %v after the purge, want %v", i, ok, want)
		}
		if ok {
			live++
		}
	}
	if got := countKeys(t, db, prefixMark); got != live {
		t.Fatalf("%d marks left, want %d", got, live)
	}
	// Left: the entries of live marks (mark 0's +2h, not its stale -1h).
	if db.opts.directMarks {
		wantLeft = live
	}
	if got := countKeys(t, db, prefixExpiry); got != wantLeft {
		t.Fatalf("%d expiry entries left, want %d", got, wantLeft)
	}
}

// TestCommitPipelined: a pipelined commit is visible when CommitPipelined
// returns and durable once synced; one with failure records is durable, and
// its records visible, at once.
func TestCommitPipelined(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, db, "dlq", 1)
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	synced, err := db.CommitPipelined(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(7)}})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok, err := db.Checkpoint(ctx, key); err != nil || !ok || c.Sequence != sq(7) {
		t.Fatalf("checkpoint before the sync = %+v, %v, %v; want %s", c, ok, err, sq(7))
	}
	if err := synced(); err != nil {
		t.Fatal(err)
	}
	synced, err = db.CommitPipelined(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(8)},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte("meta")}}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := db.Read(ctx, "dlq", ShardID(0), sq(0), 10, 1<<20); err != nil || len(res.Records) != 1 {
		t.Fatalf("dlq after a pipelined commit with a failure: %+v, %v", res.Records, err)
	}
	if err := synced(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if c, ok, err := db.Checkpoint(ctx, key); err != nil || !ok || c.Sequence != sq(8) {
		t.Fatalf("checkpoint after reopening = %+v, %v, %v; want %s", c, ok, err, sq(8))
	}
}

// TestFailedSyncRefusesUse: after a sync of the write-ahead log failed,
// every use of the DB reports it: what it showed may be lost.
func TestFailedSyncRefusesUse(t *testing.T) {
	db := openMem(t)
	ctx := context.Background()
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	cause := errors.New("disk gone")
	db.fail(cause)
	if _, _, err := db.Checkpoint(ctx, key); !errors.Is(err, cause) {
		t.Fatalf("Checkpoint after a failed sync: %v, want %v", err, cause)
	}
	if err := db.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(1)}}); !errors.Is(err, cause) {
		t.Fatalf("Commit after a failed sync: %v, want %v", err, cause)
	}
}

// TestPurgeGroupedMarks: the marks of one commit that share an expiry get
// one expiry entry between them, and the sweep purges them all, beside
// entries of the earlier layout (one a mark, an empty value); a mark of a
// group renewed since stays, and so does a group not yet expired. (Mark
// keys, as earlier versions and WithDirectMarks write them.)
func TestPurgeGroupedMarks(t *testing.T) {
	testPurgeGroupedMarks(t, openMem(t, withDirectMarks()))
}

func testPurgeGroupedMarks(t *testing.T, db *DB) {
	ctx := context.Background()
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(i int) (k store.MarkKey) {
		binary.BigEndian.PutUint64(k[:], uint64(i))
		return k
	}
	const group = 2*markChunk + 5
	var expired, later store.Write
	for i := range group {
		expired.Marks = append(expired.Marks, store.Mark{Key: mk(i), Expires: base.Add(-time.Hour)})
		later.Marks = append(later.Marks, store.Mark{Key: mk(group + i), Expires: base.Add(time.Hour)})
	}
	for _, w := range []*store.Write{&expired, &later, {Marks: []store.Mark{{Key: mk(7), Expires: base.Add(2 * time.Hour)}}}} {
		if err := db.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// A mark as the earlier layout wrote it: its own entry, no value.
	legacy := mk(1 << 40)
	var kb [17]byte
	var xb [expiryKeyLen]byte
	var scratch [16]byte
	exp := base.Add(-time.Minute).UnixNano()
	if err := db.pdb.Set(markKey(&kb, legacy), appendMark(scratch[:0], exp), nil); err != nil {
		t.Fatal(err)
	}
	if err := db.pdb.Set(expiryKey(&xb, exp, legacy), nil, nil); err != nil {
		t.Fatal(err)
	}
	spill(t, db)
	if got := countKeys(t, db, prefixExpiry); got != 4 {
		t.Fatalf("%d expiry entries, want one a group (3) and the legacy one", got)
	}
	if err := db.Sweep(ctx, base); err != nil {
		t.Fatal(err)
	}
	keys := []store.MarkKey{legacy}
	for i := range 2 * group {
		keys = append(keys, mk(i))
	}
	done := make([]bool, len(keys))
	if err := db.Completed(ctx, keys, base.Add(-2*time.Hour), done); err != nil {
		t.Fatal(err)
	}
	if done[0] {
		t.Error("the legacy mark outlived its expiry")
	}
	for i, ok := range done[1:] {
		if want := i >= group || i == 7; ok != want {
			t.Fatalf("mark %d present = %v after the purge, want %v", i, ok, want)
		}
	}
	if got := countKeys(t, db, prefixMark); got != group+1 {
		t.Fatalf("%d marks left, want %d", got, group+1)
	}
	if got := countKeys(t, db, prefixExpiry); got != 2 {
		t.Fatalf("%d expiry entries left, want the later group's and the renewed mark's", got)
	}
}

// TestSettle: once Settle returns, Pebble holds nothing in its memtable
// and runs no flush or compaction; a cancelled context ends the wait.
func TestSettle(t *testing.T) {
	db := openMem(t)
	mustCreate(t, db, "s", 4)
	recs := make([]PutRecord, 1000)
	for i := range recs {
		recs[i] = PutRecord{PartitionKey: fmt.Sprint(i), Data: bytes.Repeat([]byte{'x'}, 200)}
	}
	for range 20 {
		if _, err := db.Put(context.Background(), "s", recs); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Settle(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := db.pdb.Metrics()
	if m.Compact.NumInProgress != 0 || m.Flush.NumInProgress != 0 || m.MemTable.Count > 1 {
		t.Fatalf("after Settle: %d compactions and %d flushes running, %d memtables", m.Compact.NumInProgress, m.Flush.NumInProgress, m.MemTable.Count)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := db.Settle(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Settle with a cancelled context: %v", err)
	}
}
