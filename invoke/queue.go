package invoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
)

// QueueStream is the name of the embedded stream that queues a function's
// asynchronous events. Configured stream names cannot contain ':', so it
// never collides with one.
func QueueStream(function string) string { return "idem:invoke:" + function }

// IsQueueStream reports whether name is a queue stream, which only the
// Invoke API may append to.
func IsQueueStream(name string) bool { return len(name) > 12 && name[:12] == "idem:invoke:" }

// queueRetention keeps queued events until they are done, however long idem
// was down: done events are trimmed as the queue's checkpoint passes them,
// and an event past maximumEventAge (at most 6h) goes to the on-failure
// destination rather than being dropped by retention.
const queueRetention = 8760 * time.Hour

// Conditions of an asynchronous failure record, as Lambda names them.
const (
	conditionRetries  = "RetriesExhausted"
	conditionEventAge = "EventAgeExceeded"
)

// queue is one function's asynchronous events: an embedded stream of one
// shard, read in order and run concurrently. Its position is a checkpoint
// (every event at or below it is done) plus progress (the events above it
// done out of order), committed with the on-failure records and the
// attempts state in one atomic write of the data directory.
type queue struct {
	s      *Service
	f      *fn
	stream string
	shard  string
	cpKey  store.CheckpointKey
	prKey  store.ProgressKey
	stNS   string // state namespace of attempts

	mu      sync.Mutex
	pending []pendingEvent // dispatched and not yet below the checkpoint, ascending
	cp      store.Checkpoint
	hw      uint64 // checkpoint sequence as a number
	// durable is cp as last committed: Status reports its counters, so
	// that an event counted as discarded has its failure record readable
	// and one counted as processed survives a crash.
	durable store.Checkpoint
	// To commit with the next write.
	failures []store.Failure
	state    []store.StateOp
	dirty    bool
	kick     chan struct{}
	// gen is the generation of the next commit; committed is the last
	// one that landed, and flushed is closed (and replaced) as each lands.
	// What is staged (remember, finish) commits with generation gen, or a
	// later one if that commit fails.
	gen, committed uint64
	flushed        chan struct{}
}

type pendingEvent struct {
	seq  uint64
	done bool
}

// attempts is what the queue remembers of an event between runs, in the
// state namespace: how many runs failed, when the next is due, and the last
// error for the failure record.
type attempts struct {
	Count        int    `json:"count"`
	NextAt       int64  `json:"nextAt"` // Unix ms
	ErrorType    string `json:"errorType,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`
}

func newQueue(s *Service, f *fn) (*queue, error) {
	name := QueueStream(f.cfg.Name)
	if err := s.db.CreateStream(name, 1, queueRetention); err != nil {
		return nil, fmt.Errorf("invoke: function %q: creating its event queue: %w", f.cfg.Name, err)
	}
	shards, err := s.db.Shards(name)
	if err != nil {
		return nil, err
	}
	if d := f.cfg.Async.OnFailure; d != "" {
		if _, err := s.db.Shards(d); err != nil {
			return nil, fmt.Errorf("invoke: function %q: async on-failure destination: %w", f.cfg.Name, err)
		}
	}
	q := &queue{s: s, f: f, stream: name, shard: shards[0], stNS: name, kick: make(chan struct{}, 1), gen: 1, flushed: make(chan struct{})}
	q.cpKey = store.CheckpointKey{Mapping: name, Stream: name, Shard: q.shard}
	q.prKey = store.ProgressKey{Scope: name, Stream: name, Shard: q.shard}
	return q, nil
}

