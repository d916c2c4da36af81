package invoke

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jmespath/go-jmespath"
	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
)

// Defaults and limits, in one place.
const (
	defaultTimeout          = 3 * time.Second
	defaultAsyncConcurrency = 10
	defaultMaximumEventAge  = 6 * time.Hour
	defaultRetryAttempts    = 2
	defaultBaseDelay        = time.Second
	defaultMaxDelay         = 2 * time.Minute
	defaultRetention        = 24 * time.Hour
	// leaseMargin is added to twice a function's timeout for the lease of
	// a claim: the wait for an idle process (up to the timeout), the run
	// (the timeout, counted from when the runtime receives it) and the
	// completing write must fit in it, or a repeat could take the claim
	// over.
	leaseMargin = 10 * time.Second
	// MaxAsyncPayload is the largest Event payload, Lambda's 1 MB limit for
	// asynchronous invocations, less the queue record's small header.
	MaxAsyncPayload = pebbledb.MaxRecordBytes - 2048
	// maxClientContext is Lambda's limit on X-Amz-Client-Context.
	maxClientContext = 3583
	// reserveLease bounds the time between reserving a keyed event's key
	// and marking the reservation queued, the event's append in between:
	// if the process dies in that time, a repeat takes the key over once
	// it ends.
	reserveLease = 10 * time.Second
	// pollMin and pollMax bound how often a repeat looks whether the
	// invocation it waits for has finished in another idem process.
	pollMin, pollMax = 20 * time.Millisecond, 500 * time.Millisecond
)

// Function is what the Invoke API runs under one name.
type Function struct {
	// Name is the name the function is invoked by.
	Name string
	// Driver runs the function with a payload. When nil, invocations are
	// refused (400 InvalidParameterValueException) with Unavailable as the
	// reason: an in-process batch handler, for one, cannot take a payload.
	Driver function.PayloadInvoker
	// Unavailable says why Driver is nil.
	Unavailable string
	// Timeout bounds one run. Default: 3s.
	Timeout time.Duration
	// Async configures asynchronous invocations.
	Async Async
	// IdempotencyKey is a JMESPath expression over the payload that gives
	// an invocation without an Idempotency-Key header its key. Default:
	// none.
	IdempotencyKey string
	// IdempotencyRetention is how long a keyed invocation's result is kept.
	// Default: 24h.
	IdempotencyRetention time.Duration
}

// Async is how a function's asynchronous invocations run, with the names of
// Lambda's EventInvokeConfig.
type Async struct {
	// MaximumRetryAttempts is how many times a failed run is retried, 0 to
	// 2. Use RetryAttempts to set it: its zero value means the default, 2.
	MaximumRetryAttempts int
	retriesSet           bool
	// MaximumEventAge: an event accepted longer ago is not run again.
	// Default: 6h.
	MaximumEventAge time.Duration
	// OnFailure is the embedded stream that receives given-up events; ""
	// for none (they are logged).
	OnFailure string
	// PermanentErrorTypes are error types that are not retried.
	PermanentErrorTypes []string
	// BaseDelay is the delay before the first retry, doubling after, up to
	// MaxDelay. Defaults: 1s and 2m.
	BaseDelay, MaxDelay time.Duration
	// Concurrency is how many events of the function run at once.
	// Default: 10.
	Concurrency int
}

// RetryAttempts sets MaximumRetryAttempts, 0 included.
func (a *Async) RetryAttempts(n int) { a.MaximumRetryAttempts, a.retriesSet = n, true }

// Option configures New.
type Option interface{ apply(*Service) }

type optionFunc func(*Service)

func (o optionFunc) apply(s *Service) { o(s) }

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(s *Service) {
		if l != nil {
			s.log = l
		}
	})
}

// WithRegion sets the AWS region of the function ARNs the Service reports
// (in errors and on-failure records), so that they name the region the
// rest of idem presents. Default: function.DefaultEventRegion.
func WithRegion(r string) Option {
	return optionFunc(func(s *Service) {
		if r != "" {
			s.region = r
		}
	})
}

