package httpfn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/httpfn"
)

var arrival = time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.UTC)

func batch(n int) *idem.Batch {
	recs := make([]idem.Record, n)
	for i := range recs {
		seq := uint64(1000 + i)
		recs[i] = idem.Record{
			Stream: "orders", ShardID: "shardId-000000000001", Sequence: idem.SequenceOf(seq),
			PartitionKey:   fmt.Sprintf("customer-%d", i%3),
			Data:           []byte(fmt.Sprintf(`{"order":%d,"note":"<é>\n"}`, i)),
			ArrivalTime:    arrival.Add(time.Duration(i) * time.Millisecond),
			IdempotencyKey: "orders/shardId-000000000001/" + strconv.FormatUint(seq, 10),
		}
	}
	return idem.NewBatch("orders-to-ship", "ship-order", fmt.Sprintf("inv-%d", n), recs, nil)
}

// newFunction serves h on a real local server and returns a Function that
// calls it; both are closed when the test ends.
func newFunction(t testing.TB, h http.HandlerFunc, opts ...httpfn.Option) (*httpfn.Function, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	f, err := httpfn.New(srv.URL+"/invoke", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.CloseIdleConnections()
		srv.Close()
	})
	return f, srv
}

func functionError(t *testing.T, err error) *function.Error {
	t.Helper()
	var fe *function.Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %#v, want a *function.Error", err)
	}
	return fe
}

