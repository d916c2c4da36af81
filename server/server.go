// Package server wires a configuration into a running idem: the embedded
// storage, the function drivers, the engine and the HTTP API. It is the only
// package that knows which drivers exist.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/source"
	srcdynamodb "github.com/idem-run/idem/source/dynamodb"
	srcembedded "github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/source/jetstream"
	"github.com/idem-run/idem/source/kafka"
	"github.com/idem-run/idem/source/kinesis"
	"github.com/idem-run/idem/source/redisstream"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/dynamodb"
	stembedded "github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/postgres"
	"github.com/idem-run/idem/store/redis"
)

// Server is one running idem: storage, engine and HTTP API.
type Server struct {
	cfg        *config.File
	log        *slog.Logger
	handlers   map[string]idem.Handler
	db         *pebbledb.DB
	store      store.Driver
	closeStore func()
	procs      []namedProcess
	closers    []func() // sources' connections
	engine     *engine.Engine
	registry   *prometheus.Registry
	tracer     *tracerProviderSDK // nil: tracing off (trace.go)
	http       *http.Server
	ln         net.Listener
	pprof      *pprofServer // nil: debug.pprof off (pprof.go)

	invokeHandlers map[string]idem.InvokeHandler
	invoke         *invoke.Service
	auth           *authenticator

	// Limits on clients (limits.go).
	bodyTimeout         time.Duration
	maxConns            int
	unverifiedBodyBytes int64

	// phase is phaseStarting, phaseServing or phaseStopping.
	phase atomic.Int32
	// ready reports why the server cannot do its work, or nil; GET /readyz
	// answers it.
	ready func(context.Context) error

	closeOnce sync.Once

	// redriveMu lets one redrive run at a time (redrive.go): its sends and
	// progress are compared and written without a lock of the store's.
	redriveMu sync.Mutex

	// started is when the API started serving: the control plane's
	// LastModified of what the config file set (controlplane.go).
	started time.Time
}

// namedProcess is a process function, which Close must stop.
type namedProcess struct {
	name string
	fn   *process.Function
}

// Option configures a Server.
type Option interface{ apply(*Server) }

type optionFunc func(*Server)

func (f optionFunc) apply(s *Server) { f(s) }

// WithHandler registers the in-process Go function name. Every function of
// the configuration without another kind must be registered.
func WithHandler(name string, h idem.Handler) Option {
	return optionFunc(func(s *Server) { s.handlers[name] = h })
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return optionFunc(func(s *Server) { s.log = l }) }

