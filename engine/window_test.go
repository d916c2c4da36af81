package engine_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// windowCall is one invocation of a tumbling-window function.
type windowCall struct {
	start   time.Time
	final   bool
	state   string // the state it received: the running sum
	records []string
}

// summer adds the records' numbers to its window's state["sum"] and keeps
// every call.
type summer struct {
	mu    sync.Mutex
	calls []windowCall
}

func (s *summer) handler() idem.Handler {
	return idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		w := b.Window
		call := windowCall{start: w.Start, final: w.Final, state: w.State["sum"]}
		sum, _ := strconv.Atoi(w.State["sum"])
		for _, r := range b.Records {
			n, _ := strconv.Atoi(string(r.Data))
			sum += n
			call.records = append(call.records, string(r.Data))
			if r.ArrivalTime.Before(w.Start) || !r.ArrivalTime.Before(w.End) {
				call.records = append(call.records, "OUTSIDE")
			}
		}
		s.mu.Lock()
		s.calls = append(s.calls, call)
		s.mu.Unlock()
		return idem.BatchResult{State: map[string]string{"sum": strconv.Itoa(sum)}}, nil
	})
}

func (s *summer) finals() []windowCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []windowCall
	for _, c := range s.calls {
		if c.final {
			out = append(out, c)
		}
	}
	return out
}

// TestTumblingWindow: records are grouped by their timestamps into
// windows; each window's state carries across invocations and across an
// engine restart (it commits with the checkpoint), a batch never spans two
// windows, and each window ends with a final invocation that sees the
// window's whole sum.
func TestTumblingWindow(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	st := stembedded.New(v.db)
	brokers, topic, cl := newKafkaTopic(t, 1)
	const d = 15 * time.Minute
	// Windows in the future, so that none ends by the clock during the
	// test: only a later window's record closes one.
	w0 := time.Now().Add(24 * time.Hour).UTC().Truncate(d)
	produce := func(window time.Time, nums ...int) {
		t.Helper()
		var recs []*kgo.Record
		for i, n := range nums {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(n)), Timestamp: window.Add(time.Duration(i+1) * time.Second)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	s := &summer{}
	run := func() (*engine.Engine, func()) {
		e := engine.New(st, engine.WithLogger(testLogger(t)), engine.WithDrainTimeout(2*time.Second))
		if err := e.Add(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum",
			Invoker: gofunc.New(s.handler()), StartingPosition: source.TrimHorizon, BatchSize: 2, TumblingWindow: d}); err != nil {
			t.Fatal(err)
		}
		stop := startEngine(t, e, "A")
		t.Cleanup(stop)
		return e, stop
	}

	produce(w0, 1, 2, 3)
	e, stop := run()
	waitFor(t, "3 records", func() bool { return totals(e).Processed == 3 })
	stop()
	e, _ = run()
	produce(w0, 4, 5)
	waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
	if f := s.finals(); len(f) != 0 {
		t.Fatalf("final invocations %+v before the window ended", f)
	}
	produce(w0.Add(d), 10, 20) // the next window: closes the first
	produce(w0.Add(3*d), 100)  // and this one the second
	waitFor(t, "two windows closed", func() bool { return len(s.finals()) == 2 })

	f := s.finals()
	if !f[0].start.Equal(w0) || f[0].state != "15" || len(f[0].records) != 0 {
		t.Errorf("first window's final invocation %+v, want start %s and sum 15", f[0], w0)
	}
	if !f[1].start.Equal(w0.Add(d)) || f[1].state != "30" {
		t.Errorf("second window's final invocation %+v, want start %s and sum 30", f[1], w0.Add(d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		for _, r := range c.records {
			if r == "OUTSIDE" {
				t.Errorf("a batch of window %s held a record of another window: %+v", c.start, c)
			}
		}
		if len(c.records) > 2 {
			t.Errorf("batch of %d records, above batchSize 2: %+v", len(c.records), c)
		}
	}
}

// TestTumblingWindowFinalRetried: a final invocation that fails is retried
// until it succeeds, and the window's state reaches it intact.
func TestTumblingWindowFinalRetried(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	const d = time.Minute
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // long past: the clock closes the window
	for i, n := range []string{"1", "2"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(n), Timestamp: w0.Add(time.Duration(i) * time.Second)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var finals []string
	h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		sum, _ := strconv.Atoi(b.Window.State["sum"])
		if b.Window.Final {
			mu.Lock()
			defer mu.Unlock()
			finals = append(finals, b.Window.State["sum"])
			if len(finals) < 3 {
				return idem.BatchResult{}, errors.New("not yet")
			}
			return idem.BatchResult{}, nil
		}
		for _, r := range b.Records {
			n, _ := strconv.Atoi(string(r.Data))
			sum += n
		}
		return idem.BatchResult{State: map[string]string{"sum": strconv.Itoa(sum)}}, nil
	})
	v.run(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, TumblingWindow: d, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond})
	waitFor(t, "the final invocation to succeed", func() bool { mu.Lock(); defer mu.Unlock(); return len(finals) >= 3 })
	time.Sleep(50 * time.Millisecond) // a fourth, if the window were not closed
	mu.Lock()
	defer mu.Unlock()
	if len(finals) != 3 || finals[0] != "3" || finals[2] != "3" {
		t.Errorf("final invocations saw sums %q, want 3 three times", finals)
	}
}

