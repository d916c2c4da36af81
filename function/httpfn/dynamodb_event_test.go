package httpfn

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// ddbStreamsRecord is a DynamoDB Streams record as the DynamoDB source
// writes it, indented here.
const ddbStreamsRecord = `{
  "eventID": "ev-1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
  "dynamodb": {"ApproximateCreationDateTime": 1767225600, "Keys": {"id": {"S": "order-1"}},
    "NewImage": {"id": {"S": "order-1"}, "status": {"S": "paid <now> & \u2028"}}, "SequenceNumber": "500000000000000000001",
    "SizeBytes": 30, "StreamViewType": "NEW_IMAGE"},
  "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
}`

// ddbKinesisRecord is the change Kinesis Data Streams for DynamoDB writes.
const ddbKinesisRecord = `{"awsRegion":"eu-west-1","eventID":"kev","eventName":"MODIFY","userIdentity":null,"recordFormat":"application/json",` +
	`"tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1767225600500,"Keys":{"id":{"S":"order-2"}},` +
	`"NewImage":{"id":{"S":"order-2"},"status":{"S":"paid"}},"OldImage":{"id":{"S":"order-2"},"status":{"S":"new"}},"SizeBytes":40},"eventSource":"aws:dynamodb"}`

func ddbRecords() []idem.Record {
	data := []string{ddbStreamsRecord, ddbKinesisRecord, `not a change`, `{"eventName":"INSERT"}`, ddbKinesisRecord}
	recs := make([]idem.Record, len(data))
	for i, d := range data {
		recs[i] = idem.Record{Stream: "changes", ShardID: "shardId-1", Sequence: idem.SequenceOf(uint64(i + 1)), PartitionKey: "k",
			Data: []byte(d), IdempotencyKey: "key", ArrivalTime: time.Unix(1767225600, 0)}
	}
	return recs
}

// TestDynamoDBEventBytes: a batch is one DynamoDBEvent holding every
// change's DynamoDBEventRecord, in order: a Streams record compacted, a
// Kinesis one converted, with its stream sequence as SequenceNumber; data
// that is no change adds none. aws-lambda-go's events.DynamoDBEvent
// decodes it, the region changes nothing, and function.EventSize counts
// it to the byte (plus the one separator it always counts).
func TestDynamoDBEventBytes(t *testing.T) {
	recs := ddbRecords()
	b := idem.NewBatch("m", "f", "i", recs, nil)
	b.Format = idem.EventFormatDynamoDB
	got := AppendEvent(nil, "eu-west-1", b)
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(ddbStreamsRecord)); err != nil {
		t.Fatal(err)
	}
	converted := func(seq uint64) string {
		return `{"eventID":"kev","eventName":"MODIFY","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"eu-west-1",` +
			`"dynamodb":{"ApproximateCreationDateTime":1767225600.5,"Keys":{"id":{"S":"order-2"}},"NewImage":{"id":{"S":"order-2"},"status":{"S":"paid"}},` +
			`"OldImage":{"id":{"S":"order-2"},"status":{"S":"new"}},"SequenceNumber":"` + string(idem.SequenceOf(seq)) + `","SizeBytes":40,"StreamViewType":"NEW_AND_OLD_IMAGES"},` +
			`"eventSourceARN":"arn:aws:dynamodb:eu-west-1:000000000000:table/orders"}`
	}
	want := `{"Records":[` + compact.String() + `,` + converted(2) + `,` + converted(5) + `]}`
	if string(got) != want {
		t.Fatalf("event\n got %s\nwant %s", got, want)
	}
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(got, &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Records) != 3 || ev.Records[0].Change.NewImage["status"].String() != "paid <now> & \u2028" ||
		ev.Records[1].Change.OldImage["status"].String() != "new" || ev.Records[2].Change.SequenceNumber != string(idem.SequenceOf(5)) ||
		ev.Records[0].Change.SequenceNumber != "500000000000000000001" {
		t.Errorf("DynamoDBEvent %+v", ev)
	}
	for n := 0; n <= len(recs); n++ {
		b := idem.NewBatch("m", "f", "i", recs[:n], nil)
		b.Format = idem.EventFormatDynamoDB
		checkEventSize(t, "eu-west-1", b)
	}
	if other := AppendEvent(nil, "local", b); string(other) != string(got) {
		t.Errorf("the region changed the DynamoDBEvent: %s", other)
	}
	if est := function.EventSize("eu-west-1", idem.EventFormatDynamoDB, recs, nil); est != len(got)+1 {
		t.Errorf("EventSize %d, want %d", est, len(got)+1)
	}
}

