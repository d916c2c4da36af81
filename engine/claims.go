package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Records run only under a claim (store.RecordClaims): a window's records
// are claimed together, in one call of the store, before any of them runs, and
// each claim ends with the commit that resolves its record. Completion
// marks and progress say that a record ran; the claim says that it is
// running, so that two shards reading one payload key, or two mappings of
// one scope reading one record, never run it at the same time.
//
// A window runs the records before the first one claimed elsewhere; that
// record and the ones after it wait for the next window, read again from
// the checkpoint, as a record being retried holds up its shard: skipped if
// the other run completed it, run if its claim was released or expired.

// claimMargin is how long a claim outlives the invocations it guards, for
// the commit that ends it.
const claimMargin = 30 * time.Second

// errClaimLost reports that a claim of the window's records ran out and
// was taken by another owner before an invocation: the shard restarts from
// its checkpoint, and waits for that owner.
var errClaimLost = errors.New("a claim on the window's records was taken over by another owner: restarting from the checkpoint")

// claimLease is how long a claim is taken for: two invocations and the
// commit after them, so that a batch's retries renew it only now and then.
func (s *shard) claimLease() time.Duration {
	return 2*s.m.cfg.FunctionTimeout + claimMargin
}

// markKeys returns the mark keys of recs' idempotency keys in the scope.
func (s *shard) markKeys(recs []idem.Record) []store.MarkKey {
	keys := make([]store.MarkKey, len(recs))
	for i := range recs {
		keys[i] = store.MarkKeyOf(s.m.cfg.Scope, recs[i].IdempotencyKey)
	}
	return keys
}

// claimed is what claiming a window's records found.
type claimed struct {
	run     []idem.Record   // claimed and not resolved: to run, in order
	skipped []idem.Sequence // already resolved in the scope
	cut     bool            // a record was claimed elsewhere: run holds those before it
	wait    time.Duration   // how long to wait when nothing could be claimed
}

// claim claims recs, in order, and sorts them: those already resolved in
// the scope (completion marks, or any mapping's progress), those to run,
// and, from the first record another owner holds, those left for a later
// window. recs is compacted in place into the result's run.
func (s *shard) claim(ctx context.Context, recs []idem.Record) (claimed, error) {
	cfg := &s.m.cfg
	if len(recs) == 0 || cfg.AtLeastOnce {
		return claimed{run: recs}, nil
	}
	byIdentity := s.m.keyer.byIdentity()
	if byIdentity && s.m.alone {
		// Nobody else can run these records: only resolve them.
		out := claimed{}
		run := recs[:0]
		for i := range recs {
			if s.resolvedElsewhere(s.rows, &recs[i]) {
				out.skipped = append(out.skipped, recs[i].Sequence)
				continue
			}
			run = keepAt(run, recs, i)
		}
		out.run = run
		return out, nil
	}
	if byIdentity {
		return s.claimRange(ctx, recs)
	}
	now := s.e.now()
	rc := store.RecordClaims{
		Owner: s.owner, Keys: s.markKeys(recs), Marks: true,
		LeaseUntil: now.Add(s.claimLease()), Now: now, Fence: s.fence.Load(),
	}
	// Keys completed under their legacy keys (store.Legacy) are looked up
	// too; renewClaims need not, for legacy marks never appear later.
	keyOf := func(i int) string { return recs[i].IdempotencyKey }
	if err := s.e.legacy.ClaimRecords(ctx, s.e.store, &rc, cfg.Scope, keyOf); err != nil {
		return claimed{}, fmt.Errorf("claiming %d records: %w", len(recs), err)
	}
	s.claimedUntil.Store(rc.LeaseUntil.UnixNano())
	held := rc.Held()
	if held > 0 {
		s.waits = 0
	}
	var out claimed
	if held < len(recs) {
		out.cut = true
		if held == 0 {
			out.wait = s.waitFor(rc.HeldUntil.Sub(now))
		}
	}
	run := recs[:0]
	for i := 0; i < held; i++ {
		if rc.Status[i] == store.Completed {
			out.skipped = append(out.skipped, recs[i].Sequence)
			continue
		}
		run = keepAt(run, recs, i)
	}
	out.run = run
	return out, nil
}

// waitFor is how long a shard whose next record is claimed elsewhere
// waits before it tries again: 10 ms, doubling while it keeps finding the
// record held, up to 500 ms or the claim's lease, whichever ends first.
// The holder's commit (or, for a range, its moving on to its next window)
// usually ends the claim within milliseconds.
func (s *shard) waitFor(untilLeaseEnds time.Duration) time.Duration {
	n := min(s.waits, 6)
	s.waits++
	return max(min(10*time.Millisecond<<n, 500*time.Millisecond, untilLeaseEnds), time.Millisecond)
}

