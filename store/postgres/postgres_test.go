package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/storetest"
)

// defaultTestDSN is the local test server: trust authentication, database
// test. IDEM_TEST_POSTGRES_DSN overrides it.
const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// skipNotice prints the reason for skipping once, where go test without -v
// shows it.
var skipNotice sync.Once

// testDSN returns the DSN to test against, or skips tb when PostgreSQL
// cannot be reached (fails it under CI=true, where a skip would hide that
// the driver went untested).
func testDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv("IDEM_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = defaultTestDSN
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is not reachable (set IDEM_TEST_POSTGRES_DSN to test against another server): %v", err)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		skipNotice.Do(func() { fmt.Println("SKIP store/postgres:", msg) })
		tb.Skip(msg)
	}
	return dsn
}

// freshSchema returns the name of a schema no test uses yet, dropped with
// everything in it when tb ends.
func freshSchema(tb testing.TB, dsn string) string {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	name := "idem_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			tb.Errorf("dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("dropping schema %s: %v", name, err)
		}
	})
	return name
}

// harness opens Stores over one schema, shared as several idem processes
// would share it; Reopen closes one and opens its schema again, as a
// restarted process would. With perOpen, each Open gets a fresh schema of
// its own instead.
type harness struct {
	dsn, schema string
	perOpen     bool
}

func newHarness(tb testing.TB) *harness {
	dsn := testDSN(tb)
	return &harness{dsn: dsn, schema: freshSchema(tb, dsn)}
}

func (h *harness) open(ctx context.Context, tb testing.TB, schema string) (*Store, error) {
	s, err := New(ctx, h.dsn, WithSchema(schema))
	if err != nil {
		return nil, err
	}
	tb.Cleanup(s.Close)
	return s, nil
}

func (h *harness) Open(ctx context.Context, tb testing.TB) (store.Driver, error) {
	schema := h.schema
	if h.perOpen {
		schema = freshSchema(tb, h.dsn)
	}
	return h.open(ctx, tb, schema)
}

func (h *harness) Reopen(ctx context.Context, tb testing.TB, crashed store.Driver) (store.Driver, error) {
	s, ok := crashed.(*Store)
	if !ok {
		return nil, fmt.Errorf("harness: %T is not a *Store", crashed)
	}
	s.Close()
	return h.open(ctx, tb, s.Schema())
}

func TestConformance(t *testing.T) { storetest.RunConformance(t, newHarness(t)) }

// legacyHarness gives every store a schema of its own; Upgrade takes the
// schema back to before migration 6 (the schema of a version whose mark
// keys were FNV-1a, which the test filled through it) and opens it again,
// so that migration 6, and those after it, run over what it holds.
type legacyHarness struct{ *harness }

func (h legacyHarness) OpenFresh(ctx context.Context, t testing.TB) (store.Driver, error) {
	return h.open(ctx, t, freshSchema(t, h.dsn))
}

func (h legacyHarness) Upgrade(ctx context.Context, t testing.TB, d store.Driver) (store.Driver, error) {
	s := d.(*Store)
	ident := pgx.Identifier{s.Schema()}.Sanitize()
	if _, err := s.pool.Exec(ctx, "DROP TABLE "+ident+".legacy_keys; DROP FUNCTION "+ident+".put_checkpoint_progress; DROP FUNCTION "+ident+".claim_locks(bigint[], bigint[]); DROP FUNCTION "+ident+".claim_locks(bigint[], bigint[], bigint); DROP FUNCTION "+ident+".commit_gate; DROP TABLE "+ident+".lock_sessions; DROP INDEX "+ident+".marks_key; ALTER TABLE "+ident+".marks ADD PRIMARY KEY (key); DROP FUNCTION "+ident+".marks_of; DROP FUNCTION "+ident+".check_unclaimed; DELETE FROM "+ident+".schema_migrations WHERE version >= 6"); err != nil {
		return nil, err
	}
	s.Close()
	return h.open(ctx, t, s.Schema())
}