// TestDynamoDBTimeWindowEvent: with a window, the event is an
// events.DynamoDBTimeWindowEvent (a KinesisTimeWindowEvent's window fields
// around DynamoDB records), and EventSize counts the window too.
func TestDynamoDBTimeWindowEvent(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	recs := ddbRecords()
	for range 200 {
		n := r.IntN(len(recs) + 1)
		b := idem.NewBatch("m", "f", "i", recs[:n], nil)
		b.Format = idem.EventFormatDynamoDB
		start := time.Unix(r.Int64N(4e9), 0)
		b.Window = &idem.Window{Start: start, End: start.Add(time.Minute), Final: n == 0, TerminatedEarly: r.IntN(2) == 0,
			Stream: randString(r, 10), ShardID: randString(r, 10), StateJSON: json.RawMessage(`{"count":3,"ids":["a"]}`)}
		checkEventSize(t, randString(r, 8), b)
		got := AppendEvent(nil, "us-east-1", b)
		var ev struct {
			events.DynamoDBEvent
			Window                 events.Window   `json:"window"`
			State                  json.RawMessage `json:"state"`
			ShardID                string          `json:"shardId"`
			IsFinalInvokeForWindow bool            `json:"isFinalInvokeForWindow"`
		}
		if err := json.Unmarshal(got, &ev); err != nil {
			t.Fatalf("%v: %s", err, got)
		}
		if len(ev.Records) != min(n, 2)+max(n-4, 0) || !ev.Window.Start.Equal(start) || string(ev.State) != `{"count":3,"ids":["a"]}` ||
			ev.IsFinalInvokeForWindow != (n == 0) {
			t.Fatalf("window event %s", got)
		}
	}
	b := idem.NewBatch("m", "f", "i", recs, nil)
	b.Format = idem.EventFormatDynamoDB
	b.Window = &idem.Window{Start: time.Unix(1767225600, 0), End: time.Unix(1767225660, 0), Stream: "changes", ShardID: "shardId-1",
		State: map[string]string{"count": "2"}}
	var ev events.DynamoDBTimeWindowEvent
	if err := json.Unmarshal(AppendEvent(nil, "us-east-1", b), &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Records) != 3 || ev.State["count"] != "2" || ev.ShardID != "shardId-1" || ev.Records[1].Change.StreamViewType != "NEW_AND_OLD_IMAGES" {
		t.Errorf("DynamoDBTimeWindowEvent %+v", ev)
	}
}

// FuzzDynamoDBEventSize checks the estimate against the encoder on
// arbitrary data, which is a change or not.
func FuzzDynamoDBEventSize(f *testing.F) {
	f.Add([]byte(ddbStreamsRecord), []byte(ddbKinesisRecord), uint64(7))
	f.Add([]byte(`{}`), []byte(`{"eventName":"REMOVE","dynamodb":{}}`), uint64(0))
	f.Fuzz(func(t *testing.T, a, c []byte, seq uint64) {
		seq &= 1<<62 - 1
		recs := []idem.Record{
			{Stream: "s", ShardID: "sh", Sequence: idem.SequenceOf(seq + 1), Data: a},
			{Stream: "s", ShardID: "sh", Sequence: idem.SequenceOf(seq + 2), Data: c},
		}
		b := idem.NewBatch("m", "f", "i", recs, nil)
		b.Format = idem.EventFormatDynamoDB
		checkEventSize(t, "us-east-1", b)
		var ev events.DynamoDBEvent
		if err := json.Unmarshal(AppendEvent(nil, "us-east-1", b), &ev); err != nil {
			t.Fatalf("events.DynamoDBEvent: %v", err)
		}
	})
}
