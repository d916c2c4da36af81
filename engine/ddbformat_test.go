package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

// ddbTestARN is the stream ARN ddbStreams records name.
const ddbTestARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"

// ddbImage is an order item's image.
func ddbImage(id, status string) string {
	return `{"id":{"S":"` + id + `"},"status":{"S":"` + status + `"},"total":{"N":"42"}}`
}

// ddbImages are the images a change named name has: a new one but for a
// REMOVE, an old one but for an INSERT.
func ddbImages(name, id, status string) string {
	var s string
	if name != "REMOVE" {
		s += `,"NewImage":` + ddbImage(id, status)
	}
	if name != "INSERT" {
		s += `,"OldImage":` + ddbImage(id, status)
	}
	return s
}

// ddbStreams is a DynamoDB Streams record of order id, as the DynamoDB
// source writes a record's data, with its own SequenceNumber seq.
func ddbStreams(name, id, status, seq string) string {
	return `{"eventID":"ev-` + seq + `","eventName":"` + name + `","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"eu-west-1",` +
		`"dynamodb":{"ApproximateCreationDateTime":1767225600,"Keys":{"id":{"S":"` + id + `"}}` + ddbImages(name, id, status) +
		`,"SequenceNumber":"` + seq + `","SizeBytes":50,"StreamViewType":"NEW_AND_OLD_IMAGES"},"eventSourceARN":"` + ddbTestARN + `"}`
}

// ddbKinesis is the change Kinesis Data Streams for DynamoDB writes for
// order id: no SequenceNumber, milliseconds.
func ddbKinesis(name, id, status string) string {
	return `{"awsRegion":"eu-west-1","eventID":"kev-` + id + `-` + status + `","eventName":"` + name + `","userIdentity":null,` +
		`"recordFormat":"application/json","tableName":"orders","dynamodb":{"ApproximateCreationDateTime":1767225600123,` +
		`"Keys":{"id":{"S":"` + id + `"}}` + ddbImages(name, id, status) + `,"SizeBytes":50},"eventSource":"aws:dynamodb"}`
}

// ddbStr is a string attribute's value, "" for another type (String
// panics on one).
func ddbStr(v events.DynamoDBAttributeValue) string {
	if v.DataType() != events.DataTypeString {
		return ""
	}
	return v.String()
}

// ddbLine is "<eventName> <id> <status> <SequenceNumber>" for a record of
// a DynamoDBEvent, its old image's status for a REMOVE.
func ddbLine(r events.DynamoDBEventRecord) string {
	img := r.Change.NewImage
	if r.EventName == "REMOVE" {
		img = r.Change.OldImage
	}
	return fmt.Sprintf("%s %s %s %s", r.EventName, ddbStr(r.Change.Keys["id"]), ddbStr(img["status"]), r.Change.SequenceNumber)
}

// ddbHTTP is a DynamoDB stream handler as an HTTP function: it decodes
// each event with aws-lambda-go's events.DynamoDBEvent and, the first time
// it sees a record whose status is "retry", reports it failed by its
// SequenceNumber (the first such record of the batch only).
type ddbHTTP struct {
	t      *testing.T
	mu     sync.Mutex
	calls  [][]string
	failed map[string]bool
}

