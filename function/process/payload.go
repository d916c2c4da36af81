package process

import (
	"context"
	"strings"

	"github.com/idem-run/idem/function"
)

var _ function.PayloadInvoker = (*Function)(nil)

// InvokePayload hands payload to an idle process as the invocation's event,
// verbatim, as Lambda's Invoke API does, and returns the process's
// response verbatim. meta.RequestID is the Lambda-Runtime-Aws-Request-Id
// (a random UUID when it is empty or unfit for a URL path), and
// meta.ClientContext goes to the runtime as Lambda-Runtime-Client-Context.
// Waiting for a process, timeouts, exits and errors the runtime posts are
// as for Invoke; a response over function.MaxResponseSize is a
// function.TypeResponseTooLarge error.
func (f *Function) InvokePayload(ctx context.Context, payload []byte, meta function.InvokeMeta) ([]byte, error) {
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
		return nil, err
	}
	return inv.payload, inv.err
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
