package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// A replay answers, before anything runs, what a mapping would do if it
// read its shards again from a starting position: how many of the records
// in retention would run, and how many would be skipped because their
// idempotency key is already completed in the scope. It is the question a
// renamed or recreated consumer asks: such a mapping has no checkpoint,
// reads from its starting position, and runs exactly what a dry run of
// the old one from that position reports, for completion belongs to the
// scope, not to the mapping's name.
//
// Without DryRun a replay then moves the mapping's checkpoint in every
// shard to the starting position. It does so only while the mapping is
// paused and its shards hold nothing in flight (no commit can then land
// after the move); a shard reads the moved checkpoint when the mapping is
// resumed (checkMoved), in this process or any other sharing the store.

// ErrNotPaused is returned by Replay without DryRun for a mapping that is
// not paused, or whose shards are still finishing the batches they had in
// flight when it was paused: moving its checkpoint then could be undone by
// the next commit.
var ErrNotPaused = errors.New("engine: the mapping is not paused")

// ErrBadReplay is wrapped by the errors of a ReplayRequest that cannot be
// served as asked (an unknown starting position, AT_TIMESTAMP without a
// time, another scope for a move).
var ErrBadReplay = errors.New("engine: invalid replay")

// errMoved ends a shard's run when its checkpoint was moved while its
// mapping was paused: the shard starts again from the store.
var errMoved = errors.New("the shard's checkpoint was moved while the mapping was paused (idem replay): restarting from it")

// DefaultReplayFirst is how many of the records that would run a replay
// lists when ReplayRequest.First is 0.
const DefaultReplayFirst = 10

// replayPage is how many records a replay reads at once.
const replayPage = 1000

// ReplayRequest says from where a mapping's records are to be replayed.
type ReplayRequest struct {
	// From is the starting position: TRIM_HORIZON, LATEST or AT_TIMESTAMP.
	From source.StartingPosition
	// Timestamp is AT_TIMESTAMP's time.
	Timestamp time.Time
	// Scope, when set, asks what would run if the mapping used this
	// idempotency scope instead of its own; a dry run only.
	Scope string
	// DryRun reports without moving anything.
	DryRun bool
	// First is how many of the records that would run are listed; 0:
	// DefaultReplayFirst, negative: none.
	First int
}

// ReplayRecord names one record that would run.
type ReplayRecord struct {
	Stream         string        `json:"stream"`
	Shard          string        `json:"shard"`
	Sequence       idem.Sequence `json:"sequence"`
	PartitionKey   string        `json:"partitionKey"`
	IdempotencyKey string        `json:"idempotencyKey"`
}

// ReplayShard is a replay's account of one shard.
type ReplayShard struct {
	Shard string `json:"shard"`
	// Checkpoint is the mapping's checkpoint before the replay; "" for
	// none.
	Checkpoint idem.Sequence `json:"checkpoint"`
	// From is the starting position's sequence: the replay reads the
	// records above it.
	From      idem.Sequence `json:"from"`
	Records   uint64        `json:"records"`
	WouldRun  uint64        `json:"wouldRun"`
	WouldSkip uint64        `json:"wouldSkip"`
}

// ReplayReport is what a replay found, and did.
type ReplayReport struct {
	Mapping string `json:"mapping"`
	Stream  string `json:"stream"`
	Scope   string `json:"scope"`
	From    string `json:"from"`
	// Timestamp is AT_TIMESTAMP's time; zero otherwise.
	Timestamp time.Time `json:"timestamp,omitzero"`
	DryRun    bool      `json:"dryRun"`
	// Records counts the records read: those in retention above the
	// starting position when the replay began.
	Records uint64 `json:"records"`
	// WouldRun counts the records that would be delivered to the function.
	WouldRun uint64 `json:"wouldRun"`
	// WouldSkip counts the records whose idempotency key is completed in
	// the scope: they would be skipped, not delivered.
	WouldSkip uint64 `json:"wouldSkip"`
	// Duplicates counts the records whose payload key an earlier record of
	// the replay has: only the first runs.
	Duplicates uint64 `json:"duplicates"`
	// Filtered counts the records the mapping's filterCriteria reject.
	Filtered uint64 `json:"filtered"`
	// KeyErrors counts the records whose idempotency key cannot be
	// computed: they would go to the on-failure destination.
	KeyErrors uint64 `json:"keyErrors"`
	// First lists the first records that would run, shard by shard.
	First  []ReplayRecord `json:"first"`
	Shards []ReplayShard  `json:"shards"`
	// Moved is set when the checkpoints were moved (not a dry run).
	Moved bool `json:"moved"`
}