// Service runs direct invocations of functions: synchronous ones on the
// caller's goroutine, asynchronous ones from each function's queue once Run
// is called. It is safe for concurrent use.
type Service struct {
	db     *pebbledb.DB
	claims store.Claims
	log    *slog.Logger
	now    func() time.Time
	fns    map[string]*fn
	region string
	tracer trace.Tracer // nil: tracing off (WithTracerProvider)

	// legacyMu guards legacy, read from claims on first use (legacyOf).
	legacyMu     sync.Mutex
	legacyLoaded bool
	legacy       store.Legacy
}

// legacyOf returns what looks up the idempotency records claims may hold
// under the keys of earlier versions (store.Legacy), asking claims once.
func (s *Service) legacyOf(ctx context.Context) (store.Legacy, error) {
	s.legacyMu.Lock()
	defer s.legacyMu.Unlock()
	if !s.legacyLoaded {
		l, err := store.LegacyOf(ctx, s.claims)
		if err != nil {
			return store.Legacy{}, err
		}
		s.legacy, s.legacyLoaded = l, true
	}
	return s.legacy, nil
}

// fn is one function as the Service runs it.
type fn struct {
	cfg  Function
	expr *jmespath.JMESPath
	q    *queue

	mu sync.Mutex
	// flights are the keyed invocations running in this process, and the
	// keyed events being queued (under their reservation's key): repeats
	// wait on done instead of polling the store.
	flights map[store.MarkKey]*flight
}

type flight struct{ done chan struct{} }

// New validates fns and creates each function's queue stream in db. Claims
// (idempotency records) go to claims. It starts no goroutine: Run runs the
// queues.
func New(db *pebbledb.DB, claims store.Claims, fns []Function, opts ...Option) (*Service, error) {
	s := &Service{db: db, claims: claims, log: slog.Default(), now: time.Now, fns: make(map[string]*fn, len(fns)),
		region: function.DefaultEventRegion}
	for _, o := range opts {
		o.apply(s)
	}
	var errs []error
	for i, cfg := range fns {
		if cfg.Name == "" {
			errs = append(errs, fmt.Errorf("invoke: functions[%d]: name required", i))
			continue
		}
		if _, dup := s.fns[cfg.Name]; dup {
			errs = append(errs, fmt.Errorf("invoke: function %q given twice", cfg.Name))
			continue
		}
		applyDefaults(&cfg)
		if err := validate(&cfg); err != nil {
			errs = append(errs, err)
			continue
		}
		expr, err := compileKey(cfg.IdempotencyKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("invoke: function %q: idempotency key %q: %w", cfg.Name, cfg.IdempotencyKey, err))
			continue
		}
		f := &fn{cfg: cfg, expr: expr, flights: make(map[store.MarkKey]*flight)}
		q, err := newQueue(s, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.q = q
		s.fns[cfg.Name] = f
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func applyDefaults(c *Function) {
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	a := &c.Async
	if !a.retriesSet && a.MaximumRetryAttempts == 0 {
		a.MaximumRetryAttempts = defaultRetryAttempts
	}
	if a.MaximumEventAge == 0 {
		a.MaximumEventAge = defaultMaximumEventAge
	}
	if a.BaseDelay == 0 {
		a.BaseDelay = defaultBaseDelay
	}
	if a.MaxDelay == 0 {
		a.MaxDelay = max(defaultMaxDelay, a.BaseDelay)
	}
	if a.Concurrency == 0 {
		a.Concurrency = defaultAsyncConcurrency
	}
	if c.IdempotencyRetention == 0 {
		c.IdempotencyRetention = defaultRetention
	}
}

// validate checks what the configuration checks too, for callers that build
// Functions themselves. The ranges are wider than Lambda's where tests need
// it (a second's event age).
func validate(c *Function) error {
	var errs []error
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s must be above 0", c.Timeout))
	}
	a := &c.Async
	if a.MaximumRetryAttempts < 0 || a.MaximumRetryAttempts > 2 {
		errs = append(errs, fmt.Errorf("async maximumRetryAttempts %d: must be 0 to 2", a.MaximumRetryAttempts))
	}
	if a.MaximumEventAge < 0 || a.BaseDelay < 0 || a.MaxDelay < a.BaseDelay || a.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("async: maximumEventAge %s, baseDelay %s, maxDelay %s, concurrency %d: must not be negative, maxDelay at least baseDelay",
			a.MaximumEventAge, a.BaseDelay, a.MaxDelay, a.Concurrency))
	}
	if c.IdempotencyRetention < 0 {
		errs = append(errs, fmt.Errorf("idempotency retention %s must be above 0", c.IdempotencyRetention))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invoke: function %q: %w", c.Name, err)
	}
	return nil
}

