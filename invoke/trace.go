package invoke

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracerName names the Service's tracer (its instrumentation scope).
const tracerName = "github.com/idem-run/idem/invoke"

// WithTracerProvider makes the Service trace each attempt of an
// asynchronous invocation (a span named idem.async.invoke, whose context
// the function's driver passes on to the function) with tp's tracer: a
// server passes the provider it configured from OTEL_* variables.
// Default: otel's no-op provider, with which the Service skips tracing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(s *Service) {
		switch tp.(type) {
		case nil, noop.TracerProvider, *noop.TracerProvider:
			s.tracer = nil
		default:
			s.tracer = tp.Tracer(tracerName)
		}
	})
}

// callTraced runs attempt (1-based) of the queued event seq, as call
// does, under a span of its own when tracing is on: the root of the
// attempt's trace, since the event was accepted by an earlier request.
func (q *queue) callTraced(ctx context.Context, req *Request, seq uint64, attempt int) ([]byte, error) {
	s, f := q.s, q.f
	if s.tracer == nil {
		out, _, err := s.call(ctx, f, req, nil)
		return out, err
	}
	ctx, span := s.tracer.Start(ctx, "idem.async.invoke", trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("idem.function", f.cfg.Name),
			attribute.String("idem.request_id", req.RequestID),
			attribute.Int64("idem.sequence", int64(seq)),
			attribute.Int("idem.attempt", attempt),
		))
	out, _, err := s.call(ctx, f, req, nil)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return out, err
}
