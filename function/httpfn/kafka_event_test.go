package httpfn

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/idem-run/idem"
)

type kafkaWireRecord struct {
	events.KafkaRecord
	IdempotencyKey string `json:"idempotencyKey"`
}

type kafkaWireEvent struct {
	EventSource      string                       `json:"eventSource"`
	EventSourceARN   string                       `json:"eventSourceArn"`
	Records          map[string][]kafkaWireRecord `json:"records"`
	BootstrapServers string                       `json:"bootstrapServers"`
}

// kafkaReference encodes b with encoding/json and aws-lambda-go's types.
func kafkaReference(t testing.TB, region string, b *idem.Batch) []byte {
	t.Helper()
	ev := kafkaWireEvent{EventSource: "aws:kafka", Records: map[string][]kafkaWireRecord{}}
	ev.EventSourceARN = "arn:aws:kafka:" + region + ":000000000000:cluster/idem/"
	if len(b.Records) > 0 {
		ev.EventSourceARN += b.Records[0].Stream
	}
	for i := range b.Records {
		r := &b.Records[i]
		part, _ := strconv.ParseInt(r.ShardID[strings.LastIndexByte(r.ShardID, '-')+1:], 10, 64)
		n, _ := r.Sequence.Uint64()
		ts := r.ArrivalTime
		if ts.IsZero() {
			ts = time.UnixMilli(0)
		}
		hs := []map[string]events.JSONNumberBytes{}
		for _, h := range r.Headers {
			hs = append(hs, map[string]events.JSONNumberBytes{h.Key: h.Value})
		}
		rec := events.KafkaRecord{Topic: r.Stream, Partition: part, Offset: int64(n) - 1,
			Timestamp: events.MilliSecondsEpochTime{Time: ts}, TimestampType: "CREATE_TIME",
			Key: base64Std([]byte(r.PartitionKey)), Value: base64Std(r.Data), Headers: hs}
		ev.Records[r.ShardID] = append(ev.Records[r.ShardID], kafkaWireRecord{rec, r.IdempotencyKey})
	}
	return encodeJSON(t, ev)
}

func base64Std(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	s, _ := json.Marshal(b) // encoding/json writes []byte as standard base64
	return string(s[1 : len(s)-1])
}

func kafkaRecords() []idem.Record {
	return []idem.Record{
		{Stream: "orders", ShardID: "orders-3", Sequence: idem.SequenceOf(1), PartitionKey: "k\x00\xff1",
			Data: []byte(`{"a":1}`), ArrivalTime: time.UnixMilli(1700000000123),
			Headers:        []idem.Header{{Key: "trace", Value: []byte("abc")}, {Key: "bin", Value: []byte{0, 0x7f, 0x80, 0xff}}, {Key: "trace", Value: nil}},
			IdempotencyKey: "orders/orders-3/1"},
		{Stream: "orders", ShardID: "orders-3", Sequence: idem.SequenceOf(42), PartitionKey: "",
			Data: nil, ArrivalTime: time.Time{}, IdempotencyKey: "k \"2\""},
		{Stream: "orders", ShardID: "orders-12", Sequence: idem.SequenceOf(7), PartitionKey: "k2",
			Data: []byte{0xff}, ArrivalTime: time.UnixMilli(5), Headers: []idem.Header{{Key: "é\u2028", Value: []byte("v")}}},
	}
}

// TestKafkaEventMatchesEncodingJSON: the hand-written encoder writes what
// encoding/json writes for events.KafkaEvent plus idempotencyKey.
func TestKafkaEventMatchesEncodingJSON(t *testing.T) {
	f := &Function{region: "local"}
	recs := kafkaRecords()
	for n := 0; n <= len(recs); n++ {
		b := idem.NewBatch("m", "f", "i", recs[:n], nil)
		b.Format = idem.EventFormatKafka
		got := f.appendEvent(nil, b)
		want := kafkaReference(t, "local", b)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d records:\n got %s\nwant %s", n, got, want)
		}
	}
}

