package function

import (
	"context"
	"errors"
	"time"
)

// PayloadInvoker is implemented by drivers that can run their function with
// a raw payload, as Lambda's Invoke API does, rather than with a batch of
// stream records. Every driver of this module implements it; the Invoke API
// of idem's server refuses a function whose driver does not.
//
// InvokePayload hands payload to the function verbatim, once, and returns
// what the function answered, verbatim. It never retries: the caller
// (the Invoke API, with its asynchronous retries) does. Function errors are
// *Error values typed as for Invoke (TypeTimeout, TypeUnreachable,
// TypeResponseTooLarge, the function's own error type); ErrNoPayloadHandler
// (wrapped) means the function cannot take a raw payload at all. When ctx is
// canceled (not timed out), it returns ctx.Err().
type PayloadInvoker interface {
	InvokePayload(ctx context.Context, payload []byte, meta InvokeMeta) ([]byte, error)
}

// InvokeMeta is what a direct invocation carries besides its payload, as
// Lambda's Runtime API hands it to a function.
type InvokeMeta struct {
	// RequestID is the invocation's request id (Lambda-Runtime-Aws-Request-Id).
	RequestID string
	// Function is the name the function was invoked under, for its ARN.
	Function string
	// Deadline, when not zero, bounds the invocation as well as the
	// driver's own timeout and ctx's deadline: the earliest applies. (A
	// process function's timeout counts from when its runtime receives the
	// invocation, as Lambda's does: for it, Deadline and ctx's deadline
	// bound the wait for an idle runtime, not the run.)
	Deadline time.Time
	// ClientContext is the caller's client context as JSON (the decoded
	// X-Amz-Client-Context header; Lambda-Runtime-Client-Context for a
	// runtime), or nil. Lambda passes it to synchronous invocations only.
	ClientContext []byte
}

// ErrNoPayloadHandler is returned (wrapped) by InvokePayload of a function
// that handles batches only, such as an in-process idem.Handler: it has no
// way to take a raw payload.
var ErrNoPayloadHandler = errors.New("function: the function handles batches of records only, not raw payloads")

// MaxPayloadSize is the largest payload InvokePayload accepts: Lambda's 6 MB
// limit for a synchronous invocation.
const MaxPayloadSize = 6 << 20
