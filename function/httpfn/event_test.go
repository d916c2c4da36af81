package httpfn

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/idem-run/idem"
)

// wireRecord is the request's record type spelled with aws-lambda-go's
// types, the reference appendEvent must match byte for byte.
type wireRecord struct {
	events.KinesisEventRecord
	IdempotencyKey string `json:"idempotencyKey"`
}

type wireEvent struct {
	Records []wireRecord `json:"Records"`
}

// reference encodes b with encoding/json and aws-lambda-go's types.
func reference(t testing.TB, region string, b *idem.Batch) []byte {
	t.Helper()
	ev := wireEvent{Records: []wireRecord{}}
	for i := range b.Records {
		r := &b.Records[i]
		data := r.Data
		if data == nil {
			data = []byte{} // appendEvent writes "" where encoding/json writes null
		}
		ev.Records = append(ev.Records, wireRecord{
			KinesisEventRecord: events.KinesisEventRecord{
				AwsRegion: region, EventID: r.EventID(), EventName: "aws:kinesis:record", EventSource: "aws:kinesis",
				EventSourceArn: "arn:aws:kinesis:" + region + ":000000000000:stream/" + r.Stream, EventVersion: "1.0",
				Kinesis: events.KinesisRecord{
					ApproximateArrivalTimestamp: events.SecondsEpochTime{Time: r.ArrivalTime},
					Data:                        data, PartitionKey: r.PartitionKey, SequenceNumber: r.SequenceNumber(), KinesisSchemaVersion: "1.0",
				},
			},
			IdempotencyKey: r.IdempotencyKey,
		})
	}
	return encodeJSON(t, ev)
}

// encodeJSON is what encoding/json writes for v, with HTML escaping off
// and no trailing newline, as the hand-written encoders write.
func encodeJSON(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestAppendEventMatchesEncodingJSON(t *testing.T) {
	f := &Function{region: "local"}
	recs := []idem.Record{
		{Stream: "orders", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(1), PartitionKey: "k", Data: []byte("hello"),
			ArrivalTime: time.Unix(1700000000, 123456789), IdempotencyKey: "orders/shardId-000000000000/1"},
		{Stream: "orders", ShardID: "shardId-000000000000", Sequence: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "\"quoted\"\\ \x00\x1f\b\f\n\r\t <&> é \u2028\u2029 \xff",
			Data: nil, ArrivalTime: time.Unix(1, 0), IdempotencyKey: ""},
		{Stream: "other \"stream\"", ShardID: "s\xc3", Sequence: "", PartitionKey: "", Data: []byte{}, ArrivalTime: time.Unix(0, 1)},
		{Stream: "orders", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(7), Data: bytes.Repeat([]byte{0xff}, 100), ArrivalTime: time.Unix(1e12, 0)},
	}
	for n := 0; n <= len(recs); n++ {
		b := idem.NewBatch("m", "f", "i", recs[:n], nil)
		got := f.appendEvent(nil, b)
		want := reference(t, "local", b)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d records:\n got %s\nwant %s", n, got, want)
		}
	}
}

// TestZeroArrivalTime: an unknown arrival time is 0, not an overflow.
func TestZeroArrivalTime(t *testing.T) {
	f := &Function{region: "local"}
	got := f.appendEvent(nil, idem.NewBatch("m", "f", "i", []idem.Record{{ShardID: "s"}}, nil))
	var ev events.KinesisEvent
	if err := json.Unmarshal(got, &ev); err != nil {
		t.Fatal(err)
	}
	if !ev.Records[0].Kinesis.ApproximateArrivalTimestamp.Equal(time.Unix(0, 0)) {
		t.Fatalf("arrival %v, want the epoch", ev.Records[0].Kinesis.ApproximateArrivalTimestamp)
	}
}

// FuzzAppendEvent compares the hand-written encoder with encoding/json on
// arbitrary strings, bytes and times.
func FuzzAppendEvent(f *testing.F) {
	f.Add("orders", "shardId-000000000000", uint64(42), "customer-1", []byte(`{"a":1}`), int64(1700000000123456789), "orders/shardId-000000000000/42", "local")
	f.Add("s\u2028", "\xff\xfe", uint64(0), "\x00\"\\", []byte{}, int64(1), "<&>", "eu-west-1")
	f.Fuzz(func(t *testing.T, stream, shard string, seq uint64, pk string, data []byte, nanos int64, key, region string) {
		if nanos <= 0 { // zero time is special-cased; negative times are not arrivals
			nanos = -nanos + 1
		}
		fn := &Function{region: region}
		recs := []idem.Record{
			{Stream: stream, ShardID: shard, Sequence: idem.SequenceOf(seq), PartitionKey: pk, Data: data, ArrivalTime: time.Unix(0, nanos), IdempotencyKey: key},
			{Stream: stream, ShardID: shard, Sequence: idem.SequenceOf(seq + 1), PartitionKey: key, Data: data, ArrivalTime: time.Unix(0, nanos/3+1), IdempotencyKey: pk},
		}
		b := idem.NewBatch("m", "f", "i", recs, nil)
		got := fn.appendEvent(nil, b)
		want := reference(t, region, b)
		if !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}
