// Package httpfn invokes a function over HTTP, with the request and response
// Lambda would use, so that a function written for Lambda's stream event
// sources (in any language) runs on idem behind any HTTP server.
//
// # Delivery semantics
//
// Each invocation POSTs the batch once and the driver never retries (the
// HTTP transport resends only a request it could not start writing): the
// engine decides, with the mapping's rules, whether a failed batch is sent
// again. A request that fails after it was sent (a timeout, a
// broken connection) may have run the function, so the function sees the
// batch again: it must be idempotent, and each record carries its idempotency
// key for that.
//
// # Request
//
// The body is Lambda's KinesisEvent, as github.com/aws/aws-lambda-go/events
// decodes it, with one field added to each record, "idempotencyKey":
//
//	{"Records":[{"awsRegion":"us-east-1",
//	  "eventID":"shardId-000000000000:00000000000000000042",
//	  "eventName":"aws:kinesis:record","eventSource":"aws:kinesis",
//	  "eventSourceARN":"arn:aws:kinesis:us-east-1:000000000000:stream/orders",
//	  "eventVersion":"1.0","invokeIdentityArn":"",
//	  "kinesis":{"approximateArrivalTimestamp":1700000000.123,
//	    "data":"eyJvcmRlciI6NDJ9","partitionKey":"customer-1",
//	    "sequenceNumber":"00000000000000000042","kinesisSchemaVersion":"1.0"},
//	  "idempotencyKey":"orders/shardId-000000000000/42"}]}
//
// Decoders that ignore unknown fields (aws-lambda-go's, and most JSON
// libraries' by default) read it as a plain KinesisEvent. The
// headers carry what Lambda's Runtime API would: Lambda-Runtime-Aws-Request-Id
// and X-Idem-Invocation-Id (the batch's InvocationID),
// Lambda-Runtime-Deadline-Ms (Unix milliseconds) and X-Idem-Deadline
// (RFC 3339), and Lambda-Runtime-Invoked-Function-Arn. When the
// invocation is traced (its context holds an OpenTelemetry span), a W3C
// traceparent (and tracestate) header carries the span, so that the
// function's own spans join the trace.
//
// # Response
//
// A 2xx response is the function's result, read by function.ParseResponse.
// Any other status is a function error; a body of the shape Lambda runtimes
// report errors in, {"errorType":"…","errorMessage":"…"}, gives the error's
// type and message, so that permanentErrorTypes work as on AWS. A 2xx
// response with an X-Amz-Function-Error header (what Lambda's Invoke API
// and its emulators answer for an unhandled error) is also a function error.
package httpfn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// Defaults, in one place.
const (
	defaultTimeout = 3 * time.Second
	defaultRegion  = function.DefaultEventRegion
	// maxTimeout is Lambda's: a function that needs longer does not fit
	// stream processing's model of small retryable batches.
	maxTimeout = 900 * time.Second
	// maxPooled bounds the buffers kept for reuse, so that one huge batch
	// does not pin its memory for the process's life.
	maxPooled = 8 << 20
	// maxDrain bounds what is read from a response nobody needs any more,
	// to keep its connection for reuse. Beyond it, closing is cheaper.
	maxDrain = 64 << 10
)

// Function invokes one function endpoint over HTTP. It is safe for
// concurrent use; Invoke is called concurrently for different shards.
//
// A Function made without the Client option owns an HTTP transport whose
// idle connections (and their goroutines) stay open for reuse, up to 90
// seconds; CloseIdleConnections releases them at once.
type Function struct {
	url     string
	client  *http.Client
	owned   *http.Transport // nil when the client is the caller's
	timeout time.Duration
	region  string
	// name is the function name in the invoked-function ARN; empty means
	// the batch's Function.
	name string

	bodies    sync.Pool // *payload
	responses sync.Pool // *bytes.Buffer
}

// Option configures New. Options are values, so a configuration can be
// built, stored and applied more than once.
type Option interface {
	apply(*config)
}

type config struct {
	timeout time.Duration
	client  *http.Client
	// clientSet tells Client(nil), a mistake, from no Client option.
	clientSet bool
	region    string
	name      string
}

type option func(*config)

func (o option) apply(c *config) { o(c) }

// Timeout bounds each invocation, from sending the request to reading the
// whole response; the invocation's deadline is the earlier of the caller's
// context deadline and now+d. A function that does not answer in time is a
// function error of type function.TypeTimeout. It must be above 0 and at
// most 15 minutes, Lambda's limits. Default: 3s, Lambda's default.
func Timeout(d time.Duration) Option { return option(func(c *config) { c.timeout = d }) }

