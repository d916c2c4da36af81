package server_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

const readToken = "read-only-token-0123456789abcdef"

// call sends a request with an Authorization header (none when auth is
// empty) and returns the status and the body.
func call(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	code, b, _ := callHeader(t, method, url, auth, body)
	return code, b
}

// callHeader is call, returning the answer's header too.
func callHeader(t *testing.T, method, url, auth, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// signedPut is a put signed as the AWS SDKs sign (the body's hash in the
// signature, no X-Amz-Content-Sha256 header), with secret as the secret
// key; payloadHash, when set, is sent as a signed X-Amz-Content-Sha256.
func signedPut(t *testing.T, addr, secret, body, payloadHash string, when time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/v1/streams/events/records", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sign := payloadHash
	if sign == "" {
		sum := sha256.Sum256([]byte(body))
		sign = hex.EncodeToString(sum[:])
	} else {
		req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	}
	creds := aws.Credentials{AccessKeyID: "idem", SecretAccessKey: secret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, sign, "idem", "eu-west-1", when); err != nil {
		t.Fatal(err)
	}
	return req
}

// resend sends a copy of req (its headers, and body) and returns the
// status and the body of the answer.
func resend(t *testing.T, req *http.Request, body string) (int, string, http.Header) {
	t.Helper()
	c, err := http.NewRequest(req.Method, req.URL.String(), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c.Header = req.Header.Clone()
	resp, err := http.DefaultClient.Do(c)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// countRecords returns how many records the stream events' shard holds.
func countRecords(t *testing.T, addr string) int {
	t.Helper()
	code, body := call(t, "GET", "http://"+addr+"/v1/streams/events/records?shard=shardId-000000000000", "Bearer "+token, "")
	if code != 200 {
		t.Fatalf("records: %d %s", code, body)
	}
	var page server.RecordsResponse
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatal(err)
	}
	return len(page.Records)
}

// rawRequest writes head (a request's line and headers, without the blank
// line) and then body, which may be shorter than its Content-Length, on a
// new connection; the returned function reads the answer, within a bound.
func rawRequest(t *testing.T, addr, head, body string) (net.Conn, func() (*http.Response, error)) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return conn, func() (*http.Response, error) {
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
}

// fakeSigV4 is an Authorization header of the right form whose signature
// was made with no token.
func fakeSigV4(date time.Time, signed string) string {
	return "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/" + date.Format("20060102") + "/eu-west-1/lambda/aws4_request, SignedHeaders=" + signed +
		", Signature=" + strings.Repeat("ab", 32)
}

// TestEveryRouteNeedsAToken: with tokens set, reads need a token too, but
// for the probes; read-only tokens read and cannot write; metrics open
// with openMetrics only.
func TestEveryRouteNeedsAToken(t *testing.T) {
	yaml := `
auth: {tokens: [` + token + `], readTokens: [` + readToken + `]}
streams: [{name: events}]
functions: [{name: upper}]
`
	addr := serve(t, yaml, nil, server.WithInvokeHandler("upper", idem.InvokeFunc(upper)))
	base := "http://" + addr
	put := `{"records":[{"partitionKey":"k","data":"d"}]}`
	for _, tc := range []struct {
		name, method, path, auth, body string
		want                           int
	}{
		{"status", "GET", "/v1/status", "", "", 403},
		{"streams", "GET", "/v1/streams", "", "", 403},
		{"records", "GET", "/v1/streams/events/records?shard=shardId-000000000000", "", "", 403},
		{"state", "GET", "/v1/state/s/k", "", "", 403},
		{"queue records", "GET", "/v1/streams/idem:invoke:upper/records?shard=shardId-000000000000", "", "", 403},
		{"metrics", "GET", "/metrics", "", "", 403},
		{"healthz", "GET", "/healthz", "", "", 200},
		{"readyz", "GET", "/readyz", "", "", 200},
		{"status read token", "GET", "/v1/status", "Bearer " + readToken, "", 200},
		{"records read token", "GET", "/v1/streams/events/records?shard=shardId-000000000000", "Bearer " + readToken, "", 200},
		{"metrics read token", "GET", "/metrics", "Bearer " + readToken, "", 200},
		{"put read token", "POST", "/v1/streams/events/records", "Bearer " + readToken, put, 403},
		{"invoke read token", "POST", "/2015-03-31/functions/upper/invocations", "Bearer " + readToken, `"x"`, 403},
		{"put full token", "POST", "/v1/streams/events/records", "Bearer " + token, put, 200},
	} {
		code, body := call(t, tc.method, base+tc.path, tc.auth, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		if tc.want == 403 && tc.auth != "" && !strings.Contains(body, "read-only") {
			t.Errorf("%s: %s, want it to say the token is read-only", tc.name, body)
		}
	}
	// A signed write with a read token is refused as read-only too.
	resp, err := http.DefaultClient.Do(signedPut(t, addr, readToken, put, "", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "read-only") {
		t.Errorf("signed put with a read token: %d %s, want 403 read-only", resp.StatusCode, b)
	}

	// A read whose signature was made with no token is refused, even with
	// an unsigned payload (whose body is never read).
	now := time.Now().UTC()
	forged, err := http.NewRequest("GET", base+"/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	forged.Header.Set("X-Amz-Date", now.Format("20060102T150405Z"))
	forged.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	forged.Header.Set("Authorization", fakeSigV4(now, "host;x-amz-content-sha256;x-amz-date"))
	if code, b, _ := resend(t, forged, ""); code != 403 {
		t.Errorf("a read with a forged signature and an unsigned payload: %d %s, want 403", code, b)
	}

	open := serve(t, "auth: {tokens: ["+token+"], openMetrics: true}\n", nil)
	if code, body := call(t, "GET", "http://"+open+"/metrics", "", ""); code != 200 {
		t.Errorf("metrics with openMetrics: %d %s, want 200", code, body)
	}
	if code, _ := call(t, "GET", "http://"+open+"/v1/status", "", ""); code != 403 {
		t.Errorf("status with openMetrics: %d, want 403", code)
	}
}

// TestSigV4CheckedBeforeBody: a signature that cannot be right is refused
// before its body is read. Each request announces a megabyte it never
// sends: only an answer given without the body arrives.
func TestSigV4CheckedBeforeBody(t *testing.T) {
	addr := serve(t, "auth: {tokens: ["+token+"]}\nstreams: [{name: events}]\n", nil)
	now := time.Now().UTC()
	head := func(auth, extra string) string {
		return "POST /v1/streams/events/records HTTP/1.1\nHost: " + addr + "\nContent-Length: 1048576\nX-Amz-Date: " +
			now.Format("20060102T150405Z") + "\nAuthorization: " + auth + extra
	}
	sum := sha256.Sum256([]byte("x"))
	for _, tc := range []struct{ name, head string }{
		{"host not signed", head(fakeSigV4(now, "x-amz-date"), "")},
		{"date not signed", head(fakeSigV4(now, "host"), "")},
		{"content hash not signed", head(fakeSigV4(now, "host;x-amz-date"), "\nX-Amz-Content-Sha256: "+hex.EncodeToString(sum[:]))},
		{"bad scope", head(strings.Replace(fakeSigV4(now, "host;x-amz-date"), "/aws4_request", "/aws4", 1), "")},
		{"other day", head(fakeSigV4(now.AddDate(0, 0, -1), "host;x-amz-date"), "")},
		{"bad signature form", head(strings.Replace(fakeSigV4(now, "host;x-amz-date"), "abab", "zz", 1), "")},
		{"wrong secret, signed content hash", head(fakeSigV4(now, "host;x-amz-content-sha256;x-amz-date"), "\nX-Amz-Content-Sha256: "+hex.EncodeToString(sum[:]))},
		{"unsigned payload", head(fakeSigV4(now, "host;x-amz-content-sha256;x-amz-date"), "\nX-Amz-Content-Sha256: UNSIGNED-PAYLOAD")},
		{"too large", strings.Replace(head(fakeSigV4(now, "host;x-amz-date"), ""), "1048576", "7000000", 1)},
	} {
		_, answer := rawRequest(t, addr, tc.head, "")
		resp, err := answer()
		if err != nil {
			t.Errorf("%s: no answer before the body: %v", tc.name, err)
			continue
		}
		if resp.StatusCode != 403 && resp.StatusCode != 413 {
			t.Errorf("%s: %s, want 403 or 413", tc.name, resp.Status)
		}
	}
	// A real signature with a signed content hash is checked before the
	// body too: the body is then read, and checked against the hash.
	body := `{"records":[{"partitionKey":"k","data":"d"}]}`
	bsum := sha256.Sum256([]byte(body))
	req := signedPut(t, addr, token, body, hex.EncodeToString(bsum[:]), time.Now())
	if code, b, _ := resend(t, req, body); code != 200 {
		t.Fatalf("signed put with X-Amz-Content-Sha256: %d %s", code, b)
	}
}

// TestUnverifiedBodiesBounded: bodies read before their signature can be
// checked share a budget; a request beyond it gets 503 with Retry-After at
// once instead of more memory.
func TestUnverifiedBodiesBounded(t *testing.T) {
	const budget = 1 << 20
	addr := serve(t, "auth: {tokens: ["+token+"]}\nstreams: [{name: events}]\n", nil, server.WithLimits(0, 0, budget))
	now := time.Now().UTC()
	head := func(n int) string {
		return fmt.Sprintf("POST /v1/streams/events/records HTTP/1.1\nHost: %s\nContent-Length: %d\nX-Amz-Date: %s\nAuthorization: %s",
			addr, n, now.Format("20060102T150405Z"), fakeSigV4(now, "host;x-amz-date"))
	}
	// The first holds the whole budget with a body it never finishes. A
	// probe that the server reads before it holds 10 bytes of the budget
	// then, and the first is refused: it is sent again when answered.
	hold := func() <-chan struct{} {
		_, answer := rawRequest(t, addr, head(budget), "{")
		answered := make(chan struct{})
		go func() { // ends with the connection, closed when the test ends
			answer()
			close(answered)
		}()
		return answered
	}
	held := hold()
	// A deadline, not a count of tries: under load the first request may
	// take a while to be read and hold the budget.
	for deadline := time.Now().Add(time.Minute); ; {
		if time.Now().After(deadline) {
			t.Fatal("no request was refused while the budget of unverified bodies was full")
		}
		select {
		case <-held:
			held = hold()
		default:
		}
		_, answer := rawRequest(t, addr, head(10)+"\nConnection: close", "0123456789")
		resp, err := answer()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 503 {
			if resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			break
		}
		if resp.StatusCode != 403 {
			t.Fatalf("fake signature: %s, want 403 or 503", resp.Status)
		}
		time.Sleep(10 * time.Millisecond) // the first request is not read yet
	}
}

// TestSlowBodyTimesOut: a body that stops arriving ends its request instead
// of holding its connection.
func TestSlowBodyTimesOut(t *testing.T) {
	addr := serve(t, "auth: {tokens: ["+token+"]}\nstreams: [{name: events}]\n", nil,
		server.WithLimits(100*time.Millisecond, 0, 0))
	conn, answer := rawRequest(t, addr, "POST /v1/streams/events/records HTTP/1.1\nHost: x\nContent-Length: 100\nAuthorization: Bearer "+token, `{"records"`)
	resp, err := answer()
	if err == nil && resp.StatusCode < 400 {
		t.Fatalf("a trickled body: %s", resp.Status)
	}
	// Either way the connection is over.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the connection stayed open: %v", err)
	}
}

// TestConnectionsCapped: beyond the cap, a connection waits for another to
// close before it is served.
func TestConnectionsCapped(t *testing.T) {
	addr := serve(t, "streams: [{name: events}]\n", nil, server.WithLimits(0, 2, 0))
	var held []net.Conn
	for range 2 {
		conn, answer := rawRequest(t, addr, "GET /healthz HTTP/1.1\nHost: x", "")
		if _, err := answer(); err != nil { // served: the connection is held, idle
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	var served atomic.Bool
	done := make(chan error, 1)
	go func() {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		served.Store(true)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if served.Load() {
		t.Fatal("a third connection was served while two were held under a cap of 2")
	}
	held[0].Close()
	if err := <-done; err != nil {
		t.Fatalf("once a connection closed: %v", err)
	}
}

// TestSignedWriteNeedsSignedPayload: a captured signed put cannot carry
// another body.
func TestSignedWriteNeedsSignedPayload(t *testing.T) {
	addr := serve(t, "auth: {tokens: ["+token+"]}\nstreams: [{name: events}]\n", nil)
	body := `{"records":[{"partitionKey":"k","data":"mine"}]}`
	evil := `{"records":[{"partitionKey":"k","data":"evil"}]}`

	unsigned := signedPut(t, addr, token, body, "UNSIGNED-PAYLOAD", time.Now())
	if code, b, _ := resend(t, unsigned, evil); code != 403 || !strings.Contains(b, "UNSIGNED-PAYLOAD") {
		t.Errorf("UNSIGNED-PAYLOAD with a swapped body: %d %s, want 403", code, b)
	}
	sum := sha256.Sum256([]byte(body))
	hashed := signedPut(t, addr, token, body, hex.EncodeToString(sum[:]), time.Now())
	if code, b, _ := resend(t, hashed, evil); code != 403 {
		t.Errorf("signed hash with a swapped body: %d %s, want 403", code, b)
	}
	plain := signedPut(t, addr, token, body, "", time.Now())
	if code, b, _ := resend(t, plain, evil); code != 403 {
		t.Errorf("signed body swapped: %d %s, want 403", code, b)
	}
	if n := countRecords(t, addr); n != 0 {
		t.Errorf("%d records written by swapped bodies", n)
	}
}

// TestSignedWriteReplay: a captured signed put replayed, before and after a
// restart on the same data directory, adds nothing and answers as the
// first did; so does a signed invocation, which runs once.
func TestSignedWriteReplay(t *testing.T) {
	dir := t.TempDir()
	var calls atomic.Int32
	count := server.WithInvokeHandler("upper", idem.InvokeFunc(func(ctx context.Context, p []byte) ([]byte, error) {
		calls.Add(1)
		return upper(ctx, p)
	}))
	yaml := "auth: {tokens: [" + token + "]}\nstreams: [{name: events}]\nfunctions: [{name: upper}]\n"
	addr, stop := start(t, dir, "127.0.0.1:0", yaml, nil, count)
	body := `{"records":[{"partitionKey":"k","data":"once"}]}`
	req := signedPut(t, addr, token, body, "", time.Now())
	code, first, _ := resend(t, req, body)
	if code != 200 {
		t.Fatalf("signed put: %d %s", code, first)
	}
	code, again, h := resend(t, req, body)
	if code != 200 || again != first || h.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d %s (replayed %q), want 200 %s", code, again, h.Get("Idempotent-Replayed"), first)
	}

	inv, err := http.NewRequest("POST", "http://"+addr+"/2015-03-31/functions/upper/invocations", strings.NewReader(`"a"`))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(`"a"`))
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "x", SecretAccessKey: token}, inv,
		hex.EncodeToString(sum[:]), "lambda", "eu-west-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if code, out, _ := resend(t, inv, `"a"`); code != 200 || out != `"A"` {
			t.Errorf("signed invocation %d: %d %s", i, code, out)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("a replayed signed invocation ran the function %d times, want 1", n)
	}

	stop()
	addr, _ = start(t, dir, addr, yaml, nil, count)
	code, again, _ = resend(t, req, body)
	if code != 200 || again != first {
		t.Errorf("replay after a restart: %d %s, want 200 %s", code, again, first)
	}
	if n := countRecords(t, addr); n != 1 {
		t.Errorf("%d records after replays, want 1", n)
	}
	// A new signature is a new request.
	if code, b, _ := resend(t, signedPut(t, addr, token, body, "", time.Now().Add(time.Second)), body); code != 200 {
		t.Fatalf("a new signed put: %d %s", code, b)
	}
	if n := countRecords(t, addr); n != 2 {
		t.Errorf("%d records after a new put, want 2", n)
	}
}

// TestReadyz: ready while serving with reachable storage; not before Run,
// nor once the storage fails.
func TestReadyz(t *testing.T) {
	addr := serve(t, "streams: [{name: events}]\n", nil)
	if code, body := call(t, "GET", "http://"+addr+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz: %d %s", code, body)
	}

	cfg := fmt.Sprintf("dataDir: %s\nlisten: 127.0.0.1:0\nstreams: [{name: events}]\n", t.TempDir())
	s := newServer(t, cfg)
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "starting") {
		t.Errorf("Ready before Run = %v, want starting", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done; s.Close() }()
	for i := 0; s.Ready(context.Background()) != nil; i++ {
		if i == 1000 {
			t.Fatalf("never ready: %v", s.Ready(context.Background()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.CloseStorage()
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "storage") {
		t.Errorf("Ready with closed storage = %v, want a storage error", err)
	}
}

// TestPutStatus: a put's request errors are the request's.
func TestPutStatus(t *testing.T) {
	addr := serve(t, "streams: [{name: events}]\n", nil)
	if code, body := call(t, "POST", "http://"+addr+"/v1/streams/nope/records", "", `{"records":[{"partitionKey":"k","data":"d"}]}`); code != 404 {
		t.Errorf("unknown stream: %d %s", code, body)
	}
	if code, body := call(t, "POST", "http://"+addr+"/v1/streams/events/records", "", `{"records":[{"partitionKey":"","data":"d"}]}`); code != 400 {
		t.Errorf("empty partition key: %d %s", code, body)
	}
}

// newServer makes a server for a whole config, without running it.
func newServer(t *testing.T, yaml string) *server.Server {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(cfg, server.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
