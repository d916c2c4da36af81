package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/storetest"
)

// harness opens one data directory per Open; Reopen closes the DB behind a
// driver and opens its directory again.
type harness struct {
	mu   sync.Mutex
	dirs map[store.Driver]string
	dbs  map[store.Driver]*pebbledb.DB
}

func newHarness() *harness {
	return &harness{dirs: map[store.Driver]string{}, dbs: map[store.Driver]*pebbledb.DB{}}
}

func (h *harness) open(t testing.TB, dir string) (store.Driver, error) {
	db, err := pebbledb.Open(dir)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { db.Close() })
	s := embedded.New(db)
	h.mu.Lock()
	h.dirs[s], h.dbs[s] = dir, db
	h.mu.Unlock()
	return s, nil
}

func (h *harness) Open(_ context.Context, t testing.TB) (store.Driver, error) {
	return h.open(t, t.TempDir())
}

// ProcessLocalClaims: the embedded store keeps record claims in memory.
func (h *harness) ProcessLocalClaims() {}

func (h *harness) Reopen(_ context.Context, t testing.TB, crashed store.Driver) (store.Driver, error) {
	h.mu.Lock()
	dir, db := h.dirs[crashed], h.dbs[crashed]
	h.mu.Unlock()
	if db == nil {
		return nil, errors.New("harness: unknown driver")
	}
	if err := db.Close(); err != nil {
		return nil, err
	}
	return h.open(t, dir)
}

func TestConformance(t *testing.T) { storetest.RunConformance(t, newHarness()) }

// OpenFresh implements storetest.LegacyHarness: every Open has a data
// directory of its own.
func (h *harness) OpenFresh(ctx context.Context, t testing.TB) (store.Driver, error) {
	return h.Open(ctx, t)
}

// Upgrade implements storetest.LegacyHarness: a restart over the same
// directory, which finds what it holds when first asked.
func (h *harness) Upgrade(ctx context.Context, t testing.TB, d store.Driver) (store.Driver, error) {
	return h.Reopen(ctx, t, d)
}

// TestLegacyKeys: what completed under the FNV-1a keys of earlier versions
// stays completed after the upgrade, until it expires.
func TestLegacyKeys(t *testing.T) { storetest.RunLegacy(t, newHarness()) }

func BenchmarkStore(b *testing.B) { storetest.RunBenchmarks(b, newHarness()) }

func openDB(t *testing.T) *pebbledb.DB {
	t.Helper()
	db, err := pebbledb.Open("", pebbledb.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestFailureRecords: a Write's failures land in the destination stream in
// the same commit as the checkpoint: the metadata record first, keyed by the
// batch's shard, then the records with their own keys and data.
func TestFailureRecords(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	if err := db.CreateStream("dlq", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	st := embedded.New(db)
	recs := []idem.Record{
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: idem.SequenceOf(7), PartitionKey: "alice", Data: []byte(`{"n":1}`)},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: idem.SequenceOf(8), PartitionKey: "bob", Data: []byte(`{"n":2}`)},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: idem.SequenceOf(9), PartitionKey: "", Data: []byte{0xff, 0}},
	}
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "shardId-000000000003"}
	w := &store.Write{
		Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(9), Discarded: 3},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte(`{"meta":true}`), Records: recs}},
	}
	if err := st.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	res, err := db.Read(ctx, "dlq", pebbledb.ShardID(0), "", 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ key, data string }{
		{"shardId-000000000003", `{"meta":true}`},
		{"alice", `{"n":1}`},
		{"bob", `{"n":2}`},
		{"shardId-000000000003", "\xff\x00"}, // an empty key takes the metadata's
	}
	if len(res.Records) != len(want) {
		t.Fatalf("dlq holds %d records, want %d", len(res.Records), len(want))
	}
	for i, r := range res.Records {
		if r.PartitionKey != want[i].key || string(r.Data) != want[i].data || r.Sequence != idem.SequenceOf(uint64(i+1)) || r.Stream != "dlq" {
			t.Fatalf("dlq record %d = seq %s key %q data %q, want seq %d key %q data %q", i, r.Sequence, r.PartitionKey, r.Data, i+1, want[i].key, want[i].data)
		}
	}
	if c, ok, err := st.Checkpoint(ctx, cp); err != nil || !ok || c.Sequence != idem.SequenceOf(9) || c.Discarded != 3 {
		t.Fatalf("checkpoint = %+v, %v, %v", c, ok, err)
	}

	// A later Put continues the destination's sequence.
	pr, err := db.Put(ctx, "dlq", []pebbledb.PutRecord{{PartitionKey: "x", Data: []byte("after")}})
	if err != nil || pr[0].Sequence != 5 {
		t.Fatalf("put after failures = %+v, %v; want sequence 5", pr, err)
	}
}