// TestLegacyKeys: what completed under the FNV-1a keys of earlier versions
// stays completed after migration 6, until it expires.
func TestLegacyKeys(t *testing.T) { storetest.RunLegacy(t, legacyHarness{newHarness(t)}) }

// BenchmarkStore gives every Open its own schema: the benchmarks reuse
// their checkpoint keys from one run to the next, and a shared schema
// would refuse the second run's lower checkpoints.
func BenchmarkStore(b *testing.B) {
	dsn := testDSN(b)
	storetest.RunBenchmarks(b, &harness{dsn: dsn, perOpen: true})
}

// openStore opens a Store on a fresh schema for one test.
func openStore(t *testing.T, opts ...Option) (*Store, *harness) {
	t.Helper()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, h.dsn, append([]Option{WithSchema(h.schema)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, h
}

// TestConcurrentMigrations: processes starting at once on a fresh schema
// all succeed, and each migration is applied once.
func TestConcurrentMigrations(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const starters = 5
	stores := make([]*Store, starters)
	errs := make([]error, starters)
	var wg sync.WaitGroup
	for i := range starters {
		wg.Go(func() { stores[i], errs[i] = New(ctx, h.dsn, WithSchema(h.schema)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("New %d: %v", i, err)
		}
		t.Cleanup(stores[i].Close)
	}
	var n, maxV int
	err := stores[0].pool.QueryRow(ctx, "SELECT count(*), max(version) FROM "+pgx.Identifier{h.schema}.Sanitize()+".schema_migrations").Scan(&n, &maxV)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) || maxV != len(migrations) {
		t.Fatalf("schema_migrations holds %d rows up to version %d; want %d", n, maxV, len(migrations))
	}
	// Every store works on the schema.
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	for i, s := range stores {
		if err := s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(uint64(i))}}); err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
	}
}

// TestNewerSchemaRefused: a schema migrated by a newer idem is not touched.
func TestNewerSchemaRefused(t *testing.T) {
	s, h := openStore(t)
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{h.schema}.Sanitize()+".schema_migrations (version) VALUES (1000)"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, h.dsn, WithSchema(h.schema)); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("New on a newer schema: %v, want an error saying it is newer", err)
	}
}

func TestBadSchemaName(t *testing.T) {
	for _, name := range []string{"", "a-b", `x"y`, "1abc", "a b", strings.Repeat("a", 64)} {
		if _, err := New(context.Background(), "postgres://nowhere.invalid/x", WithSchema(name)); err == nil || !strings.Contains(err.Error(), "schema name") {
			t.Errorf("WithSchema(%q): %v, want a schema name error", name, err)
		}
	}
}

// TestSequencesExact: sequences round-trip byte for byte and order as
// numbers whatever their width, beyond 64 bits too.
func TestSequencesExact(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "shardId-000000000000"}
	commit := func(seq idem.Sequence) error {
		return s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: seq, Processed: 1}})
	}
	want := func(seq idem.Sequence) {
		t.Helper()
		c, ok, err := s.Checkpoint(ctx, key)
		if err != nil || !ok || c.Sequence != seq {
			t.Fatalf("Checkpoint = %q, %v, %v; want %q exactly", c.Sequence, ok, err, seq)
		}
	}
	const k1 = "49590338271490256608559692538361571095921575989136588898"
	const k2 = "49590338271490256608559692538361571095921575989136588899"
	steps := []struct {
		seq       idem.Sequence
		backwards bool
	}{
		{"", false},
		{"0", false},                        // equal to ""
		{"00000000000000000042", false},     // padding kept
		{"42", false},                       // equal, another spelling
		{"0000000000000000000000041", true}, // below, though longer
		{"43", false},
		{"00000000000000000043", false},
		{"18446744073709551615", false}, // 2^64-1
		{"18446744073709551616", false}, // 2^64
		{"18446744073709551615", true},
		{k1, false},
		{k2, false},
		{k1, true},
		{"0" + k2, false},
		{"", true},
	}
	stored := idem.Sequence("")
	for _, st := range steps {
		err := commit(st.seq)
		if st.backwards {
			if !errors.Is(err, store.ErrCheckpointBackwards) {
				t.Fatalf("commit %q over %q: %v, want ErrCheckpointBackwards", st.seq, stored, err)
			}
			if !strings.Contains(err.Error(), string(stored)) {
				t.Errorf("error %q does not name the stored sequence %q", err, stored)
			}
		} else {
			if err != nil {
				t.Fatalf("commit %q over %q: %v", st.seq, stored, err)
			}
			stored = st.seq
		}
		want(stored)
	}
	// DeleteCheckpoint is the reset.
	if err := s.DeleteCheckpoint(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := commit("1"); err != nil {
		t.Fatalf("commit after reset: %v", err)
	}
	want("1")
}

