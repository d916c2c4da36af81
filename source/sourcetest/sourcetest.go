// Package sourcetest is the conformance suite every source.Driver passes:
// order within a shard, exact resume, starting positions, waiting, limits,
// large records. A driver's test is one line:
//
//	func TestConformance(t *testing.T) { sourcetest.RunConformance(t, harness{}) }
//
// The suite assumes only what source.Driver promises: sequences are decimal
// strings that strictly increase within a shard (by idem.Sequence.Compare),
// but need not start at 1, be contiguous or fit 64 bits, so Kafka offsets,
// 56-digit Kinesis sequence numbers and Redis stream IDs all pass. The suite
// never does arithmetic on a sequence: it reads from positions a driver
// returned.
package sourcetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// Appender appends one record to the stream a Harness made and returns
// where it landed. Once it returns, the record is readable.
type Appender func(ctx context.Context, partitionKey string, data []byte) (shard string, seq idem.Sequence, err error)

// Features says what a driver can do, so that the suite asks no more.
type Features struct {
	// MaxRecordBytes is the largest Data the driver round-trips. Default
	// (0): 1 MiB, Kinesis' limit.
	MaxRecordBytes int
	// TimestampPrecision is the granularity of arrival times (and the clock
	// skew to the appender), for AT_TIMESTAMP. Default (0): 1ms.
	TimestampPrecision time.Duration
	// NoAtTimestamp says the driver refuses AT_TIMESTAMP, as DynamoDB
	// Streams (and Lambda over it) does: the suite checks that Start
	// refuses it, instead of reading from it.
	NoAtTimestamp bool
	// Payload returns what the Appender appended, from a record the driver
	// read, for a driver whose Data wraps it: a DynamoDB stream record is
	// the JSON of a change, whose item holds the data. Sizes (maxBytes)
	// are still those of Data. Default (nil): Data itself.
	Payload func(idem.Record) []byte
}

// Harness makes streams for the suite.
type Harness interface {
	// MakeStream creates a new, empty stream with shards shards, unique to
	// the calling test, and returns a driver over it and a way to append
	// to it. The harness cleans it up with t.Cleanup.
	MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, Appender, error)
	// Features describes the driver.
	Features() Features
}

// Trimmer is implemented by harnesses whose source can be made to drop its
// oldest records, as retention does; the suite then checks that a reader
// behind the trim learns of the loss and never hangs.
type Trimmer interface {
	// Trim removes the records of shard up to and including the one at
	// through, made by the Appender of the stream d reads.
	Trim(ctx context.Context, t testing.TB, d source.Driver, shard string, through idem.Sequence) error
}

// RunConformance runs the suite's tests as parallel subtests of t.
func RunConformance(t *testing.T, h Harness) {
	f := h.Features()
	if f.MaxRecordBytes == 0 {
		f.MaxRecordBytes = 1 << 20
	}
	if f.TimestampPrecision == 0 {
		f.TimestampPrecision = time.Millisecond
	}
	tests := []struct {
		name string
		run  func(*testing.T, Harness, Features)
	}{
		{"Shards", testShards},
		{"ShardOrder", testShardOrder},
		{"ExactResume", testExactResume},
		{"TrimHorizon", testTrimHorizon},
		{"Latest", testLatest},
		{"AtTimestamp", testAtTimestamp},
		{"EmptyShard", testEmptyShard},
		{"WaitWakes", testWaitWakes},
		{"LargeRecord", testLargeRecord},
		{"LimitAndMaxBytes", testLimitAndMaxBytes},
		{"UnknownShard", testUnknownShard},
		{"TrimmedReportsLoss", testTrimmedReportsLoss},
		{"RecordsStayValid", testRecordsStayValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, h, f)
		})
	}
}

// appended is what an Appender reported.
type appended struct {
	shard string
	seq   idem.Sequence
	key   string
	data  []byte
}

type fixture struct {
	t       *testing.T
	ctx     context.Context
	d       source.Driver
	app     Appender
	payload func(idem.Record) []byte
}

