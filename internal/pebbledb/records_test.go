package pebbledb

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem/store"
)

// ownerKey returns the owner named name.
func ownerKey(name string) store.MarkKey { return store.MarkKeyOf("owners", name) }

// markWrite is a Write of owner's marking keys, with MarkOwner set.
func markWrite(owner store.MarkKey, exp time.Time, keys ...store.MarkKey) *store.Write {
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: "1"}, MarkOwner: owner}
	for _, k := range keys {
		w.Marks = append(w.Marks, store.Mark{Key: k, Expires: exp})
	}
	return w
}

// claimAt claims keys for owner at now, looking marks up.
func claimAt(t *testing.T, db *DB, owner store.MarkKey, now, until time.Time, keys ...store.MarkKey) *store.RecordClaims {
	t.Helper()
	c := &store.RecordClaims{Owner: owner, Keys: keys, Marks: true, Now: now, LeaseUntil: until}
	if err := db.ClaimRecords(context.Background(), c); err != nil {
		t.Fatalf("ClaimRecords: %v", err)
	}
	return c
}

func wantClaims(t *testing.T, what string, c *store.RecordClaims, want ...store.ClaimStatus) {
	t.Helper()
	for i, s := range c.Status {
		if s != want[i] {
			t.Fatalf("%s: statuses %v, want %v", what, c.Status, want)
		}
	}
}

// openDuringCommit opens a DB that calls f once, while the first commit
// of owner's that pinned its claims is in flight; *ran says whether it
// did.
func openDuringCommit(t *testing.T, owner store.MarkKey, f func(db *DB)) (db *DB, ran *bool) {
	ran = new(bool)
	db = openMem(t, withAfterPin(func(w *store.Write) {
		if w.MarkOwner == owner && !*ran {
			*ran = true
			f(db)
		}
	}))
	return db, ran
}

// TestRecordClaimsPinnedByCommit: once a commit with a MarkOwner has found
// the claims of the keys it marks its owner's, another owner cannot take
// them over, their leases ended, nor claim the keys it found unclaimed,
// until the commit has landed; then they are completed.
func TestRecordClaimsPinnedByCommit(t *testing.T) {
	a, b := ownerKey("a"), ownerKey("b")
	k := markKeys("scope", 0, 2)
	now := time.Unix(1_000_000, 0)
	late := now.Add(2 * time.Second) // after a's lease
	db, inFlight := openDuringCommit(t, a, func(db *DB) {
		// k[0] is a's claim, its lease ended; k[1] nobody's.
		c := claimAt(t, db, b, late, late.Add(time.Hour), k[0])
		wantClaims(t, "b over a's expired claim pinned by a's commit", c, store.InProgress)
		if !c.HeldUntil.Equal(late) {
			t.Errorf("HeldUntil of a pinned claim whose lease ended = %v, want now (%v)", c.HeldUntil, late)
		}
		wantClaims(t, "b over a key a's commit found unclaimed", claimAt(t, db, b, late, late.Add(time.Hour), k[1]), store.InProgress)
		if err := db.Commit(context.Background(), markWrite(b, late.Add(time.Hour), k[1])); !errors.Is(err, store.ErrRecordClaimLost) {
			t.Errorf("b's commit of a key a's commit pinned: %v, want ErrRecordClaimLost", err)
		}
	})
	wantClaims(t, "a", claimAt(t, db, a, now, now.Add(time.Second), k[0]), store.Acquired)
	synced, err := db.CommitPipelined(context.Background(), markWrite(a, now.Add(time.Hour), k[0], k[1]))
	if err != nil {
		t.Fatalf("a's commit: %v", err)
	}
	if err := synced(); err != nil {
		t.Fatal(err)
	}
	if !*inFlight {
		t.Fatal("the commit never called afterPin")
	}
	wantClaims(t, "b after a's commit", claimAt(t, db, b, late, late.Add(time.Hour), k...), store.Completed, store.Completed)
	db.claimMu.Lock()
	defer db.claimMu.Unlock()
	if len(db.records) != 0 {
		t.Errorf("after the commits: record claims %v, want none", db.records)
	}
}