// TestInvalidSequence: a sequence that is not a number is refused before
// anything is sent.
func TestInvalidSequence(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	for _, w := range []*store.Write{
		{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "12a"}},
		{Checkpoint: key, HasProgress: true, Progress: store.Progress{HighWater: "-1"}},
		{Checkpoint: key, HasProgress: true, Progress: store.Progress{Above: []idem.Sequence{"1e5"}}},
	} {
		if err := s.Commit(ctx, w); err == nil || errors.Is(err, store.ErrCheckpointBackwards) || !strings.Contains(err.Error(), "not a decimal number") {
			t.Fatalf("Commit(%+v) = %v, want an invalid sequence error", w, err)
		}
	}
	if _, ok, err := s.Checkpoint(ctx, key); ok || err != nil {
		t.Fatalf("checkpoint after refused commits: %v, %v", ok, err)
	}
}

// TestBackwardsWritesNothing: a Write refused for its checkpoint leaves no
// trace: no progress, marks, state, failures or counters.
func TestBackwardsWritesNothing(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	pkey := store.ProgressKey{Scope: "sc", Stream: "s", Shard: "0"}
	first := store.Checkpoint{Sequence: idem.SequenceOf(10), Processed: 10}
	if err := s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: first,
		HasProgress: true, ProgressKey: pkey, Progress: store.Progress{HighWater: idem.SequenceOf(10)},
		State: []store.StateOp{{Namespace: "ns", Key: "k", Value: []byte("v1")}}}); err != nil {
		t.Fatal(err)
	}
	mark := store.MarkKey{1, 2, 3}
	err := s.Commit(ctx, &store.Write{
		Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(9), Processed: 99},
		HasProgress: true, ProgressKey: pkey, Progress: store.Progress{HighWater: idem.SequenceOf(20)},
		Marks:    []store.Mark{{Key: mark, Expires: base.Add(time.Hour)}},
		State:    []store.StateOp{{Namespace: "ns", Key: "k", Value: []byte("v2")}, {Namespace: "ns", Key: "new", Value: []byte("x")}},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte("{}"), Records: []idem.Record{{Stream: "s", ShardID: "0", Sequence: "9", Data: []byte("d")}}}},
	})
	if !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("backwards Commit: %v, want ErrCheckpointBackwards", err)
	}
	if c, _, err := s.Checkpoint(ctx, key); err != nil || c != first {
		t.Fatalf("checkpoint = %+v, %v; want %+v", c, err, first)
	}
	if p, err := s.Progress(ctx, pkey); err != nil || p.HighWater != idem.SequenceOf(10) {
		t.Fatalf("progress = %+v, %v; want high water 10", p, err)
	}
	done := make([]bool, 1)
	if err := s.Completed(ctx, []store.MarkKey{mark}, base, done); err != nil || done[0] {
		t.Fatalf("mark of a refused Write completed = %v, %v", done[0], err)
	}
	if v, err := s.State(ctx, "ns", "k"); err != nil || string(v) != "v1" {
		t.Fatalf("state = %q, %v; want v1", v, err)
	}
	if _, err := s.State(ctx, "ns", "new"); !errors.Is(err, idem.ErrNotFound) {
		t.Fatalf("state of a refused Write: %v, want ErrNotFound", err)
	}
	if rows, err := s.Failures(ctx, "dlq", 0, 10); err != nil || len(rows) != 0 {
		t.Fatalf("failures of a refused Write = %+v, %v", rows, err)
	}
}

