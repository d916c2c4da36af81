package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem/server"
)

// fixableFn is an HTTP function that fails every invocation (Lambda's
// Unhandled function error) while broken is set, and once fixed keeps, for
// each record's data, the idempotency keys it was delivered under and how
// many times. A real function processes a key once: the records it
// processed are the distinct keys.
type fixableFn struct {
	*httptest.Server
	broken atomic.Bool

	mu       sync.Mutex
	failed   int                       // invocations answered with an error
	keys     map[string]map[string]int // data → idempotency key → deliveries
	delivers int                       // records delivered once fixed
	errs     []string
}

// newFixableFn starts a broken fixableFn; a cleanup stops it.
func newFixableFn(t *testing.T) *fixableFn {
	t.Helper()
	f := &fixableFn{keys: make(map[string]map[string]int)}
	f.broken.Store(true)
	f.Server = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	t.Cleanup(f.Close)
	return f
}

func (f *fixableFn) serveHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		// idem serve was killed while sending the invocation.
		return
	}
	var ev struct {
		Records []delivered `json:"Records"`
	}
	err = json.Unmarshal(b, &ev)
	w.Header().Set("Content-Type", "application/json")
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil || len(ev.Records) == 0 {
		f.errs = append(f.errs, fmt.Sprintf("%s %s: %v: %.200s", r.Method, r.URL, err, b))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if f.broken.Load() {
		f.failed++
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		io.WriteString(w, `{"errorType":"OrderError","errorMessage":"cannot ship"}`)
		return
	}
	for _, rec := range ev.Records {
		d := string(rec.Kinesis.Data)
		if f.keys[d] == nil {
			f.keys[d] = make(map[string]int)
		}
		f.keys[d][rec.IdempotencyKey]++
		f.delivers++
	}
	io.WriteString(w, `{}`)
}

// seen returns how many records were delivered since the function was
// fixed, and how many distinct data.
func (f *fixableFn) seen() (delivers, distinct int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delivers, len(f.keys)
}

// redriveMapping is the mapping the redrive tests redrive.
const redriveMapping = "orders-to-ship"

// redriveEnv is `idem serve` (the real binary) with the stream orders of 2
// shards, its on-failure stream orders-failed, and the mapping
// orders-to-ship to a fixableFn, which discards a record at its first
// failure.
type redriveEnv struct {
	idemBin, cfg, addr string
	fn                 *fixableFn
	a                  *api
	srv                *serveProc
}

func newRedriveEnv(t *testing.T) *redriveEnv {
	t.Helper()
	idemBin, _ := binaries(t)
	e := &redriveEnv{idemBin: idemBin, fn: newFixableFn(t)}
	dir := t.TempDir()
	e.addr = freeAddr(t)
	e.cfg = filepath.Join(dir, "idem.yaml")
	writeFile(t, e.cfg, fmt.Sprintf(`dataDir: %q
listen: %s
streams:
  - {name: orders, shards: 2}
  - {name: orders-failed}
functions:
  - {name: ship-order, http: {url: %q}, timeout: 5s}
mappings:
  - name: %s
    source: {stream: orders}
    function: ship-order
    startingPosition: TRIM_HORIZON
    batchSize: 500
    maximumRetryAttempts: 0
    retry: {baseDelay: 1ms, maxDelay: 1ms}
    destinationConfig: {onFailure: {stream: orders-failed}}
`, filepath.Join(dir, "idem-data"), e.addr, e.fn.URL+"/", redriveMapping))
	e.a = newAPI(e.addr)
	e.srv = startServe(t, idemBin, e.cfg, e.addr)
	return e
}

// orderData is the data of order i, padded so that the redrive's writes
// take some time.
func orderData(i int) string {
	return fmt.Sprintf("order-%06d-%s", i, strings.Repeat("x", 500))
}

