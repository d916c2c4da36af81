// Package engine runs event source mappings: it reads shards, forms
// batches, invokes functions, and applies AWS Lambda's rules for retries,
// bisection, partial failures and on-failure destinations.
//
// # Delivery semantics
//
// Sources deliver at least once; the engine makes effects exactly-once. For
// every batch it resolves, one store.Write carries the new checkpoint, the
// completion progress or marks of the mapping's idempotency scope, the state
// written by the records that committed, and the on-failure records, and the
// store commits it atomically. A record whose idempotency key is already
// resolved in the scope is skipped, not delivered, and counted. A record
// leaves a shard only when its function succeeded, when it went to the
// on-failure destination, or when retention removed it before it was read
// (counted as lost and logged).
//
// Records run under claims (store.RecordClaims, store.RangeClaim), taken
// for a window before it runs and ended by the commits that resolve it, so
// that a record two shards or two mappings of one scope read at once runs
// only once; see claims.go.
//
// With a store that has transactions (store.TxDriver) and an in-process
// function (function.InProcess), that write is the commit of a transaction
// the handler can write its own SQL in (idem.TxFrom): each record runs under
// a savepoint, a failed record's writes are undone, and the records that
// commit carry theirs. The transaction begins only when the handler asks for
// it; a failed commit of it is not retried (the writes it undid need the
// handler again): the shard restarts from its durable checkpoint.
//
// The engine knows no particular source, store or function: it sees the
// source.Driver, store.Driver and function.Driver interfaces.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// Engine runs mappings over one store.
type Engine struct {
	store        store.Driver
	log          *slog.Logger
	metrics      *metrics
	drainTimeout time.Duration
	discovery    time.Duration
	now          func() time.Time
	lease        *leaseConfig // nil: no shard leases
	region       string
	tracer       trace.Tracer // nil: tracing off (WithTracerProvider)
	// legacy looks up the records the store may hold under the keys of
	// earlier versions (store.Legacy); set by Run before any shard starts.
	legacy store.Legacy

	mu       sync.Mutex
	running  bool
	mappings []*mapping
	// pauses holds each mapping's paused state, by name (pause.go).
	pauses sync.Map
}

// Option configures an Engine.
type Option interface{ apply(*Engine) }

type optionFunc func(*Engine)

func (f optionFunc) apply(e *Engine) { f(e) }

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(e *Engine) { e.log = l }) }

// WithRegisterer registers the engine's Prometheus metrics with r. Default:
// metrics are kept but not registered.
func WithRegisterer(r prometheus.Registerer) Option {
	return optionFunc(func(e *Engine) { e.metrics.register(r) })
}

// WithDrainTimeout bounds how long Run, once its context is done, lets
// in-flight batches finish before it abandons them (an abandoned batch is not
// committed, so it is delivered again later). Default: 10s.
func WithDrainTimeout(d time.Duration) Option {
	return optionFunc(func(e *Engine) { e.drainTimeout = d })
}

// WithShardDiscovery sets how often each mapping lists its source's shards
// again, to start reading shards that appeared (Kafka partitions added, a
// Kinesis reshard). Default: 30s.
func WithShardDiscovery(d time.Duration) Option {
	return optionFunc(func(e *Engine) {
		if d > 0 {
			e.discovery = d
		}
	})
}

// WithRegion sets the AWS region of the ARNs in on-failure records
// (functionArn, streamArn, eventSourceArn), so that they name the region
// the rest of idem presents. Default: function.DefaultEventRegion.
func WithRegion(r string) Option {
	return optionFunc(func(e *Engine) {
		if r != "" {
			e.region = r
		}
	})
}

// New returns an Engine that keeps its checkpoints, marks and state in st.
// It starts no goroutine until Run.
func New(st store.Driver, opts ...Option) *Engine {
	e := &Engine{
		store:        st,
		log:          slog.Default(),
		metrics:      newMetrics(),
		drainTimeout: 10 * time.Second,
		discovery:    30 * time.Second,
		now:          time.Now,
		region:       function.DefaultEventRegion,
	}
	for _, o := range opts {
		o.apply(e)
	}
	return e
}