// Enqueue queues req for asynchronous invocation: once it returns nil, the
// event is durable in the data directory. deduplicated reports a keyed
// request whose key is already queued (in this process or another sharing
// the store), running as an event, or completed: it was not queued again.
// A key whose run is in progress otherwise (a synchronous invocation) is
// queued: the event waits for that run's outcome, and runs if it failed.
func (s *Service) Enqueue(ctx context.Context, req Request) (deduplicated bool, err error) {
	f, err := s.lookup(req.Function)
	if err != nil {
		return false, err
	}
	normalize(&req)
	if len(req.Payload) > MaxAsyncPayload {
		return false, apiError(http.StatusRequestEntityTooLarge, codeTooLarge,
			"Request must be smaller than %d bytes for the Event invocation type", MaxAsyncPayload+1)
	}
	key, err := f.key(&req)
	if err != nil {
		return false, err
	}
	env := envelope{RequestID: req.RequestID, Key: key, KeyOnly: key != "" && req.KeyOnly, Payload: req.Payload}
	if key == "" {
		return false, f.q.put(ctx, &env)
	}
	return s.enqueueKeyed(ctx, f, &env)
}

// Contents of a reservation's result, for whoever reads the claims table.
var (
	reservationQueued    = []byte("queued")
	reservationCompleted = []byte("completed")
	reservationDone      = []byte("done")
)

// enqueueKeyed queues a keyed event under its key's reservation: a claims
// record of queuedScope, taken for reserveLease, then, once the event is
// durably queued, completed for the event's life (queuedFor). A repeat
// that finds it completed is a replay, or a payload mismatch; one that
// finds it in progress waits for the Enqueue holding it.
func (s *Service) enqueueKeyed(ctx context.Context, f *fn, env *envelope) (deduplicated bool, err error) {
	rk, ph := store.MarkKeyOf(queuedScope(f.cfg.Name), env.Key), env.hash()
	// Long enough for a reservation whose process died to lapse.
	waitUntil := s.now().Add(2 * reserveLease)
	for {
		legacy, err := s.legacyOf(ctx)
		r := store.Claim{}
		if err == nil {
			r, err = legacy.Claim(ctx, s.claims, rk, queuedScope(f.cfg.Name), env.Key, ph, reserveLease, s.now())
		}
		switch {
		case errors.Is(err, store.ErrPayloadMismatch):
			return false, mismatch(f, env.Key, err)
		case errors.Is(err, store.ErrClaimHeld):
			if err := s.await(ctx, f, rk, waitUntil); err != nil {
				return false, err
			}
			continue
		case err != nil:
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, serviceError("reserving the idempotency key", err)
		case r.Status == store.Completed:
			return true, nil
		}
		done := f.fly(rk)
		defer done()
		return s.queueReserved(ctx, f, r, env)
	}
}

// queueReserved queues env under its key's reservation r, unless the key
// is completed, and marks r queued. A completed key's reservation is
// completed until the key's result expires, so that later repeats are
// answered from it alone.
func (s *Service) queueReserved(ctx context.Context, f *fn, r store.Claim, env *envelope) (deduplicated bool, err error) {
	mk := store.MarkKeyOf(keyScope(f.cfg.Name), env.Key)
	legacy, err := s.legacyOf(ctx)
	var run store.Claim
	var found bool
	if err == nil {
		run, found, err = legacy.Lookup(ctx, s.claims, mk, keyScope(f.cfg.Name), env.Key, s.now())
	}
	switch {
	case err != nil:
		s.unreserve(ctx, f, r)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, serviceError("looking up the idempotency key", err)
	case found && run.PayloadHash != r.PayloadHash:
		s.unreserve(ctx, f, r)
		return false, mismatch(f, env.Key, store.ErrPayloadMismatch)
	case found && run.Status == store.Completed:
		if err := s.claims.Complete(context.WithoutCancel(ctx), r, reservationCompleted, run.Expires); err != nil {
			s.log.Warn("keeping a completed idempotency key's reservation; the next repeat looks the key up again", "function", f.cfg.Name, "err", err)
		}
		return true, nil
	}
	// Not found, or in progress: a synchronous invocation's run (an event
	// runs under its reservation). If that run fails the key must run
	// again, so the event is queued either way, and waits for it.
	env.Reservation = r.Token
	if err := f.q.put(ctx, env); err != nil {
		s.unreserve(ctx, f, r)
		return false, err
	}
	if err := s.claims.Complete(context.WithoutCancel(ctx), r, reservationQueued, s.now().Add(f.queuedFor())); err != nil {
		// The event is queued. A repeat after the reservation's lease
		// queues another one, which supersedes this one (see runEvent).
		s.log.Warn("marking a queued event's idempotency key reserved; a repeat after "+reserveLease.String()+" is queued again, and only the later event runs",
			"function", f.cfg.Name, "requestId", env.RequestID, "err", err)
	}
	return false, nil
}

