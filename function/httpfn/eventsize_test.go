package httpfn

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// randString returns a string of up to n bytes mixing what JSON escapes
// differently: plain ASCII, quotes, control characters, HTML characters,
// multi-byte UTF-8, U+2028 and invalid bytes.
func randString(r *rand.Rand, n int) string {
	parts := []string{"a", "Z", "0", "-", "\"", "\\", "\n", "\t", "\x00", "\x1f", "<", "&", "é", "€", "\u2028", "\u2029", "\xff", "\xc3", "😀"}
	var b []byte
	for k := r.IntN(n + 1); len(b) < k; {
		b = append(b, parts[r.IntN(len(parts))]...)
	}
	return string(b)
}

func randBatch(r *rand.Rand, format idem.EventFormat) *idem.Batch {
	stream := randString(r, 12)
	shard := randString(r, 12)
	if format == idem.EventFormatKafka {
		shard = stream + "-" + strconv.Itoa(r.IntN(1000))
	}
	recs := make([]idem.Record, r.IntN(20))
	seq := r.Uint64N(1 << 62)
	for i := range recs {
		seq += 1 + r.Uint64N(1000)
		rec := idem.Record{Stream: stream, ShardID: shard, Sequence: idem.SequenceOf(seq), PartitionKey: randString(r, 20),
			IdempotencyKey: randString(r, 40)}
		if r.IntN(4) > 0 {
			rec.Data = make([]byte, r.IntN(300))
			for j := range rec.Data {
				rec.Data[j] = byte(r.IntN(256))
			}
		}
		if r.IntN(5) > 0 {
			rec.ArrivalTime = time.Unix(0, r.Int64N(4e18)+1)
		}
		for range r.IntN(3) {
			v := make([]byte, r.IntN(10))
			for j := range v {
				v[j] = byte(r.IntN(256))
			}
			rec.Headers = append(rec.Headers, idem.Header{Key: randString(r, 8), Value: v})
		}
		recs[i] = rec
	}
	b := idem.NewBatch("m", "f", "i", recs, nil)
	b.Format = format
	return b
}

// checkEventSize: function.EventSize, computed without encoding, is never
// below the encoded event and at most one byte above it (the separator it
// counts before every record).
func checkEventSize(t *testing.T, region string, b *idem.Batch) {
	t.Helper()
	got := len(AppendEvent(nil, region, b))
	est := function.EventSize(region, b.Format, b.Records, b.Window)
	if len(b.Records) == 0 {
		// No record: no separator counted; a Kafka envelope without a
		// first record counts no group either.
		if b.Format == idem.EventFormatKafka || est != got {
			if est < got {
				t.Fatalf("empty %q batch: estimate %d < actual %d", b.Format, est, got)
			}
			return
		}
	}
	if est < got || est > got+1 {
		t.Fatalf("%q batch of %d records: estimate %d, actual %d\n%s", b.Format, len(b.Records), est, got, AppendEvent(nil, region, b))
	}
}

func TestEventSizeMatchesEncoder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		format := idem.EventFormatKinesis
		switch i % 3 {
		case 1:
			format = idem.EventFormatKafka
		case 2:
			format = ""
		}
		checkEventSize(t, randString(r, 12), randBatch(r, format))
	}
}

// TestEventSizeOfBigRecords: base64 and the envelope count, not the raw
// data: six 1 MiB records are an 8 MB event, and EventSize says so.
func TestEventSizeOfBigRecords(t *testing.T) {
	for _, format := range []idem.EventFormat{idem.EventFormatKinesis, idem.EventFormatKafka} {
		recs := make([]idem.Record, 6)
		for i := range recs {
			recs[i] = idem.Record{Stream: "big", ShardID: "big-0", Sequence: idem.SequenceOf(uint64(i + 1)), PartitionKey: "k",
				Data: make([]byte, 1<<20), ArrivalTime: time.Unix(1700000000, 123456789), IdempotencyKey: "big/big-0/" + strconv.Itoa(i)}
		}
		b := idem.NewBatch("m", "f", "i", recs, nil)
		b.Format = format
		got := len(AppendEvent(nil, "us-east-1", b))
		if got < 8<<20 {
			t.Fatalf("%s: encoded %d bytes, want over 8 MiB", format, got)
		}
		checkEventSize(t, "us-east-1", b)
	}
}

func TestEventSizeOfWindow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		b := randBatch(r, idem.EventFormatKinesis)
		start := time.Unix(r.Int64N(4e9), 0)
		b.Window = &idem.Window{Start: start, End: start.Add(time.Minute), Final: r.IntN(2) == 0, TerminatedEarly: r.IntN(2) == 0,
			Stream: randString(r, 10), ShardID: randString(r, 10)}
		got := len(AppendEvent(nil, "local", b))
		est := function.EventSize("local", b.Format, b.Records, b.Window)
		// encoding/json escapes <, > and & in the state, where the event
		// does not: the estimate may be above by 5 bytes for each.
		if est < got || est > got+1+5*64 {
			t.Fatalf("window batch of %d records: estimate %d, actual %d", len(b.Records), est, got)
		}
	}
}

// FuzzEventSize checks the estimate against the encoder on arbitrary
// strings, data, headers and times, for both formats.
func FuzzEventSize(f *testing.F) {
	f.Add(false, "orders", uint64(42), "customer-1", []byte(`{"a":1}`), "trace", []byte("abc"), int64(1700000000123456789), "key", "local")
	f.Add(true, "s\u2028-x", uint64(0), "\x00\"\\", []byte{}, "é", []byte{0x80, 0xff}, int64(1), "<&>", "eu-west-1")
	f.Fuzz(func(t *testing.T, kafka bool, stream string, seq uint64, pk string, data []byte, hkey string, hval []byte, nanos int64, key, region string) {
		seq &= 1<<62 - 1
		format := idem.EventFormatKinesis
		shard := stream
		if kafka {
			format, shard = idem.EventFormatKafka, stream+"-"+strconv.FormatUint(seq%100, 10)
		}
		var at time.Time
		if nanos != 0 {
			at = time.Unix(0, nanos)
		}
		recs := []idem.Record{
			{Stream: stream, ShardID: shard, Sequence: idem.SequenceOf(seq + 1), PartitionKey: pk, Data: data, ArrivalTime: at,
				Headers: []idem.Header{{Key: hkey, Value: hval}}, IdempotencyKey: key},
			{Stream: stream, ShardID: shard, Sequence: idem.SequenceOf(seq + 2), PartitionKey: hkey, Data: hval, IdempotencyKey: pk},
		}
		b := idem.NewBatch("m", "f", "i", recs, nil)
		b.Format = format
		checkEventSize(t, region, b)
	})
}
