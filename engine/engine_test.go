package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/function/httpfn"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// env is one data directory with an engine over it.
type env struct {
	t   *testing.T
	dir string
	db  *pebbledb.DB
	// store, when set, replaces the embedded store over db.
	store store.Driver
	// opts are added to the engines run makes.
	opts []engine.Option
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := pebbledb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &env{t: t, dir: dir, db: db}
}

func (v *env) stream(name string, shards int) {
	v.t.Helper()
	if err := v.db.CreateStream(name, shards, 24*time.Hour); err != nil {
		v.t.Fatal(err)
	}
}

func (v *env) put(stream, key string, data ...string) {
	v.t.Helper()
	recs := make([]pebbledb.PutRecord, len(data))
	for i, d := range data {
		recs[i] = pebbledb.PutRecord{PartitionKey: key, Data: []byte(d)}
	}
	if _, err := v.db.Put(context.Background(), stream, recs); err != nil {
		v.t.Fatal(err)
	}
}

func (v *env) source(stream string) source.Driver {
	v.t.Helper()
	s, err := srcembedded.New(v.db, stream)
	if err != nil {
		v.t.Fatal(err)
	}
	return s
}

// run starts an engine with mappings and returns a stop function that waits
// for it to end.
func (v *env) run(ms ...engine.Mapping) (*engine.Engine, func()) {
	v.t.Helper()
	st := v.store
	if st == nil {
		st = stembedded.New(v.db)
	}
	e := engine.New(st, append([]engine.Option{engine.WithLogger(testLogger(v.t)), engine.WithDrainTimeout(2 * time.Second)}, v.opts...)...)
	for _, m := range ms {
		if err := e.Add(m); err != nil {
			v.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				v.t.Error(err)
			}
		})
	}
	v.t.Cleanup(stop)
	return e, stop
}

// numbered makes stream, of one shard, with n records "0" to "n-1" of one
// key, and returns them.
func (v *env) numbered(stream string, n int) []idem.Record {
	v.t.Helper()
	v.stream(stream, 1)
	for i := range n {
		v.put(stream, "k", fmt.Sprint(i))
	}
	return v.records(stream)
}

func (v *env) records(stream string) []idem.Record {
	v.t.Helper()
	var out []idem.Record
	shards, err := v.source(stream).Shards(context.Background())
	if err != nil {
		v.t.Fatal(err)
	}
	for _, sh := range shards {
		res, err := v.db.Read(context.Background(), stream, sh, "", 100000, 1<<30)
		if err != nil {
			v.t.Fatal(err)
		}
		for _, r := range res.Records {
			r.Data = append([]byte(nil), r.Data...)
			out = append(out, r)
		}
	}
	return out
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// waitFor polls cond until it holds or the test's patience ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func totals(e *engine.Engine) (st engine.ShardStatus) {
	for _, s := range e.Status() {
		st.Processed += s.Processed
		st.Skipped += s.Skipped
		st.Discarded += s.Discarded
		st.Invocations += s.Invocations
		st.Lost += s.Lost
		st.Filtered += s.Filtered
		st.Checkpoint = idem.MaxSequence(st.Checkpoint, s.Checkpoint)
	}
	return st
}

// failsAtFourth is ESM.md's worked example as an HTTP function: it fails at
// the 4th record of every batch, by an error or, when partial is set, by
// naming that record in batchItemFailures. It records every batch's size.
type failsAtFourth struct {
	partial bool
	mu      sync.Mutex
	sizes   []int
	firsts  []string
}

func (f *failsAtFourth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev events.KinesisEvent
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f.mu.Lock()
	f.sizes = append(f.sizes, len(ev.Records))
	f.firsts = append(f.firsts, ev.Records[0].Kinesis.SequenceNumber)
	f.mu.Unlock()
	if len(ev.Records) < 4 {
		w.Write([]byte(`{"batchItemFailures":[]}`))
		return
	}
	if !f.partial {
		w.WriteHeader(500)
		w.Write([]byte(`{"errorType":"FourthRecordError","errorMessage":"record 4 is bad"}`))
		return
	}
	json.NewEncoder(w).Encode(events.KinesisEventResponse{BatchItemFailures: []events.KinesisBatchItemFailure{{ItemIdentifier: ev.Records[3].EventID}}})
}