// TestRecordClaimsUnpinnedOnFailure: a commit with a MarkOwner that fails
// once it pinned its claims leaves them as they were (a takeover of an
// expired one proceeds), removes the placeholders of the keys it found
// unclaimed, and ends the claim its owner released meanwhile, which it
// kept held until then.
func TestRecordClaimsUnpinnedOnFailure(t *testing.T) {
	a, b := ownerKey("a"), ownerKey("b")
	k := markKeys("scope", 0, 3)
	now := time.Unix(1_000_000, 0)
	lease := now.Add(time.Second)
	late := lease.Add(time.Second)
	db, inFlight := openDuringCommit(t, a, func(db *DB) {
		// a releases k[2] in another commit, while this one pins it.
		rel := &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "1"}, NewCheckpoint: store.Checkpoint{Sequence: "1"},
			Release: []store.MarkKey{k[2]}, ReleaseOwner: a}
		if err := db.Commit(context.Background(), rel); err != nil {
			t.Errorf("a's release: %v", err)
		}
		wantClaims(t, "b over a released claim pinned by a's commit", claimAt(t, db, b, now, late, k[2]), store.InProgress)
		wantClaims(t, "b over a's expired claim pinned by a's commit", claimAt(t, db, b, late, late.Add(time.Hour), k[0]), store.InProgress)
	})
	wantClaims(t, "a", claimAt(t, db, a, now, lease, k[0], k[2]), store.Acquired, store.Acquired)
	// The fence is checked after the claims: its key holds no claims
	// record, so the commit fails with everything pinned.
	w := markWrite(a, now.Add(time.Hour), k...)
	w.Fence = &store.Fence{Key: store.MarkKeyOf("leases", "shard"), Token: 1}
	if err := db.Commit(context.Background(), w); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("fenced commit: %v, want ErrFenced", err)
	}
	if !*inFlight {
		t.Fatal("the commit never called afterPin")
	}
	// a's claim of k[0] is as it was: live before its lease ends, taken
	// over after. k[1] and k[2] are free.
	c := claimAt(t, db, b, now, late, k[0])
	wantClaims(t, "b over a's live claim", c, store.InProgress)
	if !c.HeldUntil.Equal(lease) {
		t.Errorf("HeldUntil = %v, want a's lease %v", c.HeldUntil, lease)
	}
	wantClaims(t, "b after the failed commit", claimAt(t, db, b, late, late.Add(time.Hour), k...), store.Acquired, store.Acquired, store.Acquired)
	db.claimMu.Lock()
	defer db.claimMu.Unlock()
	for _, key := range k {
		if rc := db.records[key]; rc.owner != b || rc.until == noLease || rc.pins != 0 {
			t.Errorf("claim of %x: %+v, want b's", key[:4], rc)
		}
	}
}

// TestRecordClaimsTakeoverRacesCommit: owner a commits the keys it claimed,
// one a commit, while owner b takes the same keys over, their leases ended,
// and commits those it acquires. Whichever way each race goes, each key's
// mark lands exactly once: a commit of a that lost its claim is refused,
// and b finds completed a key a's commit landed (or is landing).
func TestRecordClaimsTakeoverRacesCommit(t *testing.T) {
	db := openMem(t)
	a, b := ownerKey("a"), ownerKey("b")
	k := markKeys("scope", 0, 2000)
	now := time.Unix(1_000_000, 0)
	late := now.Add(2 * time.Second)
	exp := now.Add(time.Hour)
	c := claimAt(t, db, a, now, now.Add(time.Second), k...)
	if c.Held() != len(k) {
		t.Fatalf("a's claims: %v", c.Status)
	}
	landed := make([][2]bool, len(k)) // by a, by b
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i, key := range k {
			err := db.Commit(context.Background(), markWrite(a, exp, key))
			switch {
			case err == nil:
				landed[i][0] = true
			case !errors.Is(err, store.ErrRecordClaimLost):
				t.Errorf("a's commit of key %d: %v", i, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := len(k) - 1; i >= 0; i-- {
			for {
				c := &store.RecordClaims{Owner: b, Keys: k[i : i+1], Marks: true, Now: late, LeaseUntil: late.Add(time.Hour)}
				if err := db.ClaimRecords(context.Background(), c); err != nil {
					t.Errorf("b's claim of key %d: %v", i, err)
					return
				}
				if c.Status[0] == store.InProgress {
					continue // pinned by a's commit, landing
				}
				if c.Status[0] == store.Acquired {
					if err := db.Commit(context.Background(), markWrite(b, exp, k[i])); err != nil {
						t.Errorf("b's commit of key %d it acquired: %v", i, err)
						return
					}
					landed[i][1] = true
				}
				break
			}
		}
	}()
	wg.Wait()
	for i, l := range landed {
		if l[0] == l[1] {
			t.Fatalf("key %d: landed by a %v, by b %v; want exactly one", i, l[0], l[1])
		}
	}
}
