package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// runCounter counts runs of each record, by a key of its data, and can
// hold the first run of a key until a second one starts (or a while
// passes), so that two runs of one key are in flight together if the
// engine lets them.
type runCounter struct {
	mu      sync.Mutex
	runs    map[string]int
	running map[string]int
	// second is closed when a key starts while another run of it is in
	// flight.
	second chan struct{}
	once   sync.Once
}

func newRunCounter() *runCounter {
	return &runCounter{runs: map[string]int{}, running: map[string]int{}, second: make(chan struct{})}
}

func (c *runCounter) run(key string, hold bool) {
	c.mu.Lock()
	c.runs[key]++
	c.running[key]++
	if c.running[key] > 1 {
		c.once.Do(func() { close(c.second) })
	}
	c.mu.Unlock()
	if hold {
		select {
		case <-c.second:
		case <-time.After(time.Second):
		}
	}
	c.mu.Lock()
	c.running[key]--
	c.mu.Unlock()
}

func (c *runCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[key]
}

func (c *runCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.runs {
		n += r
	}
	return n
}

// TestDisjointFiltersShareScope (issue 18, item 1): two mappings of one
// stream call one function, so they share its scope, with disjoint
// filters. A's checkpoint moves over the refunds it filtered out; B must
// still run every refund, and each record runs exactly once, in the
// mapping whose filter selects it.
func TestDisjointFiltersShareScope(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testDisjointFiltersShareScope(t, v)
		})
	}
}

func testDisjointFiltersShareScope(t *testing.T, v *env) {
	v.stream("events", 1)
	for i := range 6 {
		typ := "order"
		if i%2 == 1 {
			typ = "refund"
		}
		v.put("events", "k", fmt.Sprintf(`{"type":%q,"n":%d}`, typ, i))
	}
	c := newRunCounter()
	fn := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		c.run(string(r.Data), false)
		return nil
	}))
	mapping := func(name, typ string) engine.Mapping {
		return engine.Mapping{Name: name, Stream: "events", Source: v.source("events"), Function: "shared", Invoker: fn,
			StartingPosition: source.TrimHorizon, Filters: []string{fmt.Sprintf(`{"data": {"type": [%q]}}`, typ)}}
	}
	// A first, alone, to its end: its checkpoint and progress move over
	// the refunds.
	e, stop := v.run(mapping("orders", "order"))
	waitFor(t, "orders processed", func() bool { return totals(e).Processed == 3 })
	stop()
	e, _ = v.run(mapping("orders", "order"), mapping("refunds", "refund"))
	waitFor(t, "refunds resolved", func() bool {
		for _, st := range e.Status() {
			if st.Mapping == "refunds" && st.Processed+st.Skipped == 3 {
				return true
			}
		}
		return false
	})
	for _, st := range e.Status() {
		if st.Mapping == "refunds" && (st.Processed != 3 || st.Skipped != 0) {
			t.Errorf("refunds mapping: processed %d skipped %d, want 3 and 0", st.Processed, st.Skipped)
		}
	}
	if n := c.total(); n != 6 {
		t.Errorf("%d runs for 6 records", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, n := range c.runs {
		if n != 1 {
			t.Errorf("record %s ran %d times", k, n)
		}
	}
}

// TestPayloadKeyRacesAcrossShards (issue 18, item 2): two records with one
// payload key land in different shards of one mapping. Each shard looks
// the key up before the other commits; only a claim taken before the run
// keeps the second from running while the first is in flight.
func TestPayloadKeyRacesAcrossShards(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testPayloadKeyRacesAcrossShards(t, v)
		})
	}
}

func testPayloadKeyRacesAcrossShards(t *testing.T, v *env) {
	v.stream("orders", 2)
	// Partition keys spread over both shards.
	for i := range 8 {
		v.put("orders", "pk-"+strconv.Itoa(i), `{"order":{"id":"A-1"}}`)
	}
	shards := map[string]bool{}
	for _, r := range v.records("orders") {
		shards[r.ShardID] = true
	}
	if len(shards) != 2 {
		t.Fatalf("records landed in %d shards, want 2", len(shards))
	}
	c := newRunCounter()
	fn := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		c.run(r.IdempotencyKey, true)
		return nil
	}))
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "orders", Source: v.source("orders"), Function: "ship", Invoker: fn,
		StartingPosition: source.TrimHorizon, KeyExpression: "order.id"})
	waitFor(t, "all resolved", func() bool { st := totals(e); return st.Processed+st.Skipped == 8 })
	if n := c.count("A-1"); n != 1 {
		t.Fatalf("key A-1 ran %d times, want once", n)
	}
	if st := totals(e); st.Processed != 1 || st.Skipped != 7 {
		t.Errorf("processed %d skipped %d, want 1 and 7", st.Processed, st.Skipped)
	}
}

