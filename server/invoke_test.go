package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

const token = "0123456789abcdef0123456789abcdef"

// serve runs a server.Server for yaml (dataDir and listen are added) until
// the test ends, and returns its address.
func serve(t testing.TB, yaml string, log *bytes.Buffer, opts ...server.Option) string {
	t.Helper()
	addr, stop := start(t, t.TempDir(), "127.0.0.1:0", yaml, log, opts...)
	t.Cleanup(stop)
	return addr
}

// start runs a server.Server for yaml with dataDir dir, listening on listen
// (port 0: a free port), and returns its address and a function that
// stops it (which the test's end calls too).
func start(t testing.TB, dir, listen, yaml string, log *bytes.Buffer, opts ...server.Option) (addr string, stop func()) {
	t.Helper()
	addr = listen
	if strings.HasSuffix(listen, ":0") {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf("dataDir: %s\nlisten: %s\n%s", dir, addr, yaml)))
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = new(bytes.Buffer)
	}
	opts = append(opts, server.WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: log}, nil))))
	s, err := server.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			s.Close()
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return addr, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not come up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncWriter serializes writes to w: a server logs from many goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func client(addr, secret string) *lambda.Client {
	return lambda.New(lambda.Options{
		BaseEndpoint: aws.String("http://" + addr),
		Region:       "eu-west-1",
		Credentials:  credentials.NewStaticCredentialsProvider("idem", secret, ""),
		Retryer:      aws.NopRetryer{},
	})
}

func upper(_ context.Context, p []byte) ([]byte, error) { return bytes.ToUpper(p), nil }

func TestInvokeAPIAuth(t *testing.T) {
	addr := serve(t, `
auth: {tokens: [`+token+`]}
streams: [{name: events}]
functions: [{name: upper}]
`, nil, server.WithInvokeHandler("upper", idem.InvokeFunc(upper)))
	ctx := context.Background()

	// The AWS SDK signs with the token as its secret key.
	out, err := client(addr, token).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("upper"), Payload: []byte(`"abc"`)})
	if err != nil || string(out.Payload) != `"ABC"` {
		t.Fatalf("signed with the token: %v, %v", out, err)
	}
	// Asynchronous invocations too, with a JSON payload that needs escaping
	// in nothing but the signature.
	if out, err := client(addr, token).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("arn:aws:lambda:eu-west-1:000000000000:function:upper"),
		InvocationType: types.InvocationTypeEvent, Payload: []byte(`{"a": "b c"}`)}); err != nil || out.StatusCode != 202 {
		t.Fatalf("signed Event: %v, %v", out, err)
	}
	_, err = client(addr, "not-the-token-at-all").Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("upper"), Payload: []byte(`"abc"`)})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Fatalf("signed with another secret: %v, want 403", err)
	}

	for _, tc := range []struct {
		name, method, path, auth, body string
		want                           int
	}{
		{"invoke bearer", "POST", "/2015-03-31/functions/upper/invocations", "Bearer " + token, `"x"`, 200},
		{"invoke no token", "POST", "/2015-03-31/functions/upper/invocations", "", `"x"`, 403},
		{"invoke wrong token", "POST", "/2015-03-31/functions/upper/invocations", "Bearer " + token[:31] + "X", `"x"`, 403},
		{"invoke basic", "POST", "/2015-03-31/functions/upper/invocations", "Basic " + token, `"x"`, 403},
		{"put bearer", "POST", "/v1/streams/events/records", "Bearer " + token, `{"records":[{"partitionKey":"k","data":"d"}]}`, 200},
		{"put no token", "POST", "/v1/streams/events/records", "", `{"records":[{"partitionKey":"k","data":"d"}]}`, 403},
		{"put to a queue", "POST", "/v1/streams/idem:invoke:upper/records", "Bearer " + token, `{"records":[{"partitionKey":"k","data":"d"}]}`, 403},
		{"status needs a token", "GET", "/v1/status", "", "", 403},
		{"status bearer", "GET", "/v1/status", "Bearer " + token, "", 200},
	} {
		code, b := call(t, tc.method, "http://"+addr+tc.path, tc.auth, tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, b, tc.want)
		}
	}
}

func TestInvokeAPIWithoutAuthWarnsBeyondLoopback(t *testing.T) {
	cfg, err := config.Parse([]byte(fmt.Sprintf("dataDir: %s\nlisten: 0.0.0.0:0\n", t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	s, err := server.New(cfg, server.WithLogger(slog.New(slog.NewTextHandler(&log, nil))))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "auth.tokens") {
		t.Errorf("no warning about listening beyond loopback without tokens:\n%s", log.String())
	}
}

func TestInvokeAPIGoHandlers(t *testing.T) {
	// "both" serves mappings with its batch handler and the Invoke API with
	// its invoke handler; "batch" has a batch handler only.
	addr := serve(t, `
functions: [{name: both}, {name: batch}, {name: lambda}]
`, nil,
		server.WithHandler("both", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })),
		server.WithInvokeHandler("both", idem.InvokeFunc(upper)),
		server.WithHandler("batch", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })),
		server.WithInvokeHandler("lambda", idem.InvokeFunc(upper)))
	c := client(addr, "any")
	for _, name := range []string{"both", "lambda"} {
		out, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(`"q"`)})
		if err != nil || string(out.Payload) != `"Q"` {
			t.Errorf("%s: %v, %v", name, out, err)
		}
	}
	var bad *types.InvalidParameterValueException
	_, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("batch"), Payload: []byte(`"q"`)})
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "WithInvokeHandler") {
		t.Errorf("batch handler: %v, want InvalidParameterValueException naming WithInvokeHandler", err)
	}
}
