package engine_test

import (
	"context"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// TestTraceSpans (issue 16, item 4): with WithTracerProvider, a window is
// one trace: the poll that read it is the root; the invocation and the
// commit are its children; a journaled step is the invocation's child,
// and the handler's context carries the step's span.
func TestTraceSpans(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	v.stream("dlq", 1)
	v.put("in", "k", `{"id":"A"}`)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	var mu sync.Mutex
	var inStep trace.SpanContext
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		_, err := idem.Step(ctx, "charge", func(ctx context.Context, _ string) (string, error) {
			mu.Lock()
			inStep = trace.SpanContextFromContext(ctx)
			mu.Unlock()
			return "charged", nil
		})
		return err
	})
	e := engine.New(stembedded.New(v.db), engine.WithLogger(testLogger(t)), engine.WithTracerProvider(tp))
	if err := e.Add(stepMapping(v, h)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	waitResolved(t, e, 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		if n := len(byName[name]); n != 1 {
			t.Fatalf("%d %s spans, want 1 (spans: %v)", n, name, byName)
		}
		return byName[name][0]
	}
	poll, inv, step, commit := one("idem.poll"), one("idem.invoke"), one("idem.step"), one("idem.commit")
	if poll.Parent().IsValid() {
		t.Errorf("idem.poll has a parent: %v", poll.Parent())
	}
	for _, c := range []struct {
		child, parent sdktrace.ReadOnlySpan
	}{{inv, poll}, {commit, poll}, {step, inv}} {
		if c.child.Parent().SpanID() != c.parent.SpanContext().SpanID() || c.child.SpanContext().TraceID() != poll.SpanContext().TraceID() {
			t.Errorf("%s's parent is %v, want %s %v", c.child.Name(), c.child.Parent(), c.parent.Name(), c.parent.SpanContext())
		}
	}
	mu.Lock()
	if inStep.SpanID() != step.SpanContext().SpanID() {
		t.Errorf("the step's function ran under span %v, want idem.step's %v", inStep, step.SpanContext())
	}
	mu.Unlock()
	attrs := map[string]string{}
	for _, kv := range inv.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{"idem.records": "1", "idem.mapping": "m", "idem.function": "f", "idem.shard": "shardId-000000000000", "idem.stream": "in"} {
		if attrs[k] != want {
			t.Errorf("idem.invoke's %s: %q, want %q", k, attrs[k], want)
		}
	}
}