// TestStateBinaryKeys: state keys and values are bytes, NUL and invalid
// UTF-8 included.
func TestStateBinaryKeys(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	keys := []string{"", "\x00", "a\x00b", "\xff\xfe", "ключ", `a\\0`, `a\0`}
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}}
	for i, k := range keys {
		w.State = append(w.State, store.StateOp{Namespace: "ns", Key: k, Value: []byte{byte(i), 0, 0xff}})
	}
	if err := s.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		v, err := s.State(ctx, "ns", k)
		if err != nil || !bytes.Equal(v, []byte{byte(i), 0, 0xff}) {
			t.Fatalf("State(%q) = %v, %v", k, v, err)
		}
	}
}

// TestFailuresRoundTrip: on-failure batches keep their metadata and each
// record's stream, shard, sequence, partition key, data and arrival time,
// in order, and page by ID.
func TestFailuresRoundTrip(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	arrival := time.Date(2030, 5, 6, 7, 8, 9, 123456000, time.UTC)
	recs := []idem.Record{
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "00000000000000000007", PartitionKey: "alice", Data: []byte(`{"n":1}`), ArrivalTime: arrival},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "", Data: []byte{0xff, 0}, ArrivalTime: arrival.Add(time.Second)},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "9", PartitionKey: "a\x00\xff", Data: nil},
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "shardId-000000000003"}
	if err := s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "9", Discarded: 3},
		Failures: []store.Failure{
			{Destination: "dlq", Metadata: []byte(`{"meta":1}`), Records: recs},
			{Destination: "other", Metadata: []byte(`{"meta":2}`), Records: recs[:1]},
			{Destination: "dlq", Metadata: []byte(`{"meta":3}`)},
		}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "9"},
			Failures: []store.Failure{{Destination: "dlq", Metadata: fmt.Appendf(nil, `{"later":%d}`, i), Records: recs[i : i+1]}}}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Failures(ctx, "dlq", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 {
		t.Fatalf("Failures(dlq) = %d rows, want 5", len(rows))
	}
	if string(rows[0].Metadata) != `{"meta":1}` || string(rows[1].Metadata) != `{"meta":3}` || len(rows[1].Records) != 0 || rows[0].Destination != "dlq" || rows[0].CreatedAt.IsZero() {
		t.Fatalf("first rows = %+v", rows[:2])
	}
	if len(rows[0].Records) != len(recs) {
		t.Fatalf("first row holds %d records, want %d", len(rows[0].Records), len(recs))
	}
	for i, got := range rows[0].Records {
		want := recs[i]
		if got.Stream != want.Stream || got.ShardID != want.ShardID || got.Sequence != want.Sequence ||
			got.PartitionKey != want.PartitionKey || !bytes.Equal(got.Data, want.Data) || !got.ArrivalTime.Equal(want.ArrivalTime) {
			t.Fatalf("record %d = %+v, want %+v", i, got, want)
		}
	}
	for i, row := range rows[2:] {
		if want := fmt.Sprintf(`{"later":%d}`, i); string(row.Metadata) != want || len(row.Records) != 1 || row.Records[0].Sequence != recs[i].Sequence {
			t.Fatalf("later row %d = %+v", i, row)
		}
	}
	// Paging: two at a time from after the first.
	page, err := s.Failures(ctx, "dlq", rows[0].ID, 2)
	if err != nil || len(page) != 2 || page[0].ID != rows[1].ID || page[1].ID != rows[2].ID {
		t.Fatalf("page = %+v, %v", page, err)
	}
	if page[1].Records[0].Data == nil {
		t.Fatalf("record data read back as nil")
	}
	other, err := s.Failures(ctx, "other", 0, 10)
	if err != nil || len(other) != 1 || string(other[0].Metadata) != `{"meta":2}` || len(other[0].Records) != 1 {
		t.Fatalf("Failures(other) = %+v, %v", other, err)
	}
	if none, err := s.Failures(ctx, "dlq", rows[4].ID, 10); err != nil || len(none) != 0 {
		t.Fatalf("Failures after the last = %+v, %v", none, err)
	}
}

