package httpfn

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/idem-run/idem"
)

type wireWindowEvent struct {
	Records []wireRecord `json:"Records"`
	events.TimeWindowProperties
}

// TestWindowEventMatchesEncodingJSON: a tumbling window's batch is an
// events.KinesisTimeWindowEvent, byte for byte, final invocation included.
func TestWindowEventMatchesEncodingJSON(t *testing.T) {
	f := &Function{region: "local"}
	start := time.Date(2026, 11, 23, 12, 0, 30, 0, time.UTC)
	recs := []idem.Record{{Stream: "orders", ShardID: "shardId-000000000001", Sequence: idem.SequenceOf(5), PartitionKey: "k",
		Data: []byte(`{"n":1}`), ArrivalTime: start.Add(time.Second), IdempotencyKey: "orders/shardId-000000000001/5"}}
	for _, w := range []idem.Window{
		{Start: start, End: start.Add(30 * time.Second), Stream: "orders", ShardID: "shardId-000000000001"},
		{Start: start, End: start.Add(30 * time.Second), State: map[string]string{"sum": "42", "b\"<": "\u2028é", "a": ""}, Stream: "orders", ShardID: "shardId-000000000001"},
		{Start: start.In(time.FixedZone("x", 3600)).Add(time.Millisecond), End: start.Add(30 * time.Second), State: map[string]string{}, Final: true, Stream: "orders", ShardID: "shardId-000000000001"},
		{Start: start, End: start.Add(30 * time.Second), State: map[string]string{"n": "1"}, Final: true, TerminatedEarly: true, Stream: "orders", ShardID: "shardId-000000000001"},
	} {
		b := idem.NewBatch("m", "f", "i", recs, nil)
		if w.Final {
			b.Records = nil
		}
		b.Window = &w
		got := f.appendEvent(nil, b)
		ref := wireWindowEvent{Records: []wireRecord{}, TimeWindowProperties: events.TimeWindowProperties{
			Window: events.Window{Start: events.RFC3339EpochTime{Time: w.Start.UTC()}, End: events.RFC3339EpochTime{Time: w.End.UTC()}}, State: w.State, ShardID: w.ShardID,
			EventSourceARN: "arn:aws:kinesis:local:000000000000:stream/orders", IsFinalInvokeForWindow: w.Final,
			IsWindowTerminatedEarly: w.TerminatedEarly}}
		var plain wireEvent
		if err := json.Unmarshal(reference(t, "local", b), &plain); err != nil {
			t.Fatal(err)
		}
		ref.Records = plain.Records
		if want := encodeJSON(t, ref); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
		var ev events.KinesisTimeWindowEvent
		if err := json.Unmarshal(got, &ev); err != nil || ev.IsFinalInvokeForWindow != w.Final || len(ev.State) != len(w.State) {
			t.Fatalf("decoding: %v %+v", err, ev.TimeWindowProperties)
		}
	}
}

// TestWindowEventStateJSON (issue 19, item 2): a window's state of any
// JSON (Window.StateJSON) goes out exactly as the function returned it,
// in a valid event.
func TestWindowEventStateJSON(t *testing.T) {
	f := &Function{region: "local"}
	start := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	state := `{"1": 282, "2": 715, "s": "<&>"}`
	b := idem.NewBatch("m", "f", "i", nil, nil)
	b.Window = &idem.Window{Start: start, End: start.Add(time.Minute), StateJSON: json.RawMessage(state),
		State: map[string]string{"1": "282", "2": "715", "s": "<&>"}, Final: true, Stream: "orders", ShardID: "shardId-000000000001"}
	got := f.appendEvent(nil, b)
	var ev struct {
		State json.RawMessage `json:"state"`
		Final bool            `json:"isFinalInvokeForWindow"`
	}
	if err := json.Unmarshal(got, &ev); err != nil || string(ev.State) != state || !ev.Final {
		t.Fatalf("event %s: state %s, %v", got, ev.State, err)
	}
}

// FuzzAppendWindow compares the window fields the hand-written encoder
// writes with encoding/json's, on arbitrary states, shards and times.
func FuzzAppendWindow(f *testing.F) {
	f.Add("sum", "42", "k\u2028", "\"<&>", "shardId-000000000001", "orders", int64(1700000000), true, false)
	f.Add("", "", "\xff", "é", "", "s", int64(0), false, true)
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, shard, stream string, sec int64, final, early bool) {
		sec %= 1 << 33 // years 1 to 2242: RFC 3339 without surprises
		if sec < 0 {
			sec = -sec
		}
		start := time.Unix(sec, 0)
		w := idem.Window{Start: start, End: start.Add(time.Minute), State: map[string]string{k1: v1, k2: v2},
			Final: final, TerminatedEarly: early, Stream: stream, ShardID: shard}
		b := idem.NewBatch("m", "f", "i", nil, nil)
		b.Window = &w
		got := (&Function{region: "r"}).appendEvent(nil, b)
		ref := wireWindowEvent{Records: []wireRecord{}, TimeWindowProperties: events.TimeWindowProperties{
			Window: events.Window{Start: events.RFC3339EpochTime{Time: w.Start.UTC()}, End: events.RFC3339EpochTime{Time: w.End.UTC()}},
			State:  w.State, ShardID: shard, EventSourceARN: "arn:aws:kinesis:r:000000000000:stream/" + stream,
			IsFinalInvokeForWindow: final, IsWindowTerminatedEarly: early}}
		if want := encodeJSON(t, ref); !bytes.Equal(got, want) {
			t.Fatalf("\n got %s\nwant %s", got, want)
		}
	})
}
