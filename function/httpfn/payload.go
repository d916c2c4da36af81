package httpfn

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/idem-run/idem/function"
)

var _ function.PayloadInvoker = (*Function)(nil)

// InvokePayload POSTs payload as it is (Content-Type application/json) to
// the function's URL, with the headers Invoke sends (request id, deadline,
// invoked function ARN, traceparent when traced) and, when the caller sent
// one, the client context in Lambda-Runtime-Client-Context. It makes one attempt and never retries.
//
// A 2xx response's body is the result, verbatim. A non-2xx response, or a
// 2xx response with an X-Amz-Function-Error header, is a function error
// typed as for Invoke (the body's errorType, or "HTTP.<status>"); so are a
// timeout (function.TypeTimeout), an unreachable endpoint
// (function.TypeUnreachable) and a body over function.MaxResponseSize
// (function.TypeResponseTooLarge). When ctx is canceled (not timed out), it
// returns ctx.Err().
func (f *Function) InvokePayload(ctx context.Context, payload []byte, meta function.InvokeMeta) ([]byte, error) {
	start := time.Now()
	deadline := start.Add(f.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if !meta.Deadline.IsZero() && meta.Deadline.Before(deadline) {
		deadline = meta.Deadline
	}
	ictx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	req, err := http.NewRequestWithContext(ictx, http.MethodPost, f.url, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("httpfn: building the request to %s: %w", f.url, err)
	}
	name := f.name
	if name == "" {
		name = meta.Function
	}
	req.Header = http.Header{
		"Content-Type":                        {"application/json"},
		"User-Agent":                          {"idem-httpfn"},
		"Lambda-Runtime-Aws-Request-Id":       {meta.RequestID},
		"Lambda-Runtime-Deadline-Ms":          {strconv.FormatInt(deadline.UnixMilli(), 10)},
		"Lambda-Runtime-Invoked-Function-Arn": {"arn:aws:lambda:" + f.region + ":000000000000:function:" + name},
		"X-Idem-Invocation-Id":                {meta.RequestID},
		"X-Idem-Deadline":                     {deadline.UTC().Format(time.RFC3339Nano)},
	}
	if len(meta.ClientContext) > 0 {
		req.Header.Set("Lambda-Runtime-Client-Context", string(meta.ClientContext))
	}
	injectTrace(ctx, req.Header)
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failure(ctx, ictx, start, deadline, "sending the request", err)
	}
	var buf bytes.Buffer
	tooLarge, err := readBody(resp, &buf)
	if err != nil {
		return nil, f.failure(ctx, ictx, start, deadline, "reading the response", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, statusError(resp.StatusCode, buf.Bytes(), tooLarge)
	}
	if tooLarge {
		return nil, &function.Error{Type: function.TypeResponseTooLarge,
			Message: fmt.Sprintf("response exceeds 6 MB (%d bytes)", function.MaxResponseSize)}
	}
	if h := resp.Header.Get("X-Amz-Function-Error"); h != "" {
		if fe := lambdaError(buf.Bytes()); fe != nil {
			return nil, fe
		}
		return nil, &function.Error{Type: h, Message: "function error: " + quote(buf.Bytes())}
	}
	return buf.Bytes(), nil
}