func (f *failsAtFourth) calls() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.sizes...)
}

func httpFunction(t *testing.T, h http.Handler, opts ...httpfn.Option) function.Driver {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	d, err := httpfn.New(srv.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func workedMapping(v *env, fn function.Driver) engine.Mapping {
	return engine.Mapping{
		Name: "orders-to-ship", Stream: "orders", Source: v.source("orders"), Function: "ship-order", Invoker: fn,
		BatchSize: 10, StartingPosition: source.TrimHorizon,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	}
}

func tenRecords(v *env) {
	v.stream("orders", 1)
	v.stream("orders-failed", 1)
	data := make([]string, 10)
	for i := range data {
		data[i] = fmt.Sprintf(`{"order":%d}`, i+1)
	}
	v.put("orders", "customer-1", data...)
}

// TestWorkedExample reproduces ESM.md's worked example through an HTTP
// function: a handler that fails at the 4th record of every batch, over 10
// records with batchSize 10.
func TestWorkedExample(t *testing.T) {
	t.Run("default settings redeliver the same 10", func(t *testing.T) {
		v := newEnv(t)
		tenRecords(v)
		f := &failsAtFourth{}
		_, stop := v.run(workedMapping(v, httpFunction(t, f)))
		waitFor(t, "5 invocations", func() bool { return len(f.calls()) >= 5 })
		stop()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, n := range f.sizes {
			if n != 10 || f.firsts[i] != f.firsts[0] {
				t.Fatalf("invocation %d: %d records from %s; want the same 10 (calls %v)", i, n, f.firsts[i], f.sizes)
			}
		}
	})

	t.Run("bisect sends 10, then 5, then 2 or 3", func(t *testing.T) {
		v := newEnv(t)
		tenRecords(v)
		f := &failsAtFourth{}
		m := workedMapping(v, httpFunction(t, f))
		m.BisectBatchOnFunctionError = true
		e, _ := v.run(m)
		waitFor(t, "all 10 processed", func() bool { return totals(e).Processed == 10 })
		got := f.calls()
		want := []int{10, 5, 2, 3, 5, 2, 3}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch sizes %v, want %v", got, want)
		}
	})

	t.Run("ReportBatchItemFailures sends 10, 7, 4, 1", func(t *testing.T) {
		v := newEnv(t)
		tenRecords(v)
		f := &failsAtFourth{partial: true}
		m := workedMapping(v, httpFunction(t, f))
		m.ReportBatchItemFailures = true
		e, _ := v.run(m)
		waitFor(t, "all 10 processed", func() bool { return totals(e).Processed == 10 })
		if got := fmt.Sprint(f.calls()); got != "[10 7 4 1]" {
			t.Fatalf("batch sizes %s, want [10 7 4 1]", got)
		}
	})

	t.Run("maximumRetryAttempts 2 makes 3 invocations, then the on-failure stream holds the batch", func(t *testing.T) {
		v := newEnv(t)
		tenRecords(v)
		f := &failsAtFourth{}
		m := workedMapping(v, httpFunction(t, f))
		m.RetryAttempts(2)
		m.OnFailure = "orders-failed"
		e, _ := v.run(m)
		waitFor(t, "10 discarded", func() bool { return totals(e).Discarded == 10 })
		if got := fmt.Sprint(f.calls()); got != "[10 10 10]" {
			t.Fatalf("batch sizes %s, want 3 invocations of 10", got)
		}
		failed := v.records("orders-failed")
		if len(failed) != 11 {
			t.Fatalf("on-failure stream holds %d records, want the metadata record and 10", len(failed))
		}
		var meta struct {
			RequestContext struct {
				Condition              string `json:"condition"`
				ApproximateInvokeCount int    `json:"approximateInvokeCount"`
			} `json:"requestContext"`
			KinesisBatchInfo struct {
				BatchSize           int    `json:"batchSize"`
				StartSequenceNumber string `json:"startSequenceNumber"`
				EndSequenceNumber   string `json:"endSequenceNumber"`
			} `json:"KinesisBatchInfo"`
		}
		if err := json.Unmarshal(failed[0].Data, &meta); err != nil {
			t.Fatalf("metadata record: %v: %s", err, failed[0].Data)
		}
		if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.RequestContext.ApproximateInvokeCount != 3 || meta.KinesisBatchInfo.BatchSize != 10 {
			t.Fatalf("metadata record %s", failed[0].Data)
		}
		for i, r := range failed[1:] {
			if want := fmt.Sprintf(`{"order":%d}`, i+1); string(r.Data) != want || r.PartitionKey != "customer-1" {
				t.Fatalf("discarded record %d = %s (key %s), want %s", i, r.Data, r.PartitionKey, want)
			}
		}
		// The shard moves on: a new record is processed.
		v.put("orders", "customer-1", `{"order":11}`)
		waitFor(t, "the 11th record", func() bool { return totals(e).Processed == 1 })
		if cp := totals(e).Checkpoint; cp != idem.SequenceOf(11) {
			t.Fatalf("checkpoint %s, want 11", cp)
		}
	})
}

// TestPerKeyOrderUnderParallelization runs parallelizationFactor 10 over
// 100 keys: no key may ever see its records out of order or concurrently.
func TestPerKeyOrderUnderParallelization(t *testing.T) {
	v := newEnv(t)
	v.stream("events", 2)
	const keys, perKey = 100, 30
	for round := 0; round < perKey; round++ {
		for k := 0; k < keys; k++ {
			v.put("events", "key-"+strconv.Itoa(k), strconv.Itoa(round))
		}
	}
	var (
		mu       sync.Mutex
		last     = map[string]int{}
		inFlight = map[string]bool{}
		maxConc  atomic.Int32
		conc     atomic.Int32
		problems []string
	)
	h := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		n := conc.Add(1)
		defer conc.Add(-1)
		for {
			m := maxConc.Load()
			if n <= m || maxConc.CompareAndSwap(m, n) {
				break
			}
		}
		round, _ := strconv.Atoi(string(r.Data))
		mu.Lock()
		if inFlight[r.PartitionKey] {
			problems = append(problems, "concurrent "+r.PartitionKey)
		}
		inFlight[r.PartitionKey] = true
		if prev, ok := last[r.PartitionKey]; ok && round != prev+1 {
			problems = append(problems, fmt.Sprintf("%s: round %d after %d", r.PartitionKey, round, prev))
		} else if !ok && round != 0 {
			problems = append(problems, fmt.Sprintf("%s: first round %d", r.PartitionKey, round))
		}
		last[r.PartitionKey] = round
		mu.Unlock()
		time.Sleep(50 * time.Microsecond)
		mu.Lock()
		inFlight[r.PartitionKey] = false
		mu.Unlock()
		return nil
	})
	e, _ := v.run(engine.Mapping{Name: "par", Stream: "events", Source: v.source("events"), Function: "f", Invoker: gofunc.New(idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		return h.HandleBatch(ctx, b)
	})), BatchSize: 10, ParallelizationFactor: 10, StartingPosition: source.TrimHorizon})
	waitFor(t, "every record", func() bool { return totals(e).Processed == keys*perKey })
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("%d order problems, first: %v", len(problems), problems[:min(5, len(problems))])
	}
	for k := 0; k < keys; k++ {
		if last["key-"+strconv.Itoa(k)] != perKey-1 {
			t.Fatalf("key-%d ended at round %d", k, last["key-"+strconv.Itoa(k)])
		}
	}
	if maxConc.Load() < 2 {
		t.Errorf("batches never ran concurrently (max %d): the test proves nothing", maxConc.Load())
	}
}