// ReplayProgress is how far a replay has read, for a progress bar.
type ReplayProgress struct {
	// Records is how many records were read so far.
	Records uint64 `json:"progress"`
	// Total estimates how many there are to read; 0 when the source's
	// sequences do not tell (they are not consecutive numbers).
	Total uint64 `json:"total"`
}

// Replay reports what the mapping name would run and skip if it read its
// shards again from req.From, and, without req.DryRun, moves its
// checkpoint there in every shard (see ErrNotPaused). progress, when not
// nil, is called as the records are read, from the calling goroutine; it
// is not called before the request was found valid.
func (e *Engine) Replay(ctx context.Context, name string, req ReplayRequest, progress func(ReplayProgress)) (ReplayReport, error) {
	m := e.mappingNamed(name)
	if m == nil {
		return ReplayReport{}, fmt.Errorf("%w: %q", ErrUnknownMapping, name)
	}
	cfg := &m.cfg
	scope := cfg.Scope
	if req.Scope != "" {
		if !req.DryRun && req.Scope != cfg.Scope {
			return ReplayReport{}, fmt.Errorf("%w: scope %q: only a dry run may ask about a scope other than the mapping's (%q)", ErrBadReplay, req.Scope, cfg.Scope)
		}
		scope = req.Scope
	}
	switch req.From {
	case source.TrimHorizon, source.Latest:
		req.Timestamp = time.Time{}
	case source.AtTimestamp:
		if req.Timestamp.IsZero() {
			return ReplayReport{}, fmt.Errorf("%w: AT_TIMESTAMP needs a timestamp", ErrBadReplay)
		}
	default:
		return ReplayReport{}, fmt.Errorf("%w: starting position %q: want TRIM_HORIZON, LATEST or AT_TIMESTAMP", ErrBadReplay, req.From)
	}
	if !req.DryRun {
		if err := e.checkQuiet(ctx, m); err != nil {
			return ReplayReport{}, err
		}
	}
	rep := ReplayReport{Mapping: name, Stream: cfg.Stream, Scope: scope, From: string(req.From), Timestamp: req.Timestamp, DryRun: req.DryRun, First: []ReplayRecord{}}
	first := req.First
	if first == 0 {
		first = DefaultReplayFirst
	}
	ids, err := cfg.Source.Shards(ctx)
	if err != nil {
		return rep, fmt.Errorf("listing the shards of %q: %w", cfg.Stream, err)
	}
	// The shards are read to their newest record when the replay began,
	// so that a stream written to meanwhile still ends.
	latest := make([]idem.Sequence, len(ids))
	var total uint64
	for i, id := range ids {
		sh := ReplayShard{Shard: id}
		cp, ok, err := e.store.Checkpoint(ctx, store.CheckpointKey{Mapping: name, Stream: cfg.Stream, Shard: id})
		if err != nil {
			return rep, fmt.Errorf("reading the checkpoint of shard %s: %w", id, err)
		}
		if ok {
			sh.Checkpoint = cp.Sequence
		}
		if sh.From, err = cfg.Source.Start(ctx, id, req.From, req.Timestamp); err != nil {
			return rep, fmt.Errorf("finding %s in shard %s: %w", req.From, id, err)
		}
		res, err := cfg.Source.Read(ctx, id, sh.From, 1, 1)
		if err != nil {
			return rep, fmt.Errorf("reading shard %s: %w", id, err)
		}
		latest[i] = res.Latest
		total += lag(res.Latest, sh.From)
		rep.Shards = append(rep.Shards, sh)
	}
	pr := ReplayProgress{Total: total}
	if progress != nil {
		progress(pr)
	}
	sc := replayScan{e: e, m: m, scope: scope, first: first, rep: &rep, seen: map[store.MarkKey]struct{}{}}
	for i := range rep.Shards {
		if err := sc.shard(ctx, &rep.Shards[i], latest[i], func(n int) {
			pr.Records += uint64(n)
			if progress != nil {
				progress(pr)
			}
		}); err != nil {
			return rep, err
		}
	}
	if req.DryRun {
		return rep, nil
	}
	if err := e.moveCheckpoints(ctx, m, rep.Shards); err != nil {
		return rep, err
	}
	rep.Moved = true
	e.log.Info("replay: checkpoints moved; the mapping reads from them once resumed", "mapping", name, "from", req.From, "wouldRun", rep.WouldRun, "wouldSkip", rep.WouldSkip)
	return rep, nil
}