func newFixture(t *testing.T, h Harness, shards int) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	d, app, err := h.MakeStream(ctx, t, shards)
	if err != nil {
		t.Fatalf("MakeStream(%d): %v", shards, err)
	}
	payload := h.Features().Payload
	if payload == nil {
		payload = func(r idem.Record) []byte { return r.Data }
	}
	return &fixture{t: t, ctx: ctx, d: d, app: app, payload: payload}
}

func (f *fixture) append(key string, data []byte) appended {
	f.t.Helper()
	shard, seq, err := f.app(f.ctx, key, data)
	if err != nil {
		f.t.Fatalf("append key %q: %v", key, err)
	}
	return appended{shard: shard, seq: seq, key: key, data: data}
}

// appendN appends n records with keys cycling over keys, data "rec-i".
func (f *fixture) appendN(n int, keys ...string) []appended {
	f.t.Helper()
	out := make([]appended, n)
	for i := range out {
		out[i] = f.append(keys[i%len(keys)], fmt.Appendf(nil, "rec-%d", i))
	}
	return out
}

func (f *fixture) shards() []string {
	f.t.Helper()
	ids, err := f.d.Shards(f.ctx)
	if err != nil {
		f.t.Fatalf("Shards: %v", err)
	}
	return ids
}

func (f *fixture) start(shard string, pos source.StartingPosition, ts time.Time) idem.Sequence {
	f.t.Helper()
	s, err := f.d.Start(f.ctx, shard, pos, ts)
	if err != nil {
		f.t.Fatalf("Start(%s, %s): %v", shard, pos, err)
	}
	return s
}

func (f *fixture) read(shard string, after idem.Sequence, limit, maxBytes int) source.ReadResult {
	f.t.Helper()
	res, err := f.d.Read(f.ctx, shard, after, limit, maxBytes)
	if err != nil {
		f.t.Fatalf("Read(%s, after %q): %v", shard, after, err)
	}
	return res
}

// readAll reads shard after after until a read returns nothing, in pages of
// limit, copying the data.
func (f *fixture) readAll(shard string, after idem.Sequence, limit int) []appended {
	f.t.Helper()
	var out []appended
	for {
		res := f.read(shard, after, limit, 1<<30)
		if len(res.Records) == 0 {
			return out
		}
		if len(res.Records) > limit {
			f.t.Fatalf("Read(%s, after %q, limit %d) returned %d records", shard, after, limit, len(res.Records))
		}
		for _, r := range res.Records {
			if !r.Sequence.Valid() || r.Sequence.Compare(after) <= 0 {
				f.t.Fatalf("Read(%s) after %q returned sequence %q", shard, after, r.Sequence)
			}
			if r.ShardID != shard {
				f.t.Fatalf("Read(%s) returned a record of shard %q", shard, r.ShardID)
			}
			after = r.Sequence
			out = append(out, appended{shard: r.ShardID, seq: r.Sequence, key: r.PartitionKey, data: bytes.Clone(f.payload(r))})
		}
	}
}

// byShard groups appended records by shard, in append order.
func byShard(recs []appended) map[string][]appended {
	m := make(map[string][]appended)
	for _, r := range recs {
		m[r.shard] = append(m[r.shard], r)
	}
	return m
}

func sameRecords(t *testing.T, what string, got, want []appended) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.seq != w.seq || g.key != w.key || !bytes.Equal(g.data, w.data) {
			t.Fatalf("%s: record %d = seq %q key %q data %.40q, want seq %q key %q data %.40q", what, i, g.seq, g.key, g.data, w.seq, w.key, w.data)
		}
	}
}

func testShards(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 3)
	ids := f.shards()
	if len(ids) != 3 {
		t.Fatalf("Shards = %q, want 3", ids)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("Shards = %q: %q twice", ids, id)
		}
		seen[id] = true
	}
	if again := f.shards(); fmt.Sprint(again) != fmt.Sprint(ids) {
		t.Fatalf("Shards changed order: %q then %q", ids, again)
	}
	for _, r := range f.appendN(30, "a", "b", "c", "d", "e", "f", "g") {
		if !seen[r.shard] {
			t.Fatalf("append landed in shard %q, not one of %q", r.shard, ids)
		}
	}
	if f.d.Retention() <= 0 {
		t.Fatalf("Retention = %s, want positive", f.d.Retention())
	}
}