// TestTumblingWindowTerminatedEarly: a state above the 1 MB limit does not
// fail the batch (which would block the shard): the window ends early with
// the state it had, and goes on with an empty one.
func TestTumblingWindowTerminatedEarly(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i + 1)), Timestamp: w0.Add(time.Duration(i) * time.Second)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	type final struct {
		sum   string
		early bool
	}
	var mu sync.Mutex
	var finals []final
	batches := 0
	h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Window.Final {
			finals = append(finals, final{b.Window.State["sum"], b.Window.TerminatedEarly})
			return idem.BatchResult{}, nil
		}
		batches++
		if batches == 2 {
			return idem.BatchResult{State: map[string]string{"big": strings.Repeat("x", engine.MaxWindowState)}}, nil
		}
		sum, _ := strconv.Atoi(b.Window.State["sum"])
		for _, r := range b.Records {
			n, _ := strconv.Atoi(string(r.Data))
			sum += n
		}
		return idem.BatchResult{State: map[string]string{"sum": strconv.Itoa(sum)}}, nil
	})
	e, _ := v.run(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 2, TumblingWindow: time.Minute})
	waitFor(t, "the window to end", func() bool { mu.Lock(); defer mu.Unlock(); return len(finals) == 2 })
	if p := totals(e).Processed; p != 4 {
		t.Errorf("processed %d, want 4", p)
	}
	mu.Lock()
	defer mu.Unlock()
	if finals[0] != (final{"3", true}) || finals[1] != (final{"", false}) {
		t.Errorf("final invocations %+v, want the early one with sum 3, then the window's end with an empty state", finals)
	}
}

// windowFunction is the tumbling-window aggregator of
// function/process/testdata/window as a ported function of kind "process"
// (the aws-lambda-go function itself) or "http" (the same answers from an
// HTTP endpoint), in mode ("", "nostate", "failfinal", "miscased"; see its
// doc). lines gives what it has recorded: "batch <state>" or "final
// <state>" for each invocation, the state as it received it.
func windowFunction(t *testing.T, kind, mode string) (fn function.Driver, lines func() []string) {
	t.Helper()
	if kind == "process" {
		out := filepath.Join(t.TempDir(), "out")
		fn := lambdaProcess(t, "window", map[string]string{"IDEM_TEST_OUT": out, "IDEM_TEST_MODE": mode})
		return fn, func() []string { return readLines(t, out) }
	}
	h := &windowHTTP{mode: mode}
	return httpFunction(t, h), h.get
}

// windowHTTP answers as function/process/testdata/window does.
type windowHTTP struct {
	mode  string
	mu    sync.Mutex
	lines []string
}

