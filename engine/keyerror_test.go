package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// TestKeyErrorGoesToOnFailure (issue 11, item 7): a record whose
// idempotency key expression fails is never invoked; its on-failure record
// says so with a condition of its own, no invocation, and a null
// responseContext, not RetryAttemptsExhausted with an Unhandled error.
func TestKeyErrorGoesToOnFailure(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	v.stream("dlq", 1)
	v.put("in", "k", `{"order":{"id":"A"}}`, `not json`)
	h := idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, OnFailure: "dlq", KeyExpression: "order.id"})
	waitFor(t, "1 processed, 1 discarded", func() bool { s := totals(e); return s.Processed == 1 && s.Discarded == 1 })
	dlq := v.records("dlq")
	if len(dlq) != 2 {
		t.Fatalf("dlq holds %d records, want the metadata record and the record", len(dlq))
	}
	var meta map[string]any
	if err := json.Unmarshal(dlq[0].Data, &meta); err != nil {
		t.Fatal(err)
	}
	rc, _ := meta["requestContext"].(map[string]any)
	if rc["condition"] != "IdempotencyKeyError" || rc["approximateInvokeCount"] != 0.0 {
		t.Errorf("requestContext %v, want condition IdempotencyKeyError after 0 invocations", rc)
	}
	if rctx, ok := meta["responseContext"]; !ok || rctx != nil {
		t.Errorf("responseContext %v, want null: the function never ran", rctx)
	}
	if meta["idemErrorType"] != "IdempotencyKeyError" || fmt.Sprint(meta["idemErrorMessage"]) == "" {
		t.Errorf("idemErrorType %v, idemErrorMessage %v", meta["idemErrorType"], meta["idemErrorMessage"])
	}
	if string(dlq[1].Data) != "not json" {
		t.Errorf("discarded record %q, want the one whose key failed", dlq[1].Data)
	}
}