func testShardOrder(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 3)
	recs := f.appendN(200, "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9")
	keyShard := map[string]string{}
	for _, r := range recs {
		if s, ok := keyShard[r.key]; ok && s != r.shard {
			t.Fatalf("key %q landed in shards %q and %q", r.key, s, r.shard)
		}
		keyShard[r.key] = r.shard
	}
	groups := byShard(recs)
	total := 0
	for _, shard := range f.shards() {
		want := groups[shard]
		for i := 1; i < len(want); i++ {
			if want[i].seq.Compare(want[i-1].seq) <= 0 {
				t.Fatalf("shard %s: append returned sequence %q after %q", shard, want[i].seq, want[i-1].seq)
			}
		}
		got := f.readAll(shard, f.start(shard, source.TrimHorizon, time.Time{}), 1000)
		sameRecords(t, "shard "+shard, got, want)
		total += len(got)
		if len(want) > 0 {
			from := f.start(shard, source.TrimHorizon, time.Time{})
			if l := f.read(shard, from, 1, 1<<20).Latest; l.Compare(want[len(want)-1].seq) != 0 {
				t.Fatalf("shard %s: Latest = %q, want %q", shard, l, want[len(want)-1].seq)
			}
		}
	}
	if total != len(recs) {
		t.Fatalf("read %d records, appended %d", total, len(recs))
	}
}

func testExactResume(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	recs := f.appendN(23, "key")
	shard := recs[0].shard
	// Resume from every position: exactly the records after it.
	for i := range recs {
		got := f.readAll(shard, recs[i].seq, 5)
		sameRecords(t, fmt.Sprintf("after record %d", i), got, recs[i+1:])
	}
	// Pages of 5 from the start cover every record once.
	sameRecords(t, "pages of 5", f.readAll(shard, f.start(shard, source.TrimHorizon, time.Time{}), 5), recs)
}

func testTrimHorizon(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	before := f.start(shard, source.TrimHorizon, time.Time{})
	recs := f.appendN(5, "key")
	if after := f.start(shard, source.TrimHorizon, time.Time{}); after != before {
		t.Fatalf("TRIM_HORIZON moved from %q to %q when records were appended", before, after)
	}
	sameRecords(t, "from TRIM_HORIZON", f.readAll(shard, before, 100), recs)
}

func testLatest(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	if res := f.read(shard, f.start(shard, source.Latest, time.Time{}), 10, 1<<20); len(res.Records) != 0 {
		t.Fatalf("LATEST on an empty shard read %d records", len(res.Records))
	}
	old := f.appendN(3, "key")
	pos := f.start(shard, source.Latest, time.Time{})
	if res := f.read(shard, pos, 10, 1<<20); len(res.Records) != 0 {
		t.Fatalf("LATEST read %d old records", len(res.Records))
	}
	if pos.Compare(old[2].seq) < 0 {
		t.Fatalf("LATEST = %q, below the newest record %q", pos, old[2].seq)
	}
	fresh := f.append("key", []byte("fresh"))
	sameRecords(t, "after LATEST", f.readAll(shard, pos, 10), []appended{fresh})
}