// A mapping's range claim runs from its window to the end of the shard
// (rangeEnd): it reads the shard in order, so all it will run lies ahead.
// It is taken again only when it is older than rangeRefresh, or its lease
// nears its end: a busy shard claims a few times a second, not once a
// window, and each time its start moves up to the window being read.
// When another mapping of the scope holds a range that overlaps it (two
// mappings' ranges to the end always do), the mapping claims just its
// window instead, which is held only while the other's range really
// covers it: the mapping behind another then follows it, a window at a
// time, and waits at most about rangeRefresh once it has caught up. The
// scope's other progress read with a claim stays valid while the claim
// lives: no other mapping can resolve a record in its range meanwhile.

// rangeEnd is a sequence above every source's: Kinesis numbers records
// with 56 digits, Redis Streams with 40.
const rangeEnd idem.Sequence = "99999999999999999999999999999999999999999999999999999999999999999999999999999999"

// rangeRefresh is how long a range claim serves before it is taken again
// from the window being read.
const rangeRefresh = 50 * time.Millisecond

// claimRange makes sure the window's records keyed by identity lie in the
// shard's range claim (store.RangeClaim), taking it again when it is
// missing, old or short of lease, and resolves those another mapping of
// the scope ran. A range another mapping holds makes the window wait
// whole.
func (s *shard) claimRange(ctx context.Context, recs []idem.Record) (claimed, error) {
	from, to := recs[0].Sequence, recs[len(recs)-1].Sequence
	s.rangeMu.Lock()
	now := s.e.now()
	fresh := s.rangeFrom != "" && s.rangeFrom.Compare(from) <= 0 && s.rangeTo.Compare(to) >= 0 &&
		now.Sub(s.rangeAt) < rangeRefresh && now.Add(s.m.cfg.FunctionTimeout+claimMargin).Before(s.rangeUntil)
	s.rangeMu.Unlock()
	if !fresh {
		rc, err := s.takeRange(ctx, from, rangeEnd)
		if err == nil && rc.Held {
			// Another mapping holds a range from somewhere ahead: claim
			// just this window.
			rc, err = s.takeRange(ctx, from, to)
		}
		if err != nil {
			return claimed{}, fmt.Errorf("claiming records from %s: %w", from, err)
		}
		if rc.Held {
			return claimed{run: recs[:0], cut: true, wait: s.waitFor(rc.HeldUntil.Sub(now))}, nil
		}
	}
	s.waits = 0
	s.rangeMu.Lock()
	rows := s.rangeRows
	s.rangeMu.Unlock()
	var out claimed
	run := recs[:0]
	for i := range recs {
		if s.resolvedElsewhere(rows, &recs[i]) {
			out.skipped = append(out.skipped, recs[i].Sequence)
			continue
		}
		run = keepAt(run, recs, i)
	}
	out.run = run
	return out, nil
}

// takeRange claims [from, to] of the shard for the mapping, and keeps the
// scope's other progress read with it; from "" renews the range held now.
func (s *shard) takeRange(ctx context.Context, from, to idem.Sequence) (store.RangeClaim, error) {
	s.rangeMu.Lock()
	defer s.rangeMu.Unlock()
	now := s.e.now()
	if from == "" {
		if from, to = s.rangeFrom, s.rangeTo; from == "" {
			return store.RangeClaim{}, nil // nothing to renew
		}
	}
	rc := store.RangeClaim{Key: s.pkKey, From: from, To: to, LeaseUntil: now.Add(s.claimLease()), Now: now, Fence: s.fence.Load()}
	if err := s.e.store.ClaimRange(ctx, &rc); err != nil {
		return rc, err
	}
	if rc.Held {
		return rc, nil
	}
	rows, err := s.otherRows(rc.Progress)
	if err != nil {
		return rc, err
	}
	s.rangeFrom, s.rangeTo, s.rangeUntil, s.rangeAt, s.rangeRows = rc.From, rc.To, rc.LeaseUntil, now, rows
	s.claimedUntil.Store(rc.LeaseUntil.UnixNano())
	return rc, nil
}

// endClaims ends the shard's claims: its range claim, when it has one,
// with a write of its own, and, on a store whose record claims stay with
// this process (store.RecordClaimReleaser), its record claims. A shard
// that goes idle or stops lets the records it claimed go at once, rather
// than when the lease runs out.
func (s *shard) endClaims(ctx context.Context) error {
	if r, ok := s.e.store.(store.RecordClaimReleaser); ok && !s.m.cfg.AtLeastOnce && !s.m.keyer.byIdentity() {
		if err := r.ReleaseRecordClaims(ctx, s.owner); err != nil {
			return fmt.Errorf("ending the claims of records: %w", err)
		}
	}
	s.rangeMu.Lock()
	defer s.rangeMu.Unlock()
	if s.rangeFrom == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &store.Write{Checkpoint: s.cpKey, NewCheckpoint: s.cp, ProgressKey: s.pkKey, EndRange: true}
	s.fenceWrite(w)
	if err := s.e.store.Commit(ctx, w); err != nil {
		return fmt.Errorf("ending the claim of records from %s: %w", s.rangeFrom, err)
	}
	s.rangeFrom, s.rangeTo, s.rangeUntil, s.rangeAt, s.rangeRows = "", "", time.Time{}, time.Time{}, nil
	return nil
}

