package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/httpfn"
	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/dynamodb"
	stembedded "github.com/idem-run/idem/store/embedded"
	"github.com/idem-run/idem/store/postgres"
	"github.com/idem-run/idem/store/redis"
)

// Check reports the problems New would find in the wiring of cfg, which
// config.Validate cannot see because config knows no drivers: an in-process
// Go function that opts register no handler for, a process function whose
// command is not an executable file or whose dir does not exist, a mapping
// the engine refuses, a dataDir that is not a directory. It opens, creates,
// starts and connects to nothing, so that `idem validate` can run it where
// `idem serve` will run, even beside a running idem. New runs it first, so
// its messages are the ones serve prints.
//
// Each problem is a *config.FieldError (with no Line: Check sees no file),
// joined with errors.Join; nil if there are none. What only a live resource
// can tell is not checked: whether the data directory can be opened or is
// locked by another idem, whether a stream's shard count differs from the
// one its data was written with, whether the stores and sources can be
// reached (PostgreSQL, Redis, Kafka, NATS JetStream, Kinesis, DynamoDB)
// and what they hold (a topic or stream that does not exist), and whether
// listen can be bound. Check expects cfg to be valid as config.Validate
// sees it.
func Check(cfg *config.File, opts ...Option) error {
	if cfg == nil {
		return errors.New("server: nil config")
	}
	s := &Server{cfg: cfg, handlers: make(map[string]idem.Handler)}
	for _, o := range opts {
		o.apply(s)
	}
	return s.check()
}

// The stores all keep idempotency claims, which the Invoke API and shard
// leases need: New cannot fail for the want of them, so Check does not ask.
var (
	_ store.Claims = (*stembedded.Store)(nil)
	_ store.Claims = (*postgres.Store)(nil)
	_ store.Claims = (*redis.Store)(nil)
	_ store.Claims = (*dynamodb.Store)(nil)
)

// check is Check with the handlers of s.
func (s *Server) check() error {
	cfg := s.cfg
	var errs []error
	bad := func(path string, err error) {
		for _, e := range unjoin(err) {
			errs = append(errs, &config.FieldError{Path: path, Err: e})
		}
	}
	if st, err := os.Stat(cfg.DataDir); err == nil && !st.IsDir() {
		bad("dataDir", fmt.Errorf("%q is not a directory", cfg.DataDir))
	}
	for i := range cfg.Functions {
		f, p := &cfg.Functions[i], fmt.Sprintf("functions[%d]", i)
		switch {
		case f.Process != nil:
			bad(p+".process", process.Check(processConfig(f, s.region())))
		case f.HTTP != nil:
			_, err := httpFunction(f, s.region())
			bad(p+".http", err)
		default:
			_, err := s.goFunction(f.Name)
			bad(p, err)
		}
	}
	for i := range cfg.Mappings {
		m := &cfg.Mappings[i]
		if !m.Enabled {
			continue
		}
		var inv function.Driver
		var timeout time.Duration
		if f := cfg.Function(m.Function); f != nil {
			inv, timeout = unopened{}, f.Timeout.D()
		}
		em := engineMapping(m, unopened{}, inv, timeout)
		if cfg.Store.DynamoDB != nil {
			// A batch's marks must fit one DynamoDB transaction.
			bad(fmt.Sprintf("mappings[%d].batchSize", i), dynamodb.CheckBatch(m.BatchSize, em.PayloadKeyed()))
		}
		err := em.Validate()
		if err == nil {
			continue
		}
		// Validate wraps the list of problems in `mapping "name": `; each
		// gets a line of its own.
		p := fmt.Sprintf("mappings[%d]", i)
		if list, ok := errors.Unwrap(err).(interface{ Unwrap() []error }); ok {
			for _, e := range list.Unwrap() {
				bad(p, fmt.Errorf("mapping %q: %w", m.Name, e))
			}
			continue
		}
		bad(p, err)
	}
	return errors.Join(errs...)
}

