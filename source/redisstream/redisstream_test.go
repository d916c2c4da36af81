package redisstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/redisstream"
	"github.com/idem-run/idem/source/sourcetest"
)

// env is a test's Redis: its address and a client of its own for setup.
type env struct {
	addr  string
	admin *goredis.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	addr := testsvc.RedisAddr(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return &env{addr: addr, admin: c}
}

// prefix returns a key prefix unique to the test; its keys are deleted
// when the test ends.
func (e *env) prefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	p := "idemtest-rs-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var keys []string
		it := e.admin.Scan(ctx, 0, p+"*", 1000).Iterator()
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		if err := it.Err(); err != nil {
			t.Errorf("listing the keys of %s: %v", p, err)
			return
		}
		if len(keys) > 0 {
			if err := e.admin.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("deleting the keys of %s: %v", p, err)
			}
		}
	})
	return p
}

// open makes a Source closed when the test ends.
func (e *env) open(t testing.TB, opts ...redisstream.Option) *redisstream.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := redisstream.New(ctx, append([]redisstream.Option{redisstream.WithAddr(e.addr)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// add appends an entry with the given field/value pairs and returns its
// Sequence.
func (e *env) add(t testing.TB, key string, id string, fields ...string) idem.Sequence {
	t.Helper()
	if id == "" {
		id = "*"
	}
	got, err := e.admin.XAdd(context.Background(), &goredis.XAddArgs{Stream: key, ID: id, Values: fields}).Result()
	if err != nil {
		t.Fatalf("XADD %s %s: %v", key, id, err)
	}
	seq, err := redisstream.SequenceOfID(got)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func (e *env) addN(t testing.TB, key string, n int) []idem.Sequence {
	t.Helper()
	out := make([]idem.Sequence, n)
	for i := range out {
		out[i] = e.add(t, key, "", "data", "rec-"+strconv.Itoa(i))
	}
	return out
}

// trimThrough removes the entries of key up to and including through.
func (e *env) trimThrough(t testing.TB, key string, through idem.Sequence) {
	t.Helper()
	min, err := nextID(through)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.XTrimMinID(context.Background(), key, min).Err(); err != nil {
		t.Fatalf("XTRIM %s MINID %s: %v", key, min, err)
	}
}

// nextID returns the entry ID just above seq.
func nextID(seq idem.Sequence) (string, error) {
	id, err := redisstream.IDOfSequence(seq)
	if err != nil {
		return "", err
	}
	msPart, seqPart, _ := strings.Cut(id, "-")
	ms, _ := strconv.ParseUint(msPart, 10, 64)
	n, _ := strconv.ParseUint(seqPart, 10, 64)
	if n == ^uint64(0) {
		return strconv.FormatUint(ms+1, 10) + "-0", nil
	}
	return msPart + "-" + strconv.FormatUint(n+1, 10), nil
}

// harness runs the conformance suite over streams of random key prefixes.
type harness struct{ e *env }

func (h harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	prefix := h.e.prefix(t)
	src, err := redisstream.New(ctx, redisstream.WithAddr(h.e.addr), redisstream.WithKeyPrefix(prefix, shards),
		redisstream.WithPollInterval(200*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { src.Close() })
	keys, err := src.Shards(ctx)
	if err != nil {
		return nil, nil, err
	}
	app := func(ctx context.Context, pk string, data []byte) (string, idem.Sequence, error) {
		f := fnv.New32a()
		f.Write([]byte(pk))
		key := keys[int(f.Sum32()%uint32(len(keys)))]
		id, err := h.e.admin.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{"data", data, "pk", pk}}).Result()
		if err != nil {
			return "", "", err
		}
		seq, err := redisstream.SequenceOfID(id)
		return key, seq, err
	}
	return src, app, nil
}

func (harness) Features() sourcetest.Features { return sourcetest.Features{} }

// Trim is XTRIM MINID just above through.
func (h harness) Trim(ctx context.Context, t testing.TB, _ source.Driver, shard string, through idem.Sequence) error {
	min, err := nextID(through)
	if err != nil {
		return err
	}
	return h.e.admin.XTrimMinID(ctx, shard, min).Err()
}

var _ sourcetest.Trimmer = harness{}

func TestConformance(t *testing.T) { sourcetest.RunConformance(t, harness{newEnv(t)}) }

var ctxBG = context.Background()

func read(t *testing.T, s *redisstream.Source, shard string, after idem.Sequence, limit int) source.ReadResult {
	t.Helper()
	res, err := s.Read(ctxBG, shard, after, limit, 1<<20)
	if err != nil {
		t.Fatalf("Read(%s, after %q): %v", shard, after, err)
	}
	return res
}

func seqs(res source.ReadResult) []idem.Sequence {
	out := make([]idem.Sequence, len(res.Records))
	for i, r := range res.Records {
		out[i] = r.Sequence
	}
	return out
}

func wantRead(t *testing.T, what string, res source.ReadResult, records []idem.Sequence, lost uint64) {
	t.Helper()
	if fmt.Sprint(seqs(res)) != fmt.Sprint(records) || res.Lost != lost {
		t.Fatalf("%s: records %q, lost %d; want %q, lost %d", what, seqs(res), res.Lost, records, lost)
	}
}

// TestLoss covers how trimming and XDEL are reported, beyond the suite.
func TestLoss(t *testing.T) {
	e := newEnv(t)
	setup := func(t *testing.T) (*redisstream.Source, string) {
		key := e.prefix(t)
		return e.open(t, redisstream.WithKeys(key)), key
	}

	t.Run("CaughtUpReaderPassedByTrim", func(t *testing.T) {
		s, key := setup(t)
		recs := e.addN(t, key, 3)
		res := read(t, s, key, "", 10)
		wantRead(t, "first read", res, recs, 0)
		pos := recs[2]
		wantRead(t, "caught up", read(t, s, key, pos, 10), nil, 0)
		// Time-based trimming on an idle stream removes the reader's own
		// position, and nothing it had not read.
		e.trimThrough(t, key, recs[2])
		time.Sleep(2 * time.Millisecond) // an ID not adjacent to pos's
		fresh := e.add(t, key, "", "data", "fresh")
		wantRead(t, "after the trim", read(t, s, key, pos, 10), []idem.Sequence{fresh}, 0)

		// A source that has not seen the position (a restart) cannot tell,
		// and reports a possible loss rather than none.
		res = read(t, e.open(t, redisstream.WithKeys(key)), key, pos, 10)
		wantRead(t, "after a restart", res, []idem.Sequence{fresh}, 1)
		if res.Trimmed.Compare(pos) <= 0 || res.Trimmed.Compare(fresh) >= 0 {
			t.Fatalf("Trimmed = %q, want between %q and %q", res.Trimmed, pos, fresh)
		}
	})

	t.Run("LaggingReaderExactCount", func(t *testing.T) {
		s, key := setup(t)
		recs := e.addN(t, key, 5)
		wantRead(t, "first", read(t, s, key, "", 1), recs[:1], 0)
		wantRead(t, "second", read(t, s, key, recs[0], 1), recs[1:2], 0)
		e.trimThrough(t, key, recs[3])
		res := read(t, s, key, recs[1], 10)
		wantRead(t, "behind the trim", res, recs[4:], 2)
		if res.Trimmed.Compare(recs[3]) < 0 || res.Trimmed.Compare(recs[4]) >= 0 {
			t.Fatalf("Trimmed = %q, want in [%q, %q)", res.Trimmed, recs[3], recs[4])
		}
		wantRead(t, "from Trimmed", read(t, s, key, res.Trimmed, 10), recs[4:], 0)
	})

	t.Run("EverythingTrimmed", func(t *testing.T) {
		s, key := setup(t)
		recs := e.addN(t, key, 4)
		wantRead(t, "first", read(t, s, key, "", 1), recs[:1], 0)
		if err := e.admin.XTrimMaxLen(ctxBG, key, 0).Err(); err != nil {
			t.Fatal(err)
		}
		res := read(t, s, key, recs[0], 10)
		wantRead(t, "all gone", res, nil, 3)
		if res.Trimmed != recs[3] || res.Latest != "" {
			t.Fatalf("Trimmed = %q, Latest = %q; want %q and the zero Sequence", res.Trimmed, res.Latest, recs[3])
		}
		wantRead(t, "from Trimmed", read(t, s, key, res.Trimmed, 10), nil, 0)
		wantRead(t, "from the start", read(t, s, key, "", 10), nil, 4)

		other := e.open(t, redisstream.WithKeys(key))
		res = read(t, other, key, recs[1], 10)
		if res.Lost != 1 || res.Trimmed != recs[3] {
			t.Fatalf("unknown position: Lost %d Trimmed %q, want 1 and %q", res.Lost, res.Trimmed, recs[3])
		}
		// The starting positions report no loss.
		for _, pos := range []source.StartingPosition{source.TrimHorizon, source.Latest, source.AtTimestamp} {
			p, err := other.Start(ctxBG, key, pos, time.Unix(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			if p != recs[3] {
				t.Fatalf("%s on an emptied stream = %q, want its last ID %q", pos, p, recs[3])
			}
			wantRead(t, string(pos), read(t, other, key, p, 10), nil, 0)
		}
	})

	t.Run("XDELBetween", func(t *testing.T) {
		s, key := setup(t)
		recs := e.addN(t, key, 3)
		wantRead(t, "first", read(t, s, key, "", 1), recs[:1], 0)
		id, _ := redisstream.IDOfSequence(recs[1])
		if err := e.admin.XDel(ctxBG, key, id).Err(); err != nil {
			t.Fatal(err)
		}
		res := read(t, s, key, recs[0], 10)
		wantRead(t, "past the deleted entry", res, recs[2:], 1)
		if res.Trimmed.Compare(recs[1]) < 0 || res.Trimmed.Compare(recs[2]) >= 0 {
			t.Fatalf("Trimmed = %q", res.Trimmed)
		}
		// A reader past it is not concerned.
		wantRead(t, "past it", read(t, s, key, recs[1], 10), recs[2:], 0)
	})

	t.Run("StartingPositionsAfterTrim", func(t *testing.T) {
		s, key := setup(t)
		recs := e.addN(t, key, 4)
		e.trimThrough(t, key, recs[1])
		other := e.open(t, redisstream.WithKeys(key)) // knows nothing yet
		th, err := other.Start(ctxBG, key, source.TrimHorizon, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if th.Compare(recs[1]) < 0 || th.Compare(recs[2]) >= 0 {
			t.Fatalf("TRIM_HORIZON = %q, want in [%q, %q)", th, recs[1], recs[2])
		}
		wantRead(t, "from TRIM_HORIZON", read(t, s, key, th, 10), recs[2:], 0)
		at, err := s.Start(ctxBG, key, source.AtTimestamp, time.Unix(0, 0).Add(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if at != th {
			t.Fatalf("AT_TIMESTAMP before the trim = %q, want TRIM_HORIZON %q", at, th)
		}
		latest, err := s.Start(ctxBG, key, source.Latest, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if latest != recs[3] {
			t.Fatalf("LATEST = %q, want %q", latest, recs[3])
		}
	})
}

func TestMissingKeyIsAnEmptyShard(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	s := e.open(t, redisstream.WithKeys(key), redisstream.WithPollInterval(5*time.Second))
	for _, pos := range []source.StartingPosition{source.TrimHorizon, source.Latest, source.AtTimestamp} {
		p, err := s.Start(ctxBG, key, pos, time.Now())
		if err != nil || (pos != source.AtTimestamp && p != "") {
			t.Fatalf("%s on a missing key = %q, %v", pos, p, err)
		}
	}
	res := read(t, s, key, "", 10)
	if len(res.Records) != 0 || res.Lost != 0 || res.Latest != "" {
		t.Fatalf("missing key read %+v", res)
	}
	// Wait blocks on a missing key, and the first XADD wakes it.
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Wait(ctxBG, key, "") }()
	time.Sleep(50 * time.Millisecond)
	rec := e.add(t, key, "", "data", "x")
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Wait took %s to notice the first entry", d)
	}
	wantRead(t, "after XADD", read(t, s, key, "", 10), []idem.Sequence{rec}, 0)
}

func TestWrongType(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	if err := e.admin.Set(ctxBG, key, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s := e.open(t, redisstream.WithKeys(key))
	if _, err := s.Read(ctxBG, key, "", 10, 1<<20); err == nil || !strings.Contains(err.Error(), "not a stream") {
		t.Fatalf("Read of a string key: %v", err)
	}
	if _, err := s.Start(ctxBG, key, source.TrimHorizon, time.Time{}); err == nil {
		t.Fatal("Start of a string key succeeded")
	}
	if err := s.Wait(ctxBG, key, ""); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Wait on a string key: %v", err)
	}
}

func TestEntryFields(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	s := e.open(t, redisstream.WithKeys(key), redisstream.WithStream("orders"))
	e.add(t, key, "1700000000123-0", "other", "x", "pk", "alice", "data", "one")
	e.add(t, key, "1700000000123-1", "data", "two")
	e.add(t, key, "1700000000124-0", "data", "three", "pk", "", "data", "ignored", "pk", "ignored")
	e.add(t, key, "1700000000125-0", "only", "other")
	res := read(t, s, key, "", 10)
	want := []struct{ pk, data string }{{"alice", "one"}, {key, "two"}, {key, "three"}, {key, ""}}
	if len(res.Records) != len(want) {
		t.Fatalf("read %d records, want %d", len(res.Records), len(want))
	}
	for i, r := range res.Records {
		if r.PartitionKey != want[i].pk || string(r.Data) != want[i].data || r.Stream != "orders" || r.ShardID != key {
			t.Fatalf("record %d = %+v, want pk %q data %q", i, r, want[i].pk, want[i].data)
		}
	}
	if at := res.Records[0].ArrivalTime; !at.Equal(time.UnixMilli(1700000000123)) {
		t.Fatalf("ArrivalTime = %s, want the ID's millisecond", at)
	}
	if len(res.Records[1].Sequence) != redisstream.SequenceWidth {
		t.Fatalf("Sequence = %q", res.Records[1].Sequence)
	}
	if got, _ := redisstream.IDOfSequence(res.Records[1].Sequence); got != "1700000000123-1" {
		t.Fatalf("record 1 maps back to %q", got)
	}
	// Data is not shared with a later read.
	again := read(t, s, key, "", 10)
	again.Records[0].Data[0] = 'X'
	if string(res.Records[0].Data) != "one" {
		t.Fatal("a later read changed an earlier read's Data")
	}
}

// TestExtremeIDs reads entries with the smallest and largest IDs Redis
// allows, across chunk boundaries of the read script.
func TestExtremeIDs(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	s := e.open(t, redisstream.WithKeys(key))
	var ids []string
	for i := 1; i <= 14; i++ {
		ids = append(ids, "0-"+strconv.Itoa(i))
	}
	ids = append(ids, "0-18446744073709551615", "1-0", "18446744073709551615-0", "18446744073709551615-18446744073709551615")
	var want []idem.Sequence
	for _, id := range ids {
		want = append(want, e.add(t, key, id, "data", id))
	}
	for i := 1; i < len(want); i++ {
		if want[i].Compare(want[i-1]) <= 0 {
			t.Fatalf("%s maps below %s", ids[i], ids[i-1])
		}
	}
	// 16 entries fill the first chunk and end at the largest ID.
	wantRead(t, "from 0-2", read(t, s, key, want[1], 100), want[2:], 0)
	wantRead(t, "all", read(t, s, key, "", 100), want, 0)
	var paged []idem.Sequence
	for after := idem.Sequence(""); ; {
		res := read(t, s, key, after, 3)
		if len(res.Records) == 0 {
			break
		}
		paged = append(paged, seqs(res)...)
		after = res.Records[len(res.Records)-1].Sequence
	}
	wantRead(t, "pages", source.ReadResult{Records: recordsOf(paged)}, want, 0)
	res := read(t, s, key, want[len(want)-1], 10)
	wantRead(t, "after the largest ID", res, nil, 0)
	if res.Latest != want[len(want)-1] {
		t.Fatalf("Latest = %q", res.Latest)
	}
	// Positions spelt without leading zeros read the same.
	short := idem.Sequence(strings.TrimLeft(string(want[15]), "0"))
	wantRead(t, "unpadded position", read(t, s, key, short, 100), want[16:], 0)
	ctx, cancel := context.WithTimeout(ctxBG, 300*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx, key, want[len(want)-1]); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after the largest ID: %v", err)
	}
}

func recordsOf(ss []idem.Sequence) []idem.Record {
	out := make([]idem.Record, len(ss))
	for i, s := range ss {
		out[i].Sequence = s
	}
	return out
}

func TestLimitAndMaxBytesAcrossChunks(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	s := e.open(t, redisstream.WithKeys(key))
	pipe := e.admin.Pipeline()
	for i := range 300 {
		pipe.XAdd(ctxBG, &goredis.XAddArgs{Stream: key, Values: []any{"data", bytes.Repeat([]byte{'a' + byte(i%26)}, 100)}})
	}
	if _, err := pipe.Exec(ctxBG); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ limit, maxBytes, want int }{
		{1000, 1 << 20, 300}, {37, 1 << 20, 37}, {1000, 5050, 50}, {1000, 5000, 50}, {1000, 99, 1}, {1000, 0, 1}, {0, 1 << 20, 0},
	} {
		res, err := s.Read(ctxBG, key, "", tc.limit, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) != tc.want {
			t.Fatalf("Read(limit %d, maxBytes %d) = %d records, want %d", tc.limit, tc.maxBytes, len(res.Records), tc.want)
		}
		for i, r := range res.Records {
			if len(r.Data) != 100 || r.Data[0] != 'a'+byte(i%26) {
				t.Fatalf("record %d: %q", i, r.Data)
			}
		}
	}
}

func TestWaitDeadlineAndCancel(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)
	s := e.open(t, redisstream.WithKeys(key), redisstream.WithPollInterval(5*time.Second))
	e.add(t, key, "", "data", "x")
	latest, err := s.Start(ctxBG, key, source.Latest, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctxBG, 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.Wait(ctx, key, latest); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Wait with a 150ms deadline took %s", d)
	}
	// The connection survived: a read works.
	read(t, s, key, "", 1)
	done, cancel2 := context.WithCancel(ctxBG)
	cancel2()
	if err := s.Wait(done, key, latest); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}
	// Below the newest entry, Wait returns at once.
	start = time.Now()
	if err := s.Wait(ctxBG, key, ""); err != nil || time.Since(start) > time.Second {
		t.Fatalf("Wait below the newest entry: %v after %s", err, time.Since(start))
	}
}

func TestOptions(t *testing.T) {
	ctx := ctxBG
	for _, tc := range []struct {
		name string
		opts []redisstream.Option
		want string
	}{
		{"no keys", nil, "no stream keys"},
		{"empty keys", []redisstream.Option{redisstream.WithKeys()}, "at least one key"},
		{"both", []redisstream.Option{redisstream.WithKeys("a"), redisstream.WithKeyPrefix("p", 2)}, "exclude"},
		{"duplicate", []redisstream.Option{redisstream.WithKeys("a", "b", "a")}, "twice"},
		{"empty key", []redisstream.Option{redisstream.WithKeys("a", "")}, "empty"},
		{"empty prefix", []redisstream.Option{redisstream.WithKeyPrefix("", 2)}, "non-empty prefix"},
		{"no shards", []redisstream.Option{redisstream.WithKeyPrefix("p", 0)}, "at least 1"},
		{"poll", []redisstream.Option{redisstream.WithKeys("a"), redisstream.WithPollInterval(0)}, "poll interval"},
		{"retention", []redisstream.Option{redisstream.WithKeys("a"), redisstream.WithRetention(-time.Hour)}, "retention"},
		{"db", []redisstream.Option{redisstream.WithKeys("a"), redisstream.WithDB(-1)}, "negative"},
	} {
		_, err := redisstream.New(ctx, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := redisstream.New(cctx, redisstream.WithAddr("127.0.0.1:1"), redisstream.WithKeys("a")); err == nil {
		t.Error("New with no server succeeded")
	}

	e := newEnv(t)
	s := e.open(t, redisstream.WithKeyPrefix("orders", 3), redisstream.WithRetention(72*time.Hour))
	shards, err := s.Shards(ctx)
	if err != nil || fmt.Sprint(shards) != "[orders-0 orders-1 orders-2]" {
		t.Fatalf("Shards = %q, %v", shards, err)
	}
	if s.Stream() != "orders" || s.Retention() != 72*time.Hour {
		t.Fatalf("Stream %q, Retention %s", s.Stream(), s.Retention())
	}
	if s := e.open(t, redisstream.WithKeys("b", "a")); s.Stream() != "b" || s.Retention() != redisstream.DefaultRetention {
		t.Fatalf("defaults: Stream %q, Retention %s", s.Stream(), s.Retention())
	}
	if _, err := s.Read(ctx, "orders-3", "", 1, 1); !errors.Is(err, source.ErrShardNotFound) {
		t.Fatalf("Read of an unknown shard: %v", err)
	}
	if err := s.Wait(ctx, "orders", ""); !errors.Is(err, source.ErrShardNotFound) {
		t.Fatalf("Wait on an unknown shard: %v", err)
	}
	if _, err := s.Read(ctx, "orders-0", "12x", 1, 1); !errors.Is(err, redisstream.ErrInvalidSequence) {
		t.Fatalf("Read after a bad position: %v", err)
	}
	if _, err := s.Start(ctx, "orders-0", "SOMEWHERE", time.Time{}); err == nil {
		t.Fatal("Start at an unknown position succeeded")
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t)
	key := e.prefix(t)

	// A client passed in stays open.
	s := e.open(t, redisstream.WithClient(e.admin), redisstream.WithKeys(key))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Ping(ctxBG).Err(); err != nil {
		t.Fatalf("Close closed the caller's client: %v", err)
	}
	if _, err := s.Read(ctxBG, key, "", 1, 1); !errors.Is(err, redisstream.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := s.Shards(ctxBG); !errors.Is(err, redisstream.ErrClosed) {
		t.Fatalf("Shards after Close: %v", err)
	}

	// Close ends a blocked Wait, and leaves no goroutine behind.
	before := runtime.NumGoroutine()
	s, err := redisstream.New(ctxBG, redisstream.WithAddr(e.addr), redisstream.WithKeys(key), redisstream.WithPollInterval(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctxBG, key, "") }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, redisstream.ErrClosed) {
		t.Fatalf("Wait ended by Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s to end a Wait", d)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