// putAndDiscard puts n orders (orderData(0…n-1)) while the function is
// broken, waits until the mapping has discarded all of them and committed
// past them, and fixes the function.
func (e *redriveEnv) putAndDiscard(t *testing.T, n int) {
	t.Helper()
	ctx := context.Background()
	recs := make([]server.PutRecord, n)
	for i := range recs {
		recs[i] = server.PutRecord{PartitionKey: fmt.Sprintf("pk-%03d", i%64), Data: orderData(i)}
	}
	if res := putAll(ctx, e.a, "orders", "orders", recs, 500, 0); res.err != nil || len(res.acks) != n {
		t.Fatalf("putting %d orders: %d acknowledged, %d POSTs failed: %v", n, len(res.acks), res.failedPosts, res.err)
	}
	eventually(t, time.Minute, fmt.Sprintf("%d orders discarded", n), func() (bool, string) {
		sts, err := e.a.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		var d uint64
		for _, s := range sts {
			if s.Mapping == redriveMapping {
				d += s.Discarded
			}
		}
		return d == uint64(n), fmt.Sprintf("%d discarded", d)
	})
	waitCaughtUp(t, e.a, redriveMapping, "orders", time.Minute)
	e.fn.mu.Lock()
	failed, delivers := e.fn.failed, e.fn.delivers
	e.fn.mu.Unlock()
	if failed == 0 || delivers != 0 {
		t.Fatalf("broken function: %d failed invocations, %d records processed; want some and none", failed, delivers)
	}
	e.fn.broken.Store(false)
}

// ordersCount returns how many records of orders hold each data.
func (e *redriveEnv) ordersCount(t *testing.T) (map[string]int, int) {
	t.Helper()
	byShard, err := e.a.allRecords(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	out, total := make(map[string]int), 0
	for _, recs := range byShard {
		for _, r := range recs {
			out[r.Data]++
			total++
		}
	}
	return out, total
}

// ordersLatest returns the newest sequence of each shard of orders.
func (e *redriveEnv) ordersLatest(ctx context.Context) (map[string]uint64, error) {
	return e.a.latest(ctx, "orders")
}

// redriveRun is a running `idem redrive` command.
type redriveRun struct {
	cmd          *exec.Cmd
	stdout, errb strings.Builder
	done         chan struct{}
	err          error
}

// startRedrive runs `idem redrive --from orders-failed --mapping M --json`
// plus extra arguments in the background.
func (e *redriveEnv) startRedrive(t *testing.T, extra ...string) *redriveRun {
	t.Helper()
	args := append([]string{"redrive", "--addr", e.addr, "--from", "orders-failed", "--mapping", redriveMapping, "--json"}, extra...)
	r := &redriveRun{cmd: exec.Command(e.idemBin, args...), done: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.errb
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("idem %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// wait waits for the command, at most a minute, and returns its answer,
// decoded when it exited 0.
func (r *redriveRun) wait(t *testing.T) (server.RedriveResponse, error) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		t.Fatalf("idem redrive did not exit within a minute; stderr %q", r.errb.String())
	}
	var out server.RedriveResponse
	if r.err != nil {
		return out, fmt.Errorf("%v: stderr %q", r.err, r.errb.String())
	}
	if err := json.Unmarshal([]byte(r.stdout.String()), &out); err != nil {
		t.Fatalf("idem redrive --json printed %q: %v", r.stdout.String(), err)
	}
	return out, nil
}

// TestRedriveKilledHalfway discards n orders of a broken HTTP function,
// fixes it, runs `idem redrive` and SIGKILLs `idem serve` as soon as the
// redrive's first records have landed in orders, while it is still
// sending: the command must fail. It restarts the server on the same data
// directory and redrives again, to completion. Each order must then be in
// orders exactly twice (the original and one redriven copy: the records the
// first run committed were not sent again, none was lost), and the fixed
// function must have processed each order's data under exactly one
// idempotency key (the copy's). If the first redrive finished before the
// kill, the scenario runs once more with more orders.
func TestRedriveKilledHalfway(t *testing.T) {
	sizes := []int{3000, 12000}
	for i, n := range sizes {
		interrupted := false
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			interrupted = redriveKilledHalfway(t, n)
			if !interrupted {
				if i == len(sizes)-1 {
					t.Fatalf("the first redrive of %d records finished before idem serve was killed: the test proved nothing", n)
				}
				t.Logf("the first redrive of %d records finished before idem serve was killed: trying with more records", n)
			}
		})
		if interrupted || t.Failed() {
			return
		}
	}
}

