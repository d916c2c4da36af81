package process

import (
	"context"

	"go.opentelemetry.io/otel/trace"
)

// xrayTraceID renders ctx's span as the X-Ray trace header Lambda passes
// in Lambda-Runtime-Trace-Id, which runtimes set as _X_AMZN_TRACE_ID:
// Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>, the W3C trace id
// split after its first 8 hex digits and the span id as the parent, as
// AWS's X-Ray propagator for OpenTelemetry derives it. So the function's
// X-Ray or OpenTelemetry SDK continues the invocation's trace. It returns
// "" when ctx holds no span (tracing off).
func xrayTraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	sampled := "0"
	if sc.IsSampled() {
		sampled = "1"
	}
	t := sc.TraceID().String()
	return "Root=1-" + t[:8] + "-" + t[8:] + ";Parent=" + sc.SpanID().String() + ";Sampled=" + sampled
}
