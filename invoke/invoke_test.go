package invoke_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/function/httpfn"
	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// env is a Service over a real embedded data directory, served by an
// httptest server, and an aws-sdk-go-v2 Lambda client pointed at it.
type env struct {
	db     *pebbledb.DB
	svc    *invoke.Service
	srv    *httptest.Server
	client *lambda.Client
	stop   func()
}

// start opens dir (a new temporary one when empty), makes the streams and
// the Service of fns, serves its Invoke API and runs its queues until the
// test ends.
func start(t *testing.T, dir string, streams []string, fns ...invoke.Function) *env {
	t.Helper()
	return startWith(t, dir, nil, streams, fns...)
}

// startWith is start with claims kept in claims, as idem processes sharing
// a PostgreSQL store keep them; nil for the embedded store of dir.
func startWith(t *testing.T, dir string, claims store.Claims, streams []string, fns ...invoke.Function) *env {
	t.Helper()
	db, svc := open(t, dir, claims, streams, fns...)
	mux := http.NewServeMux()
	mux.Handle(invoke.Route, svc)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e := &env{db: db, svc: svc, srv: srv, client: newClient(srv.URL, "secret")}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			srv.Close()
			db.Close()
		})
	}
	t.Cleanup(e.stop)
	return e
}

// open opens dir (a new temporary one when empty), makes the streams and
// the Service of fns with its claims in claims (nil: the embedded store of
// dir), without running its queues. The caller closes the DB.
func open(t *testing.T, dir string, claims store.Claims, streams []string, fns ...invoke.Function) (*pebbledb.DB, *invoke.Service) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	db, err := pebbledb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		if err := db.CreateStream(s, 1, 24*time.Hour); err != nil {
			db.Close()
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if claims == nil {
		claims = stembedded.New(db)
	}
	svc, err := invoke.New(db, claims, fns, invoke.WithLogger(log))
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db, svc
}

// newClient is the AWS SDK's Lambda client with idem as its endpoint, and
// no retries: every call is one invocation.
func newClient(url, secret string) *lambda.Client {
	return lambda.New(lambda.Options{
		BaseEndpoint: aws.String(url),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("idem", secret, ""),
		Retryer:      aws.NopRetryer{},
	})
}

// withHeader adds a request header to an SDK call.
func withHeader(k, v string) func(*lambda.Options) {
	return func(o *lambda.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return smithyhttp.AddHeaderValue(k, v)(st)
		})
	}
}

func goFunction(name string, h idem.InvokeFunc) invoke.Function {
	return invoke.Function{Name: name, Driver: gofunc.NewInvoke(h), Timeout: 5 * time.Second}
}

func echo(_ context.Context, p []byte) ([]byte, error) { return p, nil }

