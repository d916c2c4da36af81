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
	// To commit with the next write.
	failures []store.Failure
	state    []store.StateOp
	dirty    bool
	kick     chan struct{}
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
	q := &queue{s: s, f: f, stream: name, shard: shards[0], stNS: name, kick: make(chan struct{}, 1)}
	q.cpKey = store.CheckpointKey{Mapping: name, Stream: name, Shard: q.shard}
	q.prKey = store.ProgressKey{Scope: name, Stream: name, Shard: q.shard}
	return q, nil
}

// Enqueue queues req for asynchronous invocation: once it returns nil, the
// event is durable in the data directory. deduplicated reports a keyed
// request whose key is already queued, running or completed: it was not
// queued again.
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
	env := envelope{RequestID: req.RequestID, Key: key, Payload: req.Payload}
	if key == "" {
		return false, f.q.put(ctx, &env)
	}
	mk, ph := store.MarkKeyOf(keyScope(f.cfg.Name), key), payloadHash(req.Payload)
	for {
		f.mu.Lock()
		r := f.queued[mk]
		owner := r == nil
		if owner {
			r = &reservation{hash: ph, ready: make(chan struct{})}
			f.queued[mk] = r
		}
		f.mu.Unlock()
		if !owner {
			select {
			case <-r.ready:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			if r.err != nil {
				continue // its put failed: try ours
			}
			if r.hash != ph {
				return false, mismatch(f, key, store.ErrPayloadMismatch)
			}
			return true, nil
		}
		c, found, err := s.claims.Lookup(ctx, mk, s.now())
		if err == nil && found {
			f.unreserve(mk, r, errors.New("deduplicated"))
			if c.PayloadHash != ph {
				return false, mismatch(f, key, store.ErrPayloadMismatch)
			}
			return true, nil
		}
		if err == nil {
			err = f.q.put(ctx, &env)
		}
		if err != nil {
			f.unreserve(mk, r, err)
			return false, err
		}
		close(r.ready)
		return false, nil
	}
}

// unreserve drops a reservation whose event was not queued.
func (f *fn) unreserve(mk store.MarkKey, r *reservation, err error) {
	f.mu.Lock()
	if f.queued[mk] == r {
		delete(f.queued, mk)
	}
	f.mu.Unlock()
	r.err = err
	close(r.ready)
}

// put appends one event to the queue, durably.
func (q *queue) put(ctx context.Context, env *envelope) error {
	_, err := q.s.db.Put(ctx, q.stream, []pebbledb.PutRecord{{PartitionKey: env.RequestID, Data: env.encode()}})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Status: http.StatusInternalServerError, Code: codeService, Message: "queueing the event: " + err.Error(), Err: err}
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
	q.cp, q.hw = cp, pos
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
		f.mu.Lock()
		if f.queued[mk] == nil {
			r := &reservation{hash: payloadHash(env.Payload), ready: make(chan struct{})}
			close(r.ready)
			f.queued[mk] = r
		}
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.queued, mk)
			f.mu.Unlock()
		}()
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
			q.finish(seq, discarded, q.failure(rec, &env, conditionEventAge, &st))
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
			c, err := s.claims.Claim(ctx, mk, payloadHash(env.Payload), f.lease(), now)
			switch {
			case errors.Is(err, store.ErrPayloadMismatch):
				log.Warn("event discarded: its idempotency key was first used with another payload", "key", env.Key)
				st.ErrorType, st.ErrorMessage = "Idempotency.PayloadMismatch", mismatch(f, env.Key, err).Message
				q.finish(seq, discarded, q.failure(rec, &env, conditionRetries, &st))
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
				q.finish(seq, skipped, nil)
				return
			}
			claim = c
		}
		var done func()
		if env.Key != "" {
			done = f.fly(mk)
		}
		out, ferr := s.call(f, &req, nil)
		if env.Key != "" {
			s.settle(f, claim, out, ferr)
			done()
		}
		st.Count++
		if ferr == nil {
			q.finish(seq, processed, nil)
			return
		}
		fe := functionError(ferr)
		st.ErrorType, st.ErrorMessage = fe.Type, truncate(fe.Message, 4096)
		permanent := fe.Permanent || slices.Contains(f.cfg.Async.PermanentErrorTypes, fe.Type) || errors.Is(ferr, function.ErrNoPayloadHandler)
		if permanent || st.Count > f.cfg.Async.MaximumRetryAttempts {
			log.Warn("event discarded: the function failed", "attempts", st.Count, "permanent", permanent, "errorType", fe.Type, "err", fe.Message)
			q.finish(seq, discarded, q.failure(rec, &env, conditionRetries, &st))
			return
		}
		delay := backoff(f.cfg.Async.BaseDelay, f.cfg.Async.MaxDelay, st.Count)
		st.NextAt = s.now().Add(delay).UnixMilli()
		log.Info("event failed; retrying after a backoff", "attempt", st.Count, "delay", delay, "errorType", fe.Type, "err", fe.Message)
		q.remember(seq, &st)
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

// remember queues an event's attempts for the next commit.
func (q *queue) remember(seq uint64, st *attempts) {
	v, _ := json.Marshal(st)
	q.mu.Lock()
	q.state = append(q.state, store.StateOp{Namespace: q.stNS, Key: stateKey(seq), Value: v})
	q.dirty = true
	q.mu.Unlock()
	q.signal()
}

// finish marks an event done, with its failure record if it was given up.
func (q *queue) finish(seq uint64, o outcome, f *store.Failure) {
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
	q.mu.Unlock()
	q.signal()
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
	fr.RequestContext.FunctionArn = FunctionArn(q.f.cfg.Name)
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
