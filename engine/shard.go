package engine

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// shard runs one mapping over one shard: one goroutine reads windows of
// records, and one goroutine per partition-key group (parallelizationFactor)
// invokes the function over each window.
type shard struct {
	m     *mapping
	e     *Engine
	id    string
	cpKey store.CheckpointKey
	pkKey store.ProgressKey
	// owner names the shard's record claims: whoever processes this
	// mapping's shard next takes them again at once.
	owner store.MarkKey
	// claimedUntil is when the window's record claims run out (Unix
	// nanoseconds).
	claimedUntil atomic.Int64

	// mu serialises commits of the shard, so that the checkpoint written is
	// always the newest and the window's tracking stays consistent.
	mu  sync.Mutex
	cp  store.Checkpoint // checkpoint as last committed: durable, or applied and syncing (unsynced)
	win *window          // the window being processed
	// prog is the mapping's own progress over the shard, as last
	// committed (keys by identity); only this shard writes it.
	prog store.Progress
	// rows are the scope's other progress over the shard, read at start,
	// when the mapping is alone in its scope (mapping.alone).
	rows []scopeRow
	// waits counts the reader's waits in a row for records claimed
	// elsewhere (waitFor).
	waits int
	// rangeMu guards the shard's range claim (keys by identity): what it
	// covers (usually to the end of the shard), until when, when it was
	// taken, and the scope's other progress read with it.
	rangeMu    sync.Mutex
	rangeFrom  idem.Sequence // "": none
	rangeTo    idem.Sequence
	rangeUntil time.Time
	rangeAt    time.Time
	rangeRows  []scopeRow

	// Observed without the lock, for status.
	state         atomic.Value // string
	lastError     atomic.Value // string
	posMu         sync.Mutex   // guards checkpoint and latest, for status
	checkpoint    idem.Sequence
	latest        idem.Sequence
	oldestArrival atomic.Int64 // unix nanos of the oldest unresolved record; 0 when none
	inFlight      atomic.Int64
	invocations   atomic.Uint64
	retries       atomic.Uint64
	commits       atomic.Uint64 // commits that landed: a restart after one backs off afresh
	filtered      atomic.Uint64 // records that matched no filter, since the engine started
	tw            tumbling      // the open tumbling window; only the shard's reader uses it
	counters      atomic.Pointer[store.Checkpoint]
	finished      atomic.Bool // a closed shard read to its end

	// fence is the lease every write of the shard is conditional on, while
	// it holds one (WithShardLeases); nil otherwise.
	fence atomic.Pointer[store.Fence]

	// unsynced are the shard's commits applied but maybe not yet durable,
	// oldest first (store.Pipeliner), resolving unsyncedRecords records;
	// guarded by mu.
	unsynced        []unsynced
	unsyncedRecords int
}

func newShard(m *mapping, id string) *shard {
	s := &shard{
		m:     m,
		e:     m.e,
		id:    id,
		cpKey: store.CheckpointKey{Mapping: m.cfg.Name, Stream: m.cfg.Stream, Shard: id},
		pkKey: store.ProgressKey{Scope: m.cfg.Scope, Stream: m.cfg.Stream, Shard: id, Mapping: m.cfg.Name},
		owner: store.MarkKeyOf("\x00owner", m.cfg.Name+"\x00"+m.cfg.Stream+"\x00"+id),
	}
	s.state.Store("starting")
	s.lastError.Store("")
	s.counters.Store(&store.Checkpoint{})
	return s
}

func (s *shard) status(now time.Time) ShardStatus {
	// The checkpoint first: a commit counts its records before it shows
	// its checkpoint, so the counts read after it include them.
	s.posMu.Lock()
	checkpoint, latest := s.checkpoint, s.latest
	s.posMu.Unlock()
	c := s.counters.Load()
	st := ShardStatus{
		Mapping: s.m.cfg.Name, Function: s.m.cfg.Function, Stream: s.m.cfg.Stream, Shard: s.id, Scope: s.m.cfg.Scope,
		State: s.state.Load().(string), LastError: s.lastError.Load().(string),
		InFlight: s.inFlight.Load(), Invocations: s.invocations.Load(), Retries: s.retries.Load(), Filtered: s.filtered.Load(),
		Processed: c.Processed, Discarded: c.Discarded, Skipped: c.Skipped, Lost: c.Lost,
		Checkpoint: checkpoint, Latest: latest,
	}
	st.LagRecords = lag(st.Latest, st.Checkpoint)
	if a := s.oldestArrival.Load(); a != 0 {
		st.IteratorAgeMs = now.Sub(time.Unix(0, a)).Milliseconds()
	}
	return st
}