// TestFailureToMissingStream: a Write whose destination does not exist
// fails with source.ErrStreamNotFound and writes nothing.
func TestFailureToMissingStream(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	st := embedded.New(db)
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "s"}
	err := st.Commit(ctx, &store.Write{
		Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(1)},
		State:    []store.StateOp{{Namespace: "n", Key: "k", Value: []byte("v")}},
		Failures: []store.Failure{{Destination: "nope", Metadata: []byte("{}")}},
	})
	if !errors.Is(err, source.ErrStreamNotFound) {
		t.Fatalf("Commit to a missing destination: %v, want source.ErrStreamNotFound", err)
	}
	if _, ok, err := st.Checkpoint(ctx, cp); ok || err != nil {
		t.Fatalf("checkpoint after a failed Commit: %v, %v; want absent", ok, err)
	}
	if _, err := st.State(ctx, "n", "k"); !errors.Is(err, idem.ErrNotFound) {
		t.Fatalf("state after a failed Commit: %v, want idem.ErrNotFound", err)
	}
}

// TestClosed: after the DB closes, the store says so.
func TestClosed(t *testing.T) {
	db, err := pebbledb.Open("", pebbledb.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	st := embedded.New(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := st.Checkpoint(ctx, store.CheckpointKey{}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Checkpoint after Close: %v", err)
	}
	if err := st.Commit(ctx, &store.Write{}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
}

// TestPurgeExpiredMarks: Completed answers from timestamps, whether or not
// a sweep has purged the marks expired; a sweep after every mark expired
// deletes them all. (A sweep deletes the marks of a spill once all of them
// have expired: see pebbledb's runs.)
func TestPurgeExpiredMarks(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	st := embedded.New(db)
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var keys []store.MarkKey
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}}
	for i := range 3000 {
		var k store.MarkKey
		copy(k[:], fmt.Sprintf("mark-%011d", i))
		keys = append(keys, k)
		exp := base.Add(time.Minute)
		if i%2 == 0 {
			exp = base.Add(time.Hour)
		}
		w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
	}
	if err := st.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := db.Sweep(ctx, base.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	done := make([]bool, len(keys))
	if err := st.Completed(ctx, keys, base.Add(30*time.Minute), done); err != nil {
		t.Fatal(err)
	}
	for i, ok := range done {
		if ok != (i%2 == 0) {
			t.Fatalf("mark %d completed = %v after the sweep, want %v", i, ok, i%2 == 0)
		}
	}
	if err := db.Sweep(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Asked as of base, a purged mark reads as not completed.
	if err := st.Completed(ctx, keys, base, done); err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(done, true); i >= 0 {
		t.Fatalf("mark %d completed after every mark expired and a sweep", i)
	}
}

// TestNoSpace: below the DB's disk reserve the store refuses a Commit with
// store.ErrNoSpace, writing nothing, and Health says so; reads go on.
func TestNoSpace(t *testing.T) {
	ctx := context.Background()
	db, err := pebbledb.Open(t.TempDir(), pebbledb.WithDiskReserve(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := embedded.New(db)
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	err = s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(1)}})
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Commit below the reserve: %v, want store.ErrNoSpace", err)
	}
	if err := s.Health(); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Health below the reserve = %v", err)
	}
	if _, ok, err := s.Checkpoint(ctx, key); err != nil || ok {
		t.Fatalf("Checkpoint after a refused Commit: %v, %v", ok, err)
	}

	db2, err := pebbledb.Open(t.TempDir(), pebbledb.WithDiskReserve(0))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := embedded.New(db2).Health(); err != nil {
		t.Fatalf("Health without a reserve = %v", err)
	}
	db2.Close()
	if err := embedded.New(db2).Health(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Health after Close = %v", err)
	}
}