// Request is one invocation.
type Request struct {
	// Function is the function's name.
	Function string
	// Payload is the JSON the function gets; empty means {}.
	Payload []byte
	// RequestID is the invocation's id; New makes one when empty.
	RequestID string
	// ClientContext is the caller's client context as JSON (synchronous
	// invocations only, as with Lambda).
	ClientContext []byte
	// IdempotencyKey, when set, overrides the function's key expression.
	IdempotencyKey string
	// DefaultKey is an idempotency key idem computed from the event itself
	// (an S3 notification record's identity, say), for events whose
	// repeats must be recognized without the caller's help. It is used
	// only when neither IdempotencyKey nor the function's key expression
	// gives a key: the function's own choice of key wins. Unlike
	// IdempotencyKey, which is a header, it may hold any text (object
	// keys are UTF-8), up to 1024 bytes.
	DefaultKey string
	// KeyOnly makes the key alone identify the event: a repeat under the
	// same key with another payload is the same event delivered again (a
	// redelivery whose envelope differs, another version of an object the
	// key names), answered as a repeat rather than refused with
	// IdempotencyPayloadMismatchException. Its claims keep the key's hash
	// in place of the payload's.
	KeyOnly bool
	// NoWait makes a repeat of a keyed invocation that is still running
	// fail at once with a conflict instead of waiting for its result.
	NoWait bool
	// Report asks the driver for its measures of the run (Result.Report),
	// for the REPORT line of a Tail log: a process function then reads
	// its runtime's peak memory, which costs tens of microseconds.
	Report bool
}

// Result is a synchronous invocation's outcome.
type Result struct {
	// Payload is what the function returned (nil with Err).
	Payload []byte
	// Err is the function's error, if it failed.
	Err *function.Error
	// Replayed is set when the result is an earlier invocation's, returned
	// for a repeat of its idempotency key without running the function.
	Replayed bool
	// Report is what the driver measured of the run, for the REPORT line
	// of a Tail log; zero unless Request.Report asked for it and the
	// driver measures (and when Replayed).
	Report function.Report
}

// Error is a failure of the Invoke API itself, not of the function: an
// unknown function, a bad request, a conflict. Code is the Lambda error type
// (ResourceNotFoundException, …) and Status the HTTP status it is sent
// with.
type Error struct {
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }
func (e *Error) Unwrap() error { return e.Err }

func apiError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Lambda's error types that the Invoke API answers with.
const (
	codeNotFound        = "ResourceNotFoundException"
	codeInvalidContent  = "InvalidRequestContentException"
	codeInvalidParam    = "InvalidParameterValueException"
	codeTooLarge        = "RequestTooLargeException"
	codeConflict        = "ResourceConflictException"
	codeService         = "ServiceException"
	codePayloadMismatch = "IdempotencyPayloadMismatchException"
)

// FunctionArn is the ARN idem reports for a function's $LATEST version in
// region.
func FunctionArn(region, name string) string {
	return "arn:aws:lambda:" + region + ":000000000000:function:" + name + ":$LATEST"
}

// lookup returns the function named name, ready to run.
func (s *Service) lookup(name string) (*fn, error) {
	f, ok := s.fns[name]
	if !ok {
		return nil, apiError(http.StatusNotFound, codeNotFound, "Function not found: %s", FunctionArn(s.region, name))
	}
	if f.cfg.Driver == nil {
		return nil, apiError(http.StatusBadRequest, codeInvalidParam, "function %s cannot be invoked directly: %s", name, f.cfg.Unavailable)
	}
	return f, nil
}

// CheckFunction returns the *Error an invocation of the function name
// would fail with before its payload is looked at (404
// ResourceNotFoundException for an unknown function, 400 for one that
// takes no payload), or nil. Routes that invoke functions for another
// protocol (S3 notifications) check it before reading their body, so that
// a sender pointed at a wrong function learns it even from a test event.
func (s *Service) CheckFunction(name string) error {
	_, err := s.lookup(name)
	return err
}

