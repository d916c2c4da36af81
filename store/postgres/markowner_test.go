package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/store"
)

// ownedWrite is a Write that marks keys under owner's claims
// (store.Write.MarkOwner).
func ownedWrite(seq string, owner store.MarkKey, keys ...store.MarkKey) *store.Write {
	w := markWrite(seq, keys...)
	w.MarkOwner = owner
	return w
}

// claimAt claims keys for owner at now with a lease until until, and
// fails the test on an error.
func claimAt(t *testing.T, s *Store, owner store.MarkKey, now, until time.Time, keys ...store.MarkKey) *store.RecordClaims {
	t.Helper()
	c := &store.RecordClaims{Owner: owner, Keys: keys, Marks: true, Now: now, LeaseUntil: until}
	if err := s.ClaimRecords(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// sent reports how many of b's statements call the function fn.
func sent(stmts []string, fn string) int {
	n := 0
	for _, sql := range stmts {
		if strings.Contains(sql, "."+fn+"(") {
			n++
		}
	}
	return n
}

// batchOf returns the statements of w's commit batch, and its gate,
// which the caller ends with done.
func batchOf(t *testing.T, s *Store, w *store.Write) ([]string, *commitGate) {
	t.Helper()
	b, g, err := s.writeBatch(w)
	if err != nil {
		t.Fatalf("writeBatch: %v", err)
	}
	var stmts []string
	for _, q := range b.QueuedQueries {
		stmts = append(stmts, q.SQL)
	}
	return stmts, g
}

// TestMarkOwnerHeldCostsNoSQL: a Write whose marks are all its
// MarkOwner's claims (the engine's every commit) sends no statement for
// the check, only the gate it sent before; a key no claim holds is
// checked by check_unclaimed, once however often it is marked, before
// the marks.
func TestMarkOwnerHeldCostsNoSQL(t *testing.T) {
	s, _ := openStore(t, WithPurgeInterval(0))
	oa := store.MarkKeyOf("owner", "a")
	k1, k2, free := store.MarkKeyOf("scope", "held-1"), store.MarkKeyOf("scope", "held-2"), store.MarkKeyOf("scope", "free")
	wantClaims(t, "a", claimKeys(t, s, oa, k1, k2), store.Acquired, store.Acquired)

	w := ownedWrite("1", oa, k1, k2, k1)
	stmts, g := batchOf(t, s, w)
	if n := sent(stmts, "check_unclaimed"); n != 0 || len(g.free) != 0 {
		t.Fatalf("check_unclaimed sent %d times for keys a holds (free %x)", n, g.free)
	}
	if n := sent(stmts, "commit_gate"); n != 1 {
		t.Fatalf("commit_gate sent %d times, want 1", n)
	}
	s.locks.done(g, w, false)

	w = ownedWrite("1", oa, free, k1, free)
	stmts, g = batchOf(t, s, w)
	if n := sent(stmts, "check_unclaimed"); n != 1 || len(g.free) != 1 || g.free[0] != free {
		t.Fatalf("check_unclaimed sent %d times for keys %x, want once for %x", n, g.free, free)
	}
	check, marks := -1, -1
	for i, sql := range stmts {
		switch {
		case strings.Contains(sql, ".check_unclaimed("):
			check = i
		case strings.Contains(sql, ".marks (key"):
			marks = i
		}
	}
	if check > marks {
		t.Fatalf("check_unclaimed at %d, after the marks at %d", check, marks)
	}
	s.locks.done(g, w, false)
	if len(s.locks.committing) != 0 {
		t.Fatalf("committing after the commits ended: %v", s.locks.committing)
	}

	// Without a MarkOwner, nothing is checked and an unclaimed key is
	// not gated.
	w = markWrite("1", free)
	if stmts, g = batchOf(t, s, w); g != nil || sent(stmts, "check_unclaimed") != 0 {
		t.Fatalf("a Write without MarkOwner: gate %+v, statements %q", g, stmts)
	}
}

// TestMarkOwnerSealsClaim: while a commit under its owner's claim is in
// flight, no other owner of the Store takes the claim over, though its
// lease ran out, nor takes the key when the claim ends meanwhile; once
// the commit failed, the takeover goes through, and the first owner's
// next commit of the key is refused.
func TestMarkOwnerSealsClaim(t *testing.T) {
	s, _ := openStore(t, WithPurgeInterval(0))
	ctx := context.Background()
	oa, ob := store.MarkKeyOf("owner", "a"), store.MarkKeyOf("owner", "b")
	k := store.MarkKeyOf("scope", "sealed")
	now := time.Now()
	lease := now.Add(time.Second)
	wantClaims(t, "a", claimAt(t, s, oa, now, lease, k), store.Acquired)

	w := ownedWrite("1", oa, k)
	g, err := s.locks.gate(w)
	if err != nil || g == nil || len(g.keys) != 1 {
		t.Fatalf("gate = %+v, %v", g, err)
	}
	later := lease.Add(time.Second)
	c := claimAt(t, s, ob, later, later.Add(time.Minute), k)
	wantClaims(t, "b over a's expired claim, a's commit in flight", c, store.InProgress)
	if !c.HeldUntil.Equal(lease) {
		t.Fatalf("HeldUntil %v, want a's lease %v", c.HeldUntil, lease)
	}
	// b's own commit of k is refused while a's is in flight.
	if _, err := s.locks.gate(ownedWrite("2", ob, k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("gate of b's commit while a's is in flight: %v, want ErrRecordClaimLost", err)
	}
	// a's claim ends (its shard stops): the key stays held.
	if err := s.ReleaseRecordClaims(ctx, oa); err != nil {
		t.Fatal(err)
	}
	c = claimAt(t, s, ob, later, later.Add(time.Minute), k)
	wantClaims(t, "b once a's claim ended, a's commit in flight", c, store.InProgress)
	if !c.HeldUntil.Equal(later) {
		t.Fatalf("HeldUntil %v, want the claimer's now %v", c.HeldUntil, later)
	}
	s.locks.done(g, w, false) // the commit failed: nothing marks k

	wantClaims(t, "b after a's commit failed", claimAt(t, s, ob, later, later.Add(time.Minute), k), store.Acquired)
	if err := s.Commit(ctx, ownedWrite("1", oa, k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("a's commit after b took k over: %v, want ErrRecordClaimLost", err)
	}
	if err := s.Commit(ctx, ownedWrite("1", ob, k)); err != nil {
		t.Fatalf("b's commit: %v", err)
	}
}

// TestMarkOwnerUnclaimedAcrossStores: a key that no claim of the
// committing Store holds must be claimed by no other process either: a
// commit that marks it under a MarkOwner while another Store holds its
// claim is refused, and lands once that claim ended.
func TestMarkOwnerUnclaimedAcrossStores(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	ctx := context.Background()
	k := store.MarkKeyOf("scope", "elsewhere")
	wantClaims(t, "b", claimKeys(t, b, ob, k), store.Acquired)
	if err := a.Commit(ctx, ownedWrite("1", oa, k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("a's commit of a key b claims: %v, want ErrRecordClaimLost", err)
	}
	if _, ok, err := a.Checkpoint(ctx, store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"}); err != nil || ok {
		t.Fatalf("checkpoint after the refused commit: %v, %v; want none", ok, err)
	}
	if err := b.ReleaseRecordClaims(ctx, ob); err != nil {
		t.Fatal(err)
	}
	if err := b.locks.flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, ownedWrite("1", oa, k)); err != nil {
		t.Fatalf("a's commit once b's claim ended: %v", err)
	}
	wantClaims(t, "b after a's commit", claimKeys(t, b, ob, k), store.Completed)
}

// TestCheckUnclaimedHoldsClaimers: check_unclaimed holds the locks of the
// keys it checked until its transaction ends, so that no process claims
// them while the commit may still land.
func TestCheckUnclaimedHoldsClaimers(t *testing.T) {
	a, b, _, ob := twoStores(t)
	ctx := context.Background()
	k := store.MarkKeyOf("scope", "checked")
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, a.q.checkUnclaimed, keyArgs([]store.MarkKey{k}), []int64{a.locks.lockID(k)}); err != nil {
		t.Fatalf("check_unclaimed of a free key: %v", err)
	}
	wantClaims(t, "b while a's commit is in flight", claimKeys(t, b, ob, k), store.InProgress)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, "b after a's commit ended", claimKeys(t, b, ob, k), store.Acquired)
}
