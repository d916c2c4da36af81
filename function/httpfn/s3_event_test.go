package httpfn

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// s3Record is an S3 event record as a store writes it: indented, with
// fields aws-lambda-go does not know (MinIO's "source").
func s3Record(key, sequencer string) string {
	return `{
  "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
  "eventTime": "2026-12-06T02:33:29.000Z", "eventName": "s3:ObjectCreated:Put",
  "userIdentity": {"principalId": "minioadmin"},
  "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
    "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
    "object": {"key": "` + key + `", "size": 5, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "` + sequencer + `"}},
  "source": {"host": "10.0.0.1", "port": "", "userAgent": "MinIO"}
}`
}

func s3Records() []idem.Record {
	data := []string{
		`{"EventName": "s3:ObjectCreated:Put", "Key": "photos/a.jpg", "Records": [` + s3Record("a.jpg", "1") + `]}`,
		`{"Records": [` + s3Record("b.jpg", "2") + `, ` + s3Record("c%2Fd.jpg", "3") + `]}`,
		`{"Service": "S3", "Event": "s3:TestEvent", "Bucket": "photos"}`,
		`not a notification`,
		`{"Records": [` + s3Record("e.jpg", "4") + `]}`,
	}
	recs := make([]idem.Record, len(data))
	for i, d := range data {
		recs[i] = idem.Record{Stream: "events", ShardID: "all", Sequence: idem.SequenceOf(uint64(i + 1)), PartitionKey: "photos",
			Data: []byte(d), IdempotencyKey: "k"}
	}
	return recs
}

// TestS3EventBytes: a batch of notifications is one S3Event holding every
// notification's records, in order, compacted and otherwise as the store
// wrote them; a test notification and data that is not a notification add
// none. aws-lambda-go's events.S3Event decodes it, and function.EventSize
// counts it to the byte (plus the one separator it always counts).
func TestS3EventBytes(t *testing.T) {
	recs := s3Records()
	b := idem.NewBatch("m", "f", "i", recs, nil)
	b.Format = idem.EventFormatS3
	got := AppendEvent(nil, "eu-west-1", b)
	compact := func(s string) string {
		var buf bytes.Buffer
		if err := json.Compact(&buf, []byte(s)); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	want := `{"Records":[` + compact(s3Record("a.jpg", "1")) + `,` + compact(s3Record("b.jpg", "2")) + `,` +
		compact(s3Record("c%2Fd.jpg", "3")) + `,` + compact(s3Record("e.jpg", "4")) + `]}`
	if string(got) != want {
		t.Fatalf("event\n got %s\nwant %s", got, want)
	}
	var ev events.S3Event
	if err := json.Unmarshal(got, &ev); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range ev.Records {
		keys = append(keys, r.S3.Object.Key)
	}
	if strings.Join(keys, " ") != "a.jpg b.jpg c%2Fd.jpg e.jpg" || ev.Records[0].S3.Bucket.Name != "photos" || ev.Records[0].EventName != "s3:ObjectCreated:Put" {
		t.Errorf("S3Event %+v", ev)
	}
	for n := 0; n <= len(recs); n++ {
		b := idem.NewBatch("m", "f", "i", recs[:n], nil)
		b.Format = idem.EventFormatS3
		checkEventSize(t, "eu-west-1", b)
	}
	// In-process InvokeHandlers and process functions get these bytes
	// too: they build their events with AppendEvent, whatever the region.
	if other := AppendEvent(nil, "local", b); string(other) != string(got) {
		t.Errorf("the region changed the S3Event: %s", other)
	}
	if est := function.EventSize("eu-west-1", idem.EventFormatS3, recs, nil); est != len(got)+1 {
		t.Errorf("EventSize %d, want %d", est, len(got)+1)
	}
}
