package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// s3Event is one S3 event record, as a store publishes it: an upload (or,
// with name "ObjectRemoved:Delete", a deletion) of key in bucket photos,
// whose sequencer tells two uploads of one key apart.
func s3Event(name, key, sequencer string) string {
	return `{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-06T02:33:29.000Z",` +
		`"eventName":"` + name + `","userIdentity":{"principalId":"p"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},` +
		`"responseElements":{"x-amz-request-id":"r"},"s3":{"s3SchemaVersion":"1.0","configurationId":"c",` +
		`"bucket":{"name":"photos","arn":"arn:aws:s3:::photos"},` +
		`"object":{"key":"` + key + `","size":5,"eTag":"d41d8cd98f00b204e9800998ecf8427e","sequencer":"` + sequencer + `"}}}`
}

// s3Notification is a notification document of the given event records.
func s3Notification(records ...string) string {
	return `{"Records":[` + strings.Join(records, ",") + `]}`
}

// s3Put is a notification of one upload.
func s3Put(key, sequencer string) string {
	return s3Notification(s3Event("ObjectCreated:Put", key, sequencer))
}

// s3TestNotification is the test notification versitygw publishes at start.
const s3TestNotification = `{"Bucket":"photos","Event":"s3:TestEvent","Service":"S3","Time":"2026-12-06T02:33:29Z"}`

// s3Keys is an in-process Go function written as for Lambda, taking the
// S3Event as raw JSON (an idem.InvokeHandler): it keeps the object keys
// of every invocation and fails one that holds a key starting with
// "fail".
type s3Keys struct {
	t     *testing.T
	mu    sync.Mutex
	calls [][]string
}

func (f *s3Keys) HandleInvoke(_ context.Context, payload []byte) ([]byte, error) {
	var ev events.S3Event
	if err := json.Unmarshal(payload, &ev); err != nil {
		f.t.Errorf("decoding the S3Event: %v: %s", err, payload)
		return nil, err
	}
	keys := make([]string, len(ev.Records))
	for i, r := range ev.Records {
		keys[i] = r.S3.Object.Key
	}
	f.mu.Lock()
	f.calls = append(f.calls, keys)
	f.mu.Unlock()
	for _, k := range keys {
		if strings.HasPrefix(k, "fail") {
			return nil, errors.New("cannot handle " + k)
		}
	}
	return nil, nil
}

// all returns every key the function got, in order, over all its calls.
func (f *s3Keys) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Concat(f.calls...)
}

