package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

// s3Sink is an invoke handler that decodes each payload as
// aws-lambda-go's events.S3Event and keeps it; it fails with fail, when
// set.
type s3Sink struct {
	mu     sync.Mutex
	events []events.S3Event
	bad    []string // payloads that are not an S3Event of one record
	fail   error
}

func (f *s3Sink) invoke(_ context.Context, payload []byte) ([]byte, error) {
	var ev events.S3Event
	err := json.Unmarshal(payload, &ev)
	f.mu.Lock()
	if err != nil || len(ev.Records) != 1 {
		f.bad = append(f.bad, string(payload))
	} else {
		f.events = append(f.events, ev)
	}
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return []byte(`{}`), nil
}

// setFail sets the error the function fails with; nil: it succeeds.
func (f *s3Sink) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

// keys returns the object keys of the events run, in order.
func (f *s3Sink) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, ev := range f.events {
		out = append(out, ev.Records[0].S3.Object.Key)
	}
	return out
}

func (f *s3Sink) runs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events) + len(f.bad)
}

// CorruptImageError is a function error caused by the object's data, which
// permanentErrorTypes lists.
type CorruptImageError struct{}

func (CorruptImageError) Error() string { return "not an image" }

// s3Record is one notification record as MinIO and S3 write it: the
// object key, the event's time and sequencer, and the id of the request
// that carried it (which a redelivery may change).
func s3Record(key, eventTime, sequencer, requestID string) string {
	k, _ := json.Marshal(key)
	return fmt.Sprintf(`{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":%q,"eventName":"s3:ObjectCreated:Put",`+
		`"userIdentity":{"principalId":"minioadmin"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},`+
		`"responseElements":{"x-amz-request-id":%q,"x-minio-origin-endpoint":"http://127.0.0.1:9000"},`+
		`"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"photos","ownerIdentity":{"principalId":"minioadmin"},"arn":"arn:aws:s3:::photos"},`+
		`"object":{"key":%s,"size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e","contentType":"image/jpeg","sequencer":%q}}}`,
		eventTime, requestID, k, sequencer)
}

// notification is a notification document of records.
func notification(records ...string) string {
	return `{"EventName":"s3:ObjectCreated:Put","Key":"photos/x","Records":[` + strings.Join(records, ",") + `]}`
}

const testNotification = `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-06T02:33:29.000Z","Bucket":"photos","RequestId":"R","HostId":"H"}`

// s3Post posts a notification to function fn's S3 events route with the
// token, and returns the status and the decoded answer.
func s3Post(t *testing.T, addr, fn, body string) (int, server.S3EventsResponse, string) {
	t.Helper()
	code, b := call(t, "POST", "http://"+addr+"/v1/functions/"+fn+"/s3-events", "Bearer "+token, body)
	var out server.S3EventsResponse
	if code == 200 {
		if err := json.Unmarshal([]byte(b), &out); err != nil {
			t.Fatalf("answer %s: %v", b, err)
		}
	}
	return code, out, b
}

// s3Server serves functions "thumbs" (s3Sink) and "bykey" (s3Sink, keyed by
// object key), with tokens.
func s3Server(t *testing.T, log *bytes.Buffer) (addr string, thumbs, bykey *s3Sink) {
	t.Helper()
	thumbs, bykey = &s3Sink{}, &s3Sink{}
	addr = serve(t, `
auth: {tokens: [`+token+`], readTokens: [`+readToken+`]}
functions:
  - name: thumbs
  - name: bykey
    idempotency: {key: "Records[0].s3.object.key"}
  - name: batch
`, log, server.WithInvokeHandler("thumbs", idem.InvokeFunc(thumbs.invoke)),
		server.WithInvokeHandler("bykey", idem.InvokeFunc(bykey.invoke)),
		server.WithHandler("batch", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })))
	return addr, thumbs, bykey
}

// marker sends a notification of one new object to thumbs and waits until
// it ran, so that whatever was queued before it had its chance to run.
func marker(t *testing.T, addr string, thumbs *s3Sink, key string) {
	t.Helper()
	if code, out, b := s3Post(t, addr, "thumbs", notification(s3Record(key, "2026-12-06T09:00:00.000Z", "MARK", "RM"))); code != 200 || out.Queued != 1 {
		t.Fatalf("marker %s: %d %s", key, code, b)
	}
	eventually(t, "the marker "+key, func() bool { return len(thumbs.keys()) > 0 && thumbs.keys()[len(thumbs.keys())-1] == key })
}

