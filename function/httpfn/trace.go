package httpfn

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
)

// traceContext writes W3C Trace Context headers, the propagation an
// HTTP function's OpenTelemetry SDK reads by default.
var traceContext propagation.TraceContext

// injectTrace adds the traceparent and tracestate headers of ctx's span
// to h, so that the function's spans are children of the invocation's;
// it adds nothing when ctx holds no span (tracing off).
func injectTrace(ctx context.Context, h http.Header) {
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
}