func TestSyncGoFunction(t *testing.T) {
	e := start(t, "", nil, goFunction("echo", echo), goFunction("fail", func(context.Context, []byte) ([]byte, error) {
		return nil, errors.New("out of stock")
	}))
	ctx := context.Background()
	out, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"order":42}`), LogType: types.LogTypeTail})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if out.StatusCode != 200 || string(out.Payload) != `{"order":42}` || out.FunctionError != nil || aws.ToString(out.ExecutedVersion) != "$LATEST" {
		t.Fatalf("Invoke = %d %q %v %v", out.StatusCode, out.Payload, out.FunctionError, out.ExecutedVersion)
	}
	if log, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult)); !strings.HasPrefix(string(log), "START RequestId: ") {
		t.Errorf("LogResult = %q", log)
	}
	// By ARN, with a qualifier, and with an empty payload ({}).
	out, err = e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("arn:aws:lambda:us-east-1:123456789012:function:echo"), Qualifier: aws.String("$LATEST")})
	if err != nil || string(out.Payload) != "{}" {
		t.Fatalf("Invoke by ARN = %v, %v", out, err)
	}

	out, err = e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("fail"), Payload: []byte(`{}`)})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if out.StatusCode != 200 || aws.ToString(out.FunctionError) != "Unhandled" ||
		string(out.Payload) != `{"errorMessage":"out of stock","errorType":"errorString"}` {
		t.Fatalf("function error = %d %v %s", out.StatusCode, aws.ToString(out.FunctionError), out.Payload)
	}

	var nf *types.ResourceNotFoundException
	if _, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("nope")}); !errors.As(err, &nf) {
		t.Fatalf("unknown function: %v, want ResourceNotFoundException", err)
	}
	if _, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Qualifier: aws.String("7")}); !errors.As(err, &nf) {
		t.Fatalf("version 7: %v, want ResourceNotFoundException", err)
	}
	var bad *types.InvalidRequestContentException
	if _, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte("not json")}); !errors.As(err, &bad) {
		t.Fatalf("payload not JSON: %v, want InvalidRequestContentException", err)
	}
	dry, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), InvocationType: types.InvocationTypeDryRun})
	if err != nil || dry.StatusCode != 204 {
		t.Fatalf("DryRun = %v, %v", dry, err)
	}
}

func TestPayloadTooLarge(t *testing.T) {
	e := start(t, "", nil, goFunction("echo", echo))
	var tooLarge *types.RequestTooLargeException
	big := append(append([]byte(`"`), bytes.Repeat([]byte("a"), 6<<20-1)...), '"') // 6 MB + 1
	_, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: big})
	if !errors.As(err, &tooLarge) {
		t.Fatalf("6 MB + 1: %v, want RequestTooLargeException", err)
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusRequestEntityTooLarge {
		t.Fatalf("6 MB + 1: %v, want 413", err)
	}
	exact := big[:6<<20]
	exact[len(exact)-1] = '"'
	out, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: exact})
	if err != nil || len(out.Payload) != 6<<20 {
		t.Fatalf("6 MB: %v", err)
	}
	// Event payloads are limited to 1 MB, as Lambda's.
	_, err = e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: exact[len(exact)-(1<<20)-1:], InvocationType: types.InvocationTypeEvent})
	if !errors.As(err, &tooLarge) {
		t.Fatalf("2 MB Event: %v, want RequestTooLargeException", err)
	}
}

