package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// counter is an in-process function that counts the runs of each record's
// data; while gate is set, each batch waits for a value from it.
type counter struct {
	mu   sync.Mutex
	runs map[string]int
	fail map[string]bool // data whose batch fails
	gate chan struct{}
}

func newCounter() *counter { return &counter{runs: map[string]int{}, fail: map[string]bool{}} }

func (c *counter) HandleBatch(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
	c.mu.Lock()
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return idem.BatchResult{}, ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range b.Records {
		if c.fail[string(r.Data)] {
			return idem.BatchResult{}, errors.New("failing on purpose")
		}
	}
	for _, r := range b.Records {
		c.runs[string(r.Data)]++
	}
	return idem.BatchResult{}, nil
}

func (c *counter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.runs {
		n += v
	}
	return n
}

// exactlyOnce fails the test unless each of data ran exactly once, and
// nothing else ran.
func (c *counter) exactlyOnce(t *testing.T, data ...string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range data {
		if c.runs[d] != 1 {
			t.Errorf("record %q ran %d times, want once", d, c.runs[d])
		}
	}
	if len(c.runs) != len(data) {
		t.Errorf("%d records ran, want %d: %v", len(c.runs), len(data), c.runs)
	}
}

func shardStates(e *engine.Engine) []string {
	var out []string
	for _, s := range e.Status() {
		out = append(out, s.State)
	}
	return out
}

func allPaused(e *engine.Engine) bool {
	sts := e.Status()
	for _, s := range sts {
		if s.State != "paused" {
			return false
		}
	}
	return len(sts) > 0
}

func mappingStatus(t *testing.T, e *engine.Engine, name string) engine.MappingStatus {
	t.Helper()
	ms, err := e.Mappings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("mapping %q not in %+v", name, ms)
	return engine.MappingStatus{}
}

func numberedData(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}

// TestPauseFinishesTheBatchInFlight: a mapping paused while its function
// runs commits that batch, reads nothing more (records put while paused
// stay in the stream), and after resuming runs every record once.
func TestPauseFinishesTheBatchInFlight(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 2)
	fn := newCounter()
	fn.gate = make(chan struct{})
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(fn),
		BatchSize: 1, StartingPosition: source.TrimHorizon}
	e, _ := v.run(m)
	v.put("in", "k", "0", "1", "2")
	waitFor(t, "a batch in flight", func() bool { return totals(e).Invocations == 1 })
	ctx := context.Background()
	if err := e.SetPaused(ctx, "m", true); err != nil {
		t.Fatal(err)
	}
	close(fn.gate) // the batch in flight ends
	waitFor(t, "every shard paused", func() bool { return allPaused(e) })
	if got := totals(e).Processed; got != 1 {
		t.Fatalf("processed %d records once paused, want the 1 in flight", got)
	}
	v.put("in", "k", "3", "4")
	v.put("in", "other", "5")
	if got := fn.count(); got != 1 {
		t.Fatalf("paused mapping ran %d records, want 1", got)
	}
	if st := mappingStatus(t, e, "m"); !st.Paused || st.Modified.IsZero() || st.LastResult != "success" {
		t.Fatalf("status %+v, want paused, modified, last result success", st)
	}

	if err := e.SetPaused(ctx, "m", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every record", func() bool { return fn.count() == 6 })
	fn.exactlyOnce(t, numberedData(0, 6)...)
	for _, s := range shardStates(e) {
		if s == "paused" {
			t.Errorf("a shard is still paused after resuming: %v", shardStates(e))
		}
	}
	if st := mappingStatus(t, e, "m"); st.Paused {
		t.Fatalf("status %+v after resuming", st)
	}
}

// TestPausedSurvivesRestart: a paused mapping is paused again when the
// engine restarts over the same store, and holds back what arrived.
func TestPausedSurvivesRestart(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	fn := newCounter()
	m := func() engine.Mapping {
		return engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(fn),
			StartingPosition: source.TrimHorizon}
	}
	e, stop := v.run(m())
	v.put("in", "k", "0", "1")
	waitFor(t, "2 records", func() bool { return fn.count() == 2 })
	if err := e.SetPaused(context.Background(), "m", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shard paused", func() bool { return allPaused(e) })
	v.put("in", "k", "2", "3")
	stop()

	e2, _ := v.run(m())
	if st := mappingStatus(t, e2, "m"); !st.Paused {
		t.Fatalf("status after restart %+v, want paused", st)
	}
	waitFor(t, "the shard paused after the restart", func() bool { return allPaused(e2) })
	if got := fn.count(); got != 2 {
		t.Fatalf("%d records ran, want the 2 from before the pause", got)
	}
	if err := e2.SetPaused(context.Background(), "m", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4 records", func() bool { return fn.count() == 4 })
	fn.exactlyOnce(t, numberedData(0, 4)...)
}

// TestPauseHoldsRetries: a batch that keeps failing is not invoked again
// while its mapping is paused; resumed, it runs to success.
func TestPauseHoldsRetries(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	fn := newCounter()
	fn.fail["bad"] = true
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(fn),
		StartingPosition: source.TrimHorizon, RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}
	e, _ := v.run(m)
	v.put("in", "k", "bad")
	waitFor(t, "a retry", func() bool { return totals(e).Invocations >= 2 })
	if st := mappingStatus(t, e, "m"); st.LastResult != "error" {
		t.Fatalf("last result %q, want error", st.LastResult)
	}
	if err := e.SetPaused(context.Background(), "m", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shard paused", func() bool { return allPaused(e) })
	n := totals(e).Invocations
	fn.mu.Lock()
	fn.fail["bad"] = false
	fn.mu.Unlock()
	if got := totals(e).Invocations; got != n {
		t.Fatalf("invocations went from %d to %d while paused", n, got)
	}
	if err := e.SetPaused(context.Background(), "m", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record", func() bool { return fn.count() == 1 })
	fn.exactlyOnce(t, "bad")
}

func TestSetPausedUnknownMapping(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f",
		Invoker: gofunc.New(newCounter()), StartingPosition: source.TrimHorizon})
	waitFor(t, "the shard", func() bool { return len(e.Status()) == 1 })
	if err := e.SetPaused(context.Background(), "nope", true); !errors.Is(err, engine.ErrUnknownMapping) {
		t.Fatalf("got %v, want ErrUnknownMapping", err)
	}
}
