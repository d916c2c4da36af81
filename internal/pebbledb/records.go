package pebbledb

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// recordClaim is a record claim held in memory (see DB.records). One
// whose until is noLease is a placeholder, not a claim: it stands for a
// key that a commit in flight marks and found unclaimed, or whose claim
// was ended while such a commit had it pinned, so that no other owner
// claims the key before the commit lands or fails (pinClaims).
type recordClaim struct {
	owner store.MarkKey
	until int64 // lease end, Unix nanoseconds; noLease for a placeholder
	// pins counts the commits in flight that mark the key for owner
	// (Write.MarkOwner): while one does, the claim holds its key
	// whatever its lease, and ending it leaves a placeholder.
	pins int32
}

// noLease is the until of a placeholder: a lease that ended before any
// other, held only while a commit in flight pins it.
const noLease = math.MinInt64

// heldAt reports whether the claim keeps other owners off its key at now.
func (rc recordClaim) heldAt(now int64) bool { return rc.until > now || rc.pins > 0 }

// ClaimRecords claims c.Keys for c.Owner in order, up to the first key
// another owner's live claim holds (store.RecordClaims). Claims are kept
// in memory, under the lock that also orders them against the commits
// that end them; the marks are looked up after, outside it, all at once,
// so that shards claiming at once read Pebble in parallel (keys the mark
// filter rules out are not read at all). That order is safe: a commit adds
// its marks to the filter and applies them before it ends the claims they
// replace, so a key acquired here after another owner's claim ended has
// that owner's mark visible to the lookup that follows, and is reported
// Completed (and its claim let go) rather than run again. A claim that a
// commit in flight pinned (Write.MarkOwner) is held whatever its lease:
// the commit checked that its owner holds it, and lands.
//
// Errors: store.ErrFenced (nothing claimed), ErrClosed, ctx.Err().
func (db *DB) ClaimRecords(ctx context.Context, c *store.RecordClaims) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	c.Reset()
	if err := db.claimRecords(c); err != nil {
		return err
	}
	if !c.Marks {
		return nil
	}
	// The keys acquired, up to the first held elsewhere, all looked up
	// at once.
	n := 0
	for n < len(c.Keys) && (c.Status[n] == store.Acquired || c.Status[n] == store.Completed) {
		n++
	}
	if n == 0 {
		return nil
	}
	done := make([]bool, n)
	if err := db.lookupMarks(c.Keys[:n], c.Now.UnixNano(), done); err != nil {
		return err
	}
	var completed []store.MarkKey
	for i, k := range c.Keys[:n] {
		if done[i] && c.Status[i] == store.Acquired {
			c.Status[i] = store.Completed
			completed = append(completed, k)
		}
	}
	if len(completed) > 0 {
		db.claimMu.Lock()
		for _, k := range completed {
			if rc, ok := db.records[k]; ok && rc.owner == c.Owner {
				db.endRecordClaim(k, rc)
			}
		}
		db.claimMu.Unlock()
	}
	return nil
}

// claimRecords takes c's claims, up to the first key held elsewhere.
func (db *DB) claimRecords(c *store.RecordClaims) error {
	now, until := c.Now.UnixNano(), c.LeaseUntil.UnixNano()
	db.claimMu.Lock()
	defer db.claimMu.Unlock()
	if c.Fence != nil {
		if err := db.checkFence(c.Fence); err != nil {
			return fmt.Errorf("pebbledb: claiming %d records: %w", len(c.Keys), err)
		}
	}
	for i, k := range c.Keys {
		rc, ok := db.records[k]
		if ok && rc.owner != c.Owner && rc.heldAt(now) {
			// Held elsewhere, unless it is completed already: a mark
			// outranks a claim.
			if done, err := db.marked(c, i); err != nil {
				return err
			} else if done {
				c.Status[i] = store.Completed
				continue
			}
			c.Status[i] = store.InProgress
			// A pinned claim whose lease ended is held until its
			// commit lands, any moment now.
			c.HeldUntil = time.Unix(0, max(rc.until, now))
			return nil
		}
		if !ok || rc.owner != c.Owner {
			rc = recordClaim{owner: c.Owner} // a claim taken over keeps no pins
		}
		rc.until = until
		db.records[k] = rc
		c.Status[i] = store.Acquired
	}
	return nil
}