// TestS3EventsTestNotification: a test notification is 200 and runs
// nothing; one to a function that does not exist is 404, as the Invoke
// API answers it.
func TestS3EventsTestNotification(t *testing.T) {
	addr, thumbs, _ := s3Server(t, nil)
	code, out, b := s3Post(t, addr, "thumbs", testNotification)
	if code != 200 || !out.Test || strings.TrimSpace(b) != `{"test":true}` {
		t.Fatalf("test notification: %d %s", code, b)
	}
	code, b, h := callHeader(t, "POST", "http://"+addr+"/v1/functions/nope/s3-events", "Bearer "+token, testNotification)
	if code != 404 || h.Get("X-Amzn-Errortype") != "ResourceNotFoundException" || !strings.Contains(b, "function:nope") {
		t.Errorf("unknown function: %d %s %v, want 404 ResourceNotFoundException", code, b, h)
	}
	code, b, h = callHeader(t, "POST", "http://"+addr+"/v1/functions/batch/s3-events", "Bearer "+token, notification(s3Record("a", "t", "1", "r")))
	if code != 400 || h.Get("X-Amzn-Errortype") != "InvalidParameterValueException" {
		t.Errorf("a batch handler: %d %s, want 400 as the Invoke API answers", code, b)
	}
	marker(t, addr, thumbs, "after-test")
	if keys := thumbs.keys(); len(keys) != 1 {
		t.Errorf("runs %v, want the marker's alone", keys)
	}
}

// TestS3EventsBadBodies: a body that is not a notification is 400 naming
// the field, and queues nothing, not even its valid records; a body over
// 6 MiB is 413 naming the limit.
func TestS3EventsBadBodies(t *testing.T) {
	addr, thumbs, _ := s3Server(t, nil)
	good := s3Record("good.jpg", "2026-12-06T02:33:29.000Z", "1", "R1")
	noKey := strings.Replace(s3Record("x", "2026-12-06T02:33:29.000Z", "2", "R2"), `"key":"x",`, "", 1)
	for _, c := range []struct{ name, body, says string }{
		{"not JSON", `Records: []`, "not a JSON object"},
		{"empty", ``, "not a JSON object"},
		{"no records", `{"EventName":"s3:ObjectCreated:Put"}`, "Records: missing"},
		{"empty records", `{"Records":[]}`, "Records: is empty"},
		{"records not a list", `{"Records":{}}`, "Records"},
		{"second record without a key", notification(good, noKey), "Records[1].s3.object.key: missing"},
		{"two documents", notification(good) + notification(good), "more than one JSON value"},
	} {
		code, b, h := callHeader(t, "POST", "http://"+addr+"/v1/functions/thumbs/s3-events", "Bearer "+token, c.body)
		if code != 400 || !strings.Contains(b, c.says) || h.Get("X-Amzn-Errortype") != "InvalidRequestContentException" {
			t.Errorf("%s: %d %s, want 400 InvalidRequestContentException saying %q", c.name, code, b, c.says)
		}
	}
	big := notification(strings.Replace(good, `"image/jpeg"`, `"`+strings.Repeat("x", 6<<20)+`"`, 1))
	if code, b := call(t, "POST", "http://"+addr+"/v1/functions/thumbs/s3-events", "Bearer "+token, big); code != 413 || !strings.Contains(b, fmt.Sprint(6<<20)) {
		t.Errorf("a 6 MiB record: %d %.200s, want 413 naming the limit", code, b)
	}
	marker(t, addr, thumbs, "after-bad")
	if keys := thumbs.keys(); len(keys) != 1 {
		t.Errorf("runs %v, want the marker's alone", keys)
	}
}

