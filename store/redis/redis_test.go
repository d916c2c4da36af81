package redis_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
	redisstore "github.com/idem-run/idem/store/redis"
	"github.com/idem-run/idem/store/storetest"
)

// addr returns the server the tests use: 127.0.0.1:6379, or
// IDEM_TEST_REDIS_ADDR. If it does not answer, the test is skipped (failed
// under CI=true, where a server must be there).
func addr(t testing.TB) string {
	t.Helper()
	a := os.Getenv("IDEM_TEST_REDIS_ADDR")
	if a == "" {
		a = redisstore.DefaultAddr
	}
	c := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		msg := fmt.Sprintf("redis at %s is unreachable (set IDEM_TEST_REDIS_ADDR to use another): %v", a, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		fmt.Println("store/redis: skipping:", msg)
		t.Skip(msg)
	}
	return a
}

// admin returns a client of its own for setup and cleanup.
func admin(t testing.TB, a string) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return c
}

func randomPrefix(t testing.TB) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "idemtest-" + hex.EncodeToString(b[:])
}

// keysOf lists the keys of a prefix.
func keysOf(ctx context.Context, c *goredis.Client, prefix string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, "{"+prefix+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// dropPrefix deletes a prefix's keys (SCAN and DEL).
func dropPrefix(t testing.TB, c *goredis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := keysOf(ctx, c, prefix)
	for len(keys) > 0 && err == nil {
		n := min(len(keys), 1000)
		err = c.Del(ctx, keys[:n]...).Err()
		keys = keys[n:]
	}
	if err != nil {
		t.Errorf("deleting the keys of prefix %s: %v", prefix, err)
	}
}

var quiet = slog.New(slog.DiscardHandler)

// harness opens each driver under a prefix of its own, deleted when the
// test ends; Reopen closes the crashed driver's client and opens a new
// Store over the same prefix.
type harness struct {
	addr     string
	admin    *goredis.Client
	mu       sync.Mutex
	prefixes map[store.Driver]string
}

func newHarness(t testing.TB) *harness {
	a := addr(t)
	return &harness{addr: a, admin: admin(t, a), prefixes: map[store.Driver]string{}}
}

func (h *harness) open(ctx context.Context, t testing.TB, prefix string) (*redisstore.Store, error) {
	s, err := redisstore.New(ctx, redisstore.WithAddr(h.addr), redisstore.WithPrefix(prefix), redisstore.WithLogger(quiet))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	h.mu.Lock()
	h.prefixes[s] = prefix
	h.mu.Unlock()
	return s, nil
}

func (h *harness) Open(ctx context.Context, t testing.TB) (store.Driver, error) {
	prefix := randomPrefix(t)
	t.Cleanup(func() { dropPrefix(t, h.admin, prefix) })
	return h.open(ctx, t, prefix)
}

func (h *harness) Reopen(ctx context.Context, t testing.TB, crashed store.Driver) (store.Driver, error) {
	h.mu.Lock()
	prefix, ok := h.prefixes[crashed]
	h.mu.Unlock()
	if !ok {
		return nil, errors.New("harness: unknown driver")
	}
	if err := crashed.(*redisstore.Store).Close(); err != nil {
		return nil, err
	}
	return h.open(ctx, t, prefix)
}

func TestConformance(t *testing.T) { storetest.RunConformance(t, newHarness(t)) }

// OpenFresh implements storetest.LegacyHarness: every Open has a prefix of
// its own.
func (h *harness) OpenFresh(ctx context.Context, t testing.TB) (store.Driver, error) {
	return h.Open(ctx, t)
}

// Upgrade implements storetest.LegacyHarness: a new process over the same
// prefix, which finds what the deployment holds when first asked.
func (h *harness) Upgrade(ctx context.Context, t testing.TB, d store.Driver) (store.Driver, error) {
	return h.Reopen(ctx, t, d)
}

// TestLegacyKeys: what completed under the FNV-1a keys of earlier versions
// stays completed after the upgrade, until it expires.
func TestLegacyKeys(t *testing.T) { storetest.RunLegacy(t, newHarness(t)) }

func BenchmarkStore(b *testing.B) { storetest.RunBenchmarks(b, newHarness(b)) }

// fixture is one Store under a fresh prefix, with an admin client.
type fixture struct {
	ctx    context.Context
	s      *redisstore.Store
	admin  *goredis.Client
	prefix string
}

func newFixture(t *testing.T, opts ...redisstore.Option) *fixture {
	t.Helper()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	prefix := randomPrefix(t)
	t.Cleanup(func() { dropPrefix(t, h.admin, prefix) })
	opts = append([]redisstore.Option{redisstore.WithAddr(h.addr), redisstore.WithPrefix(prefix), redisstore.WithLogger(quiet)}, opts...)
	s, err := redisstore.New(ctx, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &fixture{ctx: ctx, s: s, admin: h.admin, prefix: prefix}
}

func markKey(s string) store.MarkKey {
	var k store.MarkKey
	copy(k[:], s)
	return k
}

// TestSequencesAsNumbers: the script compares sequences of any width as
// numbers, and they come back byte for byte, zero padding included.
func TestSequencesAsNumbers(t *testing.T) {
	f := newFixture(t)
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	long := idem.Sequence("49590338271490256608559692538361571095921575989136588898")
	steps := []struct {
		seq       idem.Sequence
		backwards bool
	}{
		{"", false},
		{"0", false},
		{"000", false},
		{"000123", false},
		{"123", false}, // equal as a number: not backwards
		{"124", false},
		{"0000123", true},
		{"99", true},
		{"", true},
		{"00000000000000000000000000000000000000000000000000000000000124", false},
		{long, false},
		{"9590338271490256608559692538361571095921575989136588898", true}, // one digit shorter
		{"49590338271490256608559692538361571095921575989136588897", true},
		{"49590338271490256608559692538361571095921575989136588899", false},
		{"149590338271490256608559692538361571095921575989136588898", false},
	}
	want := idem.Sequence("")
	for i, st := range steps {
		err := f.s.Commit(f.ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: st.seq, Processed: uint64(i)}})
		if st.backwards {
			if !errors.Is(err, store.ErrCheckpointBackwards) {
				t.Fatalf("step %d: Commit %q after %q: %v, want ErrCheckpointBackwards", i, st.seq, want, err)
			}
		} else {
			if err != nil {
				t.Fatalf("step %d: Commit %q after %q: %v", i, st.seq, want, err)
			}
			want = st.seq
		}
		c, ok, err := f.s.Checkpoint(f.ctx, key)
		if err != nil || !ok || c.Sequence != want {
			t.Fatalf("step %d: Checkpoint = %q, %v, %v; want %q", i, c.Sequence, ok, err, want)
		}
	}
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "12a"}}); err == nil || errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("Commit of a non-decimal sequence: %v, want a validation error", err)
	}

	pk := store.ProgressKey{Scope: "sc", Stream: "s", Shard: "0"}
	for _, p := range []store.Progress{
		{},
		{HighWater: "0007", Above: []idem.Sequence{"08", "000000000009", long}},
		{Above: []idem.Sequence{"5"}},
	} {
		if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: want}, HasProgress: true, ProgressKey: pk, Progress: p}); err != nil {
			t.Fatal(err)
		}
		got, err := f.s.Progress(f.ctx, pk)
		if err != nil || got.HighWater != p.HighWater || !slices.Equal(got.Above, p.Above) {
			t.Fatalf("Progress = %+v, %v; want %+v", got, err, p)
		}
	}
}