func testAtTimestamp(t *testing.T, h Harness, feat Features) {
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	if feat.NoAtTimestamp {
		if _, err := f.d.Start(f.ctx, shard, source.AtTimestamp, time.Now()); err == nil {
			t.Fatal("Start(AT_TIMESTAMP) succeeded on a driver that refuses it")
		}
		return
	}
	gap := 2*feat.TimestampPrecision + 5*time.Millisecond
	t0 := time.Now().Add(-gap)
	time.Sleep(gap)
	early := f.appendN(4, "key")
	time.Sleep(gap)
	ts := time.Now()
	time.Sleep(gap)
	late := f.appendN(3, "key")
	time.Sleep(gap)
	t1 := time.Now()

	sameRecords(t, "AT_TIMESTAMP between", f.readAll(shard, f.start(shard, source.AtTimestamp, ts), 100), late)
	sameRecords(t, "AT_TIMESTAMP before all", f.readAll(shard, f.start(shard, source.AtTimestamp, t0), 100), append(early, late...))
	if got := f.readAll(shard, f.start(shard, source.AtTimestamp, t1), 100); len(got) != 0 {
		t.Fatalf("AT_TIMESTAMP after every record read %d records", len(got))
	}
	for _, r := range f.read(shard, f.start(shard, source.TrimHorizon, time.Time{}), 100, 1<<20).Records {
		if r.ArrivalTime.IsZero() {
			t.Fatalf("record %q has no arrival time", r.Sequence)
		}
	}
}

func testEmptyShard(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	res := f.read(shard, f.start(shard, source.TrimHorizon, time.Time{}), 10, 1<<20)
	if len(res.Records) != 0 || res.Lost != 0 {
		t.Fatalf("empty shard: %d records, %d lost", len(res.Records), res.Lost)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	err := f.d.Wait(ctx, shard, res.Latest)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Wait took %s to notice its context was cancelled", d)
	}
	// A done context returns at once.
	if err := f.d.Wait(ctx, shard, res.Latest); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a done context: %v", err)
	}
}

func testWaitWakes(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	latest := f.start(shard, source.Latest, time.Time{})
	woke := make(chan error, 1)
	go func() {
		// Waits may return early (a poll interval); wait until a read finds
		// the record or 10s pass.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if err := f.d.Wait(f.ctx, shard, latest); err != nil {
				woke <- err
				return
			}
			res, err := f.d.Read(f.ctx, shard, latest, 10, 1<<20)
			if err != nil || len(res.Records) > 0 {
				woke <- err
				return
			}
		}
		woke <- errors.New("no record seen within 10s")
	}()
	time.Sleep(10 * time.Millisecond)
	f.append("key", []byte("wake up"))
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	// A Wait for a position below the newest record returns at once.
	start := time.Now()
	if err := f.d.Wait(f.ctx, shard, latest); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Wait below the newest record took %s", d)
	}
}

func testLargeRecord(t *testing.T, h Harness, feat Features) {
	f := newFixture(t, h, 1)
	big := make([]byte, feat.MaxRecordBytes)
	for i := range big {
		big[i] = byte(i * 7)
	}
	from := f.start(f.shards()[0], source.TrimHorizon, time.Time{})
	r := f.append("big", big)
	small := f.append("big", []byte("small"))
	got := f.readAll(r.shard, from, 10)
	if len(got) < 1 || !bytes.Equal(got[0].data, big) {
		t.Fatalf("the %d-byte record did not round-trip", len(big))
	}
	sameRecords(t, "large then small", got, []appended{r, small})
}

func testLimitAndMaxBytes(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	from := f.start(f.shards()[0], source.TrimHorizon, time.Time{})
	recs := make([]appended, 10)
	for i := range recs {
		recs[i] = f.append("key", bytes.Repeat([]byte{byte('a' + i)}, 100))
	}
	shard := recs[0].shard
	check := func(limit, maxBytes, want int) []int {
		t.Helper()
		res := f.read(shard, from, limit, maxBytes)
		if len(res.Records) != want {
			t.Fatalf("Read(limit %d, maxBytes %d) returned %d records, want %d", limit, maxBytes, len(res.Records), want)
		}
		var sizes []int
		for i, r := range res.Records {
			if r.Sequence.Compare(recs[i].seq) != 0 || !bytes.Equal(f.payload(r), recs[i].data) {
				t.Fatalf("Read(limit %d, maxBytes %d): record %d is sequence %q, want %q", limit, maxBytes, i, r.Sequence, recs[i].seq)
			}
			sizes = append(sizes, len(r.Data))
		}
		return sizes
	}
	check(3, 1<<20, 3)
	// maxBytes counts Data: 100 bytes a record, or what wraps them.
	d := check(100, 1<<20, 10)
	check(100, d[0]+d[1]+d[2]/2, 2)
	check(100, d[0]+d[1]+d[2], 3)
	check(100, d[0]/2, 1) // at least one record
	check(1, d[0]/2, 1)
}