// checkQuiet returns ErrNotPaused unless the mapping is paused and none of
// its shards in this process can still commit: each holds (paused), or is
// not processing at all, and nothing is in flight.
func (e *Engine) checkQuiet(ctx context.Context, m *mapping) error {
	name := m.cfg.Name
	p := e.pauseOf(name)
	if err := p.load(ctx, e.store, name, false); err != nil {
		return err
	}
	if !p.paused.Load() {
		return fmt.Errorf("%w: mapping %q is running; pause it first (idem mappings pause %s), replay, then resume it", ErrNotPaused, name, name)
	}
	m.mu.Lock()
	shards := m.shards
	m.mu.Unlock()
	for _, s := range shards {
		state := s.state.Load().(string)
		switch state {
		case statePaused, "starting", "stopped", "finished", "error", "waiting for parents",
			"assigned elsewhere", "leased elsewhere", "lease lost":
		default:
			return fmt.Errorf("%w: mapping %q is paused, but shard %s is still finishing its batch in flight (%s); try again in a moment", ErrNotPaused, name, s.id, state)
		}
		if n := s.inFlight.Load(); n > 0 {
			return fmt.Errorf("%w: mapping %q is paused, but shard %s still has %d records in flight; try again in a moment", ErrNotPaused, name, s.id, n)
		}
	}
	return nil
}

// moveCheckpoints sets the mapping's checkpoint of every shard to its
// From, keeping the checkpoint's counters. A checkpoint moved backwards is
// deleted first (store.Driver.DeleteCheckpoint, the explicit reset): if
// the replay is interrupted between the two, the shard has none and would
// start from the mapping's starting position, so run the replay again
// before resuming.
func (e *Engine) moveCheckpoints(ctx context.Context, m *mapping, shards []ReplayShard) error {
	if err := e.checkQuiet(ctx, m); err != nil {
		return err // resumed while the records were counted
	}
	for _, sh := range shards {
		key := store.CheckpointKey{Mapping: m.cfg.Name, Stream: m.cfg.Stream, Shard: sh.Shard}
		cp, ok, err := e.store.Checkpoint(ctx, key)
		if err != nil {
			return fmt.Errorf("reading the checkpoint of shard %s: %w", sh.Shard, err)
		}
		if ok && cp.Sequence.Compare(sh.From) > 0 {
			if err := e.store.DeleteCheckpoint(ctx, key); err != nil {
				return fmt.Errorf("resetting the checkpoint of shard %s: %w", sh.Shard, err)
			}
		}
		cp.Sequence = sh.From
		if err := e.store.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: cp}); err != nil {
			return fmt.Errorf("moving the checkpoint of shard %s to %s: %w", sh.Shard, sh.From, err)
		}
	}
	return nil
}

// checkMoved is called when a paused shard is resumed: it returns errMoved
// when the store's checkpoint is no longer the one the shard last
// committed (a replay moved it), so that the shard starts again from it.
func (s *shard) checkMoved(ctx context.Context) error {
	stored, ok, err := s.e.store.Checkpoint(ctx, s.cpKey)
	if err != nil {
		return fmt.Errorf("reading the checkpoint after a pause: %w", err)
	}
	s.mu.Lock()
	cp := s.cp
	s.mu.Unlock()
	if ok && stored.Sequence == cp.Sequence {
		return nil
	}
	return errMoved
}

// replayScan counts a replay's records.
type replayScan struct {
	e     *Engine
	m     *mapping
	scope string
	first int
	rep   *ReplayReport
	// seen holds the payload keys of the records that would run.
	seen map[store.MarkKey]struct{}
}

