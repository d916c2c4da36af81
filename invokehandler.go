package idem

import "context"

// InvokeHandler is a function invoked directly, as a Lambda function is by
// Lambda's Invoke API: with a payload, for a result. It is what an
// in-process Go function implements to be invoked through idem's Invoke API
// (POST /2015-03-31/functions/{name}/invocations).
//
// HandleInvoke gets the request's payload verbatim (JSON, at most 6 MB) and
// returns the bytes the caller receives. It may be called concurrently. ctx
// carries the invocation's deadline (the function's timeout). A returned
// error is a function error: a synchronous caller receives Lambda's error
// object ({"errorMessage", "errorType"}, with the Go type name of the error
// as errorType, as aws-lambda-go reports it), an asynchronous invocation is
// retried as the function's async settings say, and an error that wraps a
// PermanentError is not retried. A panic is recovered and is a function
// error.
//
// The same handler also serves event source mappings: it then gets the
// batch as Lambda's event JSON (a KinesisEvent), and its result is read as a
// KinesisEventResponse, exactly as a Lambda function run as a process would.
type InvokeHandler interface {
	HandleInvoke(ctx context.Context, payload []byte) ([]byte, error)
}

// InvokeFunc adapts a function to an InvokeHandler.
type InvokeFunc func(ctx context.Context, payload []byte) ([]byte, error)

// HandleInvoke calls f.
func (f InvokeFunc) HandleInvoke(ctx context.Context, payload []byte) ([]byte, error) {
	return f(ctx, payload)
}