// TestEvent: the request is what a Lambda function written with
// aws-lambda-go expects, plus idempotency keys, with Lambda's headers.
func TestEvent(t *testing.T) {
	b := batch(3)
	var (
		got     events.KinesisEvent
		keys    []string
		header  http.Header
		method  string
		path    string
		decoded error
	)
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		method, path, header = r.Method, r.URL.Path, r.Header.Clone()
		body, _ := io.ReadAll(r.Body)
		decoded = json.Unmarshal(body, &got)
		var withKeys struct {
			Records []struct {
				IdempotencyKey string `json:"idempotencyKey"`
			}
		}
		if err := json.Unmarshal(body, &withKeys); err != nil {
			decoded = err
		}
		for _, r := range withKeys.Records {
			keys = append(keys, r.IdempotencyKey)
		}
		io.WriteString(w, `{"batchItemFailures":[]}`)
	}, httpfn.Timeout(2*time.Second))

	start := time.Now()
	res, err := f.Invoke(context.Background(), b)
	if err != nil || len(res.Failures) != 0 || res.Invalid != "" || res.Native {
		t.Fatalf("got %+v, %v; want success", res, err)
	}
	if decoded != nil {
		t.Fatalf("events.KinesisEvent does not decode the request: %v", decoded)
	}
	if method != http.MethodPost || path != "/invoke" {
		t.Fatalf("%s %s", method, path)
	}
	if len(got.Records) != len(b.Records) {
		t.Fatalf("%d records, want %d", len(got.Records), len(b.Records))
	}
	for i, e := range got.Records {
		r := &b.Records[i]
		want := events.KinesisEventRecord{
			AwsRegion: "us-east-1", EventID: r.EventID(), EventName: "aws:kinesis:record", EventSource: "aws:kinesis",
			EventSourceArn: "arn:aws:kinesis:us-east-1:000000000000:stream/orders", EventVersion: "1.0",
			Kinesis: events.KinesisRecord{Data: r.Data, PartitionKey: r.PartitionKey, SequenceNumber: r.SequenceNumber(), KinesisSchemaVersion: "1.0"},
		}
		ts := e.Kinesis.ApproximateArrivalTimestamp.Time
		e.Kinesis.ApproximateArrivalTimestamp = events.SecondsEpochTime{}
		if fmt.Sprintf("%+v", e) != fmt.Sprintf("%+v", want) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, e, want)
		}
		if d := ts.Sub(r.ArrivalTime).Abs(); d > time.Microsecond {
			t.Errorf("record %d: arrival %v, want %v", i, ts, r.ArrivalTime)
		}
		if keys[i] != r.IdempotencyKey {
			t.Errorf("record %d: idempotencyKey %q, want %q", i, keys[i], r.IdempotencyKey)
		}
	}
	for k, want := range map[string]string{
		"Content-Type":                        "application/json",
		"Lambda-Runtime-Aws-Request-Id":       b.InvocationID,
		"X-Idem-Invocation-Id":                b.InvocationID,
		"Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:000000000000:function:ship-order",
	} {
		if got := header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	ms, err := strconv.ParseInt(header.Get("Lambda-Runtime-Deadline-Ms"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.UnixMilli(ms)
	if d := deadline.Sub(start.Add(2 * time.Second)).Abs(); d > 500*time.Millisecond {
		t.Errorf("deadline %v is not about 2s after %v", deadline, start)
	}
	idemDeadline, err := time.Parse(time.RFC3339Nano, header.Get("X-Idem-Deadline"))
	if err != nil || idemDeadline.UnixMilli() != ms {
		t.Errorf("X-Idem-Deadline %q (%v) disagrees with Lambda-Runtime-Deadline-Ms %d", header.Get("X-Idem-Deadline"), err, ms)
	}
}

// TestOptions: Region, Name, and a context deadline earlier than Timeout.
func TestOptions(t *testing.T) {
	var header http.Header
	var ev events.KinesisEvent
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		header = r.Header.Clone()
		json.NewDecoder(r.Body).Decode(&ev)
	}, httpfn.Region("eu-west-1"), httpfn.Name("shipper"), httpfn.Timeout(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctxDeadline, _ := ctx.Deadline()
	if _, err := f.Invoke(ctx, batch(1)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("Lambda-Runtime-Invoked-Function-Arn"); got != "arn:aws:lambda:eu-west-1:000000000000:function:shipper" {
		t.Errorf("function ARN %q", got)
	}
	if ev.Records[0].AwsRegion != "eu-west-1" || ev.Records[0].EventSourceArn != "arn:aws:kinesis:eu-west-1:000000000000:stream/orders" {
		t.Errorf("record %+v", ev.Records[0])
	}
	if got := header.Get("Lambda-Runtime-Deadline-Ms"); got != strconv.FormatInt(ctxDeadline.UnixMilli(), 10) {
		t.Errorf("deadline %s, want the context's %d", got, ctxDeadline.UnixMilli())
	}
}

func TestResponses(t *testing.T) {
	b := batch(5)
	fourth := b.Records[3].EventID()
	cases := []struct {
		name     string
		status   int
		header   map[string]string
		body     string
		failures []string
		invalid  string
		typ      string // a *function.Error of this type
		msg      string // contained in its message
	}{
		{name: "empty 200", status: 200},
		{name: "204", status: 204},
		{name: "null", status: 200, body: "null"},
		{name: "partial", status: 200, body: `{"batchItemFailures":[{"itemIdentifier":"` + fourth + `"}]}`, failures: []string{fourth}},
		{name: "wrong key", status: 200, body: `{"batchItemFailures":[{"itemIdentifer":"x"}]}`, invalid: "wrong key name"},
		{name: "non-JSON", status: 200, body: "<html>oops</html>", invalid: `"<html>oops</html>"`},
		{name: "JSON string", status: 200, body: `"ok"`, invalid: "JSON string"},
		{name: "500 text", status: 500, body: "database down\n", typ: "HTTP.500", msg: `500 Internal Server Error: "database down"`},
		{name: "503 empty", status: 503, typ: "HTTP.503", msg: "503 Service Unavailable"},
		{name: "500 Lambda error", status: 500, body: `{"errorType":"ValidationError","errorMessage":"bad data","stackTrace":[]}`,
			typ: "ValidationError", msg: "bad data"},
		{name: "400 JSON without errorType", status: 400, body: `{"error":"bad"}`, typ: "HTTP.400"},
		{name: "redirect not followed", status: 302, header: map[string]string{"Location": "/elsewhere"}, typ: "HTTP.302"},
		{name: "X-Amz-Function-Error", status: 200, header: map[string]string{"X-Amz-Function-Error": "Unhandled"},
			body: `{"errorType":"errorString","errorMessage":"boom"}`, typ: "errorString", msg: "boom"},
		{name: "X-Amz-Function-Error without a body", status: 200, header: map[string]string{"X-Amz-Function-Error": "Unhandled"},
			typ: "Unhandled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			})
			res, err := f.Invoke(context.Background(), b)
			if c.typ != "" {
				fe := functionError(t, err)
				if fe.Type != c.typ || !strings.Contains(fe.Message, c.msg) {
					t.Fatalf("error %s %q, want %s containing %q", fe.Type, fe.Message, c.typ, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Native || res.Invalid != c.invalid && !strings.Contains(res.Invalid, c.invalid) || !slices.Equal(res.Failures, c.failures) {
				t.Fatalf("result %+v, want failures %q invalid %q", res, c.failures, c.invalid)
			}
			if c.invalid != "" && res.Invalid == "" {
				t.Fatalf("result %+v, want Invalid", res)
			}
		})
	}
}

func TestResponseTooLarge(t *testing.T) {
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		chunk := bytes.Repeat([]byte(" "), 1<<20)
		for range 7 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	_, err := f.Invoke(context.Background(), batch(1))
	if fe := functionError(t, err); fe.Type != function.TypeResponseTooLarge || !strings.Contains(fe.Message, "exceeds 6 MB") {
		t.Fatalf("error %v", fe)
	}
}

// TestTimeout: a hanging function fails after Timeout, with Lambda's message,
// and the request is abandoned.
func TestTimeout(t *testing.T) {
	released := make(chan struct{})
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(released)
		io.Copy(io.Discard, r.Body) // the server notices a gone client only after the body
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}, httpfn.Timeout(50*time.Millisecond))
	start := time.Now()
	_, err := f.Invoke(context.Background(), batch(2))
	fe := functionError(t, err)
	if fe.Type != function.TypeTimeout || fe.Message != "Task timed out after 0.05 seconds" {
		t.Fatalf("error %s %q", fe.Type, fe.Message)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Invoke took %v", el)
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the request canceled")
	}
}

// TestSlowBody: a deadline that passes while the body is read is a timeout
// too.
func TestSlowBody(t *testing.T) {
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
		io.WriteString(w, `{"batchItemFailures":`)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}, httpfn.Timeout(100*time.Millisecond))
	_, err := f.Invoke(context.Background(), batch(1))
	if fe := functionError(t, err); fe.Type != function.TypeTimeout {
		t.Fatalf("error %v", fe)
	}
}

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		cancel()
		<-r.Context().Done()
	})
	_, err := f.Invoke(ctx, batch(1))
	if err != context.Canceled {
		t.Fatalf("err = %#v, want context.Canceled unwrapped", err)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	f, err := httpfn.New("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseIdleConnections()
	_, err = f.Invoke(context.Background(), batch(1))
	fe := functionError(t, err)
	if fe.Type != function.TypeUnreachable || !strings.Contains(fe.Message, "connection refused") {
		t.Fatalf("error %s %q", fe.Type, fe.Message)
	}
}

// TestConnectionDropped: a server that dies mid-request leaves the function
// unreachable, not succeeded.
func TestConnectionDropped(t *testing.T) {
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	_, err := f.Invoke(context.Background(), batch(1))
	if fe := functionError(t, err); fe.Type != function.TypeUnreachable {
		t.Fatalf("error %v", fe)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := httpfn.New("http://localhost:9000/fn"); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	_, err := httpfn.New("localhost:9000", httpfn.Timeout(0), httpfn.Client(nil), httpfn.Region(""))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"want an absolute http or https URL", "timeout 0s: must be above 0s and at most 15m0s", "Client(nil)", "region"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := httpfn.New("http://h/", httpfn.Timeout(16*time.Minute)); err == nil || !strings.Contains(err.Error(), "16m0s") {
		t.Errorf("16m timeout: %v", err)
	}
	if _, err := httpfn.New("ftp://h/"); err == nil {
		t.Error("ftp URL accepted")
	}
}

// TestConcurrentInvokes: pooled buffers never mix two invocations' bodies.
func TestConcurrentInvokes(t *testing.T) {
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		var ev events.KinesisEvent
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			w.WriteHeader(400)
			return
		}
		// Fail the record the invocation id names, so the caller can
		// check it got its own answer.
		n, _ := strconv.Atoi(strings.TrimPrefix(r.Header.Get("X-Idem-Invocation-Id"), "inv-"))
		if len(ev.Records) != n {
			w.WriteHeader(409)
			return
		}
		json.NewEncoder(w).Encode(events.KinesisEventResponse{BatchItemFailures: []events.KinesisBatchItemFailure{{ItemIdentifier: ev.Records[n-1].EventID}}})
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 40 {
				b := batch(1 + (g*40+i)%25)
				res, err := f.Invoke(context.Background(), b)
				if err != nil || !slices.Equal(res.Failures, []string{b.Records[len(b.Records)-1].EventID()}) {
					t.Errorf("batch of %d: %+v, %v", len(b.Records), res, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestNoGoroutineLeak: after the Function's idle connections and the server
// are closed, every goroutine the tests' invocations started is gone.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.Header.Get("X-Idem-Invocation-Id") == "inv-2" {
				<-r.Context().Done()
				return
			}
			w.WriteHeader(500)
			io.WriteString(w, strings.Repeat("x", 200<<10)) // more than is drained
		}))
		defer srv.Close()
		f, err := httpfn.New(srv.URL, httpfn.Timeout(30*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer f.CloseIdleConnections()
		for range 20 {
			f.Invoke(context.Background(), batch(1))
			f.Invoke(context.Background(), batch(2))
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkInvoke(b *testing.B) {
	bt := batch(100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"batchItemFailures":[]}`)
	}))
	defer srv.Close()
	f, err := httpfn.New(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer f.CloseIdleConnections()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Invoke(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(bt.Records))/b.Elapsed().Seconds(), "records/s")
}

// TestClientTimeout: a caller's client whose own Timeout fires first is a
// timeout too, not an unreachable function.
func TestClientTimeout(t *testing.T) {
	client := &http.Client{Timeout: 50 * time.Millisecond}
	defer client.CloseIdleConnections()
	f, _ := newFunction(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}, httpfn.Client(client), httpfn.Timeout(5*time.Second))
	_, err := f.Invoke(context.Background(), batch(1))
	if fe := functionError(t, err); fe.Type != function.TypeTimeout || !strings.HasPrefix(fe.Message, "Task timed out after 0.0") {
		t.Fatalf("error %s %q", fe.Type, fe.Message)
	}
}