// TestS3EventsOncePerEvent: a notification delivered twice runs once,
// and so does a redelivery that differs in fields other than the event's
// identity (the request id); two uploads of one key run twice; every
// record of a notification runs, each as an S3Event of its own that
// aws-lambda-go decodes. The counter counts each outcome.
func TestS3EventsOncePerEvent(t *testing.T) {
	addr, thumbs, _ := s3Server(t, nil)
	first := s3Record("cats/café.jpg", "2026-12-06T02:33:29.000Z", "0055AED6DCD90281E5", "REQ-1")
	n := notification(first)
	if code, out, b := s3Post(t, addr, "thumbs", n); code != 200 || out != (server.S3EventsResponse{Records: 1, Queued: 1}) {
		t.Fatalf("first delivery: %d %s", code, b)
	}
	eventually(t, "the first run", func() bool { return thumbs.runs() == 1 })
	if code, out, b := s3Post(t, addr, "thumbs", n); code != 200 || out != (server.S3EventsResponse{Records: 1, Duplicates: 1}) {
		t.Errorf("the same notification again: %d %s, want 200, a duplicate", code, b)
	}
	redelivered := notification(s3Record("cats/café.jpg", "2026-12-06T02:33:29.000Z", "0055AED6DCD90281E5", "REQ-2"))
	if code, out, b := s3Post(t, addr, "thumbs", redelivered); code != 200 || out.Duplicates != 1 {
		t.Errorf("a redelivery with another request id: %d %s, want a duplicate", code, b)
	}
	second := notification(s3Record("cats/café.jpg", "2026-12-06T02:40:00.000Z", "0055AED6DCD90299AA", "REQ-3"))
	if code, out, b := s3Post(t, addr, "thumbs", second); code != 200 || out.Queued != 1 {
		t.Errorf("a second upload of the key: %d %s, want it queued", code, b)
	}
	multi := notification(
		s3Record("a.jpg", "2026-12-06T03:00:00.000Z", "A1", "REQ-4"),
		s3Record("b.jpg", "2026-12-06T03:00:00.000Z", "B1", "REQ-4"),
		s3Record("c.jpg", "2026-12-06T03:00:00.000Z", "C1", "REQ-4"))
	if code, out, b := s3Post(t, addr, "thumbs", multi); code != 200 || out != (server.S3EventsResponse{Records: 3, Queued: 3}) {
		t.Errorf("three records: %d %s", code, b)
	}
	// Half delivered again, with one more record: only the new one runs.
	again := notification(
		s3Record("c.jpg", "2026-12-06T03:00:00.000Z", "C1", "REQ-5"),
		s3Record("d.jpg", "2026-12-06T03:00:00.000Z", "D1", "REQ-5"))
	if code, out, b := s3Post(t, addr, "thumbs", again); code != 200 || out != (server.S3EventsResponse{Records: 2, Queued: 1, Duplicates: 1}) {
		t.Errorf("a record again and a new one: %d %s", code, b)
	}
	marker(t, addr, thumbs, "zz-marker")
	keys := thumbs.keys()
	count := map[string]int{}
	for _, k := range keys {
		count[k]++
	}
	want := map[string]int{"cats/café.jpg": 2, "a.jpg": 1, "b.jpg": 1, "c.jpg": 1, "d.jpg": 1, "zz-marker": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) || len(thumbs.bad) != 0 {
		t.Errorf("runs by object key %v (payloads that are not a one-record S3Event: %q), want %v", count, thumbs.bad, want)
	}
	thumbs.mu.Lock()
	ev := thumbs.events[0].Records[0]
	thumbs.mu.Unlock()
	if ev.EventName != "s3:ObjectCreated:Put" || ev.S3.Bucket.Name != "photos" || ev.S3.Object.Size != 1024 ||
		ev.S3.Object.Sequencer != "0055AED6DCD90281E5" || ev.ResponseElements["x-amz-request-id"] != "REQ-1" {
		t.Errorf("the function got %+v, want the record as sent", ev)
	}

	code, metrics := call(t, "GET", "http://"+addr+"/metrics", "Bearer "+token, "")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, line := range []string{
		`idem_s3_notifications_total{function="thumbs",outcome="queued"} 7`,
		`idem_s3_notifications_total{function="thumbs",outcome="duplicate"} 3`,
	} {
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics has no line %s:\n%s", line, grepLines(metrics, "idem_s3_"))
		}
	}
}