// scopeRow is another mapping's progress over the shard, with its filter.
type scopeRow struct {
	p      store.Progress
	filter *filterSet
}

// scopeRows reads the progress of the scope's other mappings over the
// shard (and the scope-wide progress of earlier versions).
func (s *shard) scopeRows(ctx context.Context) ([]scopeRow, error) {
	all, err := s.e.store.ScopeProgress(ctx, s.pkKey)
	if err != nil {
		return nil, fmt.Errorf("loading the progress of scope %q: %w", s.m.cfg.Scope, err)
	}
	return s.otherRows(all)
}

// otherRows keeps the progress of mappings other than this one, with their
// filters compiled.
func (s *shard) otherRows(all []store.MappingProgress) ([]scopeRow, error) {
	rows := make([]scopeRow, 0, len(all))
	for i := range all {
		mp := &all[i]
		if mp.Mapping == s.m.cfg.Name && mp.Mapping != "" {
			continue // this mapping's own: s.prog is newer
		}
		f, err := s.m.scopeFilter(mp.Filter)
		if err != nil {
			return nil, fmt.Errorf("progress of mapping %q in scope %q: %w", mp.Mapping, s.m.cfg.Scope, err)
		}
		rows = append(rows, scopeRow{p: mp.Progress, filter: f})
	}
	return rows, nil
}

// scopeFilter compiles a filter read from a progress, once per encoding.
func (m *mapping) scopeFilter(encoded string) (*filterSet, error) {
	if encoded == m.filters.encoded {
		return m.filters, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.scopeFilters[encoded]; ok {
		return f, nil
	}
	f, err := decodeFilterSet(encoded)
	if err != nil {
		return nil, err
	}
	m.scopeFilters[encoded] = f
	return f, nil
}

// resolvedElsewhere reports whether r is resolved in the scope: by this
// mapping's own progress, or by another mapping's whose filter selects r
// (a record another mapping filtered out never ran there, though its
// checkpoint moved over it).
func (s *shard) resolvedElsewhere(rows []scopeRow, r *idem.Record) bool {
	s.mu.Lock()
	done := s.prog.Done(r.Sequence)
	s.mu.Unlock()
	if done {
		return true
	}
	for i := range rows {
		if rows[i].p.Done(r.Sequence) && !rows[i].filter.rejects(r) {
			return true
		}
	}
	return false
}

// renewClaims takes the claims of b again before it is invoked, when the
// window's claims may run out before the invocation and its commit end: a batch retried
// for long keeps its records claimed. A record claimed by another owner
// meanwhile (its claim ran out and was taken), or completed elsewhere,
// ends the window with errClaimLost.
func (s *shard) renewClaims(ctx context.Context, b []idem.Record) error {
	cfg := &s.m.cfg
	byIdentity := s.m.keyer.byIdentity()
	if cfg.AtLeastOnce || (s.m.alone && byIdentity) {
		return nil
	}
	now := s.e.now()
	if until := s.claimedUntil.Load(); until != 0 && now.Add(cfg.FunctionTimeout+claimMargin).UnixNano() < until {
		return nil
	}
	lease := now.Add(s.claimLease())
	if byIdentity {
		rc, err := s.takeRange(ctx, "", "")
		if err != nil {
			return fmt.Errorf("renewing the claim of records from %s: %w", rc.From, err)
		}
		if rc.Held {
			return errClaimLost
		}
		// The range may have run out and been taken, run and ended by
		// another mapping meanwhile: what it resolved is not run again.
		s.rangeMu.Lock()
		rows := s.rangeRows
		s.rangeMu.Unlock()
		for i := range b {
			if s.resolvedElsewhere(rows, &b[i]) {
				return errClaimLost
			}
		}
		return nil
	}
	// Marks are looked up too: a claim that ran out may have been taken,
	// and ended by its owner's mark, which leaves no claim to find.
	rc := store.RecordClaims{Owner: s.owner, Keys: s.markKeys(b), Marks: true, LeaseUntil: lease, Now: now, Fence: s.fence.Load()}
	if err := s.e.store.ClaimRecords(ctx, &rc); err != nil {
		return fmt.Errorf("renewing the claims of %d records: %w", len(b), err)
	}
	for _, st := range rc.Status {
		if st != store.Acquired {
			return errClaimLost
		}
	}
	return nil
}

// setAlone decides, before the mappings start, which of them are alone in
// their scope: keys by identity over a store this process owns alone
// (store.ProcessLocal), and no other mapping of this engine reads the same
// stream in the same scope. Their records need no claims.
func (e *Engine) setAlone(mappings []*mapping) {
	pl, ok := e.store.(store.ProcessLocal)
	if !ok || !pl.ProcessLocal() {
		return
	}
	for _, m := range mappings {
		if !m.keyer.byIdentity() {
			continue
		}
		alone := true
		for _, o := range mappings {
			if o != m && o.cfg.Scope == m.cfg.Scope && o.cfg.Stream == m.cfg.Stream {
				alone = false
			}
		}
		m.alone = alone
	}
}