func testUnknownShard(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	_, err := f.d.Read(f.ctx, "no-such-shard", "", 10, 1<<20)
	if !errors.Is(err, source.ErrShardNotFound) {
		t.Fatalf("Read of an unknown shard: %v, want source.ErrShardNotFound", err)
	}
	if _, err := f.d.Start(f.ctx, "no-such-shard", source.TrimHorizon, time.Time{}); !errors.Is(err, source.ErrShardNotFound) {
		t.Fatalf("Start of an unknown shard: %v, want source.ErrShardNotFound", err)
	}
}

// testTrimmedReportsLoss: a read from a position retention has since passed
// reports the loss (Lost > 0, exact when the source numbers records
// consecutively; Trimmed at or after the last lost record and before the
// first kept one) and returns the records that remain, promptly.
func testTrimmedReportsLoss(t *testing.T, h Harness, _ Features) {
	tr, ok := h.(Trimmer)
	if !ok {
		t.Skip("the harness cannot trim its source")
	}
	f := newFixture(t, h, 1)
	shard := f.shards()[0]
	from := f.start(shard, source.TrimHorizon, time.Time{})
	recs := f.appendN(5, "key")
	if err := tr.Trim(f.ctx, t, f.d, shard, recs[2].seq); err != nil {
		t.Fatalf("Trim through %q: %v", recs[2].seq, err)
	}
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	res, err := f.d.Read(ctx, shard, from, 10, 1<<20)
	if err != nil {
		t.Fatalf("Read behind the trim: %v (want the loss reported, not an error)", err)
	}
	if res.Lost == 0 || res.Lost > 3 {
		t.Fatalf("Read behind the trim: Lost = %d, want 1 to 3 (3 when exact)", res.Lost)
	}
	if res.Trimmed.Compare(recs[2].seq) < 0 || res.Trimmed.Compare(recs[3].seq) >= 0 {
		t.Fatalf("Trimmed = %q, want at or after %q and before %q", res.Trimmed, recs[2].seq, recs[3].seq)
	}
	got := make([]appended, 0, len(res.Records))
	for _, r := range res.Records {
		got = append(got, appended{shard: r.ShardID, seq: r.Sequence, key: r.PartitionKey, data: bytes.Clone(f.payload(r))})
	}
	sameRecords(t, "after the trim", got, recs[3:])
	// Reading from Trimmed loses nothing more.
	if res := f.read(shard, res.Trimmed, 10, 1<<20); res.Lost != 0 || len(res.Records) != 2 {
		t.Fatalf("Read from Trimmed: %d records, %d lost; want 2 and 0", len(res.Records), res.Lost)
	}
}

// testRecordsStayValid: the records a Read returns, and their Data, are not
// reused by later Reads of the shard: the engine reads a shard's next
// records while it still processes the last.
func testRecordsStayValid(t *testing.T, h Harness, _ Features) {
	f := newFixture(t, h, 1)
	recs := f.appendN(30, "a", "b", "c")
	shard := recs[0].shard
	first := f.read(shard, f.start(shard, source.TrimHorizon, time.Time{}), 10, 1<<20).Records
	if len(first) == 0 {
		t.Fatal("the first Read returned nothing")
	}
	f.readAll(shard, first[len(first)-1].Sequence, 7)
	var got []appended
	for _, r := range first {
		got = append(got, appended{shard: r.ShardID, seq: r.Sequence, key: r.PartitionKey, data: f.payload(r)})
	}
	sameRecords(t, "the first Read's records after later Reads", got, recs[:len(first)])
}
