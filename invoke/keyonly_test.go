package invoke_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/invoke"
)

// TestKeyOnlyRepeatDeduplicated: under KeyOnly the key alone names the
// event, so a repeat with another payload (a redelivery whose envelope
// differs) is deduplicated while the event waits in the queue, and after
// it completed; the function runs once.
func TestKeyOnlyRepeatDeduplicated(t *testing.T) {
	c := &counted{}
	ctx := context.Background()
	db, svc := open(t, "", nil, nil, goFunction("f", c.handle))
	ev := func(payload string) invoke.Request {
		return invoke.Request{Function: "f", Payload: []byte(payload), DefaultKey: "ObjectCreated:Put|t|1|e=abc|bucket/photos/café.jpg", KeyOnly: true}
	}
	if dedup, err := svc.Enqueue(ctx, ev(`{"n":1}`)); err != nil || dedup {
		t.Fatalf("first Enqueue = %v, %v; want queued", dedup, err)
	}
	recs := records(t, db, invoke.QueueStream("f"))
	if len(recs) != 1 || !strings.Contains(string(recs[0].Data), `"keyOnly":true`) {
		t.Fatalf("queue = %v; want one event, keyOnly in its envelope", recs)
	}
	if dedup, err := svc.Enqueue(ctx, ev(`{"n":2}`)); err != nil || !dedup {
		t.Fatalf("queued repeat with another payload = %v, %v; want deduplicated", dedup, err)
	}
	e := run(t, db, svc)
	waitFor(t, "the run", func() bool { return e.svc.Status(ctx)[0].Processed == 1 })
	if dedup, err := svc.Enqueue(ctx, ev(`{"n":3}`)); err != nil || !dedup {
		t.Fatalf("repeat with another payload after the run = %v, %v; want deduplicated", dedup, err)
	}
	// A synchronous KeyOnly repeat gets the first result.
	res, err := svc.Invoke(ctx, ev(`{"n":4}`))
	if err != nil || !res.Replayed || !strings.Contains(string(res.Payload), `{"n":1}`) {
		t.Fatalf("synchronous KeyOnly repeat = %+v, %v; want the first run's result, replayed", res, err)
	}
	time.Sleep(100 * time.Millisecond) // nothing more runs
	if n := c.runs.Load(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
	if st := e.svc.Status(ctx)[0]; st.Processed != 1 || st.Skipped != 0 {
		t.Errorf("queue = %+v, want 1 processed and nothing else queued", st)
	}
}

// TestDefaultKeyWithoutKeyOnly: a DefaultKey alone is an ordinary key, so
// another payload under it is still a payload mismatch; it may hold UTF-8
// (an Idempotency-Key may not) and is bound to 1024 bytes.
func TestDefaultKeyWithoutKeyOnly(t *testing.T) {
	c := &counted{}
	ctx := context.Background()
	db, svc := open(t, "", nil, nil, goFunction("f", c.handle))
	defer db.Close()
	key := "bucket/naïve/文件.txt"
	if dedup, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"n":1}`), DefaultKey: key}); err != nil || dedup {
		t.Fatalf("first Enqueue = %v, %v; want queued", dedup, err)
	}
	if dedup, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"n":1}`), DefaultKey: key}); err != nil || !dedup {
		t.Fatalf("repeat = %v, %v; want deduplicated", dedup, err)
	}
	var ie *invoke.Error
	_, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"n":2}`), DefaultKey: key})
	if !errors.As(err, &ie) || ie.Status != http.StatusUnprocessableEntity || ie.Code != "IdempotencyPayloadMismatchException" {
		t.Errorf("another payload without KeyOnly = %v, want 422 IdempotencyPayloadMismatchException", err)
	}
	// A KeyOnly request is another kind of claim: the key was taken by a
	// payload, so it is a mismatch too.
	_, err = svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"n":1}`), DefaultKey: key, KeyOnly: true})
	if !errors.As(err, &ie) || ie.Status != http.StatusUnprocessableEntity {
		t.Errorf("KeyOnly under a key a payload holds = %v, want 422", err)
	}
	_, err = svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{}`), IdempotencyKey: key})
	if !errors.As(err, &ie) || ie.Status != http.StatusBadRequest {
		t.Errorf("the same text as an Idempotency-Key = %v, want 400 (printable ASCII only)", err)
	}
	_, err = svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{}`), DefaultKey: strings.Repeat("k", 1025), KeyOnly: true})
	if !errors.As(err, &ie) || ie.Status != http.StatusBadRequest || !strings.Contains(ie.Message, "1024") {
		t.Errorf("a DefaultKey of 1025 bytes = %v, want 400 naming the limit", err)
	}
	if err := svc.Check(invoke.Request{Function: "f", DefaultKey: strings.Repeat("k", 1024)}); err != nil {
		t.Errorf("a DefaultKey of 1024 bytes: %v", err)
	}
}