// TestFailures: a Write's failures become stream entries, the metadata
// first and then each record, read back by Failures page by page; a
// refused Write appends nothing.
func TestFailures(t *testing.T) {
	f := newFixture(t)
	arrival := time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC)
	recs := []idem.Record{
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "0007", PartitionKey: "alice", Data: []byte(`{"n":1}`), ArrivalTime: arrival, IdempotencyKey: "in/shardId-000000000003/0007"},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "", Data: []byte{0xff, 0, '\n', ','}},
	}
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "shardId-000000000003"}
	w := &store.Write{
		Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: recs[1].Sequence, Discarded: 2},
		Failures: []store.Failure{
			{Destination: "dlq", Metadata: []byte(`{"meta":1}`), Records: recs},
			{Destination: "other", Metadata: []byte(`{"meta":2}`)},
			{Destination: "dlq", Metadata: []byte(`{"meta":3}`), Records: recs[:1]},
		},
	}
	if err := f.s.Commit(f.ctx, w); err != nil {
		t.Fatal(err)
	}
	// Refused as backwards: nothing appended.
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: "1"},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte(`{"refused":1}`)}}}); !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("backwards Commit: %v", err)
	}

	var all []redisstore.FailureEntry
	after := ""
	for {
		page, err := f.s.Failures(f.ctx, "dlq", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d entries, limit 2", len(page))
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
	if len(all) != 5 {
		t.Fatalf("dlq holds %d entries, want 5: %+v", len(all), all)
	}
	wantMeta := func(e redisstore.FailureEntry, meta string, n int) {
		t.Helper()
		if e.Kind != redisstore.FailureMetadata || string(e.Metadata) != meta || e.Records != n || e.Shard != "shardId-000000000003" {
			t.Fatalf("entry %s = %+v, want metadata %s of %d records", e.ID, e, meta, n)
		}
	}
	wantRecord := func(e redisstore.FailureEntry, r idem.Record) {
		t.Helper()
		g := e.Record
		if e.Kind != redisstore.FailureRecord || g.Stream != r.Stream || g.ShardID != r.ShardID || g.Sequence != r.Sequence ||
			g.PartitionKey != r.PartitionKey || !bytes.Equal(g.Data, r.Data) || !g.ArrivalTime.Equal(r.ArrivalTime) ||
			g.IdempotencyKey != r.IdempotencyKey {
			t.Fatalf("entry %s = %+v, want record %+v", e.ID, e, r)
		}
	}
	wantMeta(all[0], `{"meta":1}`, 2)
	wantRecord(all[1], recs[0])
	wantRecord(all[2], recs[1])
	wantMeta(all[3], `{"meta":3}`, 1)
	wantRecord(all[4], recs[0])

	other, err := f.s.Failures(f.ctx, "other", "", 0)
	if err != nil || len(other) != 1 {
		t.Fatalf("other = %+v, %v", other, err)
	}
	if e := other[0]; e.Kind != redisstore.FailureMetadata || string(e.Metadata) != `{"meta":2}` || e.Records != 0 || e.Shard != "" {
		t.Fatalf("other entry = %+v", e)
	}
	if none, err := f.s.Failures(f.ctx, "never", "", 10); err != nil || len(none) != 0 {
		t.Fatalf("Failures of a destination never written = %+v, %v", none, err)
	}
}

// TestWriteWhollyRefused: a Write whose on-failure key holds another type
// is refused before the script writes anything.
func TestWriteWhollyRefused(t *testing.T) {
	f := newFixture(t)
	if err := f.admin.Set(f.ctx, "{"+f.prefix+"}:f:dlq", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"}
	mk := markKey("refused")
	err := f.s.Commit(f.ctx, &store.Write{
		Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: "5"},
		HasProgress: true, ProgressKey: store.ProgressKey{Scope: "sc", Stream: "in", Shard: "0"}, Progress: store.Progress{HighWater: "5"},
		Marks:    []store.Mark{{Key: mk, Expires: time.Now().Add(time.Hour)}},
		State:    []store.StateOp{{Namespace: "n", Key: "k", Value: []byte("v")}},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte("{}")}},
	})
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Commit onto a string: %v, want WRONGTYPE", err)
	}
	if _, ok, err := f.s.Checkpoint(f.ctx, cp); ok || err != nil {
		t.Fatalf("checkpoint after a refused Commit: %v, %v", ok, err)
	}
	if _, err := f.s.State(f.ctx, "n", "k"); !errors.Is(err, idem.ErrNotFound) {
		t.Fatalf("state after a refused Commit: %v", err)
	}
	done := []bool{true}
	if err := f.s.Completed(f.ctx, []store.MarkKey{mk}, time.Now(), done); err != nil || done[0] {
		t.Fatalf("mark after a refused Commit: %v, %v", done, err)
	}
}