func TestSyncHTTPFunction(t *testing.T) {
	fnSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte("fail")) {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"errorType":"ValidationError","errorMessage":"bad order"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"got":%s,"requestId":%q,"clientContext":%s}`, body, r.Header.Get("Lambda-Runtime-Aws-Request-Id"),
			cmpOr(r.Header.Get("Lambda-Runtime-Client-Context"), "null"))
	}))
	defer fnSrv.Close()
	d, err := httpfn.New(fnSrv.URL, httpfn.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, "", nil, invoke.Function{Name: "web", Driver: d, Timeout: 5 * time.Second})
	cc := base64.StdEncoding.EncodeToString([]byte(`{"custom":{"tenant":"t1"}}`))
	out, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("web"), Payload: []byte(`{"a":1}`), ClientContext: aws.String(cc)})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Got           map[string]int `json:"got"`
		RequestID     string         `json:"requestId"`
		ClientContext struct {
			Custom map[string]string `json:"custom"`
		} `json:"clientContext"`
	}
	if err := json.Unmarshal(out.Payload, &got); err != nil {
		t.Fatalf("payload %s: %v", out.Payload, err)
	}
	if got.Got["a"] != 1 || len(got.RequestID) != 36 || got.ClientContext.Custom["tenant"] != "t1" {
		t.Fatalf("the function got %+v", got)
	}
	out, err = e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("web"), Payload: []byte(`"fail"`)})
	if err != nil || aws.ToString(out.FunctionError) != "Unhandled" || string(out.Payload) != `{"errorMessage":"bad order","errorType":"ValidationError"}` {
		t.Fatalf("function error = %v %s", err, out.Payload)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// buildEcho builds function/process/testdata/echo, an aws-lambda-go
// function, as its author would.
func buildEcho(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-o", bin, "./function/process/testdata/echo")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestSyncProcessFunction(t *testing.T) {
	bin := buildEcho(t)
	p, err := process.New(process.Config{Name: "echo", Command: bin, Timeout: 10 * time.Second},
		process.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	e := start(t, "", []string{"failed"}, invoke.Function{Name: "echo", Driver: p, Timeout: 10 * time.Second,
		Async: invoke.Async{OnFailure: "failed", PermanentErrorTypes: []string{"ValidationError"}}})
	ctx := context.Background()
	out, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"n": [1, 2, 3]}`)})
	// aws-lambda-go encodes the handler's json.RawMessage again: compact.
	if err != nil || string(out.Payload) != `{"n":[1,2,3]}` || out.FunctionError != nil {
		t.Fatalf("Invoke = %+v, %v", out, err)
	}
	cc := base64.StdEncoding.EncodeToString([]byte(`{"custom":{"tenant":"t1"}}`))
	out, err = e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"whoami":true}`), ClientContext: aws.String(cc)})
	if err != nil {
		t.Fatal(err)
	}
	var who struct {
		RequestID     string            `json:"requestId"`
		ClientContext map[string]string `json:"clientContext"`
	}
	if err := json.Unmarshal(out.Payload, &who); err != nil || len(who.RequestID) != 36 || who.ClientContext["tenant"] != "t1" {
		t.Fatalf("whoami = %s (%v)", out.Payload, err)
	}
	out, err = e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(`{"fail":"no such order"}`)})
	if err != nil || aws.ToString(out.FunctionError) != "Unhandled" || string(out.Payload) != `{"errorMessage":"no such order","errorType":"ValidationError"}` {
		t.Fatalf("function error = %v %s", err, out.Payload)
	}

	// Asynchronously, a permanent error type goes to the on-failure stream
	// after one attempt.
	out, err = e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), InvocationType: types.InvocationTypeEvent, Payload: []byte(`{"fail":"no such order"}`)})
	if err != nil || out.StatusCode != 202 {
		t.Fatalf("Event = %v, %v", out, err)
	}
	var recs []idem.Record
	waitFor(t, "the on-failure record", func() bool { recs = records(t, e.db, "failed"); return len(recs) == 2 })
	var fr failureRecord
	if err := json.Unmarshal(recs[0].Data, &fr); err != nil || fr.RequestContext.ApproximateInvokeCount != 1 ||
		fr.ResponsePayload == nil || fr.ResponsePayload.ErrorType != "ValidationError" {
		t.Errorf("failure record = %s", recs[0].Data)
	}
}

// counted is a Go function that counts its runs and fails with err when
// err is not nil.
type counted struct {
	runs  atomic.Int64
	err   error
	delay time.Duration
}

func (c *counted) handle(_ context.Context, p []byte) ([]byte, error) {
	n := c.runs.Add(1)
	time.Sleep(c.delay)
	if c.err != nil {
		return nil, c.err
	}
	return fmt.Appendf(nil, `{"run":%d,"payload":%s}`, n, p), nil
}

// records reads every record of a one-shard stream.
func records(t *testing.T, db *pebbledb.DB, stream string) []idem.Record {
	t.Helper()
	res, err := db.Read(context.Background(), stream, pebbledb.ShardID(0), "", 1000, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	return res.Records
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type failureRecord struct {
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	RequestPayload  json.RawMessage `json:"requestPayload"`
	ResponseContext *struct {
		StatusCode      int    `json:"statusCode"`
		ExecutedVersion string `json:"executedVersion"`
		FunctionError   string `json:"functionError"`
	} `json:"responseContext"`
	ResponsePayload *struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	} `json:"responsePayload"`
}

// ValidationError is an error type permanentErrorTypes names.
type ValidationError struct{}

func (ValidationError) Error() string { return "invalid order" }

func TestAsyncRetriesThenOnFailure(t *testing.T) {
	for _, tt := range []struct {
		name        string
		err         error
		retries     int
		wantInvokes int
	}{
		{"retries exhausted", errors.New("downstream is down"), 2, 3},
		{"one retry", errors.New("downstream is down"), 1, 2},
		{"no retry", errors.New("downstream is down"), 0, 1},
		{"permanent error type", ValidationError{}, 2, 1},
		{"idem.Permanent", idem.Permanent(errors.New("bad data")), 2, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &counted{err: tt.err}
			fn := goFunction("f", c.handle)
			fn.Async = invoke.Async{OnFailure: "failed", PermanentErrorTypes: []string{"ValidationError"}, BaseDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond}
			fn.Async.RetryAttempts(tt.retries)
			e := start(t, "", []string{"failed"}, fn)
			out, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"),
				InvocationType: types.InvocationTypeEvent, Payload: []byte(`{"order":7}`)})
			if err != nil || out.StatusCode != http.StatusAccepted {
				t.Fatalf("Invoke Event = %+v, %v", out, err)
			}
			var recs []idem.Record
			waitFor(t, "the on-failure records", func() bool { recs = records(t, e.db, "failed"); return len(recs) >= 2 })
			time.Sleep(100 * time.Millisecond) // no further run comes
			if got := c.runs.Load(); got != int64(tt.wantInvokes) {
				t.Errorf("the function ran %d times, want %d", got, tt.wantInvokes)
			}
			if recs = records(t, e.db, "failed"); len(recs) != 2 {
				t.Fatalf("%d records in the on-failure stream, want 2", len(recs))
			}
			var fr failureRecord
			if err := json.Unmarshal(recs[0].Data, &fr); err != nil {
				t.Fatalf("failure record %s: %v", recs[0].Data, err)
			}
			rc := fr.RequestContext
			if rc.Condition != "RetriesExhausted" || rc.ApproximateInvokeCount != tt.wantInvokes || rc.FunctionArn != invoke.FunctionArn("us-east-1", "f") ||
				string(fr.RequestPayload) != `{"order":7}` || fr.ResponseContext == nil || fr.ResponseContext.FunctionError != "Unhandled" ||
				fr.ResponsePayload == nil || fr.ResponsePayload.ErrorMessage != tt.err.Error() {
				t.Errorf("failure record = %s", recs[0].Data)
			}
			if string(recs[1].Data) != `{"order":7}` || recs[1].PartitionKey != rc.RequestID {
				t.Errorf("event record = %q under %q, want the payload under the request id %q", recs[1].Data, recs[1].PartitionKey, rc.RequestID)
			}
		})
	}
}

func TestAsyncEventAgeExceeded(t *testing.T) {
	c := &counted{err: errors.New("down")}
	fn := goFunction("f", c.handle)
	fn.Async = invoke.Async{OnFailure: "failed", MaximumEventAge: 300 * time.Millisecond, BaseDelay: time.Hour, MaxDelay: time.Hour}
	e := start(t, "", []string{"failed"}, fn)
	if _, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"),
		InvocationType: types.InvocationTypeEvent, Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	var recs []idem.Record
	waitFor(t, "the on-failure record", func() bool { recs = records(t, e.db, "failed"); return len(recs) == 2 })
	var fr failureRecord
	_ = json.Unmarshal(recs[0].Data, &fr)
	if fr.RequestContext.Condition != "EventAgeExceeded" || fr.RequestContext.ApproximateInvokeCount != 1 || c.runs.Load() != 1 {
		t.Errorf("failure record %s after %d runs", recs[0].Data, c.runs.Load())
	}
}

func TestAsyncSuccessRunsOnce(t *testing.T) {
	c := &counted{}
	e := start(t, "", nil, goFunction("f", c.handle))
	for i := range 20 {
		if _, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"),
			InvocationType: types.InvocationTypeEvent, Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "20 runs", func() bool { return c.runs.Load() == 20 })
	// Done events leave the queue.
	waitFor(t, "the queue to be trimmed", func() bool { return len(records(t, e.db, invoke.QueueStream("f"))) == 0 })
	time.Sleep(100 * time.Millisecond)
	if n := c.runs.Load(); n != 20 {
		t.Errorf("%d runs, want 20", n)
	}
}

// TestAsyncSurvivesRestart queues events while the queues do not run, and
// runs them after the data directory is reopened: the 202 answer was
// durable. Events done before the restart do not run again.
func TestAsyncSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	db, err := pebbledb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := &counted{}
	svc, err := invoke.New(db, stembedded.New(db), []invoke.Function{goFunction("f", c.handle)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := svc.Enqueue(context.Background(), invoke.Request{Function: "f", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close() // never ran
	if c.runs.Load() != 0 {
		t.Fatal("ran before Run")
	}

	e := start(t, dir, nil, goFunction("f", c.handle))
	waitFor(t, "3 runs", func() bool { return c.runs.Load() == 3 })
	e.stop()

	e = start(t, dir, nil, goFunction("f", c.handle))
	time.Sleep(200 * time.Millisecond)
	if n := c.runs.Load(); n != 3 {
		t.Errorf("%d runs after a second restart, want 3", n)
	}
}

// TestAsyncRetryStateSurvivesRestart: an event that failed once and waits
// for its retry keeps its attempt count across a restart.
func TestAsyncRetryStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := &counted{err: errors.New("down")}
	fn := goFunction("f", c.handle)
	fn.Async = invoke.Async{OnFailure: "failed", BaseDelay: 300 * time.Millisecond, MaxDelay: 300 * time.Millisecond}
	fn.Async.RetryAttempts(1)
	e := start(t, dir, []string{"failed"}, fn)
	if _, err := e.svc.Enqueue(context.Background(), invoke.Request{Function: "f", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first run's attempt to be committed", func() bool {
		_, err := e.db.State(context.Background(), invoke.QueueStream("f"), string(idem.SequenceOf(1)))
		return err == nil
	})
	e.stop()

	e = start(t, dir, []string{"failed"}, fn)
	var recs []idem.Record
	waitFor(t, "the on-failure record", func() bool { recs = records(t, e.db, "failed"); return len(recs) == 2 })
	var fr failureRecord
	_ = json.Unmarshal(recs[0].Data, &fr)
	if n := c.runs.Load(); n != 2 || fr.RequestContext.ApproximateInvokeCount != 2 {
		t.Errorf("%d runs, approximateInvokeCount %d; want 2 (1 + 1 retry)", n, fr.RequestContext.ApproximateInvokeCount)
	}
}

func TestIdempotentConcurrentRepeats(t *testing.T) {
	c := &counted{delay: 200 * time.Millisecond}
	e := start(t, "", nil, goFunction("f", c.handle))
	const n = 50
	results := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"), Payload: []byte(`{"order":1}`)},
				withHeader("Idempotency-Key", "order-1"))
			if err != nil {
				t.Errorf("Invoke %d: %v", i, err)
				return
			}
			results[i] = string(out.Payload)
		}()
	}
	wg.Wait()
	if got := c.runs.Load(); got != 1 {
		t.Fatalf("the function ran %d times for one key, want 1", got)
	}
	for i, r := range results {
		if r != `{"run":1,"payload":{"order":1}}` {
			t.Errorf("result %d = %q", i, r)
		}
	}
	// A later repeat gets the stored result too, marked as a replay.
	resp := post(t, e.srv.URL+"/2015-03-31/functions/f/invocations", `{"order":1}`, "Idempotency-Key", "order-1")
	if resp.code != 200 || resp.body != `{"run":1,"payload":{"order":1}}` || resp.header.Get(invoke.HeaderReplayed) != "true" {
		t.Errorf("repeat = %+v", resp)
	}
	// Another payload under the same key is refused.
	var ae smithy.APIError
	_, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"), Payload: []byte(`{"order":2}`)},
		withHeader("Idempotency-Key", "order-1"))
	var re *smithyhttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != "IdempotencyPayloadMismatchException" || !errors.As(err, &re) || re.HTTPStatusCode() != 422 {
		t.Fatalf("another payload: %v, want 422 IdempotencyPayloadMismatchException", err)
	}
	if got := c.runs.Load(); got != 1 {
		t.Fatalf("the function ran %d times, want 1", got)
	}
}

func TestIdempotencyKeyExpressionAndNoWait(t *testing.T) {
	c := &counted{delay: 300 * time.Millisecond}
	fn := goFunction("f", c.handle)
	fn.IdempotencyKey = "order.id"
	e := start(t, "", nil, fn)
	url := e.srv.URL + "/2015-03-31/functions/f/invocations"
	first := make(chan response)
	go func() { first <- post(t, url, `{"order":{"id":"A"}}`) }()
	waitFor(t, "the first run", func() bool { return c.runs.Load() == 1 })
	if r := post(t, url, `{"order":{"id":"A"}}`, "Idempotency-Wait", "false"); r.code != http.StatusConflict || r.header.Get("X-Amzn-Errortype") != "ResourceConflictException" {
		t.Errorf("repeat with Idempotency-Wait: false = %+v, want 409", r)
	}
	if r := <-first; r.code != 200 {
		t.Fatalf("first = %+v", r)
	}
	if r := post(t, url, `{"order":{"id":"A"}}`); r.code != 200 || r.header.Get(invoke.HeaderReplayed) != "true" {
		t.Errorf("repeat = %+v", r)
	}
	if r := post(t, url, `{"order":{"id":"B"}}`); r.code != 200 || r.header.Get(invoke.HeaderReplayed) != "" {
		t.Errorf("other key = %+v", r)
	}
	if r := post(t, url, `{"no":"key"}`); r.code != 400 || !strings.Contains(r.body, "order.id") {
		t.Errorf("payload without a key = %+v, want 400 naming the expression", r)
	}
	if n := c.runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2", n)
	}
}

func TestIdempotentFailureRunsAgain(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	var runs atomic.Int64
	e := start(t, "", nil, goFunction("f", func(context.Context, []byte) ([]byte, error) {
		runs.Add(1)
		if fail.Load() {
			return nil, errors.New("flaky")
		}
		return []byte(`"ok"`), nil
	}))
	url := e.srv.URL + "/2015-03-31/functions/f/invocations"
	if r := post(t, url, `{}`, "Idempotency-Key", "k"); r.header.Get("X-Amz-Function-Error") != "Unhandled" {
		t.Fatalf("first = %+v", r)
	}
	fail.Store(false)
	for range 2 {
		if r := post(t, url, `{}`, "Idempotency-Key", "k"); r.body != `"ok"` {
			t.Fatalf("repeat = %+v", r)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2: a failure is not kept, a success is", n)
	}
}

func TestAsyncIdempotentEnqueue(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int64
	e := start(t, "", nil, goFunction("f", func(_ context.Context, p []byte) ([]byte, error) {
		runs.Add(1)
		<-release
		return p, nil
	}))
	url := e.srv.URL + "/2015-03-31/functions/f/invocations"
	r := post(t, url, `{"a":1}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k1")
	if r.code != 202 || r.header.Get(invoke.HeaderReplayed) != "" {
		t.Fatalf("first Event = %+v", r)
	}
	for range 3 {
		if r := post(t, url, `{"a":1}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k1"); r.code != 202 || r.header.Get(invoke.HeaderReplayed) != "true" {
			t.Fatalf("repeated Event = %+v", r)
		}
	}
	if r := post(t, url, `{"a":2}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k1"); r.code != 422 {
		t.Fatalf("Event with another payload = %+v, want 422", r)
	}
	if n := len(records(t, e.db, invoke.QueueStream("f"))); n != 1 {
		t.Errorf("%d events queued, want 1", n)
	}
	close(release)
	waitFor(t, "the run", func() bool { return runs.Load() == 1 })
	// Completed: a synchronous repeat gets the result without a run.
	waitFor(t, "the replay", func() bool {
		r := post(t, url, `{"a":1}`, "Idempotency-Key", "k1")
		return r.header.Get(invoke.HeaderReplayed) == "true" && r.body == `{"a":1}`
	})
	if r := post(t, url, `{"a":1}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k1"); r.header.Get(invoke.HeaderReplayed) != "true" {
		t.Fatalf("Event after completion = %+v", r)
	}
	time.Sleep(100 * time.Millisecond)
	if n := runs.Load(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

func TestBatchHandlerCannotTakePayload(t *testing.T) {
	e := start(t, "", nil, invoke.Function{Name: "counter", Unavailable: "it is an in-process Go batch handler"},
		invoke.Function{Name: "batch", Driver: gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))})
	for _, name := range []string{"counter", "batch"} {
		var bad *types.InvalidParameterValueException
		_, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(`{}`)})
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), "batch handler") {
			t.Errorf("%s: %v, want InvalidParameterValueException about a batch handler", name, err)
		}
	}
}

type response struct {
	code   int
	header http.Header
	body   string
}

// post sends a raw Invoke API request with header pairs.
func post(t *testing.T, url, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return response{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}
}

// TestQueueStatus: a function's queue reports what waits, what runs and
// what became of the rest.
func TestQueueStatus(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int64
	e := start(t, "", nil, goFunction("f", func(ctx context.Context, p []byte) ([]byte, error) {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return p, nil
	}))
	for i := range 5 {
		if _, err := e.client.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("f"),
			InvocationType: types.InvocationTypeEvent, Payload: fmt.Appendf(nil, `{"i":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a run to start", func() bool { return runs.Load() > 0 })
	st := e.svc.Status(context.Background())
	if len(st) != 1 || st[0].Function != "f" || st[0].Queued != 5 || st[0].Dispatched < 1 || st[0].Processed != 0 {
		t.Fatalf("status while blocked: %+v, want 5 queued, some dispatched", st)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = e.svc.Status(context.Background())
		if st[0].Queued == 0 && st[0].Processed == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after release: %+v", st[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st[0].Dispatched != 0 || st[0].OldestAgeMs != 0 {
		t.Errorf("status when drained: %+v", st[0])
	}
}