// TestPurge: Purge deletes what expired at now and nothing else, answers
// stay decided by timestamps, and a key whose record was purged still gets
// a higher fencing token.
func TestPurge(t *testing.T) {
	s, h := openStore(t, WithPurgeInterval(0))
	ctx := context.Background()
	base := time.Now().Truncate(time.Microsecond)
	var keys []store.MarkKey
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}}
	for i := range 12000 { // above purgeChunk twice
		var k store.MarkKey
		copy(k[:], fmt.Sprintf("mark-%011d", i))
		keys = append(keys, k)
		exp := base.Add(time.Minute)
		if i%2 == 0 {
			exp = base.Add(time.Hour)
		}
		w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
	}
	if err := s.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	// Claims: one completed and expired at purge time, one in progress
	// under a running lease, one released.
	done, err := s.Claim(ctx, store.MarkKey{0xd0}, store.PayloadHash{1}, time.Minute, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, done, []byte("r"), base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	running, err := s.Claim(ctx, store.MarkKey{0xd1}, store.PayloadHash{1}, time.Hour, base)
	if err != nil {
		t.Fatal(err)
	}
	released, err := s.Claim(ctx, store.MarkKey{0xd2}, store.PayloadHash{1}, time.Hour, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, released); err != nil {
		t.Fatal(err)
	}

	nm, nc, err := s.Purge(ctx, base.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if nm != 6000 || nc != 2 {
		t.Fatalf("Purge deleted %d marks and %d claims, want 6000 and 2", nm, nc)
	}
	var left int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{h.schema}.Sanitize()+".marks").Scan(&left); err != nil || left != 6000 {
		t.Fatalf("marks left = %d, %v; want 6000", left, err)
	}
	got := make([]bool, len(keys))
	// Asked as of base, a purged mark reads as not completed, a kept one as
	// completed.
	if err := s.Completed(ctx, keys, base, got); err != nil {
		t.Fatal(err)
	}
	for i, ok := range got {
		if ok != (i%2 == 0) {
			t.Fatalf("mark %d completed = %v after the purge, want %v", i, ok, i%2 == 0)
		}
	}
	if c, ok, err := s.Lookup(ctx, running.Key, base); err != nil || !ok || c.Status != store.InProgress || c.Token != running.Token {
		t.Fatalf("running claim after purge = %+v, %v, %v", c, ok, err)
	}
	again, err := s.Claim(ctx, done.Key, store.PayloadHash{2}, time.Minute, base.Add(time.Hour))
	if err != nil || again.Status != store.Acquired || again.Token <= released.Token {
		t.Fatalf("claim of a purged key = %+v, %v; want a token above %d", again, err, released.Token)
	}
	// The stale owner of the purged record is fenced.
	if err := s.Complete(ctx, done, []byte("stale"), base.Add(2*time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("stale Complete: %v, want ErrFenced", err)
	}
}

// TestClose: after Close every method says store.ErrClosed, Close may be
// called again, and the purge goroutine is gone.
func TestClose(t *testing.T) {
	s, _ := openStore(t, WithPurgeInterval(5*time.Millisecond))
	time.Sleep(30 * time.Millisecond) // let a few purges run
	s.Close()
	s.Close()
	// Close waited for the goroutine's wg.Done, its last deferred call; the
	// goroutine may still be returning from it, so it is given a moment to
	// leave the stacks.
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "purgeLoop") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the purge goroutine outlived Close:\n%s", stacks)
		}
	}
	ctx := context.Background()
	errs := []error{
		s.Commit(ctx, &store.Write{}),
		s.DeleteCheckpoint(ctx, store.CheckpointKey{}),
		s.Completed(ctx, []store.MarkKey{{}}, time.Now(), make([]bool, 1)),
		s.Complete(ctx, store.Claim{}, nil, time.Time{}),
		s.Release(ctx, store.Claim{}),
		s.ClaimRecords(ctx, &store.RecordClaims{Keys: []store.MarkKey{{}}}),
	}
	_, err := s.ScopeProgress(ctx, store.ProgressKey{})
	errs = append(errs, err)
	_, err = s.Time(ctx)
	errs = append(errs, err)
	_, _, err = s.Checkpoint(ctx, store.CheckpointKey{})
	errs = append(errs, err)
	_, err = s.Progress(ctx, store.ProgressKey{})
	errs = append(errs, err)
	_, err = s.State(ctx, "n", "k")
	errs = append(errs, err)
	_, err = s.Claim(ctx, store.MarkKey{}, store.PayloadHash{}, time.Second, time.Now())
	errs = append(errs, err)
	_, _, err = s.Lookup(ctx, store.MarkKey{}, time.Now())
	errs = append(errs, err)
	_, err = s.Failures(ctx, "d", 0, 1)
	errs = append(errs, err)
	_, _, err = s.Purge(ctx, time.Now())
	errs = append(errs, err)
	for i, err := range errs {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("call %d after Close: %v, want store.ErrClosed", i, err)
		}
	}
}