func (f *ddbHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev events.DynamoDBEvent
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		f.t.Errorf("decoding the DynamoDBEvent: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	var resp events.DynamoDBEventResponse
	for _, rec := range ev.Records {
		lines = append(lines, ddbLine(rec))
		if rec.EventSource != "aws:dynamodb" || rec.EventVersion != "1.1" || rec.Change.ApproximateCreationDateTime.Unix() != 1767225600 {
			f.t.Errorf("record %+v", rec)
		}
		seq := rec.Change.SequenceNumber
		if ddbStr(rec.Change.NewImage["status"]) == "retry" && !f.failed[seq] && resp.BatchItemFailures == nil {
			f.failed[seq] = true
			resp.BatchItemFailures = []events.DynamoDBBatchItemFailure{{ItemIdentifier: seq}}
		}
	}
	f.calls = append(f.calls, lines)
	json.NewEncoder(w).Encode(resp)
}

func (f *ddbHTTP) got() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// ddbMeta is the part of an on-failure metadata record these tests read.
type ddbMeta struct {
	RequestContext struct {
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	ResponseContext    *struct{ FunctionError string } `json:"responseContext"`
	KinesisBatchInfo   json.RawMessage                 `json:"KinesisBatchInfo"`
	DDBStreamBatchInfo *struct {
		ShardID                         string `json:"shardId"`
		StartSequenceNumber             string `json:"startSequenceNumber"`
		EndSequenceNumber               string `json:"endSequenceNumber"`
		ApproximateArrivalOfFirstRecord string `json:"approximateArrivalOfFirstRecord"`
		ApproximateArrivalOfLastRecord  string `json:"approximateArrivalOfLastRecord"`
		BatchSize                       int    `json:"batchSize"`
		StreamArn                       string `json:"streamArn"`
	} `json:"DDBStreamBatchInfo"`
	IdemErrorType    string                `json:"idemErrorType"`
	IdemErrorMessage string                `json:"idemErrorMessage"`
	IdemRecords      []engine.FailedRecord `json:"idemRecords"`
}

// onFailure is the two records an on-failure stream holds, the metadata
// record (decoded into meta) and the record, failing the test at once
// when it holds another number or the metadata does not decode.
func (v *env) onFailure(stream string, meta any) []idem.Record {
	v.t.Helper()
	failed := v.records(stream)
	if len(failed) != 2 {
		v.t.Fatalf("the on-failure stream holds %d records, want the metadata record and the record", len(failed))
	}
	if err := json.Unmarshal(failed[0].Data, meta); err != nil {
		v.t.Fatal(err)
	}
	return failed
}

// TestDynamoDBEventFormat (issue 12): a mapping with eventFormat dynamodb
// over an embedded stream holding DynamoDB Streams records and changes as
// Kinesis Data Streams for DynamoDB writes them sends an HTTP function
// DynamoDBEvents that aws-lambda-go decodes: the Streams records as they
// are, the Kinesis ones converted (their stream sequence as
// SequenceNumber). A batchItemFailures itemIdentifier is a record's
// SequenceNumber, whichever it is, and the batch is retried from that
// record. Data that is no DynamoDB change goes to the on-failure stream
// before the batch is invoked, with Lambda's DDBStreamBatchInfo.
func TestDynamoDBEventFormat(t *testing.T) {
	v := newEnv(t)
	v.stream("changes", 1)
	v.stream("changes-failed", 1)
	v.put("changes", "orders",
		ddbStreams("INSERT", "order-1", "new", "100000000000000000001"),
		ddbKinesis("MODIFY", "order-2", "retry"),
		`{"hello":"world"}`,
		ddbStreams("MODIFY", "order-1", "retry", "100000000000000000004"),
		ddbKinesis("REMOVE", "order-2", "paid"),
	)
	f := &ddbHTTP{t: t, failed: map[string]bool{}}
	e, _ := v.run(engine.Mapping{
		Name: "orders", Stream: "changes", Source: v.source("changes"), Function: "orders", Invoker: httpFunction(t, f),
		StartingPosition: source.TrimHorizon, BatchSize: 10, OnFailure: "changes-failed",
		EventFormat: idem.EventFormatDynamoDB, ReportBatchItemFailures: true,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(5) })
	if st := totals(e); st.Processed != 4 || st.Discarded != 1 || st.Invocations != 3 {
		t.Errorf("processed %d, discarded %d, invocations %d; want 4, 1, 3", st.Processed, st.Discarded, st.Invocations)
	}
	seq := func(n uint64) string { return string(idem.SequenceOf(n)) }
	first := "INSERT order-1 new 100000000000000000001"
	second := "MODIFY order-2 retry " + seq(2)
	fourth := "MODIFY order-1 retry 100000000000000000004"
	fifth := "REMOVE order-2 paid " + seq(5)
	want := [][]string{{first, second, fourth, fifth}, {second, fourth, fifth}, {fourth, fifth}}
	if got := f.got(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the function got\n%q\nwant\n%q", got, want)
	}

	var meta ddbMeta
	failed := v.onFailure("changes-failed", &meta)
	info := meta.DDBStreamBatchInfo
	if info == nil || meta.KinesisBatchInfo != nil {
		t.Fatalf("metadata %s, want DDBStreamBatchInfo and no KinesisBatchInfo", failed[0].Data)
	}
	if meta.RequestContext.Condition != "IdempotencyKeyError" || meta.RequestContext.ApproximateInvokeCount != 0 || meta.ResponseContext != nil ||
		meta.IdemErrorType != "IdempotencyKeyError" || !strings.Contains(meta.IdemErrorMessage, "not a DynamoDB stream record: eventName: missing") {
		t.Errorf("metadata %s, want an IdempotencyKeyError naming eventName, never invoked", failed[0].Data)
	}
	if info.StartSequenceNumber != seq(3) || info.EndSequenceNumber != seq(3) || info.BatchSize != 1 || info.ShardID == "" ||
		info.StreamArn != "arn:aws:kinesis:us-east-1:000000000000:stream/changes" || info.ApproximateArrivalOfFirstRecord == "" ||
		info.ApproximateArrivalOfLastRecord != info.ApproximateArrivalOfFirstRecord {
		t.Errorf("DDBStreamBatchInfo %+v", *info)
	}
	if len(meta.IdemRecords) != 1 || meta.IdemRecords[0].SequenceNumber != seq(3) || meta.IdemRecords[0].Stream != "changes" {
		t.Errorf("idemRecords %+v", meta.IdemRecords)
	}
	if string(failed[1].Data) != `{"hello":"world"}` {
		t.Errorf("discarded %s, want the record that is no change", failed[1].Data)
	}
}

// ddbInvoke is an in-process InvokeHandler decoding events.DynamoDBEvent,
// keeping every record's line (ddbLine).
type ddbInvoke struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (f *ddbInvoke) HandleInvoke(_ context.Context, payload []byte) ([]byte, error) {
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		f.t.Errorf("decoding the DynamoDBEvent: %v: %s", err, payload)
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range ev.Records {
		f.lines = append(f.lines, ddbLine(r))
	}
	return nil, nil
}

func (f *ddbInvoke) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lines)
}

