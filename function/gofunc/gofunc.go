// Package gofunc runs an idem.Handler in the engine's own process, as a
// function.Driver, and an idem.InvokeHandler as a function.PayloadInvoker
// (the Invoke API's direct invocations; see NewInvoke).
//
// # Delivery semantics
//
// An in-process handler gets exactly what an HTTP or Lambda function gets:
// each batch at least once, with the completion of each record committed
// atomically with its State writes. Running in-process removes no
// guarantee and saves the encoding and the network. It adds one with a
// store that has transactions (PostgreSQL): the handler can write its own
// SQL in the transaction that commits its records (idem.TxFrom), so those
// writes are exactly-once too. What the handler returns is translated into
// Lambda's vocabulary so that the engine applies one set of rules to every
// kind of function:
//
//   - an *idem.RecordError (what idem.RecordFunc returns) is a partial
//     result, Result.Native, that applies whatever the mapping's
//     functionResponseTypes: the records before it succeeded;
//   - BatchResult.BatchItemFailures is Lambda's ReportBatchItemFailures
//     response;
//   - any other error, a panic, or a deadline that passes while the handler
//     runs is a *function.Error, as a Lambda function error would be.
package gofunc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// Function invokes a Go handler in-process. It is safe for concurrent use
// if the handler is: Invoke calls the handler once per batch, concurrently
// for different shards.
type Function struct {
	h  idem.Handler       // nil for a Function made by NewInvoke
	ih idem.InvokeHandler // nil unless NewInvoke or WithInvokeHandler set it
	// region is the awsRegion of the events an InvokeHandler gets; ""
	// means function.DefaultEventRegion.
	region string
}

// New returns a Function that runs h. It panics if h is nil, a wiring
// mistake that must surface at startup rather than at the first batch.
func New(h idem.Handler, opts ...Option) *Function {
	if h == nil {
		panic("gofunc: New called with a nil idem.Handler")
	}
	f := &Function{h: h}
	for _, o := range opts {
		o.apply(f)
	}
	return f
}

var _ function.InProcess = (*Function)(nil)

// InProcess reports true for a batch handler: it gets the engine's Batch
// as it is, with its store transaction (idem.TxFrom). A Function made by
// NewInvoke reports false: its handler gets the batch as event JSON.
func (f *Function) InProcess() bool { return f.h != nil }

// Invoke calls the handler with b on the calling goroutine and waits for it
// to return, even past ctx's deadline: a handler that ignores ctx cannot be
// stopped in-process, and returning early would let it touch b and its
// State after the engine moved on. It returns:
//
//   - for an *idem.RecordError anywhere in the returned error's chain, a
//     Result with Native set, that record's EventID as the one failure, and
//     Err describing the record's error; the error is nil;
//   - for BatchResult.BatchItemFailures, those identifiers as Failures, or
//     Invalid if one is empty (Lambda's rule for an empty itemIdentifier);
//   - for any other error, a *function.Error whose Type is the Go type name
//     of the error (aws-lambda-go's convention: errorString for errors.New,
//     wrapError for fmt.Errorf with %w, ValidationError for a
//     *ValidationError); for an error wrapping idem.Permanent, Permanent is
//     set and Type names the error inside the PermanentError. A
//     *function.Error returned by the handler passes through unchanged;
//   - for a panic, a *function.Error of type function.TypePanic whose Err is
//     a *PanicError holding the panic value and the stack;
//   - when ctx's deadline passed before the handler returned, a
//     *function.Error of type function.TypeTimeout, whatever the handler
//     returned, as Lambda discards a timed-out function's answer. One
//     exception keeps progress: an *idem.RecordError is still a partial
//     result (the records before it did complete), with Err of type
//     function.TypeTimeout;
//   - when ctx was canceled (not timed out) and the handler failed,
//     ctx.Err(): the engine is shutting down, the failure is not the
//     function's.
func (f *Function) Invoke(ctx context.Context, b *idem.Batch) (res function.Result, err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			pe := &PanicError{Value: p, Stack: debug.Stack()}
			res, err = function.Result{}, &function.Error{Type: function.TypePanic, Message: fmt.Sprint(p), Err: pe}
		}
	}()
	if f.h == nil {
		return f.invokeEvent(ctx, b)
	}
	br, herr := f.h.HandleBatch(ctx, b)
	// Translating runs under the recover above: a handler's error type
	// whose Error method panics is the handler's panic.
	return translate(ctx, start, br, herr)
}