// TestS3EventsKeyExpression: with idempotency.key naming the object key,
// the function's key wins over the event's identity: every version of a
// key runs once.
func TestS3EventsKeyExpression(t *testing.T) {
	addr, thumbs, bykey := s3Server(t, nil)
	v1 := notification(s3Record("report.pdf", "2026-12-06T02:33:29.000Z", "01", "REQ-1"))
	v2 := notification(s3Record("report.pdf", "2026-12-06T02:50:00.000Z", "02", "REQ-2"))
	if code, out, b := s3Post(t, addr, "bykey", v1); code != 200 || out.Queued != 1 {
		t.Fatalf("first version: %d %s", code, b)
	}
	eventually(t, "the first version's run", func() bool { return bykey.runs() == 1 })
	if code, out, b := s3Post(t, addr, "bykey", v2); code != 200 || out.Duplicates != 1 {
		t.Errorf("second version: %d %s, want a duplicate", code, b)
	}
	// Two versions to thumbs, keyed by the event, both run.
	for _, n := range []string{v1, v2} {
		if code, out, b := s3Post(t, addr, "thumbs", n); code != 200 || out.Queued != 1 {
			t.Errorf("to thumbs: %d %s", code, b)
		}
	}
	eventually(t, "thumbs' two runs", func() bool { return thumbs.runs() == 2 })
	// Send bykey a marker (another key) and wait for it: the second
	// version had its chance to run.
	if code, _, b := s3Post(t, addr, "bykey", notification(s3Record("marker", "2026-12-06T04:00:00.000Z", "1", "r"))); code != 200 {
		t.Fatalf("marker: %d %s", code, b)
	}
	eventually(t, "bykey's marker", func() bool { return bykey.runs() == 2 })
	if keys := bykey.keys(); fmt.Sprint(keys) != "[report.pdf marker]" {
		t.Errorf("bykey ran %v, want report.pdf once, then the marker", keys)
	}
}

// TestS3EventsAuth: with tokens, the route needs one, as Bearer or as the
// password of HTTP Basic authentication (what a webhook URL's userinfo
// becomes), whatever the user name; a wrong password, a read token, or a
// token in the query are refused; a Basic credential never reaches the
// log. Basic works on the other routes as Bearer does.
func TestS3EventsAuth(t *testing.T) {
	var log bytes.Buffer
	addr, thumbs, _ := s3Server(t, &log)
	route := "/v1/functions/thumbs/s3-events"
	body := notification(s3Record("auth.jpg", "2026-12-06T02:33:29.000Z", "1", "R"))
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	for _, c := range []struct {
		name, method, url, auth string
		want                    int
	}{
		{"no credentials", "POST", "http://" + addr + route, "", 403},
		{"token in the query", "POST", "http://" + addr + route + "?token=" + token, "", 403},
		{"wrong bearer", "POST", "http://" + addr + route, "Bearer " + token[:31] + "X", 403},
		{"wrong password", "POST", "http://" + addr + route, basic("idem", token[:31]+"X"), 403},
		{"token as the user name", "POST", "http://" + addr + route, basic(token, "x"), 403},
		{"basic without a colon", "POST", "http://" + addr + route, "Basic " + base64.StdEncoding.EncodeToString([]byte(token)), 403},
		{"read token as password", "POST", "http://" + addr + route, basic("idem", readToken), 403},
		{"bearer", "POST", "http://" + addr + route, "Bearer " + token, 200},
		{"basic", "POST", "http://" + addr + route, basic("idem", token), 200},
		{"basic, empty user", "POST", "http://" + addr + route, basic("", token), 200},
		// Go's net/http sends a URL's userinfo as Basic, as versitygw's
		// webhook does with --event-webhook-url http://idem:TOKEN@….
		{"userinfo", "POST", "http://idem:" + token + "@" + addr + route, "", 200},
		{"basic on status", "GET", "http://" + addr + "/v1/status", basic("x", token), 200},
		{"basic read token on status", "GET", "http://" + addr + "/v1/status", basic("x", readToken), 200},
	} {
		b := ""
		if c.method == "POST" {
			b = body
		}
		code, out := call(t, c.method, c.url, c.auth, b)
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, out, c.want)
		}
	}
	eventually(t, "the event's run", func() bool { return thumbs.runs() == 1 })
	for _, secret := range []string{token, base64.StdEncoding.EncodeToString([]byte("idem:" + token)), readToken} {
		if strings.Contains(log.String(), secret) {
			t.Errorf("the log holds a credential %q:\n%s", secret, log.String())
		}
	}
}