// endRecordClaim ends the claim rc of k. One that a commit in flight
// pinned becomes a placeholder instead: still held until that commit
// lands, which ends it, or fails, which removes it (unpin). The caller
// holds claimMu.
func (db *DB) endRecordClaim(k store.MarkKey, rc recordClaim) {
	if rc.pins > 0 {
		rc.until = noLease
		db.records[k] = rc
		return
	}
	delete(db.records, k)
}

// pinClaims checks the claims a w with a MarkOwner replaces
// (Write.MarkOwner), and pins them for the commit of w, which must then
// end them (endClaims) or, if it fails, unpin them: a claim found
// MarkOwner's could otherwise be taken over, its lease ended, between the
// check and the moment w is applied, and the record run again by an owner
// that would not find w's mark. It costs a map lookup and a store a key.
//
// A key with no claim of MarkOwner's gets a placeholder, so that no other
// owner claims it once checked, and its marks are then looked up, outside
// claimMu, expired ones too (a mark not yet purged counts): a commit that
// marked the key applied its mark, and filed it, before it ended the
// claim, so the lookup finds it. A key w marks twice is checked against
// what the store held before w, and passes or fails as it would once.
//
// Errors: store.ErrRecordClaimLost (nothing pinned), lookupMarks'.
func (db *DB) pinClaims(w *store.Write) error {
	owner := w.MarkOwner
	var free []store.MarkKey // keys with no claim of owner's: looked up
	db.claimMu.Lock()
	for i := range w.Marks {
		k := w.Marks[i].Key
		rc, ok := db.records[k]
		if ok && rc.owner != owner {
			db.unpin(w.Marks[:i])
			db.claimMu.Unlock()
			return claimHeldError(k, owner, rc.owner)
		}
		if !ok {
			rc = recordClaim{owner: owner, until: noLease}
		}
		if rc.until == noLease {
			free = append(free, k)
		}
		rc.pins++
		db.records[k] = rc
	}
	db.claimMu.Unlock()
	if len(free) == 0 {
		return nil
	}
	done := make([]bool, len(free))
	err := db.lookupMarks(free, math.MinInt64, done)
	if i := slices.Index(done, true); err == nil && i >= 0 {
		err = fmt.Errorf("record %x, claimed by nobody (owner %x), is marked already: %w", free[i], owner, store.ErrRecordClaimLost)
	}
	if err != nil {
		db.claimMu.Lock()
		db.unpin(w.Marks)
		db.claimMu.Unlock()
	}
	return err
}

// claimHeldError reports that owner's commit of key found its claim held
// by holder. (Formatting the keys where pinClaims loops would have them
// escape, and allocate, at every key.)
func claimHeldError(key, owner, holder store.MarkKey) error {
	return fmt.Errorf("record %x: the claim of owner %x is held by owner %x: %w", key, owner, holder, store.ErrRecordClaimLost)
}

// unpin takes back the pins pinClaims put on the claims of marks, for a
// commit that failed: a claim stays as it was, lease included, and a
// placeholder no other commit pins goes. The caller holds claimMu.
func (db *DB) unpin(marks []store.Mark) {
	for i := range marks {
		k := marks[i].Key
		rc, ok := db.records[k]
		if !ok {
			continue
		}
		if rc.pins--; rc.pins <= 0 && rc.until == noLease {
			delete(db.records, k)
			continue
		}
		db.records[k] = rc
	}
}

// marked reports whether c asks for marks and c.Keys[i] has one live at
// c.Now.
func (db *DB) marked(c *store.RecordClaims, i int) (bool, error) {
	if !c.Marks {
		return false, nil
	}
	var done [1]bool
	err := db.lookupMarks(c.Keys[i:i+1], c.Now.UnixNano(), done[:])
	return done[0], err
}

