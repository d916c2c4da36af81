package function

import (
	"context"
	"time"
)

// Report is what a driver measured of one direct invocation: what Lambda's
// REPORT log line says of it, for the Invoke API's Tail log
// (X-Amz-Log-Type: Tail). A zero field is unknown.
type Report struct {
	// Duration is how long the function ran: from the moment its runtime
	// received the invocation to its answer, without the wait for an idle
	// runtime.
	Duration time.Duration
	// MemorySize is the function's configured memory, in MB.
	MemorySize int
	// MaxMemoryUsed is the peak memory of the function's runtime process,
	// in bytes, as of the invocation's end: as with Lambda, the peak over
	// the runtime's life, which may have served earlier invocations.
	MaxMemoryUsed int64
}

// ReportingInvoker is a PayloadInvoker that also reports what it measured
// of each invocation, so that the Invoke API's REPORT line carries
// Lambda's durations and memory figures rather than its own view.
type ReportingInvoker interface {
	PayloadInvoker
	// InvokePayloadReport is InvokePayload with the invocation's Report,
	// which is filled in as far as the run went, whatever the error.
	InvokePayloadReport(ctx context.Context, payload []byte, meta InvokeMeta) ([]byte, Report, error)
}
