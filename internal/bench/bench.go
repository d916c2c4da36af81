// Package bench measures what exactly-once costs on this machine, side by
// side in one run: at-least-once (checkpoint only), exactly-once
// (checkpoint and completion progress), exactly-once with a state write per
// record, and the per-record claim-then-complete idempotency store that
// hand-rolled solutions use. `idem bench` prints its report.
package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/store/dynamodb"
)

// Config sets the benchmark's size. Zero values take the defaults.
type Config struct {
	// Records per throughput scenario. Default: 1,000,000.
	Records int
	// BaselineRecords for the per-record baseline, which is two orders of
	// magnitude slower. Default: min(Records, 20,000).
	BaselineRecords int
	// Shards of the stream. Default: 4.
	Shards int
	// BatchSize of the mapping. Default: 100.
	BatchSize int
	// Marks is how many live completion marks each scenario's store holds
	// before the scenario starts, committed before its clock starts, as a
	// store in use holds those of the retention period: what a store
	// spends on a key grows with what it holds (a btree's depth, the
	// runs a lookup may search). Default: none, a fresh store.
	Marks int
	// RecordSize in bytes. Default: 200.
	RecordSize int
	// LatencyDuration is how long records are put at LatencyRate. Default: 3s.
	LatencyDuration time.Duration
	// LatencyRate in records per second. Default: 1,000.
	LatencyRate int
	// Dir is the scratch directory. Default: a temporary one, removed after.
	Dir string
	// Progress receives a line per scenario as it starts. Default: none.
	Progress io.Writer
	// Store is where checkpoints, marks and state go, and where the
	// per-record baseline keeps its records: "embedded" (default), a
	// postgres:// DSN, redis://host:port[/db], or
	// dynamodb://[host:port][/table][?region=R] (a table per scenario,
	// named after table, deleted after; the scenarios with a mark or a
	// state key per record run batches of at most
	// dynamodb.MaxPayloadKeyBatch, which one transaction holds). Streams
	// stay embedded.
	Store string
	// Scenarios to run, by their names in Report's JSON (ScenarioNames):
	// a short measurement of the one that matters, a scaling run of (a)
	// and (b) on a borrowed machine. Default: all of them.
	Scenarios []string
}

// ScenarioNames are the scenarios Run knows, by their names in Report's
// JSON, in the order of Report's fields.
var ScenarioNames = []string{"atLeastOnce", "exactlyOnce", "exactlyOncePayloadKeys", "exactlyOnceState", "perRecordBaseline", "latency"}

// CheckScenarios refuses a name that is not one of ScenarioNames, naming
// it and them.
func CheckScenarios(names []string) error {
	for _, n := range names {
		if !slices.Contains(ScenarioNames, n) {
			return fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(ScenarioNames, ", "))
		}
	}
	return nil
}

// runs reports whether c selects the scenario name.
func (c *Config) runs(name string) bool {
	return len(c.Scenarios) == 0 || slices.Contains(c.Scenarios, name)
}