// TestKeyPrecedence: the Idempotency-Key wins over the function's key
// expression, which wins over the DefaultKey; KeyOnly applies to whichever
// key is used, so two versions of one object under an expression that
// names the object run once.
func TestKeyPrecedence(t *testing.T) {
	c := &counted{}
	fn := goFunction("f", c.handle)
	fn.IdempotencyKey = "id"
	ctx := context.Background()
	e := start(t, "", nil, fn)
	svc := e.svc
	enq := func(req invoke.Request) bool {
		t.Helper()
		req.Function = "f"
		dedup, err := svc.Enqueue(ctx, req)
		if err != nil {
			t.Fatalf("Enqueue(%s): %v", req.Payload, err)
		}
		return dedup
	}
	if enq(invoke.Request{Payload: []byte(`{"id":"A","v":1}`), DefaultKey: "v1", KeyOnly: true}) {
		t.Fatal("first version deduplicated")
	}
	if !enq(invoke.Request{Payload: []byte(`{"id":"A","v":2}`), DefaultKey: "v2", KeyOnly: true}) {
		t.Error("second version of key A queued: the expression's key, not the DefaultKey, names the event")
	}
	waitFor(t, "the run", func() bool { return c.runs.Load() == 1 })
	waitFor(t, "the event done", func() bool { return svc.Status(ctx)[0].Processed == 1 })
	if !enq(invoke.Request{Payload: []byte(`{"id":"A","v":3}`), DefaultKey: "v3", KeyOnly: true}) {
		t.Error("third version of key A after the run queued")
	}
	// The header's key wins over the expression.
	if enq(invoke.Request{Payload: []byte(`{"id":"A","v":4}`), IdempotencyKey: "H", KeyOnly: true}) {
		t.Error("an Idempotency-Key of its own deduplicated")
	}
	waitFor(t, "the second run", func() bool { return c.runs.Load() == 2 })
	// Without a key in the payload the expression fails, as before: the
	// DefaultKey does not stand in for it.
	var ie *invoke.Error
	if _, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"v":5}`), DefaultKey: "v5", KeyOnly: true}); !errors.As(err, &ie) || ie.Status != http.StatusBadRequest {
		t.Errorf("payload without the expression's key = %v, want 400", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := c.runs.Load(); n != 2 {
		t.Errorf("%d runs, want 2", n)
	}
}

// TestKeyOnlySurvivesRestart: KeyOnly is in the queued event's envelope,
// so the event runs under the key's hash after a restart, and a repeat
// with another payload, before and after that run, is deduplicated.
func TestKeyOnlySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := &counted{}
	fn := goFunction("f", c.handle)
	ctx := context.Background()
	ev := func(payload string) invoke.Request {
		return invoke.Request{Function: "f", Payload: []byte(payload), DefaultKey: "k", KeyOnly: true}
	}
	db, svc := open(t, dir, nil, nil, fn)
	if dedup, err := svc.Enqueue(ctx, ev(`{"n":1}`)); err != nil || dedup {
		t.Fatalf("first Enqueue = %v, %v", dedup, err)
	}
	db.Close() // never ran

	e := start(t, dir, nil, fn)
	if dedup, err := e.svc.Enqueue(ctx, ev(`{"n":2}`)); err != nil || !dedup {
		t.Fatalf("repeat after the restart = %v, %v; want deduplicated", dedup, err)
	}
	waitFor(t, "the event done", func() bool { return e.svc.Status(ctx)[0].Processed == 1 })
	if dedup, err := e.svc.Enqueue(ctx, ev(`{"n":3}`)); err != nil || !dedup {
		t.Fatalf("repeat after the run = %v, %v; want deduplicated", dedup, err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := c.runs.Load(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}
