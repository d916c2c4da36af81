package pebbledb

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// recordClaim is a record claim held in memory (see DB.records).
type recordClaim struct {
	owner store.MarkKey
	until int64 // lease end, Unix nanoseconds
}

// ClaimRecords claims c.Keys for c.Owner in order, up to the first key
// another owner's live claim holds (store.RecordClaims). Claims are kept
// in memory, under the lock that also orders them against the commits
// that end them; the marks are looked up after, outside it, all at once,
// so that shards claiming at once read Pebble in parallel (keys the mark
// filter rules out are not read at all). That order is safe: a commit adds
// its marks to the filter and applies them before it ends the claims they
// replace, so a key acquired here after another owner's claim ended has
// that owner's mark visible to the lookup that follows, and is reported
// Completed (and its claim let go) rather than run again.
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
				delete(db.records, k)
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
		if rc, ok := db.records[k]; ok && rc.owner != c.Owner && rc.until > now {
			// Held elsewhere, unless it is completed already: a mark
			// outranks a claim.
			if done, err := db.marked(c, i); err != nil {
				return err
			} else if done {
				c.Status[i] = store.Completed
				continue
			}
			c.Status[i] = store.InProgress
			c.HeldUntil = time.Unix(0, rc.until)
			return nil
		}
		db.records[k] = recordClaim{owner: c.Owner, until: until}
		c.Status[i] = store.Acquired
	}
	return nil
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
// completed, whoever's. The
// caller holds claimMu.
func (db *DB) endClaims(w *store.Write) {
	if w.EndRange {
		db.endRange(w)
	}
	if len(db.records) == 0 {
		return
	}
	for _, k := range w.Release {
		if rc, ok := db.records[k]; ok && rc.owner == w.ReleaseOwner {
			delete(db.records, k)
		}
	}
	for i := range w.Marks {
		delete(db.records, w.Marks[i].Key)
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
