package process

import (
	"context"
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem/function"
)

// TestTraceID (issue 16, item 4): a traced invocation reaches the runtime
// as Lambda's does, in Lambda-Runtime-Trace-Id, which aws-lambda-go sets
// as _X_AMZN_TRACE_ID: the X-Ray form of the invoker's span (its W3C
// trace id split after 8 hex digits, its span id as Parent), as AWS's
// X-Ray propagator for OpenTelemetry derives it. An untraced invocation
// gets a fresh, unsampled X-Ray id.
func TestTraceID(t *testing.T) {
	f, _ := start(t, "traceid", Config{})
	invoke := func(ctx context.Context) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := f.InvokePayload(ctx, []byte(`{}`), function.InvokeMeta{})
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ TraceID string }
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return res.TraceID
	}

	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	for _, flags := range []trace.TraceFlags{trace.FlagsSampled, 0} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags})
		want := "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
		if flags == 0 {
			want = want[:len(want)-1] + "0"
		}
		if got := invoke(trace.ContextWithSpanContext(context.Background(), sc)); got != want {
			t.Errorf("_X_AMZN_TRACE_ID of a traced invocation (flags %v): %q, want %q", flags, got, want)
		}
	}
	if got := invoke(context.Background()); !regexp.MustCompile(`^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Sampled=0$`).MatchString(got) {
		t.Errorf("_X_AMZN_TRACE_ID of an untraced invocation: %q, want a fresh unsampled X-Ray id", got)
	}
}