// run processes the shard until ctx is done. work bounds invocations and
// commits, which may outlive ctx by the engine's drain timeout. Errors of the
// store or the source are logged and retried with backoff from the last
// durable checkpoint: nothing is skipped.
//
// With shard leases (WithShardLeases) it processes only while it holds the
// shard's lease; see runLeased.
func (s *shard) run(ctx, work context.Context) {
	if a, ok := s.m.cfg.Source.(source.Assigner); ok {
		s.runAssigned(ctx, work, a)
		return
	}
	s.runOwned(ctx, work)
}

// runOwned processes the shard until ctx is done: under its lease with
// WithShardLeases, else as its only reader.
func (s *shard) runOwned(ctx, work context.Context) {
	if s.e.lease != nil {
		s.runLeased(ctx, work)
		return
	}
	s.process(ctx, work)
	if s.finished.Load() {
		s.state.Store("finished")
		return
	}
	s.state.Store("stopped")
}

// runOnce loads the durable position and processes windows until ctx is
// done or an error occurs.
func (s *shard) runOnce(ctx, work context.Context) (err error) {
	defer func() {
		if serr := s.syncAll(); serr != nil && err == nil {
			err = serr
		}
		if err == nil {
			err = s.endClaims(work)
		}
	}()
	if err := s.load(ctx); err != nil {
		return err
	}
	s.state.Store("running")
	s.lastError.Store("")
	cfg := &s.m.cfg
	limit := cfg.BatchSize * cfg.ParallelizationFactor
	maxBytes := MaxBatchBytes * cfg.ParallelizationFactor
	var ahead *readAhead
	defer func() { ahead.discard() }()
	for ctx.Err() == nil {
		recs, lost, trimmed, poll, err := s.nextWindow(ctx, ahead, limit, maxBytes)
		ahead = nil
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if lost > 0 {
			s.e.log.Warn("records expired by retention before they were read", "mapping", cfg.Name, "stream", cfg.Stream, "shard", s.id, "lost", lost, "after", s.cp.Sequence)
			s.e.metrics.lost.WithLabelValues(cfg.Name).Add(float64(lost))
			if err := s.commitLost(work, lost, trimmed, len(recs) == 0); err != nil {
				return err
			}
		}
		if len(recs) == 0 {
			if lin, ok := cfg.Source.(source.Lineage); ok {
				if fin, err := lin.Finished(ctx, s.id, s.cp.Sequence); err == nil && fin {
					// A closed shard read to its end: its children take over.
					s.e.log.Info("shard finished: read to the end of a closed shard", "mapping", cfg.Name, "shard", s.id)
					s.finished.Store(true)
					s.m.shardFinished()
					return nil
				}
			}
			if s.windowDue() {
				if err := s.closeWindow(ctx, work, false); err != nil {
					return err
				}
				continue
			}
			// Idle: what was committed is made durable, and mirrored, and
			// the records claimed are let go.
			if err := s.syncAll(); err != nil {
				return err
			}
			if err := s.endClaims(work); err != nil {
				return err
			}
			if err := s.waitRecords(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("waiting for records: %w", err)
			}
			continue
		}
		if cfg.MaximumBatchingWindow <= 0 {
			ahead = s.startReadAhead(ctx, recs[len(recs)-1].Sequence, limit, maxBytes)
		}
		if err := s.processWindow(traced(ctx, poll), traced(work, poll), recs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

// load reads the checkpoint and the scope's progress, creating the
// checkpoint from the starting position on first start. The initial
// checkpoint is made durable at once: a LATEST mapping restarted before its
// first batch must not skip what arrived meanwhile.
func (s *shard) load(ctx context.Context) error {
	cfg := &s.m.cfg
	cp, ok, err := s.e.store.Checkpoint(ctx, s.cpKey)
	if err != nil {
		return fmt.Errorf("loading checkpoint: %w", err)
	}
	if !ok {
		pos, ts := cfg.StartingPosition, cfg.StartingPositionTimestamp
		if !s.m.initialShard(s.id) {
			// A shard that appeared after the mapping started (a partition
			// added, a Kinesis child): every record of it is new to the
			// mapping, whatever its starting position, as on Lambda.
			pos, ts = source.TrimHorizon, time.Time{}
			s.e.log.Info("a shard that appeared after the mapping started: reading it from its beginning", "mapping", cfg.Name, "shard", s.id)
		}
		start, err := cfg.Source.Start(ctx, s.id, pos, ts)
		if err != nil {
			return fmt.Errorf("finding %s: %w", pos, err)
		}
		cp = store.Checkpoint{Sequence: start}
		w := &store.Write{Checkpoint: s.cpKey, NewCheckpoint: cp}
		s.fenceWrite(w)
		if err := s.e.store.Commit(ctx, w); err != nil {
			return fmt.Errorf("creating checkpoint: %w", err)
		}
	}
	if cfg.TumblingWindow > 0 {
		if err := s.loadWindow(ctx); err != nil {
			return err
		}
	}
	var prog store.Progress
	if s.m.keyer.byIdentity() && !cfg.AtLeastOnce {
		// Reloaded at every (re)start: a commit whose outcome was unknown
		// (its connection lost during COMMIT) may have landed.
		if prog, err = s.e.store.Progress(ctx, s.pkKey); err != nil {
			return fmt.Errorf("loading progress of mapping %q in scope %q: %w", cfg.Name, cfg.Scope, err)
		}
		if s.m.alone {
			if s.rows, err = s.scopeRows(ctx); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	s.cp, s.prog = cp, prog
	s.mu.Unlock()
	s.publish(cp)
	return nil
}

// publish makes a durable checkpoint the one status shows and the source
// mirrors.
func (s *shard) publish(cp store.Checkpoint) {
	s.show(cp)
	s.mirror(cp)
}

// show makes cp the checkpoint status shows.
func (s *shard) show(cp store.Checkpoint) {
	c := cp
	s.counters.Store(&c)
	s.posMu.Lock()
	s.checkpoint = cp.Sequence
	s.latest = idem.MaxSequence(s.latest, cp.Sequence)
	s.posMu.Unlock()
}

// mirror shows cp, which must be durable, in the source's own tooling.
func (s *shard) mirror(cp store.Checkpoint) {
	if m, ok := s.m.cfg.Source.(source.CheckpointMirror); ok {
		m.MirrorCheckpoint(s.id, cp.Sequence)
	}
}

// A shard's commits applied but not yet durable, with a store.Pipeliner,
// are at most maxUnsynced, resolving at most maxUnsyncedRecords records
// between them (but always at least the newest commit): the syncs overlap
// the next batches' invocations, and a crash redelivers at most that many
// records more than it would. Sixty-four lets small batches go on through
// a whole fsync: at 8, batches of 100 spent two thirds of their time
// waiting for syncs.
const (
	maxUnsynced        = 64
	maxUnsyncedRecords = 20_000
)

// unsynced is a commit applied but maybe not yet durable.
type unsynced struct {
	synced  func() error
	cp      store.Checkpoint
	records int // resolved by the commit
}

// apply commits w, which resolves records: with a store.Pipeliner, without
// waiting for it to be durable (after making room among the unsynced
// commits); otherwise durably. The caller holds s.mu.
func (s *shard) apply(ctx context.Context, w *store.Write, records int) error {
	p, ok := s.e.store.(store.Pipeliner)
	if !ok {
		return s.e.store.Commit(ctx, w)
	}
	for len(s.unsynced) > 0 && (len(s.unsynced) >= maxUnsynced || s.unsyncedRecords+records > maxUnsyncedRecords) {
		if err := s.syncOldest(); err != nil {
			return err
		}
	}
	synced, err := p.CommitPipelined(ctx, w)
	if err != nil {
		return err
	}
	s.unsynced = append(s.unsynced, unsynced{synced: synced, cp: w.NewCheckpoint, records: records})
	s.unsyncedRecords += records
	return nil
}

// syncOldest waits for the oldest unsynced commit to be durable, and
// mirrors its checkpoint. The caller holds s.mu.
func (s *shard) syncOldest() error {
	u := s.unsynced[0]
	s.unsynced[0] = unsynced{}
	s.unsynced = s.unsynced[1:]
	s.unsyncedRecords -= u.records
	if err := u.synced(); err != nil {
		return fmt.Errorf("a commit applied earlier did not become durable: %w", err)
	}
	s.mirror(u.cp)
	return nil
}

// syncAll waits until every commit of the shard is durable: before the
// shard stops (a partition or lease handed over, the engine's end) or
// idles. The first failure is returned; every commit is waited for.
func (s *shard) syncAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncAllLocked()
}

// syncAllLocked is syncAll for a caller that holds s.mu.
func (s *shard) syncAllLocked() error {
	var first error
	for len(s.unsynced) > 0 {
		if err := s.syncOldest(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// lag is how many records lie between checkpoint and latest, for sources
// that number records consecutively in 64 bits; 0 otherwise (iterator age
// still tells how far behind a mapping is).
func lag(latest, checkpoint idem.Sequence) uint64 {
	l, ok1 := latest.Uint64()
	c, ok2 := checkpoint.Uint64()
	if !ok1 || !ok2 || l <= c {
		return 0
	}
	return l - c
}

// readWindow reads up to limit records after the position after. With a
// batching window it keeps reading until the batch is full, the window
// ends, or the records' events (function.EventSize) reach maxBytes.
func (s *shard) readWindow(ctx context.Context, after idem.Sequence, limit, maxBytes int) (recs []idem.Record, lost uint64, trimmed idem.Sequence, err error) {
	cfg := &s.m.cfg
	// maxBytes bounds the events' bytes; a source counts raw data.
	res, err := cfg.Source.Read(ctx, s.id, after, limit, dataBudget(maxBytes))
	if err != nil {
		return nil, 0, "", fmt.Errorf("reading after %q: %w", after, err)
	}
	s.noteLatest(res.Latest)
	recs, lost, trimmed = res.Records, res.Lost, res.Trimmed
	if cfg.MaximumBatchingWindow <= 0 || len(recs) == 0 || len(recs) >= limit {
		return recs, lost, trimmed, nil
	}
	// Records have no idempotencyKey yet: their events are counted a
	// little short, and processGroup cuts the batches exactly.
	z := s.m.sizer()
	size := 0
	for i := range recs {
		size += z.record(&recs[i])
	}
	deadline := time.Now().Add(cfg.MaximumBatchingWindow)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for len(recs) < limit && size < maxBytes {
		after := recs[len(recs)-1].Sequence
		if err := cfg.Source.Wait(wctx, s.id, after); err != nil || wctx.Err() != nil {
			break
		}
		more, err := cfg.Source.Read(ctx, s.id, after, limit-len(recs), dataBudget(maxBytes-size))
		if err != nil {
			return nil, 0, "", fmt.Errorf("reading after %q: %w", after, err)
		}
		s.noteLatest(more.Latest)
		if more.Lost > 0 {
			// Retention trimmed records after these: leave them to the
			// next read from the checkpoint, which reports the loss.
			break
		}
		// A record whose event would take the window past maxBytes is
		// left for the next read: it starts the next batch, whole.
		n := 0
		for n < len(more.Records) && size+z.record(&more.Records[n]) <= maxBytes {
			size += z.record(&more.Records[n])
			n++
		}
		recs = append(recs, more.Records[:n]...)
		if n < len(more.Records) {
			break
		}
	}
	return recs, lost, trimmed, nil
}

func (s *shard) noteLatest(seq idem.Sequence) {
	s.posMu.Lock()
	s.latest = idem.MaxSequence(s.latest, seq)
	s.posMu.Unlock()
}

// commitLost records records lost to retention; when nothing else was read,
// it also moves the checkpoint over them, to the last trimmed sequence.
func (s *shard) commitLost(ctx context.Context, lost uint64, trimmed idem.Sequence, moveCheckpoint bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Earlier commits first, so that their checkpoints are mirrored before
	// this one, never after.
	if err := s.syncAllLocked(); err != nil {
		return err
	}
	cp := s.cp
	cp.Lost += lost
	if moveCheckpoint {
		cp.Sequence = idem.MaxSequence(cp.Sequence, trimmed)
	}
	w := &store.Write{Checkpoint: s.cpKey, NewCheckpoint: cp}
	s.fenceWrite(w)
	if err := s.e.store.Commit(ctx, w); err != nil {
		return fmt.Errorf("committing lost records: %w", err)
	}
	s.cp = cp
	s.publish(cp)
	return nil
}

// processWindow resolves every record of recs: skips those already
// completed in the scope, discards those whose key cannot be computed or
// whose age exceeds the limit, and runs the rest, grouped by partition key.
func (s *shard) processWindow(ctx, work context.Context, recs []idem.Record) error {
	var keyFailed []idem.Record
	var keyErrs []error
	var seen map[string]struct{} // payload keys of the window
	byIdentity := s.m.keyer.byIdentity()
	if !byIdentity {
		seen = make(map[string]struct{}, len(recs))
	}
	oldest := recs[0].ArrivalTime
	seqs := make([]idem.Sequence, 0, len(recs))
	var filtered []idem.Sequence
	// The records to run are compacted in place (the window owns recs):
	// pending[j] is written only after recs[i >= j] was read.
	pending := recs[:0]
	for i := range recs {
		r := &recs[i]
		if s.m.filters.rejects(r) {
			seqs = append(seqs, r.Sequence)
			filtered = append(filtered, r.Sequence)
			continue
		}
		if !byIdentity {
			if err := s.m.keyer.key(r); err != nil {
				seqs = append(seqs, r.Sequence)
				keyFailed = append(keyFailed, *r)
				keyErrs = append(keyErrs, err)
				continue
			}
			// A second record with one payload key is judged after the
			// first commits: cut the window before it.
			if _, dup := seen[r.IdempotencyKey]; dup {
				break
			}
			seen[r.IdempotencyKey] = struct{}{}
		}
		seqs = append(seqs, r.Sequence)
		pending = keepAt(pending, recs, i)
	}
	if byIdentity {
		identities(pending) // filtered records need none
	}
	w := &window{seqs: seqs, done: make([]bool, len(seqs))}
	s.mu.Lock()
	s.win = w
	s.mu.Unlock()
	s.oldestArrival.Store(oldest.UnixNano())
	defer s.oldestArrival.Store(0)

	cl, err := s.claim(ctx, pending)
	if err != nil {
		return err
	}
	pending = cl.run
	// Anything resolved without invoking commits first, in one write.
	if len(cl.skipped) > 0 || len(keyFailed) > 0 || len(filtered) > 0 {
		c := commit{skipped: cl.skipped, filtered: filtered}
		for i, r := range keyFailed {
			c.discardUnkeyed(s, r, keyErrs[i])
		}
		if err := s.commit(work, &c); err != nil {
			return err
		}
	}
	if len(pending) == 0 {
		if cl.wait > 0 {
			// Every record left is claimed elsewhere: wait for that run.
			s.state.Store("waiting for a claim")
			defer s.state.Store("running")
			return sleep(ctx, cl.wait)
		}
		return nil
	}
	groups := s.group(pending)
	if len(groups) == 1 {
		return s.processGroup(ctx, work, groups[0])
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.processGroup(ctx, work, g)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// keepAt appends recs[i] to kept, a prefix of recs being compacted in
// place (len(kept) <= i), without copying a record onto itself: a window's
// records are 150 bytes each, full of pointers.
func keepAt(kept, recs []idem.Record, i int) []idem.Record {
	if len(kept) == i {
		return kept[:i+1]
	}
	return append(kept, recs[i])
}

// group splits records into ParallelizationFactor groups by partition key,
// keeping each group in shard order.
func (s *shard) group(recs []idem.Record) [][]idem.Record {
	n := s.m.cfg.ParallelizationFactor
	if n == 1 {
		return [][]idem.Record{recs}
	}
	groups := make([][]idem.Record, n)
	for _, r := range recs {
		g := fnv32a(r.PartitionKey) % uint32(n)
		groups[g] = append(groups[g], r)
	}
	out := groups[:0]
	for _, g := range groups {
		if len(g) > 0 {
			out = append(out, g)
		}
	}
	return out
}

// fnv32a is FNV-1a over s, as hash/fnv's New32a computes it, without the
// hasher's allocation: grouping hashes every record's partition key.
func fnv32a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// processGroup invokes the function over recs, one batch at a time.
func (s *shard) processGroup(ctx, work context.Context, recs []idem.Record) error {
	cfg := &s.m.cfg
	z := s.m.sizer()
	for len(recs) > 0 {
		var window time.Time
		if cfg.TumblingWindow > 0 {
			// A batch never spans two windows.
			window = s.windowOf(&recs[0])
			if err := s.enterWindow(ctx, work, window); err != nil {
				return err
			}
		}
		// The batch's event stays within Lambda's payload limit: the
		// first record separates nothing, so its separator is taken off.
		var w *idem.Window
		if cfg.TumblingWindow > 0 {
			w = s.window(false, false)
		}
		n, size := 0, z.base(&recs[0], w)-1
		for n < len(recs) && n < cfg.BatchSize && (cfg.TumblingWindow == 0 || s.windowOf(&recs[n]).Equal(window)) {
			rs := z.record(&recs[n])
			if size+rs > MaxBatchBytes {
				break
			}
			size += rs
			n++
		}
		if n == 0 {
			// A record too large to send even alone is never invoked: it
			// goes to the on-failure destination, and the shard goes on.
			c := commit{}
			c.discard(s, recs[:1], conditionPayloadSize, 0, "PayloadTooLarge", tooLargeMessage(size+z.record(&recs[0])))
			if err := s.commit(work, &c); err != nil {
				return err
			}
			recs = recs[1:]
			continue
		}
		if err := s.runBatch(ctx, work, recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// invoke runs the function once over b and judges the result. The error is
// not the function's: it is returned only when work is done.
func (s *shard) invoke(work context.Context, b []idem.Record) (*batchState, outcome, error) {
	cfg := &s.m.cfg
	bs, views := newBatchState(s.e.store, cfg.Scope, len(b))
	var batch *idem.Batch
	if s.m.txd != nil {
		bs.tx = newInvocationTx(s.m.txd, work)
		batch = idem.NewBatchWithTx(cfg.Name, cfg.Function, newInvocationID(), b, views, bs.tx)
	} else {
		batch = idem.NewBatch(cfg.Name, cfg.Function, newInvocationID(), b, views)
	}
	batch.Format = cfg.EventFormat
	if cfg.TumblingWindow > 0 {
		batch.Window = s.window(false, false)
	}
	ctx, cancel := context.WithTimeout(work, cfg.FunctionTimeout)
	if s.m.journal != nil {
		ctx = idem.WithJournal(ctx, s.m.journal)
	}
	s.inFlight.Add(int64(len(b)))
	s.invocations.Add(1)
	start := time.Now()
	res, err := s.invokeTraced(ctx, batch)
	if bs.tx != nil && err == nil {
		// Statements a batch handler held back (postgres.Defer) are sent
		// within the function's time, before the outcome is judged;
		// idem.RecordFunc has sent its own already. A failure is kept
		// for judge.
		_, _ = bs.tx.Flush(ctx)
	}
	s.e.metrics.duration.WithLabelValues(cfg.Name).Observe(time.Since(start).Seconds())
	s.inFlight.Add(-int64(len(b)))
	cancel()
	if work.Err() != nil {
		bs.rollback()
		return nil, outcome{}, work.Err()
	}
	out := s.judge(b, res, err)
	if bs.tx != nil {
		out = bs.tx.judge(out, len(b))
	}
	if cfg.TumblingWindow > 0 {
		s.judgeWindow(b, res, &out)
	}
	label := "success"
	switch {
	case out.failedAt == len(b):
		label = "error"
		s.e.log.Warn("function error", "mapping", cfg.Name, "shard", s.id, "records", len(b), "first", b[0].Sequence, "type", out.errType, "err", out.errMsg)
	case out.failedAt >= 0:
		label = "partial"
	}
	s.noteInvocation(label)
	return bs, out, nil
}

func newInvocationID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
