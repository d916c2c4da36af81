package process

import (
	"context"
	"strings"

	"github.com/idem-run/idem/function"
)

var (
	_ function.PayloadInvoker   = (*Function)(nil)
	_ function.ReportingInvoker = (*Function)(nil)
)

// InvokePayload hands payload to an idle process as the invocation's event,
// verbatim, as Lambda's Invoke API does, and returns the process's
// response verbatim. meta.RequestID is the Lambda-Runtime-Aws-Request-Id
// (a random UUID when it is empty or unfit for a URL path), and
// meta.ClientContext goes to the runtime as Lambda-Runtime-Client-Context.
// Waiting for a process, timeouts, exits and errors the runtime posts are
// as for Invoke (meta.Deadline, like ctx's, bounds the wait for a process);
// a response over function.MaxResponseSize is a
// function.TypeResponseTooLarge error.
func (f *Function) InvokePayload(ctx context.Context, payload []byte, meta function.InvokeMeta) ([]byte, error) {
	out, _, err := f.invokePayload(ctx, payload, meta, false)
	return out, err
}

// InvokePayloadReport is InvokePayload that also reports how long the
// process ran the invocation, the function's MemorySize, and the peak
// memory of the process (on Linux, the VmHWM of it and its descendants,
// read once the invocation has ended), for the Invoke API's REPORT line.
// An invocation that never reached a process reports only MemorySize.
// Reading the peak memory costs tens of microseconds (the /proc files of
// the process, its threads and its children), which InvokePayload saves.
func (f *Function) InvokePayloadReport(ctx context.Context, payload []byte, meta function.InvokeMeta) ([]byte, function.Report, error) {
	return f.invokePayload(ctx, payload, meta, true)
}

func (f *Function) invokePayload(ctx context.Context, payload []byte, meta function.InvokeMeta, report bool) ([]byte, function.Report, error) {
	rep := function.Report{MemorySize: f.cfg.MemorySize}
	if !meta.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, meta.Deadline)
		defer cancel()
	}
	id := meta.RequestID
	if id == "" || len(id) > 128 || strings.ContainsFunc(id, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		id = newUUID()
	}
	inv, err := f.run(ctx, id, func(dst []byte) []byte { return append(dst, payload...) }, true, meta.ClientContext)
	if err != nil {
		return nil, rep, err
	}
	// inv's fields are settled: run returned after done was closed.
	rep.Duration = inv.end.Sub(inv.start)
	if report {
		rep.MaxMemoryUsed = inv.inst.peakMemory()
	}
	return inv.payload, rep, inv.err
}

// completePayload finishes a raw invocation with the process's verbatim
// answer, unless it already ended (timed out). The payload is set under
// inst.mu before done is closed, so InvokePayload reads it safely.
func (inst *instance) completePayload(inv *invocation, payload []byte, err error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.cur != inv {
		return
	}
	inst.cur = nil
	if err == nil {
		inst.healthy = true
		inv.payload = payload
	}
	inst.finishLocked(inv, function.Result{}, err)
}
