package gofunc

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/httpfn"
)

// Option configures New.
type Option interface{ apply(*Function) }

type optionFunc func(*Function)

func (o optionFunc) apply(f *Function) { o(f) }

// WithInvokeHandler makes the Function take raw payloads (InvokePayload,
// idem's Invoke API) with ih, while batches from mappings still go to the
// Handler given to New. Default: none; InvokePayload then fails with
// function.ErrNoPayloadHandler.
func WithInvokeHandler(ih idem.InvokeHandler) Option {
	return optionFunc(func(f *Function) { f.ih = ih })
}

// WithRegion sets the region written in the events an InvokeHandler gets
// for a mapping's batches (awsRegion, eventSourceARN), so that they name
// the region the rest of idem presents; idem's server passes its
// configured region. Default: function.DefaultEventRegion.
func WithRegion(r string) Option {
	return optionFunc(func(f *Function) { f.region = r })
}

// NewInvoke returns a Function that runs ih, as a Lambda function is run:
// a raw payload for InvokePayload, and for a mapping's batch the
// KinesisEvent JSON a process or HTTP function would get (each record with
// its "idempotencyKey"), its answer read as a KinesisEventResponse with
// function.ParseResponse. It panics if ih is nil.
func NewInvoke(ih idem.InvokeHandler, opts ...Option) *Function {
	if ih == nil {
		panic("gofunc: NewInvoke called with a nil idem.InvokeHandler")
	}
	f := &Function{ih: ih}
	for _, o := range opts {
		o.apply(f)
	}
	return f
}

var _ function.PayloadInvoker = (*Function)(nil)

// eventRegion is the awsRegion of the events an InvokeHandler gets.
func (f *Function) eventRegion() string {
	if f.region == "" {
		return function.DefaultEventRegion
	}
	return f.region
}

// InvokePayload calls the InvokeHandler with payload, on the calling
// goroutine, and returns its result. As for Invoke, it waits for the
// handler even past ctx's deadline (a handler cannot be stopped
// in-process); a deadline that passed makes a function.TypeTimeout error
// whatever the handler returned, an error is typed with its Go type name
// (Permanent set for idem.Permanent), and a panic is a function.TypePanic
// error. A result over function.MaxResponseSize is a
// function.TypeResponseTooLarge error. A Function without an InvokeHandler
// returns an error wrapping function.ErrNoPayloadHandler.
func (f *Function) InvokePayload(ctx context.Context, payload []byte, meta function.InvokeMeta) (res []byte, err error) {
	if f.ih == nil {
		return nil, fmt.Errorf("%w: %s is an in-process Go batch handler (idem.Handler); register an idem.InvokeHandler for it (server.WithInvokeHandler) to invoke it directly", function.ErrNoPayloadHandler, meta.Function)
	}
	if !meta.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, meta.Deadline)
		defer cancel()
	}
	return f.callInvoke(ctx, payload)
}

// callInvoke runs the InvokeHandler and translates what it returns.
func (f *Function) callInvoke(ctx context.Context, payload []byte) (res []byte, err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			pe := &PanicError{Value: p, Stack: debug.Stack()}
			res, err = nil, &function.Error{Type: function.TypePanic, Message: fmt.Sprint(p), Err: pe}
		}
	}()
	out, herr := f.ih.HandleInvoke(ctx, payload)
	if cerr := ctx.Err(); cerr != nil {
		if cerr == context.DeadlineExceeded {
			return nil, timeout(ctx, start, herr)
		}
		if herr != nil {
			return nil, cerr
		}
	}
	if herr != nil {
		return nil, toError(herr)
	}
	if len(out) > function.MaxResponseSize {
		return nil, &function.Error{Type: function.TypeResponseTooLarge,
			Message: fmt.Sprintf("response exceeds 6 MB (%d bytes)", function.MaxResponseSize)}
	}
	return out, nil
}

// invokeEvent runs an InvokeHandler over a mapping's batch, as Lambda runs
// a function over a KinesisEvent (or the KafkaEvent b.Format asks for).
func (f *Function) invokeEvent(ctx context.Context, b *idem.Batch) (function.Result, error) {
	ev := httpfn.AppendEvent(nil, f.eventRegion(), b)
	out, err := f.callInvoke(ctx, ev)
	if err != nil {
		return function.Result{}, err
	}
	return function.ParseResponse(out)
}