// Client sets the HTTP client requests go through, for TLS settings, a
// proxy or instrumentation. Its redirect policy and any Timeout it has apply
// as well as this package's Timeout. The caller owns its connections:
// CloseIdleConnections does not touch them. Default: a client of this
// Function's own that does not follow redirects (a redirected function is
// a misconfigured one) and keeps up to 100 idle connections to the
// endpoint, one per concurrent shard.
func Client(c *http.Client) Option {
	return option(func(cfg *config) { cfg.client, cfg.clientSet = c, true })
}

// Region sets the region in events' awsRegion and in the ARNs built for them
// (eventSourceARN, Lambda-Runtime-Invoked-Function-Arn), for functions that
// check it: idem's server passes its configured region, so that every ARN
// it presents names one. Default: function.DefaultEventRegion.
func Region(r string) Option { return option(func(c *config) { c.region = r }) }

// Name sets the function name in the Lambda-Runtime-Invoked-Function-Arn
// header, for a function that serves several names. Default: the name the
// engine invokes it under (idem.Batch.Function).
func Name(n string) Option { return option(func(c *config) { c.name = n }) }

// New returns a Function that POSTs batches to rawURL, an http or https
// URL. It reports every invalid argument at once. It starts no goroutine;
// the transport starts them per connection.
func New(rawURL string, opts ...Option) (*Function, error) {
	cfg := config{timeout: defaultTimeout, region: defaultRegion}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	var errs []error
	if u, err := url.Parse(rawURL); err != nil {
		errs = append(errs, fmt.Errorf("httpfn: url: %w", err))
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("httpfn: url %q: want an absolute http or https URL", rawURL))
	}
	if cfg.timeout <= 0 || cfg.timeout > maxTimeout {
		errs = append(errs, fmt.Errorf("httpfn: timeout %s: must be above 0s and at most %s", cfg.timeout, maxTimeout))
	}
	if cfg.client == nil && cfg.clientSet {
		errs = append(errs, errors.New("httpfn: Client(nil): want an *http.Client; leave the option out for the default"))
	}
	if cfg.region == "" {
		errs = append(errs, errors.New("httpfn: region: must not be empty"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	f := &Function{url: rawURL, client: cfg.client, timeout: cfg.timeout, region: cfg.region, name: cfg.name}
	if f.client == nil {
		f.owned = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		f.client = &http.Client{
			Transport:     f.owned,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return f, nil
}

// CloseIdleConnections closes the idle connections of the Function's own
// transport, ending their goroutines; it does nothing with a client given
// by the Client option. The Function stays usable: later invocations open
// new connections.
func (f *Function) CloseIdleConnections() {
	if f.owned != nil {
		f.owned.CloseIdleConnections()
	}
}

// Invoke POSTs b and reads the function's answer. It makes one attempt and
// never retries. A 2xx answer's Result is function.ParseResponse's, partial
// failures and complete failures (Result.Invalid) included. Function errors
// are *function.Error values:
//
//   - function.TypeTimeout when the deadline (the earlier of ctx's and the
//     Timeout option's) passes first, with Lambda's message "Task timed out
//     after N.NN seconds";
//   - function.TypeUnreachable when the endpoint cannot be reached or the
//     connection breaks before the whole response arrived;
//   - the body's errorType, or "HTTP.<status>", for a non-2xx status;
//   - function.TypeResponseTooLarge for a response over
//     function.MaxResponseSize;
//   - function.TypeInvalidResponse for a 2xx body that is not a JSON object
//     or null.
//
// When ctx is canceled (not timed out), Invoke returns ctx.Err() unwrapped.
func (f *Function) Invoke(ctx context.Context, b *idem.Batch) (function.Result, error) {
	start := time.Now()
	deadline := start.Add(f.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	ictx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	p := f.payload()
	p.buf = f.appendEvent(p.buf[:0], b)
	req, err := http.NewRequestWithContext(ictx, http.MethodPost, f.url, nil)
	if err != nil { // New checked the URL; this is a bug, but fail the batch, not the process
		p.release(&f.bodies)
		return function.Result{}, fmt.Errorf("httpfn: building the request to %s: %w", f.url, err)
	}
	req.Body = p.newBody(&f.bodies)
	req.GetBody = func() (io.ReadCloser, error) { return p.newBody(&f.bodies), nil }
	req.ContentLength = int64(len(p.buf))
	req.Header = f.header(b, deadline)
	injectTrace(ctx, req.Header)

	resp, err := f.client.Do(req)
	// Do no longer calls GetBody; the transport holds its own references
	// until it closes the bodies.
	p.release(&f.bodies)
	if err != nil {
		return function.Result{}, f.failure(ctx, ictx, start, deadline, "sending the request", err)
	}
	buf := f.response()
	defer f.putResponse(buf)
	tooLarge, err := readBody(resp, buf)
	if err != nil {
		return function.Result{}, f.failure(ctx, ictx, start, deadline, "reading the response", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return function.Result{}, statusError(resp.StatusCode, buf.Bytes(), tooLarge)
	}
	if tooLarge {
		return function.Result{}, &function.Error{Type: function.TypeResponseTooLarge,
			Message: fmt.Sprintf("response exceeds 6 MB (%d bytes)", function.MaxResponseSize)}
	}
	if h := resp.Header.Get("X-Amz-Function-Error"); h != "" {
		if fe := lambdaError(buf.Bytes()); fe != nil {
			return function.Result{}, fe
		}
		return function.Result{}, &function.Error{Type: h, Message: "function error: " + quote(buf.Bytes())}
	}
	return function.ParseResponse(buf.Bytes())
}

// header builds the request headers. Keys are written in canonical form, so
// the map is used as is.
func (f *Function) header(b *idem.Batch, deadline time.Time) http.Header {
	name := f.name
	if name == "" {
		name = b.Function
	}
	return http.Header{
		"Content-Type":                        {"application/json"},
		"User-Agent":                          {"idem-httpfn"},
		"Lambda-Runtime-Aws-Request-Id":       {b.InvocationID},
		"Lambda-Runtime-Deadline-Ms":          {strconv.FormatInt(deadline.UnixMilli(), 10)},
		"Lambda-Runtime-Invoked-Function-Arn": {"arn:aws:lambda:" + f.region + ":000000000000:function:" + name},
		"X-Idem-Invocation-Id":                {b.InvocationID},
		"X-Idem-Deadline":                     {deadline.UTC().Format(time.RFC3339Nano)},
	}
}

// failure classifies a transport error: the caller's cancellation, the
// invocation's deadline, or an unreachable function.
func (f *Function) failure(ctx, ictx context.Context, start, deadline time.Time, doing string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(cerr, context.DeadlineExceeded) {
		return cerr
	}
	timedOut := errors.Is(ictx.Err(), context.DeadlineExceeded)
	if !timedOut {
		// A dial that times out (the endpoint is blackholed) is
		// unreachable; a client's own Timeout firing is a timeout.
		var op *net.OpError
		var ne net.Error
		timedOut = !(errors.As(err, &op) && op.Op == "dial") && errors.As(err, &ne) && ne.Timeout()
	}
	if timedOut {
		budget := deadline.Sub(start)
		if ictx.Err() == nil { // the client's own timeout fired first
			budget = time.Since(start)
		}
		return &function.Error{
			Type:    function.TypeTimeout,
			Message: fmt.Sprintf("Task timed out after %.2f seconds", budget.Seconds()),
			Err:     err,
		}
	}
	return &function.Error{
		Type:    function.TypeUnreachable,
		Message: fmt.Sprintf("%s: %v", doing, err),
		Err:     err,
	}
}

// readBody reads at most function.MaxResponseSize bytes of resp's body into
// buf and closes it, draining a little so the connection can be reused.
func readBody(resp *http.Response, buf *bytes.Buffer) (tooLarge bool, err error) {
	defer func() {
		_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
		_ = resp.Body.Close()
	}()
	if n := resp.ContentLength; n > 0 && n <= function.MaxResponseSize {
		buf.Grow(int(n))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, function.MaxResponseSize+1))
	if err != nil {
		return false, err
	}
	if n > function.MaxResponseSize {
		buf.Truncate(function.MaxResponseSize)
		return true, nil
	}
	return false, nil
}

// statusError is the function error a non-2xx response reports.
func statusError(code int, body []byte, truncated bool) *function.Error {
	if !truncated {
		if fe := lambdaError(body); fe != nil {
			return fe
		}
	}
	msg := fmt.Sprintf("%d %s", code, http.StatusText(code))
	if len(bytes.TrimSpace(body)) > 0 {
		msg += ": " + quote(body)
	}
	return &function.Error{Type: "HTTP." + strconv.Itoa(code), Message: msg}
}

// lambdaError reads a Lambda runtime's error body, or returns nil if body
// is not one.
func lambdaError(body []byte) *function.Error {
	var e struct {
		Type    *string `json:"errorType"`
		Message *string `json:"errorMessage"`
	}
	if json.Unmarshal(body, &e) != nil || e.Type == nil || *e.Type == "" {
		return nil
	}
	fe := &function.Error{Type: *e.Type}
	if e.Message != nil {
		fe.Message = *e.Message
	}
	return fe
}

// quote renders at most 100 bytes of b for an error message.
func quote(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) <= 100 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(b[:100])), len(b))
}

func (f *Function) response() *bytes.Buffer {
	if b, ok := f.responses.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (f *Function) putResponse(b *bytes.Buffer) {
	if b.Cap() > maxPooled {
		return
	}
	b.Reset()
	f.responses.Put(b)
}