// TestS3EventFormat (issue 13): a mapping with eventFormat s3 over an
// embedded stream of notifications runs an unmodified aws-lambda-go
// function decoding events.S3Event, run as a process. The same
// notification published twice runs once (its second record is skipped, as
// a duplicate is), the test notification runs nothing (it is filtered
// out), and a record that is not a notification goes to the on-failure
// stream at once, its KeyError naming the field that is missing; the
// function gets every record of the others, a notification of two records
// included.
func TestS3EventFormat(t *testing.T) {
	keysFile := filepath.Join(t.TempDir(), "keys")
	fn := lambdaProcess(t, "s3", map[string]string{"IDEM_TEST_KEYS": keysFile})
	v := newEnv(t)
	v.stream("events", 1)
	v.stream("events-failed", 1)
	v.put("events", "photos",
		s3Put("a.jpg", "01"),
		s3TestNotification,
		s3Put("a.jpg", "01"), // published twice
		`{"hello":"world"}`,
		s3Notification(s3Event("ObjectCreated:Put", "b.jpg", "02"), s3Event("ObjectCreated:Copy", "c.jpg", "03")),
		s3Put("a.jpg", "04"), // a second upload of a.jpg: another event
	)
	e, _ := v.run(engine.Mapping{
		Name: "thumbnails", Stream: "events", Source: v.source("events"), Function: "s3", Invoker: fn,
		StartingPosition: source.TrimHorizon, BatchSize: 10, OnFailure: "events-failed",
		EventFormat: idem.EventFormatS3, BisectBatchOnFunctionError: true,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(6) })
	st := totals(e)
	if st.Processed != 3 || st.Skipped != 1 || st.Filtered != 1 || st.Discarded != 1 {
		t.Errorf("processed %d, skipped %d, filtered %d, discarded %d; want 3, 1, 1, 1", st.Processed, st.Skipped, st.Filtered, st.Discarded)
	}
	b, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(strings.Fields(string(b)), " "), "photos/a.jpg photos/b.jpg photos/c.jpg photos/a.jpg"; got != want {
		t.Errorf("the function got %q, want %q", got, want)
	}

	var meta struct {
		RequestContext   struct{ Condition string }
		KinesisBatchInfo struct {
			ShardID             string `json:"shardId"`
			StartSequenceNumber string `json:"startSequenceNumber"`
			BatchSize           int    `json:"batchSize"`
		}
		IdemErrorType    string `json:"idemErrorType"`
		IdemErrorMessage string `json:"idemErrorMessage"`
	}
	failed := v.onFailure("events-failed", &meta)
	if meta.RequestContext.Condition != "IdempotencyKeyError" || meta.IdemErrorType != "IdempotencyKeyError" ||
		!strings.Contains(meta.IdemErrorMessage, "not an S3 event notification: Records: missing") {
		t.Errorf("metadata %+v, want an IdempotencyKeyError naming Records", meta)
	}
	if meta.KinesisBatchInfo.StartSequenceNumber != string(idem.SequenceOf(4)) || meta.KinesisBatchInfo.BatchSize != 1 {
		t.Errorf("KinesisBatchInfo %+v, want the 4th record alone", meta.KinesisBatchInfo)
	}
	if string(failed[1].Data) != `{"hello":"world"}` {
		t.Errorf("discarded %s, want the record that is not a notification", failed[1].Data)
	}
}

// TestS3EventFormatJetStream: a JetStream stream of notifications, as a
// store publishes them to NATS, feeds an in-process InvokeHandler decoding
// events.S3Event: a redelivered notification runs once, a test
// notification not at all, and a function error over a notification goes,
// after bisection isolates it, to the on-failure stream in the Kinesis
// batch shape, naming the JetStream record.
func TestS3EventFormatJetStream(t *testing.T) {
	v := newEnv(t)
	v.stream("failed", 1)
	src, name, put := openJetStreamSource(t, v, 1)
	put("photos",
		s3TestNotification,
		s3Put("a.jpg", "01"),
		s3Put("fail.jpg", "02"),
		s3Put("a.jpg", "01"), // the store published it again
		s3Put("b.jpg", "03"),
	)
	f := &s3Keys{t: t}
	m := engine.Mapping{
		Name: "thumbnails", Stream: name, Source: src, Function: "thumbnails", Invoker: gofunc.NewInvoke(f),
		StartingPosition: source.TrimHorizon, BatchSize: 10, OnFailure: "failed",
		EventFormat: idem.EventFormatS3, BisectBatchOnFunctionError: true,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	}
	m.RetryAttempts(0)
	e, _ := v.run(m)
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(5) })
	st := totals(e)
	if st.Processed != 2 || st.Skipped != 1 || st.Filtered != 1 || st.Discarded != 1 {
		t.Errorf("processed %d, skipped %d, filtered %d, discarded %d; want 2, 1, 1, 1", st.Processed, st.Skipped, st.Filtered, st.Discarded)
	}
	// a.jpg may run twice, in a batch that failed with fail.jpg and in
	// the half bisection made of it, but completes once (processed 2, its
	// second publication skipped); b.jpg runs once.
	got := f.all()
	if !slices.Contains(got, "a.jpg") || slices.Index(got, "b.jpg") != len(got)-1 || !slices.Contains(got, "fail.jpg") {
		t.Errorf("the function got %v, want a.jpg and fail.jpg, then b.jpg once", got)
	}
	var meta struct {
		RequestContext   struct{ Condition string }
		KinesisBatchInfo *struct {
			ShardID             string `json:"shardId"`
			StartSequenceNumber string `json:"startSequenceNumber"`
			StreamArn           string `json:"streamArn"`
		}
		IdemRecords []engine.FailedRecord `json:"idemRecords"`
	}
	failed := v.onFailure("failed", &meta)
	if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.KinesisBatchInfo == nil ||
		meta.KinesisBatchInfo.StartSequenceNumber != string(idem.SequenceOf(3)) || !strings.HasSuffix(meta.KinesisBatchInfo.StreamArn, "/"+name) {
		t.Errorf("metadata %s", failed[0].Data)
	}
	if len(meta.IdemRecords) != 1 || !strings.Contains(meta.IdemRecords[0].IdempotencyKey, "photos/fail.jpg") {
		t.Errorf("idemRecords %+v, want fail.jpg's record under its event's key", meta.IdemRecords)
	}
	if string(failed[1].Data) != s3Put("fail.jpg", "02") {
		t.Errorf("discarded %s, want fail.jpg's notification", failed[1].Data)
	}
}