// TestMappingsShareScopeConcurrently (issue 18, item 2): two mappings of
// one scope, keys by identity, read the same records at the same time.
// Each record runs once, in one of them; the other skips it.
func TestMappingsShareScopeConcurrently(t *testing.T) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			testMappingsShareScopeConcurrently(t, v)
		})
	}
}

func testMappingsShareScopeConcurrently(t *testing.T, v *env) {
	v.stream("events", 1)
	for i := range 5 {
		v.put("events", "k", strconv.Itoa(i))
	}
	c := newRunCounter()
	fn := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		c.run(string(r.Data), string(r.Data) == "0")
		return nil
	}))
	m := func(name string) engine.Mapping {
		return engine.Mapping{Name: name, Stream: "events", Source: v.source("events"), Function: "shared", Invoker: fn,
			StartingPosition: source.TrimHorizon}
	}
	e, _ := v.run(m("old-name"), m("new-name"))
	waitFor(t, "both mappings resolved every record", func() bool {
		st := totals(e)
		return st.Processed+st.Skipped == 10
	})
	for i := range 5 {
		if n := c.count(strconv.Itoa(i)); n != 1 {
			t.Errorf("record %d ran %d times, want once", i, n)
		}
	}
}

// TestTumblingWindowPartialFailure (issue 18, item 3): a partial failure
// in a tumbling window must not commit the state the function returned,
// which counts the records after the failed one too; they run again.
func TestTumblingWindowPartialFailure(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	const d = 15 * time.Minute
	w0 := time.Now().Add(24 * time.Hour).UTC().Truncate(d)
	var recs []*kgo.Record
	for i := 1; i <= 7; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(i)), Timestamp: w0.Add(time.Duration(i) * time.Second)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failed := false
	var sums []int
	h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		sum, _ := strconv.Atoi(b.Window.State["sum"])
		mu.Lock()
		defer mu.Unlock()
		var res idem.BatchResult
		for _, r := range b.Records {
			n, _ := strconv.Atoi(string(r.Data))
			sum += n
			if n == 4 && !failed {
				failed = true
				res.BatchItemFailures = []idem.BatchItemFailure{{ItemIdentifier: r.EventID()}}
			}
		}
		if !b.Window.Final {
			sums = append(sums, sum)
		}
		res.State = map[string]string{"sum": strconv.Itoa(sum)}
		return res, nil
	})
	e := engine.New(stembedded.New(v.db), engine.WithLogger(testLogger(t)), engine.WithDrainTimeout(2*time.Second))
	if err := e.Add(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "sum",
		Invoker: gofunc.New(h), StartingPosition: source.TrimHorizon, BatchSize: 10, TumblingWindow: d,
		ReportBatchItemFailures: true, RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(startEngine(t, e, "A"))
	waitFor(t, "7 records", func() bool { return totals(e).Processed == 7 })
	mu.Lock()
	defer mu.Unlock()
	if last := sums[len(sums)-1]; last != 28 {
		t.Fatalf("window sums %v: the last is %d, want 28 (1+…+7)", sums, last)
	}
}

// landedButLost lets a commit with on-failure records land, then answers
// it with an error, once: as a connection that drops after COMMIT.
type landedButLost struct {
	store.Driver
	once sync.Once
}

func (l *landedButLost) Commit(ctx context.Context, w *store.Write) error {
	if err := l.Driver.Commit(ctx, w); err != nil {
		return err
	}
	var err error
	if len(w.Failures) > 0 {
		l.once.Do(func() { err = errors.New("test: connection lost after COMMIT") })
	}
	return err
}

// TestOnFailureWrittenOnceWhenAnswerLost (issue 18, item 4): a commit that
// landed but whose answer was lost is not written again, so its on-failure
// records are not appended twice.
func TestOnFailureWrittenOnceWhenAnswerLost(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	v.stream("failed", 1)
	v.put("in", "k", "bad")
	v.store = &landedButLost{Driver: stembedded.New(v.db)}
	fn := gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error {
		return idem.Permanent(errors.New("bad data"))
	}))
	e, _ := v.run(engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: fn,
		StartingPosition: source.TrimHorizon, OnFailure: "failed", RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond})
	waitFor(t, "discarded", func() bool { return totals(e).Discarded == 1 })
	if got := v.records("failed"); len(got) != 2 {
		t.Fatalf("on-failure stream holds %d records, want 2 (metadata, then the record)", len(got))
	}
}