// redriveKilledHalfway runs the scenario of TestRedriveKilledHalfway with n
// orders. It returns false when the first redrive completed before the kill.
func redriveKilledHalfway(t *testing.T, n int) bool {
	ctx := context.Background()
	e := newRedriveEnv(t)
	e.putAndDiscard(t, n)
	base, err := e.ordersLatest(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Redrive, and kill -9 the server once the redrive's first records are
	// in orders (or at the function), polling as fast as we can.
	run := e.startRedrive(t)
	poll := &http.Client{Timeout: 2 * time.Second}
	pollAPI := &api{base: e.a.base, hc: poll}
	deadline := time.Now().Add(time.Minute)
	var trigger string
	for trigger == "" {
		select {
		case <-run.done:
			trigger = "the redrive finished"
			continue
		default:
		}
		if d, _ := e.fn.seen(); d > 0 {
			trigger = fmt.Sprintf("the function saw %d redriven records", d)
			continue
		}
		if l, err := pollAPI.latest(ctx, "orders"); err == nil {
			for sh, seq := range l {
				if seq != base[sh] {
					trigger = fmt.Sprintf("orders shard %s grew from %d to %d", sh, base[sh], seq)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no redriven record showed up within a minute; redrive: %q %q", run.stdout.String(), run.errb.String())
		}
	}
	e.srv.kill()
	t.Logf("killed idem serve: %s", trigger)
	out, err := run.wait(t)
	if err == nil {
		t.Logf("the first redrive completed before the kill: sent %d", out.Sent)
		return false
	}
	t.Logf("the first redrive failed, as it should: %v", err)

	// Restart on the same data directory: what the first run sent is in
	// orders, durably, and the rest is not.
	e.srv = startServe(t, e.idemBin, e.cfg, e.addr)
	counts, total := e.ordersCount(t)
	firstSent := total - n
	if firstSent <= 0 || firstSent >= n {
		t.Fatalf("after the kill orders holds %d records: the first redrive sent %d of %d; want some and not all", total, firstSent, n)
	}
	for d, c := range counts {
		if c > 2 {
			t.Fatalf("after the kill orders holds %q %d times", d[:12], c)
		}
	}
	t.Logf("the first redrive sent %d of %d records before the kill", firstSent, n)

	out, err = e.startRedrive(t).wait(t)
	if err != nil {
		t.Fatalf("second redrive: %v", err)
	}
	if out.Sent != n-firstSent || out.WouldSend != n-firstSent {
		t.Errorf("second redrive: sent %d, wouldSend %d; want the %d the first did not send", out.Sent, out.WouldSend, n-firstSent)
	}
	// A third redrive has nothing left to send.
	if out, err := e.startRedrive(t).wait(t); err != nil || out.Sent != 0 || out.WouldSend != 0 {
		t.Errorf("third redrive: sent %d, wouldSend %d, %v; want nothing to send", out.Sent, out.WouldSend, err)
	}
	waitCaughtUp(t, e.a, redriveMapping, "orders", time.Minute)

	// Each order is in orders twice: the original and one copy.
	counts, total = e.ordersCount(t)
	if total != 2*n {
		t.Errorf("orders holds %d records, want %d (each of %d orders and one redriven copy)", total, 2*n, n)
	}
	// The fixed function processed each order under one idempotency key.
	e.fn.mu.Lock()
	defer e.fn.mu.Unlock()
	if len(e.fn.errs) > 0 {
		t.Errorf("the function received %d invocations it could not decode, the first: %s", len(e.fn.errs), e.fn.errs[0])
	}
	var bad []string
	for i := range n {
		d := orderData(i)
		if c := counts[d]; c != 2 {
			bad = append(bad, fmt.Sprintf("order %d is in orders %d times, want 2", i, c))
		}
		keys := e.fn.keys[d]
		if len(keys) != 1 {
			ks := make([]string, 0, len(keys))
			for k := range keys {
				ks = append(ks, k)
			}
			sort.Strings(ks)
			bad = append(bad, fmt.Sprintf("order %d was processed under %d idempotency keys %q, want 1", i, len(keys), ks))
		}
		for k := range keys {
			if !strings.HasPrefix(k, "orders/shardId-") {
				bad = append(bad, fmt.Sprintf("order %d was processed under key %q, want orders/<shard>/<sequence>", i, k))
			}
		}
	}
	if len(e.fn.keys) != n {
		bad = append(bad, fmt.Sprintf("the function processed %d distinct data, want %d", len(e.fn.keys), n))
	}
	for i, b := range bad {
		if i == 10 {
			t.Errorf("… and %d more", len(bad)-10)
			break
		}
		t.Error(b)
	}
	t.Logf("the fixed function received %d records for %d orders (redeliveries after the kill under the same key: %d)",
		e.fn.delivers, n, e.fn.delivers-n)
	return true
}

// TestRedriveDryRunSendsNothing discards 300 orders of a broken HTTP
// function, fixes it, and runs `idem redrive --dry-run --json`: it reports
// the 300 records it would send (the first 100 listed, as discarded from
// orders), and sends nothing: orders does not grow and the function is not
// invoked. A real redrive afterwards still sends all 300: the dry run did
// not move the redrive's progress.
func TestRedriveDryRunSendsNothing(t *testing.T) {
	const n = 300
	ctx := context.Background()
	e := newRedriveEnv(t)
	e.putAndDiscard(t, n)
	base, err := e.ordersLatest(ctx)
	if err != nil {
		t.Fatal(err)
	}

	out, err := e.startRedrive(t, "--dry-run").wait(t)
	if err != nil {
		t.Fatalf("idem redrive --dry-run: %v", err)
	}
	if out.WouldSend != n || out.Sent != 0 || out.Skipped != 0 || len(out.Records) != 100 {
		t.Fatalf("dry run: wouldSend %d, sent %d, skipped %d, %d records listed; want %d, 0, 0, 100", out.WouldSend, out.Sent, out.Skipped, len(out.Records), n)
	}
	for i, r := range out.Records {
		if r.Stream != "orders" || !strings.HasPrefix(r.Shard, "shardId-") || r.SequenceNumber == "" || !strings.HasPrefix(r.PartitionKey, "pk-") || r.Condition != "RetryAttemptsExhausted" {
			t.Errorf("dry run's record %d: %+v", i, r)
		}
	}
	// Nothing reaches orders or the function.
	time.Sleep(500 * time.Millisecond)
	if l, err := e.ordersLatest(ctx); err != nil || fmt.Sprint(l) != fmt.Sprint(base) {
		t.Errorf("after the dry run orders' newest sequences are %v (%v), want %v", l, err, base)
	}
	if d, _ := e.fn.seen(); d != 0 {
		t.Errorf("after the dry run the function received %d records, want none", d)
	}

	// The real redrive sends all of them.
	out, err = e.startRedrive(t).wait(t)
	if err != nil || out.Sent != n || out.WouldSend != n {
		t.Fatalf("redrive after the dry run: sent %d, wouldSend %d, %v; want %d sent", out.Sent, out.WouldSend, err, n)
	}
	waitCaughtUp(t, e.a, redriveMapping, "orders", time.Minute)
	if d, distinct := e.fn.seen(); distinct != n {
		t.Errorf("after the redrive the function received %d records of %d distinct orders, want %d", d, distinct, n)
	}
	if code := e.srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0", code)
	}
}