// TestReplayUnderNewMappingName is the seed 002 incident: a renamed mapping
// starts at TRIM_HORIZON over retained records; in the same scope it runs
// none of them again.
func TestReplayUnderNewMappingName(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testReplayUnderNewMappingName(t, v)
		})
	}
}

func testReplayUnderNewMappingName(t *testing.T, v *env) {
	v.stream("orders", 4)
	const n = 10000
	for i := 0; i < n; i += 500 {
		data := make([]string, 500)
		for j := range data {
			data[j] = strconv.Itoa(i + j)
		}
		v.put("orders", "k"+strconv.Itoa(i), data...)
	}
	var first, second atomic.Int64
	count := func(c *atomic.Int64) function.Driver {
		return gofunc.New(idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
			c.Add(int64(len(b.Records)))
			return idem.BatchResult{}, nil
		}))
	}
	m := engine.Mapping{Name: "orders-to-ship", Stream: "orders", Source: v.source("orders"), Function: "ship-order",
		Invoker: count(&first), StartingPosition: source.TrimHorizon, Scope: "ship-order"}
	e, stop := v.run(m)
	waitFor(t, "first mapping", func() bool { return totals(e).Processed == n })
	stop()

	m.Name, m.Function, m.Invoker = "orders-to-ship-v2", "ship-order-v2", count(&second)
	e2, _ := v.run(m)
	waitFor(t, "replay skipped", func() bool { return totals(e2).Skipped == n })
	if got := second.Load(); got != 0 {
		t.Fatalf("the renamed mapping ran %d records again", got)
	}
	if got := first.Load(); got != n {
		t.Fatalf("first mapping ran %d records, want %d", got, n)
	}
}