// TestKafkaEventDecodes: a handler decoding events.KafkaEvent sees the
// records grouped by topic-partition, with offsets, keys, values and
// headers.
func TestKafkaEventDecodes(t *testing.T) {
	b := idem.NewBatch("m", "f", "i", kafkaRecords(), nil)
	b.Format = idem.EventFormatKafka
	got := AppendEvent(nil, "eu-west-1", b)
	var ev events.KafkaEvent
	if err := json.Unmarshal(got, &ev); err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	if ev.EventSource != "aws:kafka" || ev.EventSourceARN != "arn:aws:kafka:eu-west-1:000000000000:cluster/idem/orders" {
		t.Errorf("source %q %q", ev.EventSource, ev.EventSourceARN)
	}
	if len(ev.Records) != 2 || len(ev.Records["orders-3"]) != 2 || len(ev.Records["orders-12"]) != 1 {
		t.Fatalf("groups %v", ev.Records)
	}
	r0, r1, r2 := ev.Records["orders-3"][0], ev.Records["orders-3"][1], ev.Records["orders-12"][0]
	if r0.Topic != "orders" || r0.Partition != 3 || r0.Offset != 0 || r1.Offset != 41 || r2.Partition != 12 || r2.Offset != 6 {
		t.Errorf("positions %+v %+v %+v", r0, r1, r2)
	}
	if r0.Timestamp.UnixMilli() != 1700000000123 || r0.TimestampType != "CREATE_TIME" {
		t.Errorf("timestamp %v %q", r0.Timestamp, r0.TimestampType)
	}
	if r0.Key != "awD/MQ==" || r0.Value != "eyJhIjoxfQ==" || r1.Key != "" || r1.Value != "" || r2.Value != "/w==" {
		t.Errorf("key/value %q %q %q %q %q", r0.Key, r0.Value, r1.Key, r1.Value, r2.Value)
	}
	if len(r0.Headers) != 3 || string(r0.Headers[0]["trace"]) != "abc" ||
		!bytes.Equal(r0.Headers[1]["bin"], []byte{0, 0x7f, 0x80, 0xff}) || len(r0.Headers[2]["trace"]) != 0 {
		t.Errorf("headers %v", r0.Headers)
	}
	if r1.Headers == nil || len(r1.Headers) != 0 {
		t.Errorf("no headers: %#v, want []", r1.Headers)
	}
	if !bytes.Contains(got, []byte(`"headers":[{"trace":[97,98,99]},{"bin":[0,127,-128,-1]},{"trace":[]}]`)) {
		t.Errorf("header bytes are not Java's signed bytes: %s", got)
	}
	// The default format is still KinesisEvent.
	b.Format = ""
	var kev events.KinesisEvent
	if err := json.Unmarshal(AppendEvent(nil, "eu-west-1", b), &kev); err != nil || len(kev.Records) != 3 {
		t.Fatalf("kinesis: %v %d", err, len(kev.Records))
	}
	b.Format = idem.EventFormatKafka
	if !bytes.Equal(AppendKinesisEvent(nil, "r", b), func() []byte { b.Format = ""; return AppendEvent(nil, "r", b) }()) {
		t.Errorf("AppendKinesisEvent does not ignore Format")
	}
}

// FuzzAppendKafkaEvent compares the hand-written KafkaEvent encoder with
// encoding/json on arbitrary topics, keys, values, headers and times.
func FuzzAppendKafkaEvent(f *testing.F) {
	f.Add("orders", int32(3), uint64(42), "customer-1", []byte(`{"a":1}`), "trace", []byte("abc"), int64(1700000000123456789), "local")
	f.Add("s\u2028-x", int32(0), uint64(0), "\x00\"\\", []byte{}, "é", []byte{0x80, 0xff}, int64(1), "eu-west-1")
	f.Fuzz(func(t *testing.T, topic string, partition int32, off uint64, key string, value []byte, hkey string, hval []byte, nanos int64, region string) {
		if partition < 0 {
			partition = -(partition + 1)
		}
		off &= math.MaxInt64 >> 1 // Kafka offsets are int64; leave room for off+2
		if nanos <= 0 {
			nanos = -(nanos + 1) + 1
		}
		shard := topic + "-" + strconv.Itoa(int(partition))
		recs := []idem.Record{
			{Stream: topic, ShardID: shard, Sequence: idem.SequenceOf(off + 1), PartitionKey: key, Data: value,
				ArrivalTime: time.Unix(0, nanos), Headers: []idem.Header{{Key: hkey, Value: hval}}, IdempotencyKey: key},
			{Stream: topic, ShardID: shard, Sequence: idem.SequenceOf(off + 2), PartitionKey: hkey, Data: hval,
				ArrivalTime: time.Unix(0, nanos/3+1), IdempotencyKey: hkey},
		}
		b := idem.NewBatch("m", "f", "i", recs, nil)
		b.Format = idem.EventFormatKafka
		got := (&Function{region: region}).appendEvent(nil, b)
		if want := kafkaReference(t, region, b); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}