// TestNewPartitionUnderLatestReadFromItsStart (issue 18, item 14): under a
// LATEST mapping, a partition added after the mapping started is read from
// its beginning; and a restart is not taken for a first start.
func TestNewPartitionUnderLatestReadFromItsStart(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	var mu sync.Mutex
	var got []string
	fn := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		mu.Lock()
		got = append(got, string(r.Data))
		mu.Unlock()
		return nil
	}))
	st := stembedded.New(v.db)
	run := func() (*engine.Engine, func()) {
		e := engine.New(st, engine.WithLogger(testLogger(t)), engine.WithDrainTimeout(2*time.Second), engine.WithShardDiscovery(50*time.Millisecond))
		if err := e.Add(engine.Mapping{Name: "m", Stream: topic, Source: openKafka(t, brokers, topic), Function: "f", Invoker: fn,
			StartingPosition: source.Latest}); err != nil {
			t.Fatal(err)
		}
		stop := startEngine(t, e, "A")
		t.Cleanup(stop)
		return e, stop
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte("before-start")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e, stop := run()
	waitFor(t, "partition 0 started", func() bool { return len(e.Status()) == 1 && e.Status()[0].State == "running" })
	stop()
	// Added while idem is down: the restart must read it from its start.
	adm := kadm.NewClient(cl)
	if _, err := adm.CreatePartitions(ctx, 1, topic); err != nil {
		t.Fatal(err)
	}
	cl.ForceMetadataRefresh()
	var recs []*kgo.Record
	for i := range 3 {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Value: []byte("new-" + strconv.Itoa(i))})
	}
	p := kgo.ManualPartitioner()
	pcl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(p))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	e, _ = run()
	waitFor(t, "the new partition's records", func() bool { return totals(e).Processed == 3 })
	mu.Lock()
	defer mu.Unlock()
	b, _ := json.Marshal(got)
	if len(got) != 3 || got[0] != "new-0" {
		t.Fatalf("ran %s, want the 3 records of the new partition only", b)
	}
}

// skewedClock is a store whose clock is ahead of this machine's.
type skewedClock struct {
	store.Driver
	ahead time.Duration
}

func (s skewedClock) Time(context.Context) (time.Time, error) { return time.Now().Add(s.ahead), nil }

// TestClockSkewRefused (issue 18, item 9): processes sharing a store
// decide mark expiry with their own clocks, so an engine whose clock is
// further from the store's than MaxClockSkew refuses to start; one within
// it starts.
func TestClockSkewRefused(t *testing.T) {
	v := newEnv(t)
	v.stream("in", 1)
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f",
		Invoker: gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })), StartingPosition: source.TrimHorizon}
	for _, c := range []struct {
		ahead   time.Duration
		refused bool
	}{{2 * engine.MaxClockSkew, true}, {-2 * engine.MaxClockSkew, true}, {engine.MaxClockSkew / 2, false}} {
		e := engine.New(skewedClock{Driver: stembedded.New(v.db), ahead: c.ahead}, engine.WithLogger(testLogger(t)))
		if err := e.Add(m); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := e.Run(ctx)
		cancel()
		if refused := err != nil; refused != c.refused {
			t.Errorf("store clock %s ahead: Run = %v, want refused %v", c.ahead, err, c.refused)
		}
	}
}

// TestScopeMappingsProgressTogether: two mappings sharing a scope, with
// disjoint filters, over one shard with a backlog. Each should make
// progress while the other has records to run. Range claims run to the
// shard's end (rangeEnd), so two of them always overlap: unless the
// mapping that finds the other's claims just its window, the first to
// claim keeps the shard until it goes idle, and the other waits all that
// time (forever under a steady load).
func TestScopeMappingsProgressTogether(t *testing.T) {
	v := newEnv(t)
	v.stream("events", 1)
	for i := range 60 {
		typ := "order"
		if i%2 == 1 {
			typ = "refund"
		}
		v.put("events", "k", fmt.Sprintf(`{"type":%q,"n":%d}`, typ, i))
	}
	fn := gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	}))
	mapping := func(name, typ string) engine.Mapping {
		return engine.Mapping{Name: name, Stream: "events", Source: v.source("events"), Function: "shared", Invoker: fn, BatchSize: 1,
			StartingPosition: source.TrimHorizon, Filters: []string{fmt.Sprintf(`{"data": {"type": [%q]}}`, typ)}}
	}
	e, _ := v.run(mapping("orders", "order"), mapping("refunds", "refund"))
	waitFor(t, "both mappings progressing", func() bool {
		sts := e.Status()
		if len(sts) != 2 {
			return false
		}
		for _, st := range sts {
			if st.Processed == 0 {
				return false
			}
		}
		return true
	})
	for _, st := range e.Status() {
		if st.Processed >= 30 {
			t.Errorf("mapping %s ran its whole backlog (%d) before the other ran any", st.Mapping, st.Processed)
		}
	}
}
