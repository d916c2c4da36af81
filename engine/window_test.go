package engine_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
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
