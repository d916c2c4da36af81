package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// invokeSafely invokes the function, turning a driver's panic into a
// function error: one bad driver must not take the shard down.
func invokeSafely(ctx context.Context, cfg *Mapping, b *idem.Batch) (res function.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &function.Error{Type: "Runtime.Panic", Message: fmt.Sprintf("%v\n%s", p, debug.Stack())}
		}
	}()
	return cfg.Invoker.Invoke(ctx, b)
}

// judge applies Lambda's rules (ESM.md) to one invocation's answer.
func (s *shard) judge(b []idem.Record, res function.Result, err error) outcome {
	out := s.judgeResult(b, res, err)
	if out.failedAt >= 0 {
		out.conflict = resultConflict(s.e.store, res, err)
	}
	return out
}

// judgeResult is judge but for conflicts.
func (s *shard) judgeResult(b []idem.Record, res function.Result, err error) outcome {
	cfg := &s.m.cfg
	whole := outcome{failedAt: len(b)}
	if err != nil {
		var fe *function.Error
		if errors.As(err, &fe) {
			whole.errType, whole.errMsg = fe.Type, fe.Message
			whole.permanent = fe.Permanent || s.m.permanent[fe.Type]
		} else {
			whole.errType, whole.errMsg = "Function.Error", err.Error()
		}
		whole.permanent = whole.permanent || idem.IsPermanent(err)
		return whole
	}
	if !res.Native && !cfg.ReportBatchItemFailures {
		return outcome{failedAt: -1}
	}
	if res.Invalid != "" {
		whole.errType, whole.errMsg = "Function.InvalidResponse", res.Invalid
		return whole
	}
	if len(res.Failures) == 0 {
		return outcome{failedAt: -1}
	}
	lowest := -1
	for _, id := range res.Failures {
		i := indexOfEventID(b, id, cfg.EventFormat)
		if i < 0 {
			whole.errType = "Function.InvalidResponse"
			whole.errMsg = fmt.Sprintf("itemIdentifier %q names no record of the batch", id)
			s.e.log.Warn("treating the batch as failed: itemIdentifier names no record of it", "mapping", cfg.Name, "shard", s.id, "itemIdentifier", id)
			return whole
		}
		if lowest < 0 || i < lowest {
			lowest = i
		}
	}
	out := outcome{failedAt: lowest}
	if res.Err != nil {
		out.errType, out.errMsg = res.Err.Type, res.Err.Message
		out.permanent = res.Err.Permanent || s.m.permanent[res.Err.Type]
	}
	return out
}

// indexOfEventID finds the record an itemIdentifier names. It accepts the
// eventID ("shardId-…:sequence") and the bare sequence number: the
// SequenceNumber, Lambda's itemIdentifier for DynamoDB, of a DynamoDBEvent
// record read from DynamoDB Streams or converted from Kinesis. A mapping
// that sends DynamoDBEvents also accepts the SequenceNumber or eventID its
// record's data holds (indexOfDDBRecord). One that sends KafkaEvent, whose
// records carry no eventID, also accepts "<topic>-<partition>@<offset>",
// the record's key in the event's records map and its offset; a Kafka
// source numbers records offset+1, so the offset names Sequence offset+1.
func indexOfEventID(b []idem.Record, id string, format idem.EventFormat) int {
	for i := range b {
		if isEventID(&b[i], id) || string(b[i].Sequence) == id {
			return i
		}
	}
	if format == idem.EventFormatDynamoDB && id != "" {
		return indexOfDDBRecord(b, id)
	}
	if format != idem.EventFormatKafka {
		return -1
	}
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return -1
	}
	off, err := strconv.ParseUint(id[at+1:], 10, 64)
	if err != nil || off == math.MaxUint64 {
		return -1
	}
	shard := id[:at]
	for i := range b {
		if n, ok := b[i].Sequence.Uint64(); ok && n == off+1 && b[i].ShardID == shard {
			return i
		}
	}
	return -1
}