// endClaims ends the claims a committed w ends: its range claim, its
// releases, for their owner, and the record claims of the keys it marked
// completed, whoever's (with a MarkOwner, pinClaims found them all
// MarkOwner's, or free, and pinned them: w's pins are taken back). A
// claim another commit in flight pinned is left a placeholder
// (endRecordClaim). The caller holds claimMu.
func (db *DB) endClaims(w *store.Write) {
	if w.EndRange {
		db.endRange(w)
	}
	if len(db.records) == 0 {
		return
	}
	for _, k := range w.Release {
		if rc, ok := db.records[k]; ok && rc.owner == w.ReleaseOwner {
			db.endRecordClaim(k, rc)
		}
	}
	pinned := w.MarkOwner != (store.MarkKey{})
	for i := range w.Marks {
		k := w.Marks[i].Key
		rc, ok := db.records[k]
		if !ok {
			continue
		}
		if pinned {
			rc.pins--
		}
		db.endRecordClaim(k, rc)
	}
}

// ScopeProgress returns the progress of every mapping of key.Scope over
// key.Stream and key.Shard, the scope-wide progress (Mapping "") included.
//
// Errors: ErrClosed, ctx.Err().
func (db *DB) ScopeProgress(ctx context.Context, key store.ProgressKey) ([]store.MappingProgress, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	release, err := db.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	wrap := func(err error) error {
		return fmt.Errorf("pebbledb: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	key.Mapping = ""
	lower := progressKey(key)
	upper := prefixEnd(lower)
	it, err := db.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, wrap(err)
	}
	defer it.Close()
	var out []store.MappingProgress
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		mp := store.MappingProgress{}
		if len(k) > len(lower) {
			r := reader{b: k[len(lower):]}
			mp.Mapping = string(r.bytes(r.uvarint("progress key: mapping"), "progress key: mapping"))
			if err := r.end("progress key"); err != nil {
				return nil, wrap(err)
			}
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, wrap(err)
		}
		if mp.Progress, err = decodeProgress(v); err != nil {
			return nil, wrap(fmt.Errorf("mapping %q: %w", mp.Mapping, err))
		}
		out = append(out, mp)
	}
	if err := it.Error(); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// rangeClaim is a range claim held in memory (see DB.ranges).
type rangeClaim struct {
	from, to idem.Sequence
	until    int64 // lease end, Unix nanoseconds
}

// ClaimRange claims c's range for its mapping unless another mapping's
// live range overlaps it, then reads the scope's progress
// (store.RangeClaim).
//
// Errors: store.ErrFenced (nothing claimed), ErrClosed, ctx.Err().
func (db *DB) ClaimRange(ctx context.Context, c *store.RangeClaim) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	c.Held, c.HeldUntil, c.Progress = false, time.Time{}, nil
	shard := c.Key
	shard.Mapping = ""
	sk := string(progressKey(shard))
	now := c.Now.UnixNano()
	held := func() (bool, error) {
		db.claimMu.Lock()
		defer db.claimMu.Unlock()
		if c.Fence != nil {
			if err := db.checkFence(c.Fence); err != nil {
				return false, fmt.Errorf("pebbledb: claiming a range of scope %q stream %q shard %s: %w", shard.Scope, shard.Stream, shard.Shard, err)
			}
		}
		rs := db.ranges[sk]
		for m, r := range rs {
			if m == c.Key.Mapping || r.until <= now || r.to.Compare(c.From) < 0 || r.from.Compare(c.To) > 0 {
				continue
			}
			if !c.Held || r.until < c.HeldUntil.UnixNano() {
				c.Held, c.HeldUntil = true, time.Unix(0, r.until)
			}
		}
		if c.Held {
			return true, nil
		}
		if rs == nil {
			rs = make(map[string]rangeClaim)
			db.ranges[sk] = rs
		}
		rs[c.Key.Mapping] = rangeClaim{from: c.From, to: c.To, until: c.LeaseUntil.UnixNano()}
		return false, nil
	}
	h, err := held()
	release()
	if err != nil || h {
		return err
	}
	c.Progress, err = db.ScopeProgress(ctx, c.Key)
	return err
}

// endRange ends the range claim a committed w ends. The caller holds
// claimMu.
func (db *DB) endRange(w *store.Write) {
	shard := w.ProgressKey
	shard.Mapping = ""
	sk := string(progressKey(shard))
	if rs := db.ranges[sk]; rs != nil {
		delete(rs, w.ProgressKey.Mapping)
		if len(rs) == 0 {
			delete(db.ranges, sk)
		}
	}
}