// unreserve releases the reservation of an event that was not queued.
func (s *Service) unreserve(ctx context.Context, f *fn, r store.Claim) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.claims.Release(ctx, r); err != nil {
		s.log.Warn("releasing the reservation of an event that was not queued; repeats wait until its lease ends", "function", f.cfg.Name, "err", err)
	}
}

// superseded reports whether the reservation of the key of an event queued
// under token is now held, queued, by another event (this one's lapsed
// before it was marked queued, or after its maximumEventAge): that event
// stands for the key, and this one must not run.
func (s *Service) superseded(ctx context.Context, f *fn, key string, token uint64) bool {
	rk := store.MarkKeyOf(queuedScope(f.cfg.Name), key)
	legacy, err := s.legacyOf(ctx)
	var r store.Claim
	var found bool
	if err == nil {
		r, found, err = legacy.Lookup(ctx, s.claims, rk, queuedScope(f.cfg.Name), key, s.now())
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("looking up a queued event's reservation; running it", "function", f.cfg.Name, "err", err)
		}
		return false
	}
	return found && r.Status == store.Completed && r.Token != token
}

// endReservation ends the reservation of an event that is done, so that a
// repeat is looked up by its key again: a replay if the key completed,
// queued again if the event was given up. It tries until it succeeds or
// ctx is done: until then, repeats are answered as replays.
func (s *Service) endReservation(ctx context.Context, f *fn, env *envelope) {
	c := store.Claim{Key: store.MarkKeyOf(queuedScope(f.cfg.Name), env.Key), Status: store.Acquired,
		Token: env.Reservation, PayloadHash: env.hash()}
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 30*time.Second) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := s.claims.Complete(cctx, c, reservationDone, s.now())
		cancel()
		if err == nil || errors.Is(err, store.ErrFenced) {
			return // ErrFenced: another event holds it
		}
		s.log.Warn("ending a done event's reservation; repeats are answered as replays until it ends", "function", f.cfg.Name, "requestId", env.RequestID, "err", err)
		if !sleep(ctx, delay) {
			s.log.Error("a done event's reservation was not ended: repeats are answered as replays, and not run, until it expires",
				"function", f.cfg.Name, "requestId", env.RequestID, "expiresWithin", f.queuedFor())
			return
		}
	}
}

// serviceError is a failure of the store behind the Invoke API.
func serviceError(what string, err error) *Error {
	return &Error{Status: http.StatusInternalServerError, Code: codeService, Message: what + ": " + err.Error(), Err: err}
}

// put appends one event to the queue, durably.
func (q *queue) put(ctx context.Context, env *envelope) error {
	_, err := q.s.db.Put(ctx, q.stream, []pebbledb.PutRecord{{PartitionKey: env.RequestID, Data: env.encode()}})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return serviceError("queueing the event", err)
	}
	return nil
}

// Run runs every function's queue until ctx is done, then lets the runs in
// flight finish (each within its function's timeout), commits what they
// did, and returns. Backoffs in progress are not waited for: their events
// run after the next start, when they are due.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, 0, len(s.fns))
	var mu sync.Mutex
	for _, f := range s.fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.q.run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// run reads the queue and runs its events until ctx is done.