// isEventID reports whether id is r.EventID(), without building it: a
// response's failures are looked up among every record of the batch.
func isEventID(r *idem.Record, id string) bool {
	return len(id) == len(r.ShardID)+1+len(r.Sequence) && id[len(r.ShardID)] == ':' &&
		strings.HasPrefix(id, r.ShardID) && strings.HasSuffix(id, string(r.Sequence))
}

// commit is what resolving some records of a window changes.
type commit struct {
	completed    []idem.Record
	state        *batchState
	stateRecords int // the records of state whose writes commit: a prefix
	skipped      []idem.Sequence
	filtered     []idem.Sequence // matched no filterCriteria pattern
	// window, with tumbling windows, commits windowState as the open
	// window's state after the completed records.
	window      bool
	windowState json.RawMessage
	discarded   []idem.Record
	// unkeyed leading records of discarded have no idempotency key (it
	// could not be computed): they were never claimed, and get no mark.
	unkeyed    int
	failures   []store.Failure
	conditions map[string]int
}

// discardUnkeyed sends r, whose idempotency key could not be computed
// (err), to the on-failure destination in this commit, which must not
// have discarded records yet: r was never claimed, and gets no mark.
func (c *commit) discardUnkeyed(s *shard, r idem.Record, err error) {
	s.e.log.Error("discarding record: its idempotency key cannot be computed", "mapping", s.m.cfg.Name, "err", err)
	c.discard(s, []idem.Record{r}, conditionKeyError, 0, "IdempotencyKeyError", err.Error())
	c.unkeyed++
}

// discard sends recs to the on-failure destination in this commit.
func (c *commit) discard(s *shard, recs []idem.Record, condition string, invokes int, errType, errMsg string) {
	cfg := &s.m.cfg
	c.discarded = append(c.discarded, recs...)
	if c.conditions == nil {
		c.conditions = make(map[string]int)
	}
	c.conditions[condition] += len(recs)
	meta := failureMetadata(s.e.region, newInvocationID(), cfg.Function, cfg.EventFormat, condition, invokes, errType, errMsg, recs, s.m.sizer().size(recs), s.e.now())
	if cfg.OnFailure == "" {
		s.e.log.Error("discarding records: no on-failure destination is configured", "mapping", cfg.Name, "shard", s.id,
			"first", recs[0].Sequence, "last", recs[len(recs)-1].Sequence, "count", len(recs), "condition", condition, "metadata", string(meta))
		return
	}
	s.e.log.Warn("sending records to the on-failure destination", "mapping", cfg.Name, "shard", s.id, "destination", cfg.OnFailure,
		"first", recs[0].Sequence, "last", recs[len(recs)-1].Sequence, "count", len(recs), "condition", condition, "errorType", errType)
	c.failures = append(c.failures, store.Failure{Destination: cfg.OnFailure, Metadata: meta, Records: slices.Clone(recs)})
}