// shard reads sh from its From to latest and counts its records; read is
// called after each page with the number of records it held.
func (sc *replayScan) shard(ctx context.Context, sh *ReplayShard, latest idem.Sequence, read func(n int)) error {
	cfg := &sc.m.cfg
	if latest == "" || latest.Compare(sh.From) <= 0 {
		return nil
	}
	var rows []scopeRow
	byIdentity := sc.m.keyer.byIdentity()
	if byIdentity && !cfg.AtLeastOnce {
		all, err := sc.e.store.ScopeProgress(ctx, store.ProgressKey{Scope: sc.scope, Stream: cfg.Stream, Shard: sh.Shard})
		if err != nil {
			return fmt.Errorf("loading the progress of scope %q over shard %s: %w", sc.scope, sh.Shard, err)
		}
		for i := range all {
			f, err := sc.m.scopeFilter(all[i].Filter)
			if err != nil {
				return fmt.Errorf("progress of mapping %q in scope %q: %w", all[i].Mapping, sc.scope, err)
			}
			rows = append(rows, scopeRow{p: all[i].Progress, filter: f})
		}
	}
	var keys []store.MarkKey
	var legacy []store.MarkKey
	var done, legacyDone []bool
	after := sh.From
	for after.Compare(latest) < 0 {
		res, err := cfg.Source.Read(ctx, sh.Shard, after, replayPage, MaxBatchBytes)
		if err != nil {
			return fmt.Errorf("reading shard %s after %s: %w", sh.Shard, after, err)
		}
		recs := res.Records
		if len(recs) == 0 && res.Lost > 0 && res.Trimmed.Compare(after) > 0 {
			after = res.Trimmed // retention removed records meanwhile
			continue
		}
		for i := range recs {
			if recs[i].Sequence.Compare(latest) > 0 {
				recs = recs[:i]
				break
			}
		}
		if len(recs) == 0 {
			break
		}
		after = recs[len(recs)-1].Sequence
		// Records to look up, compacted in place.
		look := recs[:0]
		for i := range recs {
			r := &recs[i]
			sh.Records++
			sc.rep.Records++
			if sc.m.filters.rejects(r) {
				sc.rep.Filtered++
				continue
			}
			if err := sc.m.keyer.key(r); err != nil {
				sc.rep.KeyErrors++
				continue
			}
			look = keepAt(look, recs, i)
		}
		now := sc.e.now()
		payload := !byIdentity && !cfg.AtLeastOnce
		if payload {
			keys, done = keys[:0], append(done[:0], make([]bool, len(look))...)
			for i := range look {
				keys = append(keys, store.MarkKeyOf(sc.scope, look[i].IdempotencyKey))
			}
			if err := sc.e.store.Completed(ctx, keys, now, done); err != nil {
				return fmt.Errorf("looking up %d completion marks: %w", len(keys), err)
			}
			if sc.e.legacy.Active(now) {
				legacy, legacyDone = legacy[:0], append(legacyDone[:0], make([]bool, len(look))...)
				for i := range look {
					legacy = append(legacy, store.LegacyMarkKeyOf(sc.scope, look[i].IdempotencyKey))
				}
				if err := sc.e.store.Completed(ctx, legacy, now, legacyDone); err != nil {
					return fmt.Errorf("looking up %d legacy completion marks: %w", len(legacy), err)
				}
				for i := range done {
					done[i] = done[i] || legacyDone[i]
				}
			}
		}
		for i := range look {
			r := &look[i]
			switch {
			case cfg.AtLeastOnce:
			case payload && done[i], !payload && resolvedIn(rows, r):
				sh.WouldSkip++
				sc.rep.WouldSkip++
				continue
			case payload:
				if _, dup := sc.seen[keys[i]]; dup {
					sc.rep.Duplicates++
					continue
				}
				sc.seen[keys[i]] = struct{}{}
			}
			sh.WouldRun++
			sc.rep.WouldRun++
			if len(sc.rep.First) < sc.first {
				sc.rep.First = append(sc.rep.First, ReplayRecord{Stream: r.Stream, Shard: r.ShardID, Sequence: r.Sequence, PartitionKey: r.PartitionKey, IdempotencyKey: r.IdempotencyKey})
			}
		}
		read(len(recs))
	}
	return nil
}

// resolvedIn reports whether r, keyed by identity, is resolved in the
// scope whose progress rows are: by a mapping whose filter selects it (a
// record a mapping filtered out never ran there).
func resolvedIn(rows []scopeRow, r *idem.Record) bool {
	for i := range rows {
		if rows[i].p.Done(r.Sequence) && !rows[i].filter.rejects(r) {
			return true
		}
	}
	return false
}