// TestDynamoDBEventFilterAndKey: filterCriteria patterns match the
// converted record, as Lambda's DynamoDB filters do (eventName, typed
// values of the new image), whether the change came from DynamoDB Streams
// or from Kinesis; an idempotency.key expression reads the converted
// record too, so two changes of one item, one of each shape, are one key.
func TestDynamoDBEventFilterAndKey(t *testing.T) {
	v := newEnv(t)
	v.stream("changes", 1)
	v.put("changes", "orders",
		ddbStreams("INSERT", "order-1", "paid", "101"),
		ddbKinesis("INSERT", "order-2", "new"),
		ddbKinesis("MODIFY", "order-2", "paid"),
		ddbStreams("REMOVE", "order-1", "paid", "104"),
		ddbKinesis("MODIFY", "order-1", "paid"), // order-1 ran: skipped
		`not json`,
	)
	f := &ddbInvoke{t: t}
	e, _ := v.run(engine.Mapping{
		Name: "paid", Stream: "changes", Source: v.source("changes"), Function: "paid", Invoker: gofunc.NewInvoke(f),
		StartingPosition: source.TrimHorizon, BatchSize: 10, EventFormat: idem.EventFormatDynamoDB,
		KeyExpression: "dynamodb.Keys.id.S",
		Filters:       []string{`{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}`},
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(6) })
	want := []string{"INSERT order-1 paid 101", "MODIFY order-2 paid " + string(idem.SequenceOf(3))}
	if got := f.got(); !slices.Equal(got, want) {
		t.Errorf("the function got %q, want %q", got, want)
	}
	if st := totals(e); st.Processed != 2 || st.Skipped != 1 || st.Filtered != 3 {
		t.Errorf("processed %d, skipped %d, filtered %d; want 2, 1, 3", st.Processed, st.Skipped, st.Filtered)
	}
}