// commitWrite writes c, with the checkpoint and the scope's progress or marks it
// implies, in one atomic store write. A store failure is retried a few times;
// then it is returned, and the shard restarts from its durable checkpoint. A
// write the store refuses for its size (store.ErrWriteTooLarge) is returned
// at once, leaving the window as it was: commitCompleted commits fewer
// records instead.
//
// When the handler wrote in the invocation's store transaction, the write
// goes through that transaction instead, once: a failed commit undid the
// handler's writes, which only invoking again can redo, so the error is
// returned at once and the shard restarts from its durable checkpoint.
func (s *shard) commitWrite(ctx context.Context, c *commit) error {
	cfg := &s.m.cfg
	var tx store.Tx
	var txErr error
	if c.state != nil && c.state.tx != nil {
		if tx, txErr = c.state.tx.end(); tx != nil {
			defer rollback(ctx, tx) // nothing to do once committed
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	win := s.win
	if win.failed {
		// Another commit of this window failed: the store may or may not
		// hold it, so a checkpoint or progress computed here could cover
		// records whose effects were rolled back, or undo ones that landed.
		return errors.New("an earlier commit of this window failed: restarting the shard from what the store holds")
	}
	seqs := make([]idem.Sequence, 0, len(c.completed)+len(c.skipped)+len(c.filtered)+len(c.discarded))
	for i := range c.completed {
		seqs = append(seqs, c.completed[i].Sequence)
	}
	seqs = append(seqs, c.skipped...)
	seqs = append(seqs, c.filtered...)
	for i := range c.discarded {
		seqs = append(seqs, c.discarded[i].Sequence)
	}
	win.resolve(seqs)
	committed, refused := false, false
	defer func() {
		if !committed {
			win.unresolve(seqs)
			// A write refused before it was sent left nothing behind:
			// the window goes on from what it held.
			win.failed = !refused
		}
	}()

	cp := s.cp
	cp.Processed += uint64(len(c.completed))
	cp.Skipped += uint64(len(c.skipped))
	cp.Discarded += uint64(len(c.discarded))
	if win.next > 0 {
		cp.Sequence = idem.MaxSequence(cp.Sequence, win.seqs[win.next-1])
	}
	w := &store.Write{Checkpoint: s.cpKey, NewCheckpoint: cp, Failures: c.failures}
	s.fenceWrite(w)
	if c.state != nil {
		c.state.appendCommitted(w, c.stateRecords)
	}
	if c.window {
		if err := s.appendWindow(w, c.windowState); err != nil {
			return err
		}
	}
	var newProgress store.Progress
	switch {
	case cfg.AtLeastOnce:
	case s.m.keyer.byIdentity():
		// The mapping's own progress: its checkpoint moved over the
		// records its filter rejected, which Filter tells apart.
		newProgress = mergeProgress(s.prog, cp.Sequence, win.above(nil))
		newProgress.Filter = s.m.filters.encoded
		w.HasProgress, w.ProgressKey, w.Progress = true, s.pkKey, newProgress
	default:
		// A mark replaces the record's claim, if the shard's owner still
		// holds it: one that stalled past its lease may have been taken
		// over, and the record run elsewhere (store.ErrRecordClaimLost).
		expires := s.markExpiry()
		for _, recs := range [][]idem.Record{c.completed, c.discarded[c.unkeyed:]} {
			for i := range recs {
				w.Marks = append(w.Marks, store.Mark{Key: store.MarkKeyOf(cfg.Scope, recs[i].IdempotencyKey), Expires: expires})
			}
		}
		if len(w.Marks) > 0 {
			w.MarkOwner = s.owner
		}
	}

	var err error
	for attempt := 1; tx == nil; attempt++ {
		if err = s.apply(ctx, w, len(seqs)); err == nil {
			break
		}
		if errors.Is(err, store.ErrWriteTooLarge) {
			refused = true // it never will fit: runBatch commits fewer records
			return fmt.Errorf("committing checkpoint %q: %w", cp.Sequence, err)
		}
		// Neither a fenced commit nor one whose record claim was lost is
		// tried again: the shard stops, or runs the window again from its
		// checkpoint under new claims.
		if ctx.Err() != nil || attempt == 5 || errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrRecordClaimLost) {
			return fmt.Errorf("committing checkpoint %q: %w", cp.Sequence, err)
		}
		if cp != s.cp && s.landed(ctx, cp) {
			// The write landed though its answer was lost (a connection
			// dropped after the commit): writing it again would append
			// its on-failure records twice.
			s.e.log.Warn("commit answered with an error but landed; not writing it again", "mapping", cfg.Name, "shard", s.id, "err", err)
			err = nil
			break
		}
		s.e.log.Warn("commit failed; retrying", "mapping", cfg.Name, "shard", s.id, "attempt", attempt, "err", err)
		if sleep(ctx, s.backoff(attempt)) != nil {
			return fmt.Errorf("committing checkpoint %q: %w", cp.Sequence, err)
		}
	}
	if tx != nil {
		if txErr != nil {
			return fmt.Errorf("committing checkpoint %q with the function's transaction: %w", cp.Sequence, txErr)
		}
		if err := tx.Commit(ctx, w); err != nil {
			return fmt.Errorf("committing checkpoint %q with the function's transaction: %w", cp.Sequence, err)
		}
	}
	committed = true
	s.commits.Add(1)
	s.cp = cp
	if w.HasProgress {
		s.prog = newProgress
	}
	if c.window {
		s.tw.state = c.windowState
	}
	// The counts first: whoever sees the checkpoint (status, which reads
	// it first) sees the records it resolved counted.
	if n := len(c.completed); n > 0 {
		s.e.metrics.processed.WithLabelValues(cfg.Name).Add(float64(n))
	}
	if n := len(c.skipped); n > 0 {
		s.e.metrics.skipped.WithLabelValues(cfg.Name).Add(float64(n))
	}
	if n := len(c.filtered); n > 0 {
		s.e.metrics.filtered.WithLabelValues(cfg.Name).Add(float64(n))
		s.filtered.Add(uint64(n))
	}
	for cond, n := range c.conditions {
		s.e.metrics.discarded.WithLabelValues(cfg.Name, cond).Add(float64(n))
	}
	s.show(cp)
	if len(s.unsynced) == 0 {
		s.mirror(cp) // durable already; otherwise mirrored once synced
	}
	if win.next == len(win.seqs) {
		s.oldestArrival.Store(0)
	}
	return nil
}

// landed reports whether the store holds cp as the shard's checkpoint: a
// commit whose answer was an error may have landed all the same. Only the
// shard's owner writes its checkpoint, and a commit that changes it (the
// sequence, or a counter: every commit with on-failure records does)
// is there when cp is.
func (s *shard) landed(ctx context.Context, cp store.Checkpoint) bool {
	stored, ok, err := s.e.store.Checkpoint(ctx, s.cpKey)
	return err == nil && ok && stored == cp
}

// MaxClockSkew is the clock skew between idem processes sharing a store
// that completion marks allow for: marks are kept this much longer than
// their retention, and an engine whose clock is further than this from
// the store's (store.Clock) refuses to start.
const MaxClockSkew = time.Minute

// markExpiry is when a completion mark committed now expires: after the
// longer of the mapping's retention and the source's (which a source may
// learn is longer while it runs, such as a Kafka topic's retention.ms
// changed, or its segments rolling late), plus the clock skew allowed.
func (s *shard) markExpiry() time.Time {
	cfg := &s.m.cfg
	return s.e.now().Add(max(cfg.MarkRetention, cfg.Source.Retention()) + MaxClockSkew)
}

// mergeProgress folds a mapping's new checkpoint and its out-of-order
// completions into the scope's progress. It never moves the high-water mark
// backwards: another mapping of the scope may be ahead.
func mergeProgress(old store.Progress, checkpoint idem.Sequence, above []idem.Sequence) store.Progress {
	hw := idem.MaxSequence(old.HighWater, checkpoint)
	if len(old.Above) == 0 && len(above) == 0 {
		return store.Progress{HighWater: hw}
	}
	merged := make([]idem.Sequence, 0, len(old.Above)+len(above))
	for _, q := range old.Above {
		if q.Compare(hw) > 0 {
			merged = append(merged, q)
		}
	}
	for _, q := range above {
		if q.Compare(hw) > 0 {
			merged = append(merged, q)
		}
	}
	slices.SortFunc(merged, idem.Sequence.Compare)
	merged = slices.CompactFunc(merged, func(a, b idem.Sequence) bool { return a.Compare(b) == 0 })
	return store.Progress{HighWater: hw, Above: merged}
}