// ErrRunning is returned by Add once Run has started.
var ErrRunning = errors.New("engine: already running")

// Add validates m and adds it to the mappings Run will start.
func (e *Engine) Add(m Mapping) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := e.checkLeases(); err != nil {
		return err
	}
	m = m.withDefaults()
	k, err := newKeyer(m.Scope, m.KeyExpression, m.EventFormat)
	if err != nil {
		return fmt.Errorf("mapping %q: %w", m.Name, err)
	}
	filters, err := newFilterSet(m.EventFormat, m.Filters)
	if err != nil {
		return fmt.Errorf("mapping %q: %w", m.Name, err)
	}
	if err := fitsOneWrite(e.store, &m, k); err != nil {
		return fmt.Errorf("mapping %q: %w", m.Name, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running {
		return ErrRunning
	}
	for _, o := range e.mappings {
		if o.cfg.Name == m.Name {
			return fmt.Errorf("mapping %q: added twice", m.Name)
		}
	}
	mp := &mapping{e: e, cfg: m, keyer: k, filters: filters, permanent: make(map[string]bool), txd: txDriver(e.store, m.Invoker), scopeFilters: map[string]*filterSet{},
		rediscover: make(chan struct{}, 1), shardEnded: make(chan struct{})}
	if c, ok := e.store.(store.Claims); ok {
		mp.journal = &journal{claims: c, legacy: &e.legacy, scope: m.Scope, lease: m.FunctionTimeout, retention: m.MarkRetention, now: e.now, tracer: e.tracer}
	}
	for _, t := range m.PermanentErrorTypes {
		mp.permanent[t] = true
	}
	e.mappings = append(e.mappings, mp)
	return nil
}

// Run starts one goroutine per mapping and shard and blocks until ctx is
// done; then it stops reading, lets in-flight batches finish for up to the
// drain timeout, and returns after every goroutine it started has ended. It
// returns the first error that stopped a mapping from starting.
func (e *Engine) Run(ctx context.Context) (err error) {
	defer func() {
		// Cancelled while starting (listing shards, reading where they
		// started): that is a stop asked for, not a failure.
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = nil
		}
	}()
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return ErrRunning
	}
	if err := e.checkLeases(); err != nil {
		e.mu.Unlock()
		return err
	}
	e.running = true
	mappings := e.mappings
	e.mu.Unlock()

	if c, ok := e.store.(store.Clock); ok {
		if err := checkClock(ctx, c); err != nil {
			return err
		}
	}
	legacy, err := store.LegacyOf(ctx, e.store)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	e.legacy = legacy

	// work outlives ctx by the drain timeout, so that a batch being invoked
	// when shutdown starts can still commit.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	initial := make([][]string, len(mappings))
	for i, m := range mappings {
		ids, err := m.cfg.Source.Shards(ctx)
		if err != nil {
			return fmt.Errorf("mapping %q: listing shards of %q: %w", m.cfg.Name, m.cfg.Stream, err)
		}
		initial[i] = ids
		if err := m.loadStarted(ctx, ids); err != nil {
			return fmt.Errorf("mapping %q: %w", m.cfg.Name, err)
		}
	}

	e.setAlone(mappings)
	var wg sync.WaitGroup
	if err := e.startPauses(ctx, mappings, &wg); err != nil {
		return err
	}
	for i, m := range mappings {
		m.startShards(ctx, work, &wg, initial[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.discover(ctx, work, &wg)
		}()
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(e.drainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		e.log.Warn("drain timeout: abandoning in-flight batches; they will be delivered again", "timeout", e.drainTimeout)
		cancelWork()
		<-done
	}
	return nil
}

// ShardStatus is the state of one mapping in one shard, for `idem status`.
type ShardStatus struct {
	Mapping   string `json:"mapping"`
	Function  string `json:"function"`
	Stream    string `json:"stream"`
	Shard     string `json:"shard"`
	Scope     string `json:"scope"`
	State     string `json:"state"`
	LastError string `json:"lastError,omitempty"`
	// Checkpoint is the sequence at or below which every record has left
	// the shard for this mapping.
	Checkpoint idem.Sequence `json:"checkpoint"`
	// Latest is the newest sequence the shard held when last read.
	Latest idem.Sequence `json:"latest"`
	// LagRecords is how many records are above the checkpoint.
	LagRecords uint64 `json:"lagRecords"`
	// IteratorAgeMs is the age of the oldest record not yet resolved, as
	// Lambda's IteratorAge metric; 0 when caught up.
	IteratorAgeMs int64  `json:"iteratorAgeMs"`
	InFlight      int64  `json:"inFlight"`
	Invocations   uint64 `json:"invocations"`
	Retries       uint64 `json:"retries"`
	Processed     uint64 `json:"processed"`
	Discarded     uint64 `json:"discarded"`
	Skipped       uint64 `json:"skipped"`
	Lost          uint64 `json:"lost"`
	// Filtered counts records that matched none of the mapping's filters,
	// since this process started (the other counts are durable).
	Filtered uint64 `json:"filtered"`
}

// Status reports every mapping's shards, sorted by mapping and shard.
func (e *Engine) Status() []ShardStatus {
	e.mu.Lock()
	mappings := e.mappings
	e.mu.Unlock()
	now := e.now()
	var out []ShardStatus
	for _, m := range mappings {
		m.mu.Lock()
		shards := m.shards
		m.mu.Unlock()
		for _, s := range shards {
			out = append(out, s.status(now))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Mapping != out[j].Mapping {
			return out[i].Mapping < out[j].Mapping
		}
		return out[i].Shard < out[j].Shard
	})
	return out
}

// checkClock refuses a clock further from the store's than MaxClockSkew:
// processes sharing the store decide mark expiry and claim leases from
// their own clocks, within that margin.
func checkClock(ctx context.Context, c store.Clock) error {
	before := time.Now()
	at, err := c.Time(ctx)
	if err != nil {
		return fmt.Errorf("engine: reading the store's clock: %w", err)
	}
	rtt := time.Since(before)
	local := before.Add(rtt / 2)
	skew := at.Sub(local)
	if skew < 0 {
		skew = -skew
	}
	if skew > MaxClockSkew+rtt/2 {
		return fmt.Errorf("engine: this machine's clock is %s away from the store's, above the %s that mark expiry and claim leases allow for: synchronise it (NTP) before starting", skew.Round(time.Millisecond), MaxClockSkew)
	}
	return nil
}

// writeItemsBesideMarks counts the items a batch's Write may touch besides
// its completion marks, for stores that bound a Write's items
// (store.TxLimiter): its checkpoint, its progress, its fence, a window's
// state and one on-failure batch.
const writeItemsBesideMarks = 5

// fitsOneWrite refuses a mapping whose batches could need more items in
// one Write than st takes (store.TxLimiter): records keyed by their payload
// need a completion mark each, and a batch is never committed in several
// writes. Records keyed by identity need none.
func fitsOneWrite(st store.Driver, m *Mapping, k *keyer) error {
	l, ok := st.(store.TxLimiter)
	if !ok || k.byIdentity() {
		return nil
	}
	if need := m.BatchSize + writeItemsBesideMarks; need > l.MaxWriteItems() {
		return fmt.Errorf("batchSize %d: records keyed by their payload need up to %d items in one write, and the store takes %d (batchSize at most %d)",
			m.BatchSize, need, l.MaxWriteItems(), l.MaxWriteItems()-writeItemsBesideMarks)
	}
	return nil
}