// TestS3EventFilterAndKey: filterCriteria patterns of an s3 mapping match
// the notification document, a list of records matching when one does;
// with an idempotency.key expression, keys are its value over the
// notification (two uploads of one object key are then one).
func TestS3EventFilterAndKey(t *testing.T) {
	v := newEnv(t)
	v.stream("events", 1)
	v.put("events", "photos",
		s3Put("photos/a.jpg", "01"),
		s3Notification(s3Event("ObjectRemoved:Delete", "photos/b.jpg", "02")),
		s3Put("docs/c.txt", "03"),
		s3Notification(s3Event("ObjectRemoved:Delete", "docs/d.txt", "04"), s3Event("ObjectCreated:Put", "photos/e.jpg", "05")),
		s3Put("photos/a.jpg", "06"), // a second upload of a.jpg
		s3TestNotification,
	)
	rec := &recorder{}
	e, _ := v.run(engine.Mapping{
		Name: "m", Stream: "events", Source: v.source("events"), Function: "f", Invoker: gofunc.New(rec.handler()),
		StartingPosition: source.TrimHorizon, BatchSize: 10, EventFormat: idem.EventFormatS3,
		KeyExpression: "Records[0].s3.object.key",
		Filters: []string{
			`{"Records": {"eventName": [{"prefix": "ObjectCreated:"}], "s3": {"object": {"key": [{"prefix": "photos/"}]}}}}`,
		},
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(6) })
	want := []string{s3Put("photos/a.jpg", "01"), s3Notification(s3Event("ObjectRemoved:Delete", "docs/d.txt", "04"), s3Event("ObjectCreated:Put", "photos/e.jpg", "05"))}
	if got := rec.got(); !slices.Equal(got, want) {
		t.Errorf("the function saw %q, want %q", got, want)
	}
	if st := totals(e); st.Processed != 2 || st.Skipped != 1 || st.Filtered != 3 {
		t.Errorf("processed %d, skipped %d, filtered %d; want 2, 1, 3", st.Processed, st.Skipped, st.Filtered)
	}
}

// TestS3EventFormatRefused: an S3Event has no window and no item
// identifier, so an s3 mapping refuses tumblingWindow and
// ReportBatchItemFailures, and its filters name the notification's fields.
func TestS3EventFormatRefused(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	m := engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New((&recorder{}).handler()),
		StartingPosition: source.TrimHorizon, EventFormat: idem.EventFormatS3, TumblingWindow: time.Minute, ReportBatchItemFailures: true,
		Filters: []string{`{"data": {"Records": [1]}}`}}
	err := m.Validate()
	for _, want := range []string{
		"tumblingWindow: not available with S3Event (eventFormat s3)",
		"functionResponseTypes: ReportBatchItemFailures is not available with S3Event (eventFormat s3): its records carry no item identifier a function could report; use bisectBatchOnFunctionError",
		"filterCriteria.filters[0].pattern: data: s3 events are filtered on EventName, Key, Records only",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, want)
		}
	}
}