// Check validates a request without running it (DryRun): the function
// exists and can be invoked, and its payload gives an idempotency key if it
// needs one.
func (s *Service) Check(req Request) error {
	f, err := s.lookup(req.Function)
	if err != nil {
		return err
	}
	normalize(&req)
	_, err = f.key(&req)
	return err
}

// key returns the request's idempotency key, "" for none: the request's
// IdempotencyKey, else the function's key expression over the payload, else
// the request's DefaultKey.
func (f *fn) key(req *Request) (string, error) {
	if req.IdempotencyKey != "" {
		if err := checkKey(req.IdempotencyKey); err != nil {
			return "", apiError(http.StatusBadRequest, codeInvalidParam, "%v", err)
		}
		return req.IdempotencyKey, nil
	}
	if f.expr == nil {
		if len(req.DefaultKey) > maxKeyBytes {
			return "", apiError(http.StatusBadRequest, codeInvalidParam, "the event's idempotency key is %d bytes; the maximum is %d", len(req.DefaultKey), maxKeyBytes)
		}
		return req.DefaultKey, nil
	}
	k, err := evalKey(f.expr, req.Payload)
	if err != nil {
		return "", apiError(http.StatusBadRequest, codeInvalidContent,
			"function %s: idempotency key %s: %v (send an Idempotency-Key header, or a payload that has the key)", f.cfg.Name, f.cfg.IdempotencyKey, err)
	}
	return k, nil
}

func (f *fn) lease() time.Duration { return 2*f.cfg.Timeout + leaseMargin }

// queuedFor is how long a keyed event's reservation is kept once the event
// is queued: the event's whole life (no attempt starts after
// maximumEventAge, and the last one ends within the lease). The event ends
// it earlier when it is done.
func (f *fn) queuedFor() time.Duration { return f.cfg.Async.MaximumEventAge + f.lease() }

// Invoke runs req's function synchronously and returns its result. A
// function error is Result.Err; the error is an *Error for a failure of
// the API (unknown function, conflict, payload mismatch) or a store error.
// The function runs to its timeout even if ctx is canceled, so that a
// keyed invocation whose caller went away still records its result for the
// caller's retry.
func (s *Service) Invoke(ctx context.Context, req Request) (Result, error) {
	f, err := s.lookup(req.Function)
	if err != nil {
		return Result{}, err
	}
	normalize(&req)
	key, err := f.key(&req)
	if err != nil {
		return Result{}, err
	}
	if key == "" {
		out, rep, ferr := s.call(ctx, f, &req, req.ClientContext)
		return result(out, rep, ferr)
	}
	return s.invokeKeyed(ctx, f, &req, key)
}

// normalize gives a request its defaults.
func normalize(req *Request) {
	if len(req.Payload) == 0 {
		req.Payload = []byte("{}")
	}
	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
}

// result turns a driver's answer into a Result.
func result(out []byte, rep function.Report, err error) (Result, error) {
	if err == nil {
		return Result{Payload: out, Report: rep}, nil
	}
	if errors.Is(err, function.ErrNoPayloadHandler) {
		return Result{}, &Error{Status: http.StatusBadRequest, Code: codeInvalidParam, Message: err.Error(), Err: err}
	}
	return Result{Err: functionError(err), Report: rep}, nil
}

// functionError types any error of a run as a function error.
func functionError(err error) *function.Error {
	var fe *function.Error
	if errors.As(err, &fe) {
		return fe
	}
	return &function.Error{Type: "Runtime.Unknown", Message: err.Error(), Err: err}
}

// call runs the function once, detached from the caller's cancellation and
// bounded by the function's timeout; it keeps ctx's values (a trace's
// span, which the function's driver passes on). (A process function's timeout counts
// from when its runtime receives the invocation: the deadline bounds its
// wait for an idle runtime, and the run then has its whole timeout.)
func (s *Service) call(ctx context.Context, f *fn, req *Request, clientContext []byte) ([]byte, function.Report, error) {
	deadline := s.now().Add(f.cfg.Timeout)
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	meta := function.InvokeMeta{RequestID: req.RequestID, Function: f.cfg.Name, Deadline: deadline, ClientContext: clientContext}
	if ri, ok := f.cfg.Driver.(function.ReportingInvoker); ok && req.Report {
		return ri.InvokePayloadReport(ctx, req.Payload, meta)
	}
	out, err := f.cfg.Driver.InvokePayload(ctx, req.Payload, meta)
	return out, function.Report{}, err
}

