package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// Tracing: a window that holds records is one trace. Its root is the
// poll that read it (idem.poll); each invocation of the function over a
// batch of it (idem.invoke), each commit that resolves its records
// (idem.commit) and, inside an invocation, each journaled step
// (idem.step) are its descendants. The invocation's span goes to the
// function with the context: an HTTP function gets it as a W3C
// traceparent header, a process function as Lambda-Runtime-Trace-Id.
//
// Tracing is off unless WithTracerProvider gives a provider that is not
// otel's no-op one: then the engine starts no span and builds no
// attribute, so that the hot path costs a nil check.

// tracerName names the engine's tracer (its instrumentation scope).
const tracerName = "github.com/idem-run/idem/engine"

// WithTracerProvider makes the engine trace its polls, invocations,
// commits and journaled steps with tp's tracer: a server passes the
// provider it configured from OTEL_* variables, so that the engine needs
// no exporter of its own. Default: otel's no-op provider, with which the
// engine skips tracing altogether.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(e *Engine) {
		switch tp.(type) {
		case nil, noop.TracerProvider, *noop.TracerProvider:
			e.tracer = nil
		default:
			e.tracer = tp.Tracer(tracerName)
		}
	})
}

// traced returns ctx with span as its current span, so that what runs
// under ctx is its child; ctx itself when span is nil (tracing off).
func traced(ctx context.Context, span trace.Span) context.Context {
	if span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, span)
}

// tracePoll records a read that started at start and returned recs, as
// the root span of the window's trace, and returns that span; nil when
// tracing is off or the read found nothing (an idle shard polls often,
// and its empty reads would be noise).
func (s *shard) tracePoll(ctx context.Context, start time.Time, recs []idem.Record, err error) trace.Span {
	t := s.e.tracer
	if t == nil || start.IsZero() || (len(recs) == 0 && err == nil) || ctx.Err() != nil {
		return nil
	}
	cfg := &s.m.cfg
	_, span := t.Start(ctx, "idem.poll", trace.WithTimestamp(start), trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("idem.mapping", cfg.Name),
			attribute.String("idem.function", cfg.Function),
			attribute.String("idem.stream", cfg.Stream),
			attribute.String("idem.shard", s.id),
			attribute.Int("idem.records", len(recs)),
		))
	if len(recs) > 0 {
		span.SetAttributes(
			attribute.String("idem.first_sequence", string(recs[0].Sequence)),
			attribute.String("idem.last_sequence", string(recs[len(recs)-1].Sequence)),
		)
	}
	endSpan(span, err)
	return span
}

// pollStart is when a traced read starts; the zero time when tracing is
// off, which tracePoll ignores.
func (s *shard) pollStart() time.Time {
	if s.e.tracer == nil {
		return time.Time{}
	}
	return time.Now()
}

// invokeTraced is invokeSafely under a span of its own (idem.invoke),
// which the function's driver passes on to the function.
func (s *shard) invokeTraced(ctx context.Context, b *idem.Batch) (function.Result, error) {
	cfg := &s.m.cfg
	t := s.e.tracer
	if t == nil {
		return invokeSafely(ctx, cfg, b)
	}
	ctx, span := t.Start(ctx, "idem.invoke", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("idem.mapping", cfg.Name),
			attribute.String("idem.function", cfg.Function),
			attribute.String("idem.stream", cfg.Stream),
			attribute.String("idem.shard", s.id),
			attribute.Int("idem.records", len(b.Records)),
			attribute.String("idem.invocation_id", b.InvocationID),
		))
	res, err := invokeSafely(ctx, cfg, b)
	switch {
	case err != nil:
		endSpan(span, err)
		return res, err
	case res.Err != nil:
		endSpan(span, res.Err)
		return res, err
	case res.Invalid != "":
		span.SetStatus(codes.Error, res.Invalid)
	case len(res.Failures) > 0:
		span.SetAttributes(attribute.Int("idem.failed_records", len(res.Failures)))
		span.SetStatus(codes.Error, "partial batch failure")
	}
	span.End()
	return res, err
}

// commit is commitWrite under a span of its own (idem.commit), a child of
// the window's poll.
func (s *shard) commit(ctx context.Context, c *commit) error {
	t := s.e.tracer
	if t == nil {
		return s.commitWrite(ctx, c)
	}
	ctx, span := t.Start(ctx, "idem.commit", trace.WithAttributes(
		attribute.String("idem.mapping", s.m.cfg.Name),
		attribute.String("idem.shard", s.id),
		attribute.Int("idem.completed", len(c.completed)),
		attribute.Int("idem.skipped", len(c.skipped)),
		attribute.Int("idem.filtered", len(c.filtered)),
		attribute.Int("idem.discarded", len(c.discarded)),
	))
	err := s.commitWrite(ctx, c)
	endSpan(span, err)
	return err
}

// Run implements idem.Journal: run, under a span of its own (idem.step)
// when tracing is on, a child of the invocation's.
func (j *journal) Run(ctx context.Context, recordKey, step string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error) {
	if j.tracer == nil {
		return j.run(ctx, recordKey, step, fn)
	}
	ctx, span := j.tracer.Start(ctx, "idem.step", trace.WithAttributes(
		attribute.String("idem.scope", j.scope),
		attribute.String("idem.step", step),
		attribute.String("idem.record_key", recordKey),
	))
	res, err := j.run(ctx, recordKey, step, fn)
	endSpan(span, err)
	return res, err
}

// endSpan ends span, marking it failed with err unless err is nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
