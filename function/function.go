// Package function defines how the engine invokes code: with a batch, for a
// result. The engine never knows whether the code runs in-process, behind
// HTTP, or as a Lambda runtime process.
package function

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/idem-run/idem"
)

// Driver invokes one function.
//
// Invoke is called concurrently for different shards. It returns a
// *Error for a function error (the code ran and failed, timed out, or could
// not be reached); the engine retries, bisects or discards the batch as its
// mapping says. Any other error is treated the same way.
type Driver interface {
	Invoke(ctx context.Context, b *idem.Batch) (Result, error)
}

// InProcess is implemented by drivers that hand the engine's idem.Batch to
// a Go handler in the engine's own process, so that the handler can write
// in the store's transaction (idem.TxFrom). The engine offers a transaction
// only to a driver whose InProcess returns true.
type InProcess interface {
	InProcess() bool
}

// Result is a successful invocation's answer, before the engine applies the
// mapping's ReportBatchItemFailures rules.
type Result struct {
	// Failures are the itemIdentifiers the function reported as failed.
	Failures []string
	// Invalid, when not empty, says why the response is a complete failure
	// under Lambda's rules (an itemIdentifier that is empty, null, or under a
	// wrong key name).
	Invalid string
	// Native marks failures reported by idem's own RecordFunc: they apply
	// whatever the mapping's functionResponseTypes say.
	Native bool
	// Err is the error of a native (RecordFunc) failure: its type and
	// permanence drive retries as a function error's would.
	Err *Error
	// State is the response's "state", unparsed (ParseState reads it): a
	// tumbling window's state for the window's next invocation. nil when
	// the response has none.
	State json.RawMessage
}

// Error is a function error.
type Error struct {
	// Type is Lambda's errorType: the Go error's type name, a runtime's
	// reported type, "Function.Timeout", "Function.Unreachable" or
	// "HTTP.<status>". permanentErrorTypes match it.
	Type string
	// Message is the error's text.
	Message string
	// Permanent is set when the function itself marked the error permanent
	// (idem.Permanent): retrying cannot help.
	Permanent bool
	// Err is the underlying error, if any.
	Err error
}

// Error renders the error as Lambda logs it, "Type: Message".
func (e *Error) Error() string {
	if e.Type == "" {
		return e.Message
	}
	return fmt.Sprintf("%s: %s", e.Type, e.Message)
}

// Unwrap returns the underlying error, so that errors.Is and idem.IsPermanent
// see through a function error to the handler's own.
func (e *Error) Unwrap() error { return e.Err }
