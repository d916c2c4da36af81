package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/server"
)

// fixable is an in-process batch handler that fails every batch while
// broken is set, and otherwise counts the runs of each record's data.
type fixable struct {
	broken atomic.Bool
	mu     sync.Mutex
	runs   map[string]int
}

func (f *fixable) HandleBatch(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
	if f.broken.Load() {
		return idem.BatchResult{}, errors.New("broken")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range b.Records {
		f.runs[string(r.Data)]++
	}
	return idem.BatchResult{}, nil
}

func (f *fixable) counts() (total, distinct, max int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.runs {
		total += n
		distinct++
		if n > max {
			max = n
		}
	}
	return
}

func redriveConfig(key string) string {
	return fmt.Sprintf(`
auth: {tokens: [%s]}
streams: [{name: orders, shards: 2}, {name: orders-failed, shards: 2}]
functions: [{name: fix, timeout: 10s}]
mappings:
  - name: m
    source: {stream: orders}
    function: fix
    startingPosition: TRIM_HORIZON
    batchSize: 100
    maximumRetryAttempts: 0
    idempotency: {key: %q}
    destinationConfig: {onFailure: {stream: orders-failed}}
`, token, key)
}

func redrive(t *testing.T, addr string, req server.RedriveRequest) (int, server.RedriveResponse, string) {
	t.Helper()
	b, _ := json.Marshal(req)
	code, body := call(t, "POST", "http://"+addr+"/v1/redrive", "Bearer "+token, string(b))
	var out server.RedriveResponse
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("redrive answer %s: %v", body, err)
		}
	}
	return code, out, body
}

func discarded(t *testing.T, addr string) uint64 {
	var n uint64
	for _, s := range status(t, addr).Shards {
		if s.Mapping == "m" {
			n += s.Discarded
		}
	}
	return n
}

// TestRedrive discards 1,000 records of a broken function, fixes it, and
// redrives them: a dry run sends nothing, the redrive runs every record
// exactly once, and a second redrive sends none. It runs with identity keys
// and with payload keys.
func TestRedrive(t *testing.T) {
	for _, key := range []string{"", "id"} {
		t.Run("key="+key, func(t *testing.T) {
			fn := &fixable{runs: map[string]int{}}
			fn.broken.Store(true)
			addr := serve(t, redriveConfig(key), nil, server.WithHandler("fix", fn))
			const n = 1000
			data := make([]string, n)
			for i := range data {
				data[i] = fmt.Sprintf(`{"id":"order-%d"}`, i)
			}
			putRecords(t, addr, "orders", data...)
			eventually(t, "1,000 records discarded", func() bool { return discarded(t, addr) == n })
			fn.broken.Store(false)

			req := server.RedriveRequest{From: "orders-failed", Mapping: "m", DryRun: true}
			code, out, body := redrive(t, addr, req)
			if code != 200 || out.WouldSend != n || out.Sent != 0 || len(out.Records) != 100 {
				t.Fatalf("dry run: %d wouldSend %d sent %d records %d: %.300s", code, out.WouldSend, out.Sent, len(out.Records), body)
			}
			r0 := out.Records[0]
			if r0.Stream != "orders" || r0.Condition != "RetryAttemptsExhausted" || r0.SequenceNumber == "" || !strings.HasPrefix(r0.Shard, "shardId-") {
				t.Errorf("dry run's first record: %+v", r0)
			}
			if key != "" && !strings.HasPrefix(r0.IdempotencyKey, "order-") {
				t.Errorf("dry run's first record's key %q, want the payload's", r0.IdempotencyKey)
			}
			if total, _, _ := fn.counts(); total != 0 {
				t.Fatalf("a dry run ran %d records", total)
			}

			req.DryRun = false
			if code, out, body = redrive(t, addr, req); code != 200 || out.Sent != n || out.WouldSend != n {
				t.Fatalf("redrive: %d %.300s", code, body)
			}
			eventually(t, "every redriven record processed", func() bool { total, _, _ := fn.counts(); return total >= n })
			if code, out, body = redrive(t, addr, req); code != 200 || out.Sent != 0 || out.WouldSend != 0 {
				t.Fatalf("second redrive: %d %.300s", code, body)
			}
			// The second redrive sent nothing; put a marker after it and
			// wait for it, so that anything sent twice would have run.
			putRecords(t, addr, "orders", `{"id":"marker"}`)
			eventually(t, "the marker processed", func() bool { _, d, _ := fn.counts(); return d == n+1 })
			if total, distinct, max := fn.counts(); total != n+1 || distinct != n+1 || max != 1 {
				t.Fatalf("runs: %d in all, %d distinct, at most %d of one record; want each of %d once", total, distinct, max, n+1)
			}
		})
	}
}