// TestDynamoDBEventKeyExpressionBadData: with a key expression, data that
// is no DynamoDB change fails its key, and goes to the on-failure stream
// at once too.
func TestDynamoDBEventKeyExpressionBadData(t *testing.T) {
	v := newEnv(t)
	v.stream("changes", 1)
	v.stream("failed", 1)
	v.put("changes", "orders", `{"eventName":"INSERT","dynamodb":{"Keys":{"id":{"S":1}}}}`, ddbKinesis("INSERT", "order-1", "new"))
	f := &ddbInvoke{t: t}
	e, _ := v.run(engine.Mapping{
		Name: "m", Stream: "changes", Source: v.source("changes"), Function: "f", Invoker: gofunc.NewInvoke(f),
		StartingPosition: source.TrimHorizon, EventFormat: idem.EventFormatDynamoDB, KeyExpression: "dynamodb.Keys.id.S", OnFailure: "failed",
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(2) })
	if got := f.got(); len(got) != 1 || !strings.HasPrefix(got[0], "INSERT order-1 new") {
		t.Errorf("the function got %q", got)
	}
	var meta ddbMeta
	failed := v.onFailure("failed", &meta)
	if meta.DDBStreamBatchInfo == nil || meta.RequestContext.Condition != "IdempotencyKeyError" ||
		!strings.Contains(meta.IdemErrorMessage, "dynamodb.Keys.id.S: is not a string") {
		t.Fatalf("metadata %s", failed[0].Data)
	}
}

// TestDynamoDBEventProcess: an unmodified aws-lambda-go function decoding
// events.DynamoDBEvent, run as a process, reports a failed record by its
// SequenceNumber (here a DynamoDB Streams record's own, which is not its
// place in the embedded stream); with no retries left that record alone
// goes to the on-failure stream, its DDBStreamBatchInfo naming the
// DynamoDB stream its record names, and the records after it run again.
func TestDynamoDBEventProcess(t *testing.T) {
	keysFile := filepath.Join(t.TempDir(), "keys")
	fn := lambdaProcess(t, "dynamodb", map[string]string{"IDEM_TEST_KEYS": keysFile})
	v := newEnv(t)
	v.stream("changes", 1)
	v.stream("changes-failed", 1)
	v.put("changes", "orders",
		ddbStreams("INSERT", "a", "new", "200000000000000000001"),
		ddbStreams("MODIFY", "b", "fail", "200000000000000000002"),
		ddbKinesis("INSERT", "c", "new"),
	)
	m := engine.Mapping{
		Name: "orders", Stream: "changes", Source: v.source("changes"), Function: "dynamodb", Invoker: fn,
		StartingPosition: source.TrimHorizon, BatchSize: 10, OnFailure: "changes-failed",
		EventFormat: idem.EventFormatDynamoDB, ReportBatchItemFailures: true,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	}
	m.RetryAttempts(0)
	e, _ := v.run(m)
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(3) })
	if st := totals(e); st.Processed != 2 || st.Discarded != 1 {
		t.Errorf("processed %d, discarded %d; want 2, 1", st.Processed, st.Discarded)
	}
	b, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	c := "INSERT c new " + string(idem.SequenceOf(3))
	want := []string{"INSERT a new 200000000000000000001", "MODIFY b fail 200000000000000000002", c, c}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, want) {
		t.Errorf("the function got\n%q\nwant\n%q", got, want)
	}
	var meta ddbMeta
	failed := v.onFailure("changes-failed", &meta)
	info := meta.DDBStreamBatchInfo
	if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.ResponseContext == nil || info == nil ||
		info.StartSequenceNumber != string(idem.SequenceOf(2)) || info.BatchSize != 1 || info.StreamArn != ddbTestARN {
		t.Errorf("metadata %s", failed[0].Data)
	}
	if string(failed[1].Data) != ddbStreams("MODIFY", "b", "fail", "200000000000000000002") {
		t.Errorf("discarded %s, want b's change", failed[1].Data)
	}
}