// unjoin returns the problems of an error made by errors.Join, err itself
// for any other, and none for nil.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// processConfig is the process driver's configuration of a process
// function (f.Process set). Its AWS_REGION is the function's own
// process.region, or region, idem's, when it sets none.
func processConfig(f *config.Function, region string) process.Config {
	pf := f.Process
	c := process.Config{Name: f.Name, Command: pf.Command, Args: pf.Args, Env: pf.Env, Dir: pf.Dir,
		Concurrency: pf.Concurrency, Timeout: f.Timeout.D(), MemorySize: pf.MemorySize, Region: pf.Region,
		InheritEnv: pf.InheritEnv}
	if c.Region == "" {
		c.Region = region
	}
	return c
}

// httpFunction makes the driver of an HTTP function (f.HTTP set), whose
// events and ARNs name region. It opens no connection until its first
// invocation.
func httpFunction(f *config.Function, region string) (*httpfn.Function, error) {
	return httpfn.New(f.HTTP.URL, httpfn.Timeout(f.Timeout.D()), httpfn.Name(f.Name), httpfn.Region(region))
}

// region is the AWS region idem presents (config.File.Region): in every
// ARN, event and process function's AWS_REGION.
func (s *Server) region() string {
	if s.cfg.Region == "" {
		return config.DefaultRegion
	}
	return s.cfg.Region
}

// engineMapping is the engine's form of the mapping m, reading src and
// invoking inv, whose timeout is timeout.
func engineMapping(m *config.Mapping, src source.Driver, inv function.Driver, timeout time.Duration) engine.Mapping {
	em := engine.Mapping{
		Name: m.Name, Stream: m.Source.Name(), Source: src,
		Function: m.Function, Invoker: inv, FunctionTimeout: timeout,
		BatchSize:                  m.BatchSize,
		MaximumBatchingWindow:      m.MaximumBatchingWindow.D(),
		StartingPosition:           source.StartingPosition(m.StartingPosition),
		BisectBatchOnFunctionError: m.BisectBatchOnFunctionError,
		MaximumRecordAge:           m.MaximumRecordAge.D(),
		ParallelizationFactor:      m.ParallelizationFactor,
		ReportBatchItemFailures:    m.ReportBatchItemFailures(),
		PermanentErrorTypes:        m.PermanentErrorTypes,
		EventFormat:                idem.EventFormat(m.EventFormat),
		Filters:                    m.Patterns(),
		TumblingWindow:             m.TumblingWindow.D(),
		Scope:                      m.Idempotency.Scope,
		KeyExpression:              m.Idempotency.Key,
		MarkRetention:              m.Idempotency.Retention.D(),
		RetryBaseDelay:             m.Retry.BaseDelay.D(),
		RetryMaxDelay:              m.Retry.MaxDelay.D(),
	}
	em.StartingPositionTimestamp = m.StartingPositionTime()
	em.RetryAttempts(m.MaximumRetryAttempts)
	em.OnFailure = m.OnFailureStream()
	return em
}

// errUnopened is what an unopened source or function answers.
var errUnopened = errors.New("server: not opened (a stand-in of Check)")

// unopened stands in for a mapping's source and function in Check, which
// opens neither: engine.Mapping.Validate only needs them set, and a mapping
// validated with it is never run.
type unopened struct{}

func (unopened) Shards(context.Context) ([]string, error) { return nil, errUnopened }

func (unopened) Start(context.Context, string, source.StartingPosition, time.Time) (idem.Sequence, error) {
	return "", errUnopened
}

func (unopened) Read(context.Context, string, idem.Sequence, int, int) (source.ReadResult, error) {
	return source.ReadResult{}, errUnopened
}

func (unopened) Wait(context.Context, string, idem.Sequence) error { return errUnopened }

func (unopened) Retention() time.Duration { return 0 }

func (unopened) Invoke(context.Context, *idem.Batch) (function.Result, error) {
	return function.Result{}, errUnopened
}