// TestS3EventsPermanentError: a function failing with an error type of
// async.permanentErrorTypes is attempted once, and the event lands in the
// on-failure destination: Lambda's failure record, then the S3Event.
func TestS3EventsPermanentError(t *testing.T) {
	sink := &s3Sink{fail: CorruptImageError{}}
	addr := serve(t, `
auth: {tokens: [`+token+`]}
streams: [{name: fn-failed, shards: 2}]
functions:
  - name: F
    async: {maximumRetryAttempts: 2, permanentErrorTypes: [CorruptImageError], onFailure: {stream: fn-failed}, retry: {baseDelay: 1s}}
`, nil, server.WithInvokeHandler("F", idem.InvokeFunc(sink.invoke)))
	rec := s3Record("brökén.jpg", "2026-12-06T02:33:29.000Z", "1", "R")
	if code, out, b := s3Post(t, addr, "F", notification(rec)); code != 200 || out.Queued != 1 {
		t.Fatalf("notification: %d %s", code, b)
	}
	eventually(t, "the event given up", func() bool { return queueOf(t, addr).Discarded == 1 })
	if n := failedRecords(t, addr); n != 2 {
		t.Fatalf("%d records in fn-failed, want the failure record and the event", n)
	}
	if n := sink.runs(); n != 1 {
		t.Errorf("the function ran %d times, want once: its error type is permanent", n)
	}
	var meta struct {
		RequestContext struct {
			Condition              string `json:"condition"`
			ApproximateInvokeCount int    `json:"approximateInvokeCount"`
		} `json:"requestContext"`
		RequestPayload  events.S3Event `json:"requestPayload"`
		ResponsePayload struct {
			ErrorType string `json:"errorType"`
		} `json:"responsePayload"`
	}
	found := false
	for _, sh := range []string{"shardId-000000000000", "shardId-000000000001"} {
		code, body := call(t, "GET", "http://"+addr+"/v1/streams/fn-failed/records?shard="+sh, "Bearer "+token, "")
		if code != 200 {
			t.Fatalf("fn-failed: %d %s", code, body)
		}
		var page server.RecordsResponse
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			if strings.Contains(r.Data, `"requestContext"`) {
				found = true
				if err := json.Unmarshal([]byte(r.Data), &meta); err != nil {
					t.Fatalf("failure record %s: %v", r.Data, err)
				}
			}
		}
	}
	if !found || meta.RequestContext.Condition != "RetriesExhausted" || meta.RequestContext.ApproximateInvokeCount != 1 ||
		meta.ResponsePayload.ErrorType != "CorruptImageError" || len(meta.RequestPayload.Records) != 1 ||
		meta.RequestPayload.Records[0].S3.Object.Key != "brökén.jpg" {
		t.Errorf("failure record %+v (found %v)", meta, found)
	}

	// Redriven once the function is fixed, the event is queued again
	// under its identity (a UTF-8 object key, which an Idempotency-Key
	// header could not carry): it runs once, and a late redelivery of the
	// notification is then a duplicate.
	sink.setFail(nil)
	if code, out, body := redrive(t, addr, server.RedriveRequest{From: "fn-failed", Function: "F"}); code != 200 || out.Sent != 1 {
		t.Fatalf("redrive: %d %.300s", code, body)
	}
	eventually(t, "the redriven event processed", func() bool { return queueOf(t, addr).Processed == 1 })
	if code, out, b := s3Post(t, addr, "F", notification(s3Record("brökén.jpg", "2026-12-06T02:33:29.000Z", "1", "R2"))); code != 200 || out.Duplicates != 1 {
		t.Fatalf("the notification again after the redrive: %d %s, want a duplicate", code, b)
	}
	if n := sink.runs(); n != 2 {
		t.Errorf("the function ran %d times, want 2 (the failure, the redrive)", n)
	}
}

// TestS3EventsStorageFailure: a notification whose records cannot be
// queued (the storage is closed) is answered 503 with Retry-After, never
// 2xx, so that the store sends it again.
func TestS3EventsStorageFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sink := &s3Sink{}
	cfg, err := config.Parse([]byte(fmt.Sprintf("dataDir: %s\nlisten: %s\nfunctions: [{name: thumbs}]\n", t.TempDir(), addr)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(cfg, server.WithInvokeHandler("thumbs", idem.InvokeFunc(sink.invoke)),
		server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done; s.Close() }()
	eventually(t, "the server up", func() bool { return s.Ready(context.Background()) == nil })
	s.CloseStorage()
	code, b, h := callHeader(t, "POST", "http://"+addr+"/v1/functions/thumbs/s3-events", "", notification(s3Record("a.jpg", "2026-12-06T02:33:29.000Z", "1", "R")))
	t.Logf("with the storage closed: %d %s", code, b)
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(b, "record 0 of 1") || h.Get("X-Amzn-Errortype") != "ServiceException" {
		t.Errorf("with the storage closed: %d %s %v, want 503 ServiceException naming the record, with Retry-After", code, b, h)
	}
}