// keyedFixable is fixable for payload-keyed records: it counts the runs of
// each idempotency key, and notes a key that is not the record's order id.
type keyedFixable struct {
	broken atomic.Bool
	mu     sync.Mutex
	runs   map[string]int
	wrong  []string
}

func (f *keyedFixable) HandleBatch(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
	if f.broken.Load() {
		return idem.BatchResult{}, errors.New("broken")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range b.Records {
		var d struct {
			Order struct {
				ID string `json:"id"`
			} `json:"order"`
		}
		if err := json.Unmarshal(r.Data, &d); err != nil || d.Order.ID != r.IdempotencyKey {
			f.wrong = append(f.wrong, fmt.Sprintf("key %q for %s", r.IdempotencyKey, r.Data))
		}
		f.runs[r.IdempotencyKey]++
	}
	return idem.BatchResult{}, nil
}

func (f *keyedFixable) runsOf(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[key]
}

// TestRedrivePayloadKeys discards 200 records of a mapping keyed by
// idempotency.key, fixes the function, and redrives them: each order runs
// exactly once under its original key (the redrive removed the marks its
// discarding wrote), a second redrive sends nothing, and a replayed copy
// of an order put afterwards is skipped, its key now completed.
func TestRedrivePayloadKeys(t *testing.T) {
	fn := &keyedFixable{runs: map[string]int{}}
	fn.broken.Store(true)
	addr := serve(t, redriveConfig("order.id"), nil, server.WithHandler("fix", fn))
	const n = 200
	data := make([]string, n)
	for i := range data {
		data[i] = fmt.Sprintf(`{"order": {"id": "A-%d"}}`, i)
	}
	putRecords(t, addr, "orders", data...)
	eventually(t, "200 records discarded", func() bool { return discarded(t, addr) == n })
	fn.broken.Store(false)

	req := server.RedriveRequest{From: "orders-failed", Mapping: "m"}
	code, out, body := redrive(t, addr, req)
	if code != 200 || out.Sent != n || out.WouldSend != n {
		t.Fatalf("redrive: %d %.300s", code, body)
	}
	if k := out.Records[0].IdempotencyKey; !strings.HasPrefix(k, "A-") {
		t.Errorf("redrive's first record's key %q, want the payload's", k)
	}
	eventually(t, "every order processed", func() bool {
		for i := 0; i < n; i++ {
			if fn.runsOf(fmt.Sprintf("A-%d", i)) == 0 {
				return false
			}
		}
		return true
	})
	if code, out, body = redrive(t, addr, req); code != 200 || out.Sent != 0 || out.WouldSend != 0 {
		t.Fatalf("second redrive: %d %.300s", code, body)
	}
	// A replayed copy of an order, then a marker: once the marker ran, the
	// copy had its turn.
	putRecords(t, addr, "orders", `{"order": {"id": "A-7"}}`, `{"order": {"id": "marker"}}`)
	eventually(t, "the marker processed", func() bool { return fn.runsOf("marker") == 1 })
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if len(fn.wrong) > 0 {
		t.Errorf("records run under another key than their order id: %v", fn.wrong)
	}
	if len(fn.runs) != n+1 {
		t.Errorf("%d keys ran, want %d", len(fn.runs), n+1)
	}
	for i := 0; i < n; i++ {
		if k := fmt.Sprintf("A-%d", i); fn.runs[k] != 1 {
			t.Errorf("order %s ran %d times, want once", k, fn.runs[k])
		}
	}
}

// TestRedriveRefusals: requests a redrive cannot honour are refused with a
// reason, and the route needs a token.
func TestRedriveRefusals(t *testing.T) {
	fn := &fixable{runs: map[string]int{}}
	addr := serve(t, redriveConfig("id"), nil, server.WithHandler("fix", fn))
	for _, c := range []struct {
		req  server.RedriveRequest
		code int
		says string
	}{
		{server.RedriveRequest{Mapping: "m"}, 400, "from"},
		{server.RedriveRequest{From: "orders-failed"}, 400, "exactly one"},
		{server.RedriveRequest{From: "orders-failed", Mapping: "m", Function: "fix"}, 400, "exactly one"},
		{server.RedriveRequest{From: "nope", Mapping: "m"}, 404, "nope"},
		{server.RedriveRequest{From: "orders-failed", Mapping: "x"}, 404, "mapping"},
	} {
		code, _, body := redrive(t, addr, c.req)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%+v: %d %s, want %d saying %q", c.req, code, body, c.code, c.says)
		}
	}
	if code, _ := call(t, "POST", "http://"+addr+"/v1/redrive", "", `{"from":"orders-failed","mapping":"m"}`); code != 401 && code != 403 {
		t.Errorf("without a token: %d, want 401 or 403", code)
	}
}