// TestStateCommitsWithItsRecord: a record's state writes commit if and only
// if the record commits.
func TestStateCommitsWithItsRecord(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testStateCommitsWithItsRecord(t, v)
		})
	}
}

func testStateCommitsWithItsRecord(t *testing.T, v *env) {
	v.stream("s", 1)
	v.put("s", "k", "1", "2", "3", "4", "5")
	var failedOnce atomic.Bool
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		st := idem.StateFrom(ctx)
		v, err := st.Get(ctx, "sum")
		sum := 0
		if err == nil {
			sum, _ = strconv.Atoi(string(v))
		} else if !errors.Is(err, idem.ErrNotFound) {
			return err
		}
		n, _ := strconv.Atoi(string(r.Data))
		if err := st.Put(ctx, "sum", []byte(strconv.Itoa(sum+n))); err != nil {
			return err
		}
		if n == 4 && failedOnce.CompareAndSwap(false, true) {
			return errors.New("transient")
		}
		return nil
	})
	e, stop := v.run(engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "sum", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, RetryBaseDelay: time.Millisecond})
	waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
	stop()
	got, err := v.store.State(context.Background(), "sum", "sum")
	if err != nil || string(got) != "15" {
		t.Fatalf("sum = %q, %v; want 15 (each record's write exactly once)", got, err)
	}
}

// TestBadFunctions: a function answering non-JSON, one that hangs, and one
// that names an itemIdentifier outside the batch all fail the batch, which
// then goes to the on-failure destination; nothing is lost.
func TestBadFunctions(t *testing.T) {
	cases := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"non-JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>oops</html>") }},
		{"hangs", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}},
		{"itemIdentifier outside the batch", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"batchItemFailures":[{"itemIdentifier":"shardId-000000000000:99999999999999999999"}]}`)
		}},
		{"itemIdentifier under a wrong key", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"batchItemFailures":[{"itemId":"x"}]}`)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newEnv(t)
			v.stream("in", 1)
			v.stream("dlq", 1)
			v.put("in", "k", "a", "b", "c")
			m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f",
				Invoker:          httpFunction(t, c.h, httpfn.Timeout(100*time.Millisecond)),
				FunctionTimeout:  100 * time.Millisecond,
				StartingPosition: source.TrimHorizon, ReportBatchItemFailures: true, OnFailure: "dlq",
				RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}
			m.RetryAttempts(1)
			e, _ := v.run(m)
			waitFor(t, "3 discarded", func() bool { return totals(e).Discarded == 3 })
			if got := len(v.records("dlq")); got != 4 {
				t.Fatalf("dlq holds %d records, want metadata + 3", got)
			}
		})
	}
}