func (q *queue) run(ctx context.Context) error {
	lctx := context.WithoutCancel(ctx)
	cp, _, err := q.s.db.Checkpoint(lctx, q.cpKey)
	if err != nil {
		return fmt.Errorf("invoke: function %q: reading its queue's checkpoint: %w", q.f.cfg.Name, err)
	}
	progress, err := q.s.db.Progress(lctx, q.prKey)
	if err != nil {
		return fmt.Errorf("invoke: function %q: reading its queue's progress: %w", q.f.cfg.Name, err)
	}
	pos, _ := cp.Sequence.Uint64()
	q.mu.Lock()
	q.cp, q.durable, q.hw = cp, cp, pos
	q.mu.Unlock()

	committed := make(chan struct{})
	stopCommitter := make(chan struct{})
	go func() {
		defer close(committed)
		q.commitLoop(stopCommitter)
	}()

	var workers sync.WaitGroup
	sem := make(chan struct{}, q.f.cfg.Async.Concurrency)
	q.dispatch(ctx, pos, &progress, sem, &workers)
	workers.Wait()
	close(stopCommitter)
	<-committed
	return nil
}

// dispatch hands the queue's events to workers, at most cap(sem) at once,
// until ctx is done.
func (q *queue) dispatch(ctx context.Context, pos uint64, progress *store.Progress, sem chan struct{}, workers *sync.WaitGroup) {
	for ctx.Err() == nil {
		res, err := q.s.db.Read(ctx, q.stream, q.shard, idem.SequenceOf(pos), 64, 16<<20)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			q.s.log.Error("reading the event queue", "function", q.f.cfg.Name, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if res.Lost > 0 {
			q.s.log.Error("events of the queue were removed before they ran", "function", q.f.cfg.Name, "lost", res.Lost)
			if n, ok := res.Trimmed.Uint64(); ok && n > pos && len(res.Records) == 0 {
				pos = n
			}
		}
		for i := range res.Records {
			rec := res.Records[i]
			seq, _ := rec.Sequence.Uint64()
			if progress.Done(rec.Sequence) {
				q.add(seq, true)
				pos = seq
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			pos = seq
			q.add(seq, false)
			workers.Add(1)
			go func() {
				defer workers.Done()
				defer func() { <-sem }()
				q.runEvent(ctx, seq, &rec)
			}()
		}
		if len(res.Records) == 0 {
			if err := q.s.db.Wait(ctx, q.stream, q.shard, idem.SequenceOf(pos)); err != nil && ctx.Err() == nil {
				sleep(ctx, 100*time.Millisecond)
			}
		}
	}
}

// add registers a dispatched event.
func (q *queue) add(seq uint64, done bool) {
	q.mu.Lock()
	q.pending = append(q.pending, pendingEvent{seq: seq, done: done})
	if done {
		q.dirty = true
	}
	q.mu.Unlock()
	if done {
		q.signal()
	}
}

func (q *queue) signal() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// outcome is how an event ended.
type outcome int

const (
	processed outcome = iota + 1
	skipped           // a repeat of a completed key
	discarded         // given up, to the on-failure destination
)

// runEvent runs one event through its attempts. It returns without
// finishing the event when ctx is done before the event is settled; the
// event then runs again after restart.
func (q *queue) runEvent(ctx context.Context, seq uint64, rec *idem.Record) {
	f, s := q.f, q.s
	log := s.log.With("function", f.cfg.Name, "sequence", seq)
	env, err := decodeEnvelope(rec.Data)
	if err != nil {
		log.Error("dropping a queued event that idem cannot read", "err", err)
		q.finish(seq, skipped, nil)
		return
	}
	log = log.With("requestId", env.RequestID)
	var mk store.MarkKey
	if env.Key != "" {
		mk = store.MarkKeyOf(keyScope(f.cfg.Name), env.Key)
	}
	reserved := env.Key != "" && env.Reservation != 0
	if reserved && s.superseded(ctx, f, env.Key, env.Reservation) {
		log.Info("event skipped: another event with its idempotency key was queued after this one's reservation lapsed", "key", env.Key)
		q.finish(seq, skipped, nil)
		return
	}
	// end settles the event. A reserved key's reservation ends once the
	// outcome is committed: until then a repeat finds the reservation,
	// after it the outcome (a completed key, or a given-up event).
	end := func(o outcome, fr *store.Failure) {
		gen := q.finish(seq, o, fr)
		if reserved {
			q.waitCommitted(gen)
			s.endReservation(ctx, f, &env)
		}
	}
	var st attempts
	if v, err := s.db.State(context.WithoutCancel(ctx), q.stNS, stateKey(seq)); err == nil {
		_ = json.Unmarshal(v, &st)
	} else if !errors.Is(err, idem.ErrNotFound) {
		log.Warn("reading the event's attempts; counting from zero", "err", err)
	}
	expires := rec.ArrivalTime.Add(f.cfg.Async.MaximumEventAge)
	req := Request{Function: f.cfg.Name, Payload: env.Payload, RequestID: env.RequestID}
	for {
		now := s.now()
		if !now.Before(expires) {
			log.Warn("event discarded: older than maximumEventAge", "attempts", st.Count, "maximumEventAge", f.cfg.Async.MaximumEventAge)
			end(discarded, q.failure(rec, &env, conditionEventAge, &st))
			return
		}
		if due := time.UnixMilli(st.NextAt); st.NextAt != 0 && due.After(now) {
			if due.After(expires) {
				due = expires
			}
			if !sleep(ctx, due.Sub(now)) {
				return
			}
			continue
		}
		var claim store.Claim
		if env.Key != "" {
			legacy, err := s.legacyOf(ctx)
			c := store.Claim{}
			if err == nil {
				c, err = legacy.Claim(ctx, s.claims, mk, keyScope(f.cfg.Name), env.Key, env.hash(), f.lease(), now)
			}
			switch {
			case errors.Is(err, store.ErrPayloadMismatch):
				log.Warn("event discarded: its idempotency key was first used with another payload", "key", env.Key)
				st.ErrorType, st.ErrorMessage = "Idempotency.PayloadMismatch", mismatch(f, env.Key, err).Message
				end(discarded, q.failure(rec, &env, conditionRetries, &st))
				return
			case errors.Is(err, store.ErrClaimHeld):
				if s.await(ctx, f, mk, now.Add(f.lease())) != nil && ctx.Err() != nil {
					return
				}
				continue
			case err != nil:
				if ctx.Err() != nil {
					return
				}
				log.Warn("claiming the event's idempotency key; trying again", "err", err)
				if !sleep(ctx, time.Second) {
					return
				}
				continue
			case c.Status == store.Completed:
				log.Debug("event skipped: its idempotency key is completed")
				end(skipped, nil)
				return
			}
			claim = c
		}
		var done func()
		if env.Key != "" {
			done = f.fly(mk)
		}
		out, ferr := q.callTraced(ctx, &req, seq, st.Count+1)
		if env.Key != "" {
			s.settle(f, claim, out, ferr)
			done()
		}
		st.Count++
		if ferr == nil {
			end(processed, nil)
			return
		}
		fe := functionError(ferr)
		st.ErrorType, st.ErrorMessage = fe.Type, truncate(fe.Message, 4096)
		permanent := fe.Permanent || slices.Contains(f.cfg.Async.PermanentErrorTypes, fe.Type) || errors.Is(ferr, function.ErrNoPayloadHandler)
		if permanent || st.Count > f.cfg.Async.MaximumRetryAttempts {
			log.Warn("event discarded: the function failed", "attempts", st.Count, "permanent", permanent, "errorType", fe.Type, "err", fe.Message)
			end(discarded, q.failure(rec, &env, conditionRetries, &st))
			return
		}
		delay := backoff(f.cfg.Async.BaseDelay, f.cfg.Async.MaxDelay, st.Count)
		st.NextAt = s.now().Add(delay).UnixMilli()
		log.Info("event failed; retrying after a backoff", "attempt", st.Count, "delay", delay, "errorType", fe.Type, "err", fe.Message)
		// Committed before the next attempt can start, here or after a
		// restart: a crash from now on never runs this attempt again.
		q.waitCommitted(q.remember(seq, &st))
		if ctx.Err() != nil {
			return
		}
	}
}

// backoff is the delay before retry n (1-based): base doubling, capped.
func backoff(base, maxDelay time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

func stateKey(seq uint64) string { return string(idem.SequenceOf(seq)) }

// remember queues an event's attempts for the next commit, and returns
// the generation of that commit (for waitCommitted).
func (q *queue) remember(seq uint64, st *attempts) (gen uint64) {
	v, _ := json.Marshal(st)
	q.mu.Lock()
	q.state = append(q.state, store.StateOp{Namespace: q.stNS, Key: stateKey(seq), Value: v})
	q.dirty = true
	gen = q.gen
	q.mu.Unlock()
	q.signal()
	return gen
}

// waitCommitted waits until the commit of generation gen has landed. The
// commit loop outlives every event's goroutine, and retries a failed
// commit until it lands.
func (q *queue) waitCommitted(gen uint64) {
	q.mu.Lock()
	for q.committed < gen {
		ch := q.flushed
		q.mu.Unlock()
		<-ch
		q.mu.Lock()
	}
	q.mu.Unlock()
}

// finish marks an event done, with its failure record if it was given up,
// and returns the generation of the commit that records it.
func (q *queue) finish(seq uint64, o outcome, f *store.Failure) (gen uint64) {
	q.mu.Lock()
	i, found := slices.BinarySearchFunc(q.pending, seq, func(p pendingEvent, s uint64) int {
		switch {
		case p.seq < s:
			return -1
		case p.seq > s:
			return 1
		}
		return 0
	})
	if found {
		q.pending[i].done = true
	}
	switch o {
	case processed:
		q.cp.Processed++
	case skipped:
		q.cp.Skipped++
	case discarded:
		q.cp.Discarded++
	}
	if f != nil {
		q.failures = append(q.failures, *f)
	}
	q.state = append(q.state, store.StateOp{Namespace: q.stNS, Key: stateKey(seq), Delete: true})
	q.dirty = true
	gen = q.gen
	q.mu.Unlock()
	q.signal()
	return gen
}

// failureRecord is Lambda's record of an asynchronous invocation that was
// given up, as its on-failure destinations receive it.
type failureRecord struct {
	Version        string `json:"version"`
	Timestamp      string `json:"timestamp"`
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	RequestPayload  json.RawMessage  `json:"requestPayload"`
	ResponseContext *responseContext `json:"responseContext,omitempty"`
	ResponsePayload *errorPayload    `json:"responsePayload,omitempty"`
	// IdemIdempotencyKey is idem's addition: the event's idempotency key,
	// if it had one, so that a redrive queues it again under that key.
	IdemIdempotencyKey string `json:"idemIdempotencyKey,omitempty"`
	// IdemKeyOnly is idem's addition too: the key alone identified the
	// event (Request.KeyOnly, an S3 notification's), so that a redrive
	// queues it again the same way.
	IdemKeyOnly bool `json:"idemKeyOnly,omitempty"`
}

type responseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError"`
}

// errorPayload is Lambda's error object: what a failed synchronous
// invocation returns, and a failure record's responsePayload.
type errorPayload struct {
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType,omitempty"`
}

// failure builds the on-failure write of a given-up event: Lambda's record,
// then the event itself. Without a destination it is nil (the event was
// logged).
func (q *queue) failure(rec *idem.Record, env *envelope, condition string, st *attempts) *store.Failure {
	dest := q.f.cfg.Async.OnFailure
	if dest == "" {
		return nil
	}
	var fr failureRecord
	fr.Version = "1.0"
	fr.Timestamp = q.s.now().UTC().Format("2006-01-02T15:04:05.000Z")
	fr.RequestContext.RequestID = env.RequestID
	fr.RequestContext.FunctionArn = FunctionArn(q.s.region, q.f.cfg.Name)
	fr.RequestContext.Condition = condition
	fr.RequestContext.ApproximateInvokeCount = st.Count
	fr.RequestPayload = json.RawMessage(env.Payload)
	if !json.Valid(env.Payload) {
		fr.RequestPayload, _ = json.Marshal(string(env.Payload))
	}
	if st.ErrorType != "" {
		fr.ResponseContext = &responseContext{StatusCode: http.StatusOK, ExecutedVersion: "$LATEST", FunctionError: "Unhandled"}
		fr.ResponsePayload = &errorPayload{ErrorMessage: st.ErrorMessage, ErrorType: st.ErrorType}
	}
	fr.IdemIdempotencyKey, fr.IdemKeyOnly = env.Key, env.KeyOnly
	meta, _ := json.Marshal(&fr)
	// ShardID is the metadata record's partition key: with the request id,
	// the record and its event land next to each other.
	return &store.Failure{Destination: dest, Metadata: meta, Records: []idem.Record{{
		Stream: q.stream, ShardID: env.RequestID, Sequence: rec.Sequence, PartitionKey: env.RequestID,
		Data: env.Payload, ArrivalTime: rec.ArrivalTime,
	}}}
}

// commitLoop commits the queue's progress whenever it changes, until stop
// is closed and everything is committed.
func (q *queue) commitLoop(stop <-chan struct{}) {
	for {
		select {
		case <-q.kick:
		case <-stop:
			for q.flush() != nil {
				time.Sleep(time.Second)
			}
			return
		}
		for q.flush() != nil {
			select {
			case <-stop:
			case <-time.After(time.Second):
			}
		}
	}
}

// flush commits what changed since the last commit in one atomic write:
// the checkpoint and progress, the attempts state and the failure records.
func (q *queue) flush() error {
	q.mu.Lock()
	if !q.dirty {
		q.mu.Unlock()
		return nil
	}
	hw := q.hw
	n := 0
	for n < len(q.pending) && q.pending[n].done {
		hw = q.pending[n].seq
		n++
	}
	var above []idem.Sequence
	for _, p := range q.pending[n:] {
		if p.done {
			above = append(above, idem.SequenceOf(p.seq))
		}
	}
	cp := q.cp
	cp.Sequence = idem.SequenceOf(hw)
	w := &store.Write{
		Checkpoint: q.cpKey, NewCheckpoint: cp,
		HasProgress: true, ProgressKey: q.prKey, Progress: store.Progress{HighWater: cp.Sequence, Above: above},
		State: q.state, Failures: q.failures,
	}
	q.state, q.failures, q.dirty = nil, nil, false
	gen := q.gen
	q.gen++
	q.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.s.db.Commit(ctx, w); err != nil {
		q.s.log.Error("committing the event queue's progress; retrying", "function", q.f.cfg.Name, "err", err)
		q.mu.Lock()
		q.state = append(w.State, q.state...)
		q.failures = append(w.Failures, q.failures...)
		q.dirty = true
		q.mu.Unlock()
		return err
	}
	q.mu.Lock()
	advanced := hw > q.hw
	q.pending = q.pending[n:]
	q.hw = hw
	q.durable = cp
	q.committed = gen
	close(q.flushed)
	q.flushed = make(chan struct{})
	q.mu.Unlock()
	if advanced {
		if err := q.s.db.TrimThrough(ctx, q.stream, q.shard, idem.SequenceOf(hw)); err != nil {
			q.s.log.Warn("trimming done events from the queue", "function", q.f.cfg.Name, "err", err)
		}
	}
	return nil
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