// fixableInvoke is an in-process invoke handler that fails while broken is
// set, and otherwise counts the runs of each payload.
type fixableInvoke struct{ fixable }

func (f *fixableInvoke) invoke(_ context.Context, payload []byte) ([]byte, error) {
	if f.broken.Load() {
		return nil, errors.New("broken")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs[string(payload)]++
	return []byte(`{}`), nil
}

// sendEvent invokes function F asynchronously (Event) with payload, under
// the Idempotency-Key key when it is set.
func sendEvent(t *testing.T, addr, payload, key string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+addr+"/2015-03-31/functions/F/invocations", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Amz-Invocation-Type", "Event")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 {
		t.Fatalf("Event %s (key %q): %d %s", payload, key, resp.StatusCode, b)
	}
}

// queueOf reads F's queue in GET /v1/status.
func queueOf(t *testing.T, addr string) invoke.QueueStatus {
	t.Helper()
	for _, q := range status(t, addr).Queues {
		if q.Function == "F" {
			return q
		}
	}
	t.Fatal("no queue of F in /v1/status")
	return invoke.QueueStatus{}
}

// failedRecords counts the records of both shards of fn-failed.
func failedRecords(t *testing.T, addr string) int {
	t.Helper()
	records := 0
	for _, sh := range []string{"shardId-000000000000", "shardId-000000000001"} {
		code, body := call(t, "GET", "http://"+addr+"/v1/streams/fn-failed/records?shard="+sh, "Bearer "+token, "")
		if code != 200 {
			t.Fatalf("reading fn-failed %s: %d %s", sh, code, body)
		}
		var out struct {
			Records []json.RawMessage `json:"records"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("fn-failed records %.300s: %v", body, err)
		}
		records += len(out.Records)
	}
	return records
}

// TestRedriveAsyncEvents gives up 50 asynchronous events of a broken
// function (half of them with an idempotency key), fixes it, and redrives
// them from the function's on-failure stream: a dry run sends nothing, the
// redrive runs every event exactly once, and a second redrive sends none.
func TestRedriveAsyncEvents(t *testing.T) {
	fn := &fixableInvoke{fixable{runs: map[string]int{}}}
	fn.broken.Store(true)
	addr := serve(t, `
auth: {tokens: [`+token+`]}
streams: [{name: fn-failed, shards: 2}]
functions:
  - name: F
    timeout: 10s
    async: {maximumRetryAttempts: 0, onFailure: {stream: fn-failed}, retry: {baseDelay: 1s}}
`, nil, server.WithInvokeHandler("F", idem.InvokeFunc(fn.invoke)))
	const n = 50
	for i := range n {
		key := ""
		if i%2 == 0 {
			key = fmt.Sprintf("k-%d", i)
		}
		sendEvent(t, addr, fmt.Sprintf(`{"n": %d}`, i), key)
	}
	// Each given-up event is written to fn-failed as a failure record and
	// the event itself.
	eventually(t, "50 events given up to fn-failed", func() bool { return failedRecords(t, addr) == 2*n })
	eventually(t, "the queue's status to count them", func() bool { return queueOf(t, addr).Discarded == n })
	if q := queueOf(t, addr); q.Discarded != n || q.Queued != 0 {
		t.Fatalf("queue with every event given up: %+v", q)
	}
	if total, _, _ := fn.counts(); total != 0 {
		t.Fatalf("the broken function ran %d events", total)
	}
	fn.broken.Store(false)

	req := server.RedriveRequest{From: "fn-failed", Function: "F", DryRun: true}
	code, out, body := redrive(t, addr, req)
	if code != 200 || out.WouldSend != n || out.Sent != 0 || len(out.Records) != n {
		t.Fatalf("dry run: %d wouldSend %d sent %d records %d: %.300s", code, out.WouldSend, out.Sent, len(out.Records), body)
	}
	keyed, fresh := 0, 0
	for _, r := range out.Records {
		switch {
		case strings.HasPrefix(r.IdempotencyKey, "k-"):
			keyed++
		case strings.HasPrefix(r.IdempotencyKey, "idem-redrive:fn-failed/"):
			fresh++
		default:
			t.Errorf("dry run's record %+v: key neither the original nor idem-redrive:", r)
		}
		if r.Stream != "fn-failed" || r.Condition != "RetriesExhausted" {
			t.Errorf("dry run's record %+v", r)
		}
	}
	if keyed != n/2 || fresh != n/2 {
		t.Errorf("dry run: %d records with their original key and %d with a redrive key, want %d each", keyed, fresh, n/2)
	}
	time.Sleep(200 * time.Millisecond)
	if total, _, _ := fn.counts(); total != 0 {
		t.Fatalf("a dry run ran %d events", total)
	}

	req.DryRun = false
	if code, out, body = redrive(t, addr, req); code != 200 || out.Sent != n || out.WouldSend != n || out.Skipped != 0 {
		t.Fatalf("redrive: %d %.300s", code, body)
	}
	eventually(t, "every redriven event processed", func() bool { return queueOf(t, addr).Processed == n })
	if code, out, body = redrive(t, addr, req); code != 200 || out.Sent != 0 || out.WouldSend != 0 {
		t.Fatalf("second redrive: %d %.300s", code, body)
	}
	// The second redrive sent nothing; send a marker after it and wait
	// for it, so that anything sent twice would have run.
	sendEvent(t, addr, `{"marker": true}`, "")
	eventually(t, "the marker processed", func() bool { _, d, _ := fn.counts(); return d == n+1 })
	eventually(t, "the queue drained", func() bool { return queueOf(t, addr).Queued == 0 })
	if total, distinct, max := fn.counts(); total != n+1 || distinct != n+1 || max != 1 {
		t.Fatalf("runs: %d in all, %d distinct, at most %d of one payload; want each of %d once", total, distinct, max, n+1)
	}
	for i := range n {
		if p := fmt.Sprintf(`{"n": %d}`, i); fn.runs[p] != 1 {
			t.Errorf("payload %s ran %d times", p, fn.runs[p])
		}
	}
	// Status counts what is committed: the marker's outcome lands just
	// after its run.
	eventually(t, "the marker's outcome committed", func() bool { return queueOf(t, addr).Processed == n+1 })
	if q := queueOf(t, addr); q.Processed != n+1 || q.Discarded != n || q.Skipped != 0 {
		t.Errorf("queue after: %+v", q)
	}
}