// TestDynamoDBEventWindow: with a tumbling window, the function gets
// aws-lambda-go's events.DynamoDBTimeWindowEvent: DynamoDB records with
// the window's fields and state, and a final invocation with the window's
// whole aggregate.
func TestDynamoDBEventWindow(t *testing.T) {
	v := newEnv(t)
	v.stream("changes", 1)
	v.put("changes", "orders", ddbStreams("INSERT", "a", "new", "301"), ddbKinesis("INSERT", "b", "new"), ddbKinesis("MODIFY", "b", "paid"))
	var mu sync.Mutex
	var finals, records int
	var bad []string
	h := idem.InvokeFunc(func(_ context.Context, payload []byte) ([]byte, error) {
		var ev events.DynamoDBTimeWindowEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		var st struct{ Count int }
		if ev.State["count"] != "" {
			fmt.Sscan(ev.State["count"], &st.Count)
		}
		if ev.Window.Start.IsZero() || !ev.Window.End.Equal(ev.Window.Start.Add(time.Second)) || ev.ShardID == "" {
			bad = append(bad, string(payload))
		}
		for _, r := range ev.Records {
			if r.EventSource != "aws:dynamodb" || r.Change.Keys["id"].DataType() != events.DataTypeString {
				bad = append(bad, string(payload))
			}
		}
		st.Count += len(ev.Records)
		if ev.IsFinalInvokeForWindow {
			finals++
			records += st.Count
		}
		return []byte(fmt.Sprintf(`{"state":{"count":"%d"},"batchItemFailures":[]}`, st.Count)), nil
	})
	v.run(engine.Mapping{
		Name: "agg", Stream: "changes", Source: v.source("changes"), Function: "agg", Invoker: gofunc.NewInvoke(h),
		StartingPosition: source.TrimHorizon, BatchSize: 2, TumblingWindow: time.Second, EventFormat: idem.EventFormatDynamoDB,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond,
	})
	waitFor(t, "the windows' final invocations", func() bool { mu.Lock(); defer mu.Unlock(); return records == 3 })
	mu.Lock()
	defer mu.Unlock()
	if finals == 0 || len(bad) > 0 {
		t.Errorf("%d final invocations; events not as a DynamoDBTimeWindowEvent: %q", finals, bad)
	}
}

// TestDynamoDBEventFormatRefused: a DynamoDBEvent mapping's filters name
// the record's fields; a pattern on another is refused at start, naming
// it.
func TestDynamoDBEventFormatRefused(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	m := engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New((&recorder{}).handler()),
		StartingPosition: source.TrimHorizon, EventFormat: idem.EventFormatDynamoDB, TumblingWindow: time.Minute, ReportBatchItemFailures: true,
		Filters: []string{`{"data": {"eventName": ["INSERT"]}}`}}
	err := m.Validate()
	const want = "filterCriteria.filters[0].pattern: data: dynamodb events are filtered on awsRegion, dynamodb, eventID, eventName, eventSource, eventSourceARN, eventVersion, userIdentity only"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "tumblingWindow") || strings.Contains(err.Error(), "functionResponseTypes") {
		t.Errorf("Validate() = %v, want only %q", err, want)
	}
	m.EventFormat = "sqs"
	m.Filters = nil
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), `eventFormat: "sqs" is not kinesis, kafka, s3 or dynamodb`) {
		t.Errorf("Validate() = %v", err)
	}
}