// TestMarkArgs: repeated keys keep their last expiry, and keys come out
// sorted.
func TestMarkArgs(t *testing.T) {
	t0 := time.Unix(100, 0)
	keys, exps := markArgs([]store.Mark{
		{Key: store.MarkKey{3}, Expires: t0},
		{Key: store.MarkKey{1}, Expires: t0.Add(1)},
		{Key: store.MarkKey{3}, Expires: t0.Add(2)},
		{Key: store.MarkKey{2}, Expires: t0.Add(3)},
		{Key: store.MarkKey{3}, Expires: t0.Add(4)},
	})
	b := func(k store.MarkKey) []byte { return k[:] }
	wantKeys := [][]byte{b(store.MarkKey{1}), b(store.MarkKey{2}), b(store.MarkKey{3})}
	if !slices.EqualFunc(keys, wantKeys, bytes.Equal) || !slices.Equal(exps, []time.Time{t0.Add(1), t0.Add(3), t0.Add(4)}) {
		t.Fatalf("markArgs = %x, %v", keys, exps)
	}
}

// TestKeyMarkedAgain: a key marked again once its mark expired (schema
// version 10: marks are rows under a hash index, not a primary key) holds
// one row for each mark; it reads as completed while any is live, and the
// purge deletes the expired row alone.
func TestKeyMarkedAgain(t *testing.T) {
	s, h := openStore(t, WithPurgeInterval(0))
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := store.MarkKeyOf("scope", "again")
	mark := func(seq string, expires time.Time) {
		t.Helper()
		w := markWrite(seq, k)
		w.Marks[0].Expires = expires
		if err := s.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	completed := func(at time.Time) bool {
		t.Helper()
		done := make([]bool, 1)
		if err := s.Completed(ctx, []store.MarkKey{k}, at, done); err != nil {
			t.Fatal(err)
		}
		return done[0]
	}
	mark("1", base.Add(time.Hour))
	if completed(base.Add(2 * time.Hour)) {
		t.Fatal("completed after its mark expired")
	}
	mark("2", base.Add(3*time.Hour))
	if !completed(base.Add(2 * time.Hour)) {
		t.Fatal("not completed under its second mark")
	}
	if n, _, err := s.Purge(ctx, base.Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("Purge deleted %d marks, %v; want 1, the expired one", n, err)
	}
	if !completed(base.Add(2 * time.Hour)) {
		t.Fatal("not completed after the purge of its expired mark")
	}
	var rows int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{h.schema}.Sanitize()+".marks").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("%d mark rows, %v; want 1", rows, err)
	}
	now := base.Add(2 * time.Hour)
	c := &store.RecordClaims{Owner: store.MarkKeyOf("owner", "a"), Keys: []store.MarkKey{k}, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
	if err := s.ClaimRecords(ctx, c); err != nil || c.Status[0] != store.Completed {
		t.Fatalf("claim: %v, %v; want Completed", c.Status, err)
	}
}