func (f *windowHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		Records []events.KinesisEventRecord `json:"Records"`
		State   json.RawMessage             `json:"state"`
		Final   bool                        `json:"isFinalInvokeForWindow"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	kind := "batch "
	if ev.Final {
		kind = "final "
	}
	f.mu.Lock()
	f.lines = append(f.lines, kind+string(ev.State))
	finals := strings.Count(strings.Join(f.lines, "\n"), "final ")
	f.mu.Unlock()
	switch {
	case f.mode == "failfinal" && ev.Final && finals <= 2:
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		w.Write([]byte(`{"errorType":"errorString","errorMessage":"the final invocation fails, for now"}`))
		return
	case f.mode == "nostate":
		w.Write([]byte(`{"batchItemFailures":[]}`))
		return
	}
	var st struct{ Sum, Count int }
	json.Unmarshal(ev.State, &st)
	for _, rec := range ev.Records {
		n, _ := strconv.Atoi(string(rec.Kinesis.Data))
		st.Sum += n
		st.Count++
	}
	key := "batchItemFailures"
	if f.mode == "miscased" {
		key = "BatchItemFailures"
	}
	fmt.Fprintf(w, `{%q:[],"state":{"sum":%d,"count":%d}}`, key, st.Sum, st.Count)
}

func (f *windowHTTP) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lines...)
}

func readLines(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// portedKinds are the kinds of function a ported Lambda function runs as.
var portedKinds = []string{"http", "process"}

// produceAt writes one record per value to topic, each at its time.
func produceAt(t *testing.T, cl *kgo.Client, topic string, values []string, at []time.Time) {
	t.Helper()
	for i, v := range values {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte(v), Timestamp: at[i]}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTumblingWindowNumericState (issue 19, item 2): a ported function
// whose state has numbers, as AWS's own example ({"state": {"1": 282,
// "2": 715}}), aggregates as on Lambda: each invocation gets back the
// state the previous one returned, exactly, and the final invocation the
// window's whole aggregate. The state is read even from a response whose
// batchItemFailures key is in the wrong case, which only a mapping that
// reports batch item failures reads.
func TestTumblingWindowNumericState(t *testing.T) {
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // long past: the clock closes the window
	for _, kind := range portedKinds {
		for _, mode := range []string{"", "miscased"} {
			t.Run(kind+"/"+cmp.Or(mode, "plain"), func(t *testing.T) {
				v := newEnv(t)
				brokers, topic, cl := newKafkaTopic(t, 1)
				var at []time.Time
				for i := 1; i <= 5; i++ {
					at = append(at, w0.Add(time.Duration(i)*time.Second))
				}
				produceAt(t, cl, topic, []string{"1", "2", "3", "4", "5"}, at)
				fn, lines := windowFunction(t, kind, mode)
				e, _ := v.run(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "agg", Invoker: fn,
					StartingPosition: source.TrimHorizon, BatchSize: 2, TumblingWindow: time.Minute, EventFormat: idem.EventFormatKinesis,
					RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond})
				waitFor(t, "the final invocation", func() bool { l := lines(); return len(l) > 0 && strings.HasPrefix(l[len(l)-1], "final") })
				want := []string{`batch null`, `batch {"sum":3,"count":2}`, `batch {"sum":10,"count":4}`, `final {"sum":15,"count":5}`}
				if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("the function received the states\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if st := totals(e); st.Processed != 5 || st.Discarded != 0 {
					t.Fatalf("processed %d, discarded %d; want 5, 0", st.Processed, st.Discarded)
				}
			})
		}
	}
}

// TestTumblingWindowMissingState (issue 19, item 3): a window's response
// without "state" (a function ported without windows in mind, answering a
// KinesisEventResponse) fails the batch, as on Lambda, with or without
// ReportBatchItemFailures, instead of resetting the aggregate in silence.
func TestTumblingWindowMissingState(t *testing.T) {
	for _, kind := range portedKinds {
		fn, _ := windowFunction(t, kind, "nostate")
		for _, rbif := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ReportBatchItemFailures=%v", kind, rbif), func(t *testing.T) {
				v := newEnv(t)
				v.stream("in", 1)
				v.stream("dlq", 1)
				v.put("in", "k", "1", "2")
				m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "agg", Invoker: fn,
					StartingPosition: source.TrimHorizon, TumblingWindow: time.Minute, OnFailure: "dlq", ReportBatchItemFailures: rbif,
					RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}
				m.RetryAttempts(1)
				e, _ := v.run(m)
				waitFor(t, "2 discarded", func() bool { return totals(e).Discarded == 2 })
				if p := totals(e).Processed; p != 0 {
					t.Fatalf("processed %d, want 0", p)
				}
				var meta string
				for _, r := range v.records("dlq") {
					meta += string(r.Data)
				}
				if !strings.Contains(meta, "Function.MissingState") || !strings.Contains(meta, `has no \"state\"`) {
					t.Fatalf("on-failure records %s do not say the state is missing", meta)
				}
			})
		}
	}
}

// TestTumblingWindowFinalSuspendsPorted (issue 19, item 5): a ported
// function whose final invocation fails past maximumRetryAttempts
// suspends the shard until it succeeds, as on Lambda: the final
// invocation is retried with the window's whole state, and the next
// window's record waits for it.
func TestTumblingWindowFinalSuspendsPorted(t *testing.T) {
	const d = time.Minute
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, kind := range portedKinds {
		t.Run(kind, func(t *testing.T) {
			v := newEnv(t)
			brokers, topic, cl := newKafkaTopic(t, 1)
			produceAt(t, cl, topic, []string{"1", "2", "3"}, []time.Time{w0, w0.Add(time.Second), w0.Add(d)})
			fn, lines := windowFunction(t, kind, "failfinal")
			m := engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "agg", Invoker: fn,
				StartingPosition: source.TrimHorizon, BatchSize: 1, TumblingWindow: d, EventFormat: idem.EventFormatKinesis,
				RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond}
			m.RetryAttempts(1)
			e, _ := v.run(m)
			waitFor(t, "both windows' final invocations", func() bool {
				return strings.Count(strings.Join(lines(), "\n"), "final ") == 4
			})
			want := []string{`batch null`, `batch {"sum":1,"count":1}`,
				`final {"sum":3,"count":2}`, `final {"sum":3,"count":2}`, `final {"sum":3,"count":2}`,
				`batch null`, `final {"sum":3,"count":1}`}
			if got := lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("invocations\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if st := totals(e); st.Processed != 3 || st.Discarded != 0 {
				t.Fatalf("processed %d, discarded %d; want 3, 0", st.Processed, st.Discarded)
			}
		})
	}
}

