package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/source/sourcetest"
)

type harness struct {
	db *pebbledb.DB
	n  *atomic.Int64
	// seq, when set, respells the embedded stream's sequences, to show
	// that the suite takes no width for granted.
	seq *spelling
}

func (h harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	name := fmt.Sprintf("stream-%d", h.n.Add(1))
	if err := h.db.CreateStream(name, shards, 24*time.Hour); err != nil {
		return nil, nil, err
	}
	src, err := embedded.New(h.db, name)
	if err != nil {
		return nil, nil, err
	}
	app := func(ctx context.Context, key string, data []byte) (string, idem.Sequence, error) {
		res, err := h.db.Put(ctx, name, []pebbledb.PutRecord{{PartitionKey: key, Data: data}})
		if err != nil {
			return "", "", err
		}
		return res[0].Shard, h.seq.to(idem.SequenceOf(res[0].Sequence)), nil
	}
	if h.seq != nil {
		return respelled{src, h.seq}, app, nil
	}
	return src, app, nil
}

func (harness) Features() sourcetest.Features { return sourcetest.Features{} }

func openMem(t *testing.T, opts ...pebbledb.Option) *pebbledb.DB {
	t.Helper()
	db, err := pebbledb.Open("", append([]pebbledb.Option{pebbledb.InMemory()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	sourcetest.RunConformance(t, harness{db: openMem(t, pebbledb.WithPollInterval(200*time.Millisecond)), n: new(atomic.Int64)})
}

// TestConformanceSpellings runs the suite over the embedded stream with its
// sequences spelled as other sources spell theirs: unpadded, as Kafka
// offsets are, and 56 digits wide, as Kinesis sequence numbers are. The
// suite must pass both: it may only compare sequences and read from
// positions a driver returned.
func TestConformanceSpellings(t *testing.T) {
	for _, sp := range []*spelling{
		{name: "unpadded"},
		{name: "kinesis", prefix: "495903382714902566085596925383615710"},
	} {
		t.Run(sp.name, func(t *testing.T) {
			db := openMem(t, pebbledb.WithPollInterval(200*time.Millisecond))
			sourcetest.RunConformance(t, harness{db: db, n: new(atomic.Int64), seq: sp})
		})
	}
}

// spelling maps the embedded stream's 20-digit sequences to another
// spelling of an order-preserving numbering: with prefix, prefix followed by
// the 20 digits (56 digits in all for a 36-digit prefix); without, the
// number without leading zeros. The zero Sequence stays "".
type spelling struct {
	name   string
	prefix string
}

func (sp *spelling) to(s idem.Sequence) idem.Sequence {
	if sp == nil || s == "" {
		return s
	}
	if sp.prefix != "" {
		return idem.Sequence(sp.prefix + string(s))
	}
	n, _ := s.Uint64()
	return idem.Sequence(strconv.FormatUint(n, 10))
}

func (sp *spelling) from(s idem.Sequence) (idem.Sequence, error) {
	if s == "" {
		return "", nil
	}
	if sp.prefix != "" {
		rest, ok := strings.CutPrefix(string(s), sp.prefix)
		if !ok || len(rest) != 20 {
			return "", fmt.Errorf("sequence %q is not one this source returned", s)
		}
		return idem.Sequence(rest), nil
	}
	n, ok := s.Uint64()
	if !ok {
		return "", fmt.Errorf("sequence %q is not one this source returned", s)
	}
	return idem.SequenceOf(n), nil
}

// respelled is a source.Driver whose sequences are spelled by seq.
type respelled struct {
	source.Driver
	seq *spelling
}

func (r respelled) Start(ctx context.Context, shard string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	s, err := r.Driver.Start(ctx, shard, pos, ts)
	return r.seq.to(s), err
}

func (r respelled) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	a, err := r.seq.from(after)
	if err != nil {
		return source.ReadResult{}, err
	}
	res, err := r.Driver.Read(ctx, shard, a, limit, maxBytes)
	for i := range res.Records {
		res.Records[i].Sequence = r.seq.to(res.Records[i].Sequence)
	}
	res.Latest, res.Trimmed = r.seq.to(res.Latest), r.seq.to(res.Trimmed)
	return res, err
}

func (r respelled) Wait(ctx context.Context, shard string, after idem.Sequence) error {
	a, err := r.seq.from(after)
	if err != nil {
		return err
	}
	return r.Driver.Wait(ctx, shard, a)
}

func TestNewUnknownStream(t *testing.T) {
	if _, err := embedded.New(openMem(t), "nope"); !errors.Is(err, source.ErrStreamNotFound) {
		t.Fatalf("New of a missing stream: %v, want source.ErrStreamNotFound", err)
	}
}

func put(t *testing.T, db *pebbledb.DB, stream string, n int) []pebbledb.PutResult {
	t.Helper()
	recs := make([]pebbledb.PutRecord, n)
	for i := range recs {
		recs[i] = pebbledb.PutRecord{PartitionKey: "key", Data: fmt.Appendf(nil, "r%d", i)}
	}
	res, err := db.Put(context.Background(), stream, recs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRetentionReportsLost: records retention deleted before anyone read
// them are reported, counted exactly, and the stream carries on after them,
// also across a reopen.
func TestRetentionReportsLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := pebbledb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	const retention = time.Hour
	if err := db.CreateStream("s", 1, retention); err != nil {
		t.Fatal(err)
	}
	src, err := embedded.New(db, "s")
	if err != nil {
		t.Fatal(err)
	}
	if want := retention + time.Minute; src.Retention() != want {
		t.Fatalf("Retention = %s, want the stream's %s plus the default sweep interval", src.Retention(), retention)
	}
	old := put(t, db, "s", 5)
	time.Sleep(5 * time.Millisecond)
	mid := time.Now()
	time.Sleep(5 * time.Millisecond)
	put(t, db, "s", 3)
	shard := old[0].Shard

	// A sweep an hour after mid deletes the five older records only.
	if err := db.Sweep(ctx, mid.Add(retention)); err != nil {
		t.Fatal(err)
	}
	res, err := src.Read(ctx, shard, "", 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost != 5 || len(res.Records) != 3 || res.Records[0].Sequence != idem.SequenceOf(6) || res.Latest != idem.SequenceOf(8) || res.Trimmed != idem.SequenceOf(5) {
		t.Fatalf("after trimming 5: lost %d, %d records from %v, latest %s; want 5 lost, records 6..8", res.Lost, len(res.Records), res.Records, res.Latest)
	}
	res, err = src.Read(ctx, shard, idem.SequenceOf(2), 100, 1<<20)
	if err != nil || res.Lost != 3 || res.Trimmed != idem.SequenceOf(5) {
		t.Fatalf("read after 2: lost %d, trimmed %q, err %v; want 3 lost, trimmed 5", res.Lost, res.Trimmed, err)
	}
	// Positions need not be padded: "2" is the position SequenceOf(2) is.
	res, err = src.Read(ctx, shard, "2", 100, 1<<20)
	if err != nil || res.Lost != 3 || res.Trimmed != idem.SequenceOf(5) || len(res.Records) != 3 {
		t.Fatalf("read after \"2\": lost %d, trimmed %q, %d records, err %v; want 3 lost, trimmed 5, 3 records", res.Lost, res.Trimmed, len(res.Records), err)
	}
	res, err = src.Read(ctx, shard, idem.SequenceOf(5), 100, 1<<20)
	if err != nil || res.Lost != 0 || res.Trimmed != "" || len(res.Records) != 3 {
		t.Fatalf("read after 5: lost %d, trimmed %q, %d records, err %v; want 0 lost, 3 records", res.Lost, res.Trimmed, len(res.Records), err)
	}
	// A limit of one record still reports the loss before it.
	res, err = src.Read(ctx, shard, "", 1, 1<<20)
	if err != nil || res.Lost != 5 || res.Trimmed != idem.SequenceOf(5) || len(res.Records) != 1 || res.Records[0].Sequence != idem.SequenceOf(6) {
		t.Fatalf("read of 1 after trimming 5: %+v, %v", res, err)
	}
	if pos, err := src.Start(ctx, shard, source.TrimHorizon, time.Time{}); err != nil || pos != idem.SequenceOf(5) {
		t.Fatalf("TRIM_HORIZON = %s, %v; want 5", pos, err)
	}
	info, err := db.StreamInfo(ctx, "s")
	if err != nil || info.Shards[0].LowestRetained != 6 || info.Shards[0].Latest != 8 {
		t.Fatalf("StreamInfo = %+v, %v", info, err)
	}

	// A sweep far in the future deletes everything; sequences carry on
	// after a reopen, and the loss is still reported.
	if err := db.Sweep(ctx, time.Now().Add(2*retention)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = pebbledb.Open(dir); err != nil {
		t.Fatal(err)
	}
	if src, err = embedded.New(db, "s"); err != nil {
		t.Fatal(err)
	}
	res, err = src.Read(ctx, shard, "", 100, 1<<20)
	if err != nil || res.Lost != 8 || len(res.Records) != 0 || res.Latest != idem.SequenceOf(8) || res.Trimmed != idem.SequenceOf(8) {
		t.Fatalf("after trimming all and reopening: %+v, %v; want 8 lost, latest 8, trimmed 8", res, err)
	}
	// A reader with nothing else to read moves to Trimmed: nothing is lost
	// after it.
	res, err = src.Read(ctx, shard, res.Trimmed, 100, 1<<20)
	if err != nil || res.Lost != 0 || res.Trimmed != "" || len(res.Records) != 0 {
		t.Fatalf("read after trimmed: %+v, %v; want nothing lost", res, err)
	}
	if got := put(t, db, "s", 1)[0].Sequence; got != 9 {
		t.Fatalf("next sequence after trimming all = %d, want 9", got)
	}
	res, err = src.Read(ctx, shard, "", 100, 1<<20)
	if err != nil || res.Lost != 8 || res.Trimmed != idem.SequenceOf(8) || len(res.Records) != 1 || res.Records[0].Sequence != idem.SequenceOf(9) {
		t.Fatalf("after trimming all and putting one: %+v, %v", res, err)
	}
}

// TestRetentionAddsSweepInterval: records are deleted once per sweep
// interval, so one can be read up to an interval past the stream's
// retention, and Retention says so: completion marks must outlive it.
func TestRetentionAddsSweepInterval(t *testing.T) {
	db := openMem(t, pebbledb.WithSweepInterval(5*time.Minute))
	if err := db.CreateStream("s", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	src, err := embedded.New(db, "s")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.Retention(), time.Hour+5*time.Minute; got != want {
		t.Fatalf("Retention = %s, want %s", got, want)
	}
	if err := db.CreateStream("s", 1, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, want := src.Retention(), 2*time.Hour+5*time.Minute; got != want {
		t.Fatalf("after the retention changed: Retention = %s, want %s", got, want)
	}
}

// TestBackgroundRetention: the sweeper goroutine enforces a short retention
// on its own.
func TestBackgroundRetention(t *testing.T) {
	db := openMem(t, pebbledb.WithSweepInterval(5*time.Millisecond))
	if err := db.CreateStream("s", 1, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	src, err := embedded.New(db, "s")
	if err != nil {
		t.Fatal(err)
	}
	res := put(t, db, "s", 4)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := src.Read(context.Background(), res[0].Shard, "", 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if r.Lost == 4 && len(r.Records) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %+v, want 4 lost", r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Trim implements sourcetest.Trimmer with the DB's TrimThrough.
func (h harness) Trim(ctx context.Context, _ testing.TB, d source.Driver, shard string, through idem.Sequence) error {
	var stream string
	switch s := d.(type) {
	case *embedded.Source:
		stream = s.Stream()
	case respelled:
		stream = s.Driver.(*embedded.Source).Stream()
		var err error
		if through, err = s.seq.from(through); err != nil {
			return err
		}
	default:
		return fmt.Errorf("not an embedded source: %T", d)
	}
	return h.db.TrimThrough(ctx, stream, shard, through)
}