// TestKeys: every key sits under "{prefix}:", so in one cluster slot; marks,
// claims and record claims get a PEXPIREAT one grace after their expiry,
// checkpoints, progress and state none; expiry is decided from timestamps while the key remains.
func TestKeys(t *testing.T) {
	grace := 2 * time.Hour
	f := newFixture(t, redisstore.WithExpiryGrace(grace))
	now := time.Now()
	live, expired := markKey("live"), markKey("expired")
	if err := f.s.Commit(f.ctx, &store.Write{
		Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: "1"},
		HasProgress: true, ProgressKey: store.ProgressKey{Scope: "sc", Stream: "in", Shard: "0"},
		Marks:    []store.Mark{{Key: live, Expires: now.Add(time.Hour)}, {Key: expired, Expires: now.Add(-time.Minute)}},
		State:    []store.StateOp{{Namespace: "n", Key: "k", Value: []byte("v")}},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte("{}")}},
	}); err != nil {
		t.Fatal(err)
	}
	c, err := f.s.Claim(f.ctx, markKey("claim"), store.PayloadHash{1}, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	rec := markKey("record")
	rc := store.RecordClaims{Owner: markKey("owner"), Keys: []store.MarkKey{rec}, LeaseUntil: now.Add(2 * time.Minute), Now: now}
	if err := f.s.ClaimRecords(f.ctx, &rc); err != nil || rc.Status[0] != store.Acquired {
		t.Fatalf("ClaimRecords = %v, %v", rc.Status, err)
	}
	keys, err := keysOf(f.ctx, f.admin, f.prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	p := "{" + f.prefix + "}:"
	want := []string{
		p + "c:" + hex.EncodeToString(c.Key[:]),
		p + "cp:1:m2:in0",
		p + "ctoken",
		p + "f:dlq",
		p + "m:" + hex.EncodeToString(expired[:]),
		p + "m:" + hex.EncodeToString(live[:]),
		p + "pm:2:sc2:in0",
		p + "rc:" + hex.EncodeToString(rec[:]),
		p + "s:1:nk",
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q\nwant %q", keys, want)
	}
	for _, k := range keys {
		ttl, err := f.admin.PExpireTime(f.ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var wantAt time.Time
		switch k {
		case want[0]:
			wantAt = now.Add(time.Minute + grace)
		case want[4]:
			wantAt = now.Add(-time.Minute + grace)
		case want[5]:
			wantAt = now.Add(time.Hour + grace)
		case want[7]:
			wantAt = now.Add(2*time.Minute + grace)
		}
		if wantAt.IsZero() {
			if ttl >= 0 {
				t.Errorf("key %s expires in %v, want never", k, ttl)
			}
		} else if got := time.UnixMilli(int64(ttl / time.Millisecond)); got.Sub(wantAt).Abs() > time.Millisecond {
			t.Errorf("key %s expires at %v, want %v", k, got, wantAt)
		}
	}
	done := make([]bool, 2)
	if err := f.s.Completed(f.ctx, []store.MarkKey{live, expired}, now, done); err != nil || !slices.Equal(done, []bool{true, false}) {
		t.Fatalf("Completed = %v, %v; want the expired mark not completed though its key remains", done, err)
	}
}

// TestTokensNeverGoBack: a claim's token stays above every earlier one of
// its key, after a release and after Redis removed the record.
func TestTokensNeverGoBack(t *testing.T) {
	f := newFixture(t)
	key, ph, now := markKey("k"), store.PayloadHash{7}, time.Now()
	var last uint64
	for i := range 4 {
		c, err := f.s.Claim(f.ctx, key, ph, time.Hour, now)
		if err != nil || c.Status != store.Acquired || c.Token <= last {
			t.Fatalf("claim %d = %+v, %v; want acquired above token %d", i, c, err, last)
		}
		last = c.Token
		if i%2 == 0 {
			if err := f.s.Release(f.ctx, c); err != nil {
				t.Fatal(err)
			}
		} else if err := f.admin.Del(f.ctx, "{"+f.prefix+"}:c:"+hex.EncodeToString(key[:])).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A record collected under its owner fences the owner.
	c, err := f.s.Claim(f.ctx, key, ph, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Del(f.ctx, "{"+f.prefix+"}:c:"+hex.EncodeToString(key[:])).Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Complete(f.ctx, c, []byte("r"), now.Add(time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Complete of a collected claim: %v, want ErrFenced", err)
	}
	// A completion with no expiry is kept for good.
	c, err = f.s.Claim(f.ctx, key, ph, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.Complete(f.ctx, c, nil, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := f.s.Lookup(f.ctx, key, now.Add(100*365*24*time.Hour))
	if err != nil || !ok || got.Status != store.Completed || got.Result != nil || got.Token != c.Token || got.PayloadHash != ph {
		t.Fatalf("Lookup of a completion without expiry = %+v, %v, %v", got, ok, err)
	}
	if ttl, err := f.admin.PTTL(f.ctx, "{"+f.prefix+"}:c:"+hex.EncodeToString(key[:])).Result(); err != nil || ttl >= 0 {
		t.Fatalf("TTL of a completion without expiry = %v, %v; want none", ttl, err)
	}
}

// fakeConfig answers CONFIG GET from a map (err when it is nil) and passes
// every other command on.
type fakeConfig struct {
	vals map[string]string
}

func (h fakeConfig) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h fakeConfig) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (h fakeConfig) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		args := cmd.Args()
		if cmd.Name() != "config" || len(args) != 3 || !strings.EqualFold(fmt.Sprint(args[1]), "get") {
			return next(ctx, cmd)
		}
		if h.vals == nil {
			err := errors.New("ERR unknown command 'CONFIG'")
			cmd.SetErr(err)
			return err
		}
		p := fmt.Sprint(args[2])
		cmd.(*goredis.MapStringStringCmd).SetVal(map[string]string{p: h.vals[p]})
		return nil
	}
}

// logged returns a logger that writes into the returned buffer.
func logged() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

// TestDurabilityWarning: New warns, and Durable is false, unless the
// server has appendonly yes and appendfsync always. Against the real server
// (its appendfsync switched to everysec for the test and restored, if it
// was durable), and against answers a hook makes up.
func TestDurabilityWarning(t *testing.T) {
	a := addr(t)
	c := admin(t, a)
	ctx := context.Background()
	cfg, err := c.ConfigGet(ctx, "appendfsync").Result()
	if err != nil {
		t.Skipf("CONFIG GET refused: %v", err)
	}
	aof, err := c.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		t.Fatal(err)
	}
	if aof["appendonly"] == "yes" && cfg["appendfsync"] == "always" {
		if err := c.ConfigSet(ctx, "appendfsync", "everysec").Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.ConfigSet(context.Background(), "appendfsync", "always").Err(); err != nil {
				t.Errorf("restoring appendfsync always: %v", err)
			}
		})
	}
	log, buf := logged()
	s, err := redisstore.New(ctx, redisstore.WithAddr(a), redisstore.WithPrefix(randomPrefix(t)), redisstore.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s.Durable() || !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "appendfsync always") {
		t.Fatalf("real server: Durable = %v, log %q; want false and a warning", s.Durable(), buf.String())
	}

	for _, tc := range []struct {
		name    string
		vals    map[string]string
		durable bool
	}{
		{"durable", map[string]string{"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}, true},
		{"everysec", map[string]string{"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}, false},
		{"no AOF", map[string]string{"appendonly": "no", "appendfsync": "always", "maxmemory-policy": "noeviction"}, false},
		{"CONFIG refused", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, DialerRetries: 1})
			defer client.Close()
			client.AddHook(fakeConfig{vals: tc.vals})
			log, buf := logged()
			s, err := redisstore.New(ctx, redisstore.WithClient(client), redisstore.WithPrefix(randomPrefix(t)), redisstore.WithLogger(log))
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			warned := strings.Contains(buf.String(), "level=WARN")
			if s.Durable() != tc.durable || warned == tc.durable {
				t.Fatalf("Durable = %v, warned = %v (log %q); want durable %v", s.Durable(), warned, buf.String(), tc.durable)
			}
			// Close leaves a client the caller passed in open.
			if err := client.Ping(ctx).Err(); err != nil {
				t.Fatalf("the caller's client after Close: %v", err)
			}
		})
	}
}

// TestNew: bad options are refused, an unreachable server is an error.
func TestNew(t *testing.T) {
	ctx := context.Background()
	for _, p := range []string{"", "a{b", "a}b"} {
		if s, err := redisstore.New(ctx, redisstore.WithPrefix(p), redisstore.WithLogger(quiet)); err == nil {
			s.Close()
			t.Fatalf("New with prefix %q succeeded", p)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if s, err := redisstore.New(ctx, redisstore.WithAddr(dead), redisstore.WithLogger(quiet)); err == nil {
		s.Close()
		t.Fatalf("New against %s (nothing listening) succeeded", dead)
	}
}

// TestClosed: after Close every method fails with store.ErrClosed, and no
// goroutine of the Store outlives it.
func TestClosed(t *testing.T) {
	a := addr(t)
	ctx := context.Background()
	before := runtime.NumGoroutine()
	s, err := redisstore.New(ctx, redisstore.WithAddr(a), redisstore.WithPrefix(randomPrefix(t)), redisstore.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Checkpoint(ctx, store.CheckpointKey{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{}
	_, _, checks["Checkpoint"] = s.Checkpoint(ctx, store.CheckpointKey{})
	_, checks["Progress"] = s.Progress(ctx, store.ProgressKey{})
	_, checks["ScopeProgress"] = s.ScopeProgress(ctx, store.ProgressKey{})
	checks["ClaimRecords"] = s.ClaimRecords(ctx, &store.RecordClaims{Keys: []store.MarkKey{{}}})
	_, checks["Time"] = s.Time(ctx)
	checks["Completed"] = s.Completed(ctx, nil, time.Now(), nil)
	_, checks["State"] = s.State(ctx, "n", "k")
	checks["Commit"] = s.Commit(ctx, &store.Write{})
	checks["DeleteCheckpoint"] = s.DeleteCheckpoint(ctx, store.CheckpointKey{})
	_, checks["Claim"] = s.Claim(ctx, store.MarkKey{}, store.PayloadHash{}, time.Second, time.Now())
	checks["Complete"] = s.Complete(ctx, store.Claim{}, nil, time.Now())
	checks["Release"] = s.Release(ctx, store.Claim{})
	_, _, checks["Lookup"] = s.Lookup(ctx, store.MarkKey{}, time.Now())
	_, checks["Failures"] = s.Failures(ctx, "d", "", 1)
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want store.ErrClosed", name, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// startRedis runs a private redis-server on a free loopback port with dir
// as its data directory and the given extra settings; it is killed
// (SIGKILL, a crash) when the test ends or when the returned function is
// called.
func startRedis(t *testing.T, dir string, settings ...string) (addr string, kill func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ln.Close()
	args := append([]string{"--bind", "127.0.0.1", "--port", port, "--dir", dir, "--save", "", "--daemonize", "no", "--logfile", ""}, settings...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(kill)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not start: %v", addr, err)
		}
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Ping fails with LOADING while the server replays its AOF.
		if err := c.Ping(context.Background()).Err(); err == nil {
			return addr, kill
		} else if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s did not answer: %v", addr, err)
		}
	}
}

// TestSurvivesRedisCrash: against a server with appendonly yes and
// appendfsync always, New reports durability without a warning, and what
// was acknowledged before the server is killed (SIGKILL) is there, whole,
// after it restarts from its AOF. (A killed process loses nothing the OS
// already has; appendfsync always is what also covers a power loss, which
// a test cannot make.)
func TestSurvivesRedisCrash(t *testing.T) {
	dir := t.TempDir()
	durable := []string{"--appendonly", "yes", "--appendfsync", "always"}
	a, kill := startRedis(t, dir, durable...)
	ctx := context.Background()
	log, buf := logged()
	s, err := redisstore.New(ctx, redisstore.WithAddr(a), redisstore.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Durable() || buf.Len() != 0 {
		t.Fatalf("Durable = %v, log %q; want true and nothing logged", s.Durable(), buf.String())
	}
	base := time.Now()
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"}
	pk := store.ProgressKey{Scope: "sc", Stream: "in", Shard: "0"}
	var keys []store.MarkKey
	for i := range 20 {
		w := &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: idem.SequenceOf(uint64(i + 1)), Processed: uint64(i + 1)},
			HasProgress: true, ProgressKey: pk, Progress: store.Progress{HighWater: idem.SequenceOf(uint64(i + 1))},
			State:    []store.StateOp{{Namespace: "n", Key: "count", Value: fmt.Appendf(nil, "%d", i+1)}},
			Failures: []store.Failure{{Destination: "dlq", Metadata: fmt.Appendf(nil, `{"i":%d}`, i)}}}
		for m := range 10 {
			k := markKey(fmt.Sprintf("mark-%d-%d", i, m))
			keys = append(keys, k)
			w.Marks = append(w.Marks, store.Mark{Key: k, Expires: base.Add(time.Hour)})
		}
		if err := s.Commit(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	claim, err := s.Claim(ctx, markKey("claim"), store.PayloadHash{1}, time.Hour, base)
	if err != nil {
		t.Fatal(err)
	}
	kill()
	s.Close()

	a, _ = startRedis(t, dir, durable...)
	s2, err := redisstore.New(ctx, redisstore.WithAddr(a), redisstore.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if c, ok, err := s2.Checkpoint(ctx, cp); err != nil || !ok || c != (store.Checkpoint{Sequence: idem.SequenceOf(20), Processed: 20}) {
		t.Fatalf("checkpoint after the crash = %+v, %v, %v", c, ok, err)
	}
	if p, err := s2.Progress(ctx, pk); err != nil || p.HighWater != idem.SequenceOf(20) {
		t.Fatalf("progress after the crash = %+v, %v", p, err)
	}
	if v, err := s2.State(ctx, "n", "count"); err != nil || string(v) != "20" {
		t.Fatalf("state after the crash = %q, %v", v, err)
	}
	done := make([]bool, len(keys))
	if err := s2.Completed(ctx, keys, base, done); err != nil || slices.Contains(done, false) {
		t.Fatalf("marks after the crash = %v, %v", done, err)
	}
	if e, err := s2.Failures(ctx, "dlq", "", 100); err != nil || len(e) != 20 {
		t.Fatalf("failures after the crash: %d, %v", len(e), err)
	}
	if _, err := s2.Claim(ctx, claim.Key, store.PayloadHash{1}, time.Hour, base); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("claim after the crash: %v, want ErrClaimHeld", err)
	}
	next, err := s2.Claim(ctx, claim.Key, store.PayloadHash{1}, time.Hour, base.Add(2*time.Hour))
	if err != nil || next.Token <= claim.Token {
		t.Fatalf("takeover after the crash = %+v, %v; want a token above %d", next, err, claim.Token)
	}
}