// TestTumblingWindowStateJSONGoHandler (issue 19, item 2): a Go handler
// returns its state as any JSON object (BatchResult.StateJSON); the next
// invocation gets it back exactly in Window.StateJSON, and as strings in
// Window.State. A Go handler that returns no state returns the empty one.
func TestTumblingWindowStateJSONGoHandler(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 4; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i)), Timestamp: w0.Add(time.Duration(i) * time.Second)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	type seen struct {
		json  string
		state map[string]string
		final bool
	}
	var mu sync.Mutex
	var calls []seen
	h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, seen{string(b.Window.StateJSON), b.Window.State, b.Window.Final})
		switch len(calls) {
		case 1:
			return idem.BatchResult{StateJSON: json.RawMessage(` {"sum": 3, "tag": "<a&b>", "list": [1, "x"], "none": null} `)}, nil
		case 2:
			return idem.BatchResult{}, nil // no state: the empty one
		}
		return idem.BatchResult{State: map[string]string{"n": "1"}}, nil
	})
	v.run(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 1, TumblingWindow: time.Minute})
	waitFor(t, "the final invocation", func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) > 0 && calls[len(calls)-1].final })
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 5 {
		t.Fatalf("calls %+v, want 4 batches and the final", calls)
	}
	want := []seen{
		{json: ""},
		{json: `{"sum": 3, "tag": "<a&b>", "list": [1, "x"], "none": null}`,
			state: map[string]string{"sum": "3", "tag": "<a&b>", "list": `[1, "x"]`, "none": "null"}},
		{json: ""},
		{json: `{"n":"1"}`, state: map[string]string{"n": "1"}},
		{json: `{"n":"1"}`, state: map[string]string{"n": "1"}, final: true},
	}
	for i, w := range want {
		c := calls[i]
		if c.json != w.json || !maps.Equal(c.state, w.state) || c.final != w.final || (c.state == nil) != (w.state == nil) {
			t.Errorf("call %d got %+v, want %+v", i, c, w)
		}
	}
}

// TestTumblingWindowFinalSuspends (issue 19, item 5): a final invocation
// that keeps failing past maximumRetryAttempts suspends the shard until it
// succeeds, as on Lambda: the window's state is neither dropped nor lost,
// and no record of the next window is processed before it.
func TestTumblingWindowFinalSuspends(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	const d = time.Minute
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, ts := range []time.Time{w0, w0.Add(time.Second), w0.Add(d)} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i + 1)), Timestamp: ts}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var finals []string
	succeeded := false
	var early []string // records seen before the first window's final succeeded
	h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Window.Final {
			if b.Window.Start.Equal(w0) {
				finals = append(finals, b.Window.State["sum"])
				if len(finals) < 6 {
					return idem.BatchResult{}, errors.New("not yet")
				}
				succeeded = true
			}
			return idem.BatchResult{}, nil
		}
		sum, _ := strconv.Atoi(b.Window.State["sum"])
		for _, r := range b.Records {
			n, _ := strconv.Atoi(string(r.Data))
			sum += n
			if !succeeded && r.ArrivalTime.Sub(w0) >= d {
				early = append(early, string(r.Data))
			}
		}
		return idem.BatchResult{State: map[string]string{"sum": strconv.Itoa(sum)}}, nil
	})
	m := engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 1, TumblingWindow: d, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond}
	m.RetryAttempts(1)
	e, _ := v.run(m)
	waitFor(t, "the final invocation to succeed", func() bool { mu.Lock(); defer mu.Unlock(); return succeeded })
	waitFor(t, "3 records", func() bool { return totals(e).Processed == 3 })
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(finals, " ") != "3 3 3 3 3 3" {
		t.Errorf("final invocations saw sums %q, want 3 six times", finals)
	}
	if len(early) != 0 {
		t.Errorf("records %q of the next window were processed before the final invocation succeeded", early)
	}
}
