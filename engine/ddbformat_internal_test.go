package engine

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem"
)

const (
	ddbStreamsData = `{"eventID":"ev-1","eventName":"MODIFY","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"eu-west-1",` +
		`"dynamodb":{"Keys":{"id":{"S":"a"}},"NewImage":{"id":{"S":"a"},"status":{"S":"paid"}},"SequenceNumber":"900000000000000000001","SizeBytes":9,"StreamViewType":"NEW_IMAGE"},` +
		`"eventSourceARN":"arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"}`
	ddbKinesisData = `{"awsRegion":"eu-west-1","eventID":"kev-2","eventName":"INSERT","userIdentity":null,"recordFormat":"application/json",` +
		`"tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1767225600000,"Keys":{"id":{"S":"b"}},"NewImage":{"id":{"S":"b"},"status":{"S":"paid"}},"SizeBytes":9},"eventSource":"aws:dynamodb"}`
)

func ddbRecs() []idem.Record {
	data := []string{ddbStreamsData, ddbKinesisData, `{"hello":"world"}`}
	recs := make([]idem.Record, len(data))
	for i, d := range data {
		recs[i] = idem.Record{Stream: "changes", ShardID: "shardId-1", Sequence: idem.SequenceOf(uint64(i + 1)), Data: []byte(d),
			ArrivalTime: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	return recs
}

// TestDDBKeys: a DynamoDB mapping's default key is the record's identity;
// a key expression reads the converted record, whichever its shape; data
// that is no change is a KeyError naming the field.
func TestDDBKeys(t *testing.T) {
	recs := ddbRecs()
	id, err := newKeyer("s", "", idem.EventFormatDynamoDB)
	if err != nil {
		t.Fatal(err)
	}
	if !id.byIdentity() {
		t.Fatal("identity keys are not payload keys")
	}
	expr, err := newKeyer("s", "dynamodb.Keys.id.S", idem.EventFormatDynamoDB)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"a", "b"} {
		r := recs[i]
		if err := id.key(&r); err != nil || r.IdempotencyKey != "changes/shardId-1/"+string(r.Sequence) {
			t.Errorf("identity key of record %d = %q, %v", i, r.IdempotencyKey, err)
		}
		if err := expr.key(&r); err != nil || r.IdempotencyKey != want {
			t.Errorf("expression key of record %d = %q, %v; want %q", i, r.IdempotencyKey, err, want)
		}
	}
	for _, k := range []*keyer{id, expr} {
		r := recs[2]
		var ke *KeyError
		if err := k.key(&r); !errors.As(err, &ke) || !strings.Contains(err.Error(), "not a DynamoDB stream record: eventName: missing") {
			t.Errorf("key of bad data: %v", err)
		}
	}
}

// TestDDBFilter: patterns match the converted record of either shape.
func TestDDBFilter(t *testing.T) {
	f, err := newFilterSet(idem.EventFormatDynamoDB, []string{`{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}`})
	if err != nil {
		t.Fatal(err)
	}
	recs := ddbRecs()
	for i, want := range []bool{true, false, true} {
		if got := f.rejects(&recs[i]); got != want {
			t.Errorf("record %d: rejects %v, want %v", i, got, want)
		}
	}
	none, _ := newFilterSet(idem.EventFormatDynamoDB, nil)
	if none.rejects(&recs[2]) {
		t.Error("no pattern rejects nothing")
	}
	back, err := decodeFilterSet(f.encoded)
	if err != nil || back.format != idem.EventFormatDynamoDB || back.rejects(&recs[1]) {
		t.Errorf("the stored filter %s reads back as %+v, %v", f.encoded, back, err)
	}
}

// TestDDBItemIdentifier: an itemIdentifier names a record by its Sequence
// (a converted record's SequenceNumber), by the SequenceNumber or eventID
// its data holds, or by idem's eventID; other formats do not read data.
func TestDDBItemIdentifier(t *testing.T) {
	recs := ddbRecs()
	for id, want := range map[string]int{
		string(idem.SequenceOf(2)): 1, "900000000000000000001": 0, "ev-1": 0, "kev-2": 1,
		"shardId-1:" + string(idem.SequenceOf(3)): 2, "nothing": -1, "": -1,
	} {
		if got := indexOfEventID(recs, id, idem.EventFormatDynamoDB); got != want {
			t.Errorf("itemIdentifier %q: record %d, want %d", id, got, want)
		}
	}
	if got := indexOfEventID(recs, "900000000000000000001", idem.EventFormatKinesis); got != -1 {
		t.Errorf("a KinesisEvent mapping found record %d by its data", got)
	}
}

// TestDDBFailureMetadata: a DynamoDB mapping's on-failure record carries
// Lambda's DDBStreamBatchInfo, with KinesisBatchInfo's fields, naming the
// DynamoDB stream of a Streams record, or the stream idem read otherwise.
func TestDDBFailureMetadata(t *testing.T) {
	recs := ddbRecs()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var m map[string]json.RawMessage
	meta := failureMetadata("us-east-1", "id", "f", idem.EventFormatDynamoDB, conditionRetriesExhausted, 2, "", "", recs[:2], 0, at)
	if err := json.Unmarshal(meta, &m); err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(m["DDBStreamBatchInfo"], &info); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"shardId": "shardId-1", "startSequenceNumber": string(idem.SequenceOf(1)), "endSequenceNumber": string(idem.SequenceOf(2)),
		"approximateArrivalOfFirstRecord": "2026-01-01T00:00:00.000Z", "approximateArrivalOfLastRecord": "2026-01-01T00:00:01.000Z",
		"batchSize": float64(2), "streamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000",
	}
	if len(info) != len(want) || m["KinesisBatchInfo"] != nil {
		t.Fatalf("metadata %s", meta)
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("DDBStreamBatchInfo.%s = %v, want %v", k, info[k], v)
		}
	}
	for _, r := range recs[1:] {
		meta := failureMetadata("eu-west-2", "id", "f", idem.EventFormatDynamoDB, conditionKeyError, 0, "", "", []idem.Record{r}, 0, at)
		var m struct{ DDBStreamBatchInfo struct{ StreamArn string } }
		if err := json.Unmarshal(meta, &m); err != nil {
			t.Fatal(err)
		}
		if got := m.DDBStreamBatchInfo.StreamArn; got != "arn:aws:kinesis:eu-west-2:000000000000:stream/changes" {
			t.Errorf("streamArn of %s = %v, want the stream idem read", r.Data, got)
		}
	}
}