// TestPermanentErrorSkipsRetries: an error type listed in
// permanentErrorTypes sends the batch to the destination after one attempt.
func TestPermanentErrorSkipsRetries(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	v.stream("dlq", 1)
	v.put("in", "k", "bad")
	var calls atomic.Int32
	fn := httpFunction(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(500)
		io.WriteString(w, `{"errorType":"ValidationError","errorMessage":"bad data"}`)
	}))
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: fn,
		StartingPosition: source.TrimHorizon, OnFailure: "dlq", PermanentErrorTypes: []string{"ValidationError"}}
	e, _ := v.run(m)
	waitFor(t, "discard", func() bool { return totals(e).Discarded == 1 })
	if calls.Load() != 1 {
		t.Fatalf("%d invocations, want 1", calls.Load())
	}
}

// TestPayloadIdempotencyKey: with idempotency.key, a producer's duplicate
// is skipped, and a record whose key does not resolve goes to the
// destination with a clear reason.
func TestPayloadIdempotencyKey(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	v.stream("dlq", 1)
	v.put("in", "k", `{"order":{"id":"A"}}`, `{"order":{"id":"B"}}`, `{"order":{"id":"A"}}`, `not json`, `{"order":{}}`, `{"order":{"id":"C"}}`)
	var mu sync.Mutex
	var seen []string
	h := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		mu.Lock()
		seen = append(seen, r.IdempotencyKey)
		mu.Unlock()
		return nil
	})
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, OnFailure: "dlq", KeyExpression: "order.id"})
	waitFor(t, "all resolved", func() bool {
		s := totals(e)
		return s.Processed+s.Skipped+s.Discarded == 6
	})
	s := totals(e)
	if s.Processed != 3 || s.Skipped != 1 || s.Discarded != 2 {
		t.Fatalf("processed %d skipped %d discarded %d; want 3, 1, 2", s.Processed, s.Skipped, s.Discarded)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[A B C]" {
		t.Fatalf("handler saw %v", seen)
	}
	dlq := v.records("dlq")
	if len(dlq) != 4 {
		t.Fatalf("dlq holds %d records, want 2 metadata + 2 records", len(dlq))
	}
}

// TestValidateNamesTheSetting: every out-of-range setting is reported, with
// its name and range.
func TestValidateNamesTheSetting(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(idem.RecordFunc(nil)),
		BatchSize: 20000, ParallelizationFactor: 11, MaximumRecordAge: time.Second}
	err := m.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"batchSize: 20000 is outside 1 to 10000", "parallelizationFactor: 11", "startingPosition: required", "maximumRecordAge: 1s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestStepRunsOnceAcrossRedeliveries: a journaled step that succeeded is not
// run again when its record fails later and is delivered again; it gets the
// deterministic key scope/recordKey/step and the journaled result.
func TestStepRunsOnceAcrossRedeliveries(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testStepRunsOnceAcrossRedeliveries(t, v)
		})
	}
}

func testStepRunsOnceAcrossRedeliveries(t *testing.T, v *env) {
	v.stream("in", 1)
	v.put("in", "k", "pay")
	var mu sync.Mutex
	var charged, keys []string
	attempts := 0
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		id, err := idem.Step(ctx, "charge", func(ctx context.Context, key string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			charged = append(charged, key)
			return "charge-1", nil
		})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, id)
		attempts++
		if attempts < 3 {
			return errors.New("e-mail service down")
		}
		return nil
	})
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond})
	waitFor(t, "processed", func() bool { return totals(e).Processed == 1 })
	mu.Lock()
	defer mu.Unlock()
	want := "f/in/shardId-000000000000/" + string(idem.SequenceOf(1)) + "/charge"
	if len(charged) != 1 || charged[0] != want {
		t.Fatalf("step ran with keys %q; want once with %q", charged, want)
	}
	if len(keys) != 3 || keys[0] != "charge-1" || keys[2] != "charge-1" {
		t.Fatalf("step results %q; want the journaled result on every attempt", keys)
	}
}