// New checks the wiring of cfg with Check, which opens nothing, then opens
// the data directory, creates the configured streams, and wires functions
// and mappings. It starts no goroutine except the storage's retention
// worker; Run starts the rest. Close releases what New opened.
func New(cfg *config.File, opts ...Option) (*Server, error) {
	s := &Server{cfg: cfg, log: slog.Default(), handlers: make(map[string]idem.Handler),
		bodyTimeout: defaultBodyTimeout, maxConns: connLimit(), unverifiedBodyBytes: defaultUnverifiedBodyBytes}
	s.ready = s.checkReady
	for _, o := range opts {
		o.apply(s)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	db, err := pebbledb.Open(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("opening data directory %q: %w", cfg.DataDir, err)
	}
	s.db = db
	if err := s.setup(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) setup() error {
	cfg := s.cfg
	for i, st := range cfg.Streams {
		if err := s.db.CreateStream(st.Name, st.Shards, st.Retention.D()); err != nil {
			return fmt.Errorf("streams[%d] %q: %w", i, st.Name, err)
		}
	}
	if err := s.openStore(); err != nil {
		return err
	}
	s.registry = prometheus.NewRegistry()
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfoGauge())
	tp, err := newTracerProvider(context.Background())
	if err != nil {
		return err
	}
	s.tracer = tp
	opts := []engine.Option{engine.WithLogger(s.log), engine.WithRegisterer(s.registry), engine.WithRegion(s.region()),
		engine.WithTracerProvider(s.tracerProvider())}
	if l := s.cfg.Lease; l != nil {
		opts = append(opts, engine.WithShardLeases(engine.DefaultLeaseOwner(), l.TTL.D()))
	}
	s.engine = engine.New(s.store, opts...)
	s.registry.MustRegister(&statusCollector{s: s})

	fns := make(map[string]function.Driver)
	var errs []error
	for i, f := range cfg.Functions {
		switch {
		case f.Process != nil:
			d, err := process.New(processConfig(&f, s.region()), process.WithLogger(s.log), process.WithPIDDir(cfg.DataDir+"/process"))
			if err != nil {
				errs = append(errs, fmt.Errorf("functions[%d].process: %w", i, err))
				continue
			}
			fns[f.Name] = d
			s.procs = append(s.procs, namedProcess{f.Name, d})
		case f.HTTP != nil:
			d, err := httpFunction(&f, s.region())
			if err != nil {
				errs = append(errs, fmt.Errorf("functions[%d].http: %w", i, err))
				continue
			}
			fns[f.Name] = d
		default:
			d, err := s.goFunction(f.Name)
			if err != nil {
				errs = append(errs, &config.FieldError{Path: fmt.Sprintf("functions[%d]", i), Err: err})
				continue
			}
			fns[f.Name] = d
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := s.setupInvoke(fns); err != nil {
		return err
	}
	timeouts := make(map[string]time.Duration)
	for _, f := range cfg.Functions {
		timeouts[f.Name] = f.Timeout.D()
	}
	for i, m := range cfg.Mappings {
		if !m.Enabled {
			continue
		}
		src, err := s.openSource(&m.Source)
		if err != nil {
			errs = append(errs, fmt.Errorf("mappings[%d].source: %w", i, err))
			continue
		}
		em := engineMapping(&m, src, fns[m.Function], timeouts[m.Function])
		if err := s.engine.Add(em); err != nil {
			errs = append(errs, fmt.Errorf("mappings[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// openSource opens a mapping's source. Sources that hold connections are
// closed by Close.
func (s *Server) openSource(r *config.SourceRef) (source.Driver, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch {
	case r.Kafka != nil:
		opts := []kafka.Option{kafka.WithBrokers(r.Kafka.Brokers...), kafka.WithPollInterval(r.Kafka.PollInterval.D())}
		if r.Kafka.Group != "" {
			opts = append(opts, kafka.WithConsumerGroup(r.Kafka.Group), kafka.WithLogger(s.log),
				kafka.WithSessionTimeout(r.Kafka.SessionTimeout.D()))
		}
		k, err := kafka.New(ctx, r.Kafka.Topic, opts...)
		if err != nil {
			return nil, fmt.Errorf("kafka: %w", err)
		}
		s.closers = append(s.closers, func() { k.Close() })
		return k, nil
	case r.Kinesis != nil:
		opts := []kinesis.Option{kinesis.WithLogger(s.log)}
		if r.Kinesis.Endpoint != "" {
			opts = append(opts, kinesis.WithEndpoint(r.Kinesis.Endpoint))
		}
		if r.Kinesis.Region != "" {
			opts = append(opts, kinesis.WithRegion(r.Kinesis.Region))
		}
		k, err := kinesis.New(ctx, r.Kinesis.Stream, opts...)
		if err != nil {
			return nil, fmt.Errorf("kinesis: %w", err)
		}
		s.closers = append(s.closers, func() { k.Close() })
		return k, nil
	case r.DynamoDB != nil:
		opts := []srcdynamodb.Option{srcdynamodb.WithLogger(s.log)}
		if r.DynamoDB.Table != "" {
			opts = append(opts, srcdynamodb.WithTable(r.DynamoDB.Table))
		} else {
			opts = append(opts, srcdynamodb.WithStreamARN(r.DynamoDB.StreamArn))
		}
		if r.DynamoDB.Endpoint != "" {
			opts = append(opts, srcdynamodb.WithEndpoint(r.DynamoDB.Endpoint))
		}
		if region := r.DynamoDB.StreamRegion(); region != "" {
			opts = append(opts, srcdynamodb.WithRegion(region))
		}
		d, err := srcdynamodb.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("dynamodb: %w", err)
		}
		s.closers = append(s.closers, func() { d.Close() })
		return d, nil
	case r.Redis != nil:
		rs, err := redisstream.New(ctx, redisstream.WithAddr(r.Redis.Addr), redisstream.WithDB(r.Redis.DB),
			redisstream.WithKeys(r.Redis.Keys...), redisstream.WithStream(r.Redis.Name))
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		s.closers = append(s.closers, func() { rs.Close() })
		return rs, nil
	case r.JetStream != nil:
		var opts []jetstream.Option
		if len(r.JetStream.Partitions) > 0 {
			opts = append(opts, jetstream.WithPartitions(r.JetStream.Partitions...))
		}
		if t := r.JetStream.PartitionByToken; t != nil {
			opts = append(opts, jetstream.WithSubjectTokenPartitioning(t.Token, t.Count))
		}
		js, err := jetstream.Connect(ctx, r.JetStream.URL, r.JetStream.Stream, opts...)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		s.closers = append(s.closers, func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			js.Close(cctx)
		})
		return js, nil
	}
	return srcembedded.New(s.db, r.Stream)
}

// openStore opens the configured store: the embedded one by default, or a
// shared PostgreSQL or Redis store.
func (s *Server) openStore() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch sc := s.cfg.Store; {
	case sc.Postgres != nil:
		opts := []postgres.Option{postgres.WithSchema(sc.Postgres.Schema), postgres.WithLogger(s.log)}
		if sc.Postgres.SeparateDeferredInserts {
			opts = append(opts, postgres.WithoutJoinedInserts())
		}
		if l := s.cfg.Lease; l != nil {
			// A stalled owner's transaction must not hold up the new one.
			opts = append(opts, postgres.WithLeaseTTL(l.TTL.D()))
		}
		pg, err := postgres.New(ctx, sc.Postgres.DSN, opts...)
		if err != nil {
			return fmt.Errorf("store.postgres: %w", err)
		}
		s.store, s.closeStore = pg, pg.Close
	case sc.Redis != nil:
		rs, err := redis.New(ctx, redis.WithAddr(sc.Redis.Addr), redis.WithDB(sc.Redis.DB), redis.WithPrefix(sc.Redis.Prefix), redis.WithLogger(s.log))
		if err != nil {
			return fmt.Errorf("store.redis: %w", err)
		}
		s.store, s.closeStore = rs, func() { rs.Close() }
	case sc.DynamoDB != nil:
		opts := []dynamodb.Option{dynamodb.WithTable(sc.DynamoDB.Table), dynamodb.WithLogger(s.log)}
		if sc.DynamoDB.Region != "" {
			opts = append(opts, dynamodb.WithRegion(sc.DynamoDB.Region))
		}
		if sc.DynamoDB.Endpoint != "" {
			opts = append(opts, dynamodb.WithEndpoint(sc.DynamoDB.Endpoint))
		}
		ds, err := dynamodb.New(ctx, opts...)
		if err != nil {
			return fmt.Errorf("store.dynamodb: %w", err)
		}
		s.store, s.closeStore = ds, func() { ds.Close() }
	default:
		s.store, s.closeStore = stembedded.New(s.db), func() {}
	}
	return nil
}

// Run serves the HTTP API and runs the mappings until ctx is done, then
// drains in-flight batches and stops the listener. It returns nil on a clean
// shutdown.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	if err := s.startPprof(); err != nil {
		ln.Close()
		return err
	}
	defer s.stopPprof()
	s.http = &http.Server{Handler: s.routes(s.registry), ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.log.Info("idem serving", "listen", ln.Addr().String(), "dataDir", s.cfg.DataDir,
		"streams", len(s.cfg.Streams), "mappings", len(s.cfg.Mappings), "maxConnections", s.maxConns)
	s.phase.Store(phaseServing)
	ln = newLimitListener(ln, s.maxConns)

	httpErr := make(chan error, 1)
	go func() { httpErr <- s.http.Serve(ln) }()

	engineCtx, stopEngine := context.WithCancel(ctx)
	defer stopEngine()
	engineDone := make(chan error, 1)
	go func() { engineDone <- s.engine.Run(engineCtx) }()
	invokeDone := s.runInvoke(engineCtx)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-httpErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("http: %w", err)
		}
	case err := <-engineDone:
		runErr = err
		engineDone <- err
	}
	s.phase.Store(phaseStopping)
	stopEngine()
	if err := <-engineDone; err != nil && runErr == nil {
		runErr = err
	}
	if err := <-invokeDone; err != nil && runErr == nil {
		runErr = err
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(shutCtx); err != nil {
		// Connections still open after the grace period (a client that
		// connected but sent no request, a slow reader) are not a failed
		// shutdown: the engine has drained, nothing is lost by closing them.
		s.log.Warn("closing HTTP connections still open after the shutdown grace period", "err", err)
		s.http.Close()
	}
	return runErr
}

// Addr returns the address the API listens on, once Run has started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close releases the storage. Call it after Run has returned.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.stopPprof()
		s.shutdownTracing()
		for _, p := range s.procs {
			p.fn.Close()
		}
		for _, c := range s.closers {
			c()
		}
		if s.closeStore != nil {
			s.closeStore()
		}
		err = s.db.Close()
	})
	return err
}