func (c *Config) defaults() {
	if c.Records <= 0 {
		c.Records = 1_000_000
	}
	if c.BaselineRecords <= 0 {
		c.BaselineRecords = min(c.Records, 20_000)
	}
	if c.Shards <= 0 {
		c.Shards = 4
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.RecordSize < 16 {
		c.RecordSize = 200
	}
	if c.LatencyDuration <= 0 {
		c.LatencyDuration = 3 * time.Second
	}
	if c.LatencyRate <= 0 {
		c.LatencyRate = 1000
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Scenario is one measured scenario.
type Scenario struct {
	Records       int     `json:"records"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"recordsPerSec"`
	// Durability says what a crash loses: "sync" means nothing acknowledged.
	Durability string `json:"durability"`
	// PeakRSSMB is the process's peak resident memory after the scenario.
	PeakRSSMB float64 `json:"peakRSSMB"`
	// CPUMicrosPerRecord is the CPU time the process spent, Pebble's
	// background flushes and compactions included, from the engine's
	// start until every record was resolved, per record: unlike
	// RecordsPerSec, it hardly moves when other processes load the
	// machine. Throughput scenarios only.
	CPUMicrosPerRecord float64 `json:"cpuMicrosPerRecord,omitempty"`
	// Ratios against the other scenarios, where they mean something.
	VsAtLeastOnce       float64 `json:"vsAtLeastOnce,omitempty"`
	VsPerRecordBaseline float64 `json:"vsPerRecordBaseline,omitempty"`
	// Latency from put to handler, for the latency scenario.
	P50Ms float64 `json:"p50Ms,omitempty"`
	P99Ms float64 `json:"p99Ms,omitempty"`
}

// Report is `idem bench --json`: one key per scenario.
type Report struct {
	// Store is the kind of store the scenarios ran on.
	Store string `json:"store"`
	// Shards of the stream and BatchSize of the mapping every scenario ran
	// with.
	Shards    int `json:"shards"`
	BatchSize int `json:"batchSize"`
	// Marks each scenario's store held before it started (Config.Marks).
	Marks int `json:"marks,omitempty"`
	// A scenario that did not run (Config.Scenarios) is left out of the
	// JSON.
	AtLeastOnce Scenario `json:"atLeastOnce,omitzero"`
	ExactlyOnce Scenario `json:"exactlyOnce,omitzero"`
	// ExactlyOncePayloadKeys keys records by a field of their JSON data
	// (idempotency.key): one completion mark per record, looked up per
	// window.
	ExactlyOncePayloadKeys Scenario `json:"exactlyOncePayloadKeys,omitzero"`
	ExactlyOnceState       Scenario `json:"exactlyOnceState,omitzero"`
	PerRecordBaseline      Scenario `json:"perRecordBaseline,omitzero"`
	Latency                Scenario `json:"latency,omitzero"`
}

// WriteText prints the report as a table.
func (r *Report) WriteText(w io.Writer) error {
	row := func(name string, s Scenario) {
		if s.Records == 0 {
			return // not run
		}
		fmt.Fprintf(w, "%-38s %10d records %8.2fs %12.0f records/s  CPU %6.2f µs/record  peak RSS %6.1f MB\n", name, s.Records, s.Seconds, s.RecordsPerSec, s.CPUMicrosPerRecord, s.PeakRSSMB)
	}
	fmt.Fprintf(w, "store: %s   shards: %d   batch size: %d", r.Store, r.Shards, r.BatchSize)
	if r.Marks > 0 {
		fmt.Fprintf(w, "   marks held before each scenario: %d", r.Marks)
	}
	fmt.Fprintln(w)
	row("(a) at-least-once (checkpoint only)", r.AtLeastOnce)
	row("(b) exactly-once (checkpoint + marks)", r.ExactlyOnce)
	row("(b') exactly-once, payload keys (marks)", r.ExactlyOncePayloadKeys)
	row("(c) exactly-once + 1 state write/rec", r.ExactlyOnceState)
	row("(d) per-record claim+complete, synced", r.PerRecordBaseline)
	var ratios []string
	ratio := func(name, format string, v float64) {
		if v != 0 {
			ratios = append(ratios, name+" = "+fmt.Sprintf(format, v))
		}
	}
	ratio("(b)/(a)", "%.2f", r.ExactlyOnce.VsAtLeastOnce)
	ratio("(b)/(d)", "%.1f", r.ExactlyOnce.VsPerRecordBaseline)
	ratio("(b')/(a)", "%.2f", r.ExactlyOncePayloadKeys.VsAtLeastOnce)
	ratio("(b')/(d)", "%.1f", r.ExactlyOncePayloadKeys.VsPerRecordBaseline)
	if len(ratios) > 0 {
		fmt.Fprintf(w, "ratios: %s\n", strings.Join(ratios, "   "))
	}
	if r.Latency.RecordsPerSec == 0 {
		return nil
	}
	_, err := fmt.Fprintf(w, "latency put→handler at %.0f records/s, batching window 0: p50 %.2f ms, p99 %.2f ms\n", r.Latency.RecordsPerSec, r.Latency.P50Ms, r.Latency.P99Ms)
	return err
}

// Run runs every scenario, one after the other, each on a fresh data
// directory, and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	if err := checkStore(cfg.Store); err != nil {
		return nil, err
	}
	if err := CheckScenarios(cfg.Scenarios); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "idem-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	rep := &Report{Store: storeKind(cfg.Store), Shards: cfg.Shards, BatchSize: cfg.BatchSize, Marks: cfg.Marks}
	// measure runs mode m with c in the subdirectory sub, and keeps in
	// *dst the better of that run and what *dst held (nothing, the first
	// time).
	measure := func(dst *Scenario, sub string, c Config, m mode) func() error {
		return func() error {
			s, err := throughput(ctx, c, filepath.Join(dir, sub), m)
			*dst = better(*dst, s)
			return err
		}
	}
	baseline := cfg
	baseline.Records = cfg.BaselineRecords
	steps := []struct {
		name, scenario string
		run            func() error
	}{
		// (a), (b) and (b') run twice, in the order a b b' b' b a, and
		// each keeps its better run: the ratios between them are the
		// figures that matter, and this order cancels a machine's drift
		// and noisy neighbours, for each scenario alike.
		{"at-least-once", "atLeastOnce", measure(&rep.AtLeastOnce, "a1", cfg, modeAtLeastOnce)},
		{"exactly-once", "exactlyOnce", measure(&rep.ExactlyOnce, "b1", cfg, modeExactlyOnce)},
		{"exactly-once with payload keys", "exactlyOncePayloadKeys", measure(&rep.ExactlyOncePayloadKeys, "k1", cfg, modeMarks)},
		{"exactly-once with payload keys (second run)", "exactlyOncePayloadKeys", measure(&rep.ExactlyOncePayloadKeys, "k2", cfg, modeMarks)},
		{"exactly-once (second run)", "exactlyOnce", measure(&rep.ExactlyOnce, "b2", cfg, modeExactlyOnce)},
		{"at-least-once (second run)", "atLeastOnce", measure(&rep.AtLeastOnce, "a2", cfg, modeAtLeastOnce)},
		{"exactly-once with state", "exactlyOnceState", measure(&rep.ExactlyOnceState, "c", cfg, modeState)},
		{"per-record baseline", "perRecordBaseline", measure(&rep.PerRecordBaseline, "d", baseline, modeBaseline)},
		{"latency", "latency", func() error {
			var err error
			rep.Latency, err = latency(ctx, cfg, filepath.Join(dir, "l"))
			return err
		}},
	}
	for _, s := range steps {
		if !cfg.runs(s.scenario) {
			continue
		}
		fmt.Fprintf(cfg.Progress, "bench: %s...\n", s.name)
		if err := s.run(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if a := rep.AtLeastOnce.RecordsPerSec; a > 0 {
		rep.ExactlyOnce.VsAtLeastOnce = round(rep.ExactlyOnce.RecordsPerSec/a, 3)
		rep.ExactlyOnceState.VsAtLeastOnce = round(rep.ExactlyOnceState.RecordsPerSec/a, 3)
		rep.ExactlyOncePayloadKeys.VsAtLeastOnce = round(rep.ExactlyOncePayloadKeys.RecordsPerSec/a, 3)
	}
	if d := rep.PerRecordBaseline.RecordsPerSec; d > 0 {
		rep.ExactlyOnce.VsPerRecordBaseline = round(rep.ExactlyOnce.RecordsPerSec/d, 1)
		rep.ExactlyOnceState.VsPerRecordBaseline = round(rep.ExactlyOnceState.RecordsPerSec/d, 1)
		rep.ExactlyOncePayloadKeys.VsPerRecordBaseline = round(rep.ExactlyOncePayloadKeys.RecordsPerSec/d, 1)
	}
	return rep, nil
}

// better returns the faster of two runs of one scenario; a's zero value,
// no run yet, loses to any run. The peak RSS is the larger of the two.
func better(a, b Scenario) Scenario {
	if b.RecordsPerSec > a.RecordsPerSec {
		b.PeakRSSMB = max(a.PeakRSSMB, b.PeakRSSMB)
		return b
	}
	a.PeakRSSMB = max(a.PeakRSSMB, b.PeakRSSMB)
	return a
}

type mode int

const (
	modeAtLeastOnce mode = iota
	modeExactlyOnce
	modeMarks
	modeState
	modeBaseline
	modeFiltered // exactly-once behind a filterCriteria pattern every record matches
	modeWindowed // exactly-once with a tumbling window: a state write in every commit
	// modeSharedScope: two mappings of one scope over the stream, with
	// disjoint filters (ids ending in an even digit, or an odd one), each
	// claiming its windows by range.
	modeSharedScope
)

// load fills a fresh stream with n records of size bytes, spread over the
// shards by partition key.
func load(ctx context.Context, db *pebbledb.DB, cfg Config, n int) error {
	if err := db.CreateStream("bench", cfg.Shards, 24*time.Hour); err != nil {
		return err
	}
	// Each record is a JSON object of RecordSize bytes with a unique "id",
	// for the scenario whose idempotency key comes from the payload.
	const chunk = 2000
	buf := make([]byte, 0, chunk*cfg.RecordSize)
	recs := make([]pebbledb.PutRecord, 0, chunk)
	for i := 0; i < n; i++ {
		start := len(buf)
		buf = fmt.Appendf(buf, `{"id":"%012d","pad":"`, i)
		for len(buf)-start < cfg.RecordSize-2 {
			buf = append(buf, 'a'+byte((len(buf)-start)%26))
		}
		buf = append(buf, `"}`...)
		recs = append(recs, pebbledb.PutRecord{PartitionKey: "key-" + strconv.Itoa(i%1024), Data: buf[start:len(buf):len(buf)]})
		if len(recs) == chunk || i == n-1 {
			if _, err := db.Put(ctx, "bench", recs); err != nil {
				return err
			}
			recs = recs[:0]
			buf = make([]byte, 0, chunk*cfg.RecordSize)
		}
	}
	return nil
}

func throughput(ctx context.Context, cfg Config, dir string, m mode) (Scenario, error) {
	defer os.RemoveAll(dir) // after Close: a million records take room
	db, err := pebbledb.Open(dir)
	if err != nil {
		return Scenario{}, err
	}
	defer db.Close()
	if err := load(ctx, db, cfg, cfg.Records); err != nil {
		return Scenario{}, err
	}
	// The fill's compactions would otherwise run in the scenario's time,
	// and more of them in a slower scenario's.
	if err := db.Settle(ctx); err != nil {
		return Scenario{}, err
	}

	var handled atomic.Int64
	var h idem.Handler = idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		handled.Add(int64(len(b.Records)))
		return idem.BatchResult{}, nil
	})
	switch m {
	case modeWindowed:
		h = idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
			handled.Add(int64(len(b.Records)))
			n, _ := strconv.Atoi(b.Window.State["records"])
			return idem.BatchResult{State: map[string]string{"records": strconv.Itoa(n + len(b.Records))}}, nil
		})
	case modeState:
		h = idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			handled.Add(1)
			return idem.StateFrom(ctx).Put(ctx, r.ShardID+"/"+string(r.Sequence), []byte(r.Sequence))
		})
	case modeBaseline:
		ps, err := newBaseline(ctx, cfg.Store, filepath.Join(dir, "powertools"))
		if err != nil {
			return Scenario{}, err
		}
		defer ps.close()
		h = idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if err := ps.claim(ctx, r.IdempotencyKey); err != nil {
				return err
			}
			handled.Add(1)
			return ps.complete(ctx, r.IdempotencyKey)
		})
	}

	st, cleanup, err := openStore(ctx, cfg.Store, db)
	if err != nil {
		return Scenario{}, err
	}
	defer cleanup()
	if cfg.Marks > 0 {
		if err := prefillMarks(ctx, st, cfg.Marks, storeKind(cfg.Store)); err != nil {
			return Scenario{}, err
		}
		if err := db.Settle(ctx); err != nil {
			return Scenario{}, err
		}
	}
	e := engine.New(st, engine.WithLogger(discardLogger()))
	src, err := srcembedded.New(db, "bench")
	if err != nil {
		return Scenario{}, err
	}
	mp := engine.Mapping{
		Name: "bench", Stream: "bench", Source: src, Function: "noop", Invoker: gofunc.New(h),
		BatchSize: cfg.BatchSize, StartingPosition: source.TrimHorizon, FunctionTimeout: time.Minute,
		AtLeastOnce: m == modeAtLeastOnce || m == modeBaseline,
	}
	if m == modeMarks {
		mp.KeyExpression = "id"
	}
	if (m == modeMarks || m == modeState) && storeKind(cfg.Store) == "dynamodb" {
		// A mark or a state key per record: a batch must fit one DynamoDB
		// transaction.
		mp.BatchSize = min(mp.BatchSize, dynamodb.MaxPayloadKeyBatch)
	}
	if m == modeFiltered {
		mp.Filters = []string{`{"data": {"id": [{"exists": true}]}}`}
	}
	if m == modeWindowed {
		mp.TumblingWindow = engine.MaxTumblingWindow
	}
	if m == modeSharedScope {
		even, odd := mp, mp
		even.Name, even.Filters = "bench-even", []string{`{"data": {"id": [{"suffix": "0"}, {"suffix": "2"}, {"suffix": "4"}, {"suffix": "6"}, {"suffix": "8"}]}}`}
		odd.Name, odd.Filters = "bench-odd", []string{`{"data": {"id": [{"suffix": "1"}, {"suffix": "3"}, {"suffix": "5"}, {"suffix": "7"}, {"suffix": "9"}]}}`}
		if err := e.Add(even); err != nil {
			return Scenario{}, err
		}
		mp = odd
	}
	if err := e.Add(mp); err != nil {
		return Scenario{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	start, cpuStart := time.Now(), cpuTime()
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	if err := waitResolved(ctx, e, uint64(cfg.Records)); err != nil {
		stop()
		<-done
		return Scenario{}, err
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpuStart
	stop()
	if err := <-done; err != nil {
		return Scenario{}, err
	}
	if got := handled.Load(); got < int64(cfg.Records) {
		return Scenario{}, fmt.Errorf("handler saw %d of %d records", got, cfg.Records)
	}
	return Scenario{
		Records: cfg.Records, Seconds: round(elapsed.Seconds(), 3),
		RecordsPerSec: math.Round(float64(cfg.Records) / elapsed.Seconds()),
		Durability:    "sync", PeakRSSMB: peakRSSMB(),
		CPUMicrosPerRecord: round(float64(cpu.Microseconds())/float64(cfg.Records), 2),
	}, nil
}

// waitResolved polls the engine until n records were processed.
func waitResolved(ctx context.Context, e *engine.Engine, n uint64) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		var total uint64
		for _, s := range e.Status() {
			total += s.Processed + s.Skipped + s.Discarded
			if s.LastError != "" {
				return fmt.Errorf("shard %s: %s", s.Shard, s.LastError)
			}
		}
		if total >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// latency puts records at a steady rate and measures put-to-handler time.
func latency(ctx context.Context, cfg Config, dir string) (Scenario, error) {
	db, err := pebbledb.Open(dir)
	if err != nil {
		return Scenario{}, err
	}
	defer db.Close()
	if err := db.CreateStream("bench", cfg.Shards, 24*time.Hour); err != nil {
		return Scenario{}, err
	}
	total := int(cfg.LatencyDuration.Seconds() * float64(cfg.LatencyRate))
	var mu sync.Mutex
	lat := make([]time.Duration, 0, total)
	h := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		sent := int64(binary.BigEndian.Uint64(r.Data))
		d := time.Since(time.Unix(0, sent))
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	})
	src, err := srcembedded.New(db, "bench")
	if err != nil {
		return Scenario{}, err
	}
	st, cleanup, err := openStore(ctx, cfg.Store, db)
	if err != nil {
		return Scenario{}, err
	}
	defer cleanup()
	e := engine.New(st, engine.WithLogger(discardLogger()))
	if err := e.Add(engine.Mapping{Name: "latency", Stream: "bench", Source: src, Function: "probe", Invoker: gofunc.New(h),
		BatchSize: cfg.BatchSize, StartingPosition: source.TrimHorizon}); err != nil {
		return Scenario{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()

	data := make([]byte, cfg.RecordSize)
	interval := time.Second / time.Duration(cfg.LatencyRate)
	next := time.Now()
	for i := 0; i < total; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		binary.BigEndian.PutUint64(data, uint64(time.Now().UnixNano()))
		if _, err := db.Put(ctx, "bench", []pebbledb.PutRecord{{PartitionKey: "key-" + strconv.Itoa(i), Data: data}}); err != nil {
			stop()
			<-done
			return Scenario{}, err
		}
	}
	if err := waitResolved(ctx, e, uint64(total)); err != nil {
		stop()
		<-done
		return Scenario{}, err
	}
	stop()
	if err := <-done; err != nil {
		return Scenario{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return round(float64(lat[max(i, 0)])/float64(time.Millisecond), 3)
	}
	return Scenario{Records: len(lat), Seconds: cfg.LatencyDuration.Seconds(), RecordsPerSec: float64(cfg.LatencyRate),
		Durability: "sync", PeakRSSMB: peakRSSMB(), P50Ms: pct(0.50), P99Ms: pct(0.99)}, nil
}

// peakRSSMB reads the process's peak resident set (VmHWM) on Linux; 0
// elsewhere.
func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return round(kb/1024, 1)
		}
	}
	return 0
}

func round(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// quietLogger keeps the baseline's Pebble from printing to stderr.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