// invokeKeyed runs a keyed invocation at most once per key: the first
// claims the key and runs, repeats get its stored result.
func (s *Service) invokeKeyed(ctx context.Context, f *fn, req *Request, key string) (Result, error) {
	mk, ph := store.MarkKeyOf(keyScope(f.cfg.Name), key), claimHash(req.KeyOnly, key, req.Payload)
	waitUntil := s.now().Add(f.lease())
	for {
		legacy, err := s.legacyOf(ctx)
		c := store.Claim{}
		if err == nil {
			c, err = legacy.Claim(ctx, s.claims, mk, keyScope(f.cfg.Name), key, ph, f.lease(), s.now())
		}
		switch {
		case errors.Is(err, store.ErrPayloadMismatch):
			return Result{}, mismatch(f, key, err)
		case errors.Is(err, store.ErrClaimHeld):
			if req.NoWait {
				return Result{}, &Error{Status: http.StatusConflict, Code: codeConflict, Err: err,
					Message: fmt.Sprintf("an invocation of %s with idempotency key %q is in progress; repeat it later, or without Idempotency-Wait: false to wait for its result", f.cfg.Name, key)}
			}
			if err := s.await(ctx, f, mk, waitUntil); err != nil {
				return Result{}, err
			}
			continue
		case err != nil:
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return Result{}, &Error{Status: http.StatusInternalServerError, Code: codeService, Message: "claiming the idempotency key: " + err.Error(), Err: err}
		case c.Status == store.Completed:
			return Result{Payload: c.Result, Replayed: true}, nil
		}
		done := f.fly(mk)
		out, rep, ferr := s.call(ctx, f, req, req.ClientContext)
		s.settle(f, c, out, ferr)
		done()
		return result(out, rep, ferr)
	}
}

// settle completes a claim with a successful run's result, or releases it
// after a failed one so that a repeat runs again.
func (s *Service) settle(f *fn, c store.Claim, out []byte, ferr error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ferr != nil {
		if err := s.claims.Release(ctx, c); err != nil {
			s.log.Warn("releasing an idempotency claim after a failed invocation; repeats wait until its lease ends", "function", f.cfg.Name, "err", err)
		}
		return
	}
	if out == nil {
		out = []byte{}
	}
	if err := s.claims.Complete(ctx, c, out, s.now().Add(f.cfg.IdempotencyRetention)); err != nil {
		// ErrFenced: the run outlived its lease and a repeat took the key
		// over; that repeat's result is the one kept.
		s.log.Warn("recording an invocation's result for its idempotency key", "function", f.cfg.Name, "err", err)
	}
}

func mismatch(f *fn, key string, err error) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: codePayloadMismatch, Err: err,
		Message: fmt.Sprintf("idempotency key %q of function %s was first used with a different payload; a repeat must send the same payload (or use a new key)", key, f.cfg.Name)}
}

// fly registers a keyed run in this process; the returned func ends it and
// wakes the repeats waiting for it.
func (f *fn) fly(mk store.MarkKey) func() {
	fl := &flight{done: make(chan struct{})}
	f.mu.Lock()
	f.flights[mk] = fl
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		if f.flights[mk] == fl {
			delete(f.flights, mk)
		}
		f.mu.Unlock()
		close(fl.done)
	}
}

// await waits until the run holding mk may have finished: its flight in
// this process ends, or a poll interval passes (for a run in another
// process). It fails with a conflict once waitUntil passes.
func (s *Service) await(ctx context.Context, f *fn, mk store.MarkKey, waitUntil time.Time) error {
	wait := time.Until(waitUntil)
	if wait <= 0 {
		return &Error{Status: http.StatusConflict, Code: codeConflict, Err: store.ErrClaimHeld,
			Message: fmt.Sprintf("an invocation of %s with the same idempotency key is still in progress after %s", f.cfg.Name, f.lease().Round(time.Second))}
	}
	f.mu.Lock()
	fl := f.flights[mk]
	f.mu.Unlock()
	var done <-chan struct{}
	poll := pollMax
	if fl != nil {
		done = fl.done
	} else {
		poll = pollMin
	}
	t := time.NewTimer(min(poll, wait))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// NewRequestID returns a random UUID, the form of Lambda's request ids.
func NewRequestID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