// statusCollector exports per-shard lag and iterator age from the engine's
// status at scrape time.
// statusCollector turns the engine's shard status and the asynchronous
// queues' status into gauges at each scrape.
type statusCollector struct{ s *Server }

var (
	lagDesc         = prometheus.NewDesc("idem_shard_lag_records", "Records above the mapping's checkpoint.", []string{"mapping", "shard"}, nil)
	iteratorAgeDesc = prometheus.NewDesc("idem_shard_iterator_age_seconds", "Age of the oldest unresolved record.", []string{"mapping", "shard"}, nil)
	queuedDesc      = prometheus.NewDesc("idem_async_queued_events", "Asynchronous invocations accepted and not done yet.", []string{"function"}, nil)
	queueAgeDesc    = prometheus.NewDesc("idem_async_oldest_event_age_seconds", "How long the oldest queued asynchronous invocation has waited.", []string{"function"}, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- iteratorAgeDesc
	ch <- queuedDesc
	ch <- queueAgeDesc
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.engine.Status() {
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(st.LagRecords), st.Mapping, st.Shard)
		ch <- prometheus.MustNewConstMetric(iteratorAgeDesc, prometheus.GaugeValue, float64(st.IteratorAgeMs)/1000, st.Mapping, st.Shard)
	}
	if c.s.invoke == nil {
		return
	}
	for _, q := range c.s.invoke.Status(context.Background()) {
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(q.Queued), q.Function)
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, float64(q.OldestAgeMs)/1000, q.Function)
	}
}