func translate(ctx context.Context, start time.Time, br idem.BatchResult, herr error) (function.Result, error) {
	var re *idem.RecordError
	isRecord := errors.As(herr, &re)
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			te := timeout(ctx, start, herr)
			if isRecord {
				return function.Result{Failures: []string{re.Record}, Native: true, Err: te, State: noState}, nil
			}
			return function.Result{}, te
		}
		if herr != nil {
			return function.Result{}, cerr
		}
	}
	if isRecord {
		fe := toError(re.Err)
		if !fe.Permanent && idem.IsPermanent(herr) {
			// idem.Permanent(&idem.RecordError{...}): permanence outside
			// the RecordError still counts.
			cp := *fe
			cp.Permanent = true
			fe = &cp
		}
		return function.Result{Failures: []string{re.Record}, Native: true, Err: fe, State: noState}, nil
	}
	if herr != nil {
		return function.Result{}, toError(herr)
	}
	state := windowState(br)
	if len(br.BatchItemFailures) == 0 {
		return function.Result{State: state}, nil
	}
	failures := make([]string, len(br.BatchItemFailures))
	for i, item := range br.BatchItemFailures {
		if item.ItemIdentifier == "" {
			return function.Result{Invalid: fmt.Sprintf("batchItemFailures[%d]: itemIdentifier is an empty string", i), State: state}, nil
		}
		failures[i] = item.ItemIdentifier
	}
	return function.Result{Failures: failures, State: state}, nil
}

// timeout reports a handler that outlived its deadline in Lambda's words.
func timeout(ctx context.Context, start time.Time, herr error) *function.Error {
	var budget time.Duration
	if d, ok := ctx.Deadline(); ok && d.After(start) {
		budget = d.Sub(start)
	}
	err := context.DeadlineExceeded
	if herr != nil {
		err = fmt.Errorf("%w (handler returned: %w)", context.DeadlineExceeded, herr)
	}
	return &function.Error{
		Type:    function.TypeTimeout,
		Message: fmt.Sprintf("Task timed out after %.2f seconds", budget.Seconds()),
		Err:     err,
	}
}

// toError turns a handler's error into a function error typed as
// aws-lambda-go types it, so that permanentErrorTypes written for a Lambda
// function match the same code run in-process.
func toError(err error) *function.Error {
	if err == nil { // a RecordError without its Err
		return &function.Error{Type: "Function.Error", Message: "the handler reported a failed record without an error"}
	}
	if fe, ok := err.(*function.Error); ok {
		return fe
	}
	fe := &function.Error{Message: err.Error(), Err: err}
	typed := err
	var pe *idem.PermanentError
	if errors.As(err, &pe) {
		fe.Permanent = true
		if pe.Err != nil {
			typed = pe.Err
		}
	}
	fe.Type = typeName(typed)
	return fe
}

// typeName returns the error type aws-lambda-go would report for err: the
// name of its Go type, without package or pointer ("errorString",
// "ValidationError"). An unnamed type reports "Function.Error", the type
// the engine gives errors it cannot name.
func typeName(err error) string {
	t := reflect.TypeOf(err)
	if t == nil {
		return "Function.Error"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n := t.Name(); n != "" {
		return n
	}
	return "Function.Error"
}

// PanicError is the Err of the *function.Error a handler's panic becomes.
// The stack is kept here, out of the message, because the message travels
// into logs and on-failure records while the stack is for whoever debugs
// with errors.As.
type PanicError struct {
	// Value is what the handler passed to panic.
	Value any
	// Stack is the goroutine's stack at the recovery, as debug.Stack
	// formats it.
	Stack []byte
}

// Error says what the handler panicked with.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the panic value if it is an error, so that a handler that
// panics with idem.Permanent(err) still stops retries.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// noState is the state of a Go handler that returned none: the empty state
// (JSON null), not a missing one. Go's zero value cannot tell the two
// apart, and a RecordFunc returns no state, so the engine's rule that a
// window's response must carry "state" (Function.MissingState) never
// fails an in-process Go handler.
var noState = json.RawMessage("null")

// windowState is the state br returns, as JSON: StateJSON when set, else
// State's JSON, else noState.
func windowState(br idem.BatchResult) json.RawMessage {
	switch {
	case br.StateJSON != nil:
		return br.StateJSON
	case br.State != nil:
		st, _ := json.Marshal(br.State) // a map of strings always marshals
		return st
	}
	return noState
}
