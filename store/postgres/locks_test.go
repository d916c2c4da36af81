package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// openPeer opens a second Store over h's schema: another process sharing
// the store.
func openPeer(t *testing.T, h *harness) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, h.dsn, WithSchema(h.schema), WithPurgeInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// twoStores opens two Stores over one fresh schema, as two processes, and
// names an owner for each.
func twoStores(t *testing.T) (a, b *Store, oa, ob store.MarkKey) {
	t.Helper()
	a, h := openStore(t, WithPurgeInterval(0))
	return a, openPeer(t, h), store.MarkKeyOf("owner", "a"), store.MarkKeyOf("owner", "b")
}

// claimKeys claims keys for owner at now with a minute's lease, looking
// marks up, and fails the test on an error.
func claimKeys(t *testing.T, s *Store, owner store.MarkKey, keys ...store.MarkKey) *store.RecordClaims {
	t.Helper()
	now := time.Now()
	c := &store.RecordClaims{Owner: owner, Keys: keys, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
	if err := s.ClaimRecords(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantClaims fails the test unless c's statuses are want.
func wantClaims(t *testing.T, what string, c *store.RecordClaims, want ...store.ClaimStatus) {
	t.Helper()
	if fmt.Sprint(c.Status) != fmt.Sprint(want) {
		t.Fatalf("%s: Status %v, want %v", what, c.Status, want)
	}
}

// eventually claims keys for owner until every one is acquired: a claim
// another Store ended is let go by its lock session soon after, not at
// once. No timing is asserted; the test fails only after a minute.
func eventually(t *testing.T, what string, s *Store, owner store.MarkKey, keys ...store.MarkKey) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		c := claimKeys(t, s, owner, keys...)
		if c.Held() == len(keys) {
			for i, st := range c.Status {
				if st != store.Acquired {
					t.Fatalf("%s: key %d is %v", what, i, st)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after a minute", what, c.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRecordClaimsAcrossStores: two Stores over one schema, as two
// processes: a key one holds is in progress for the other until a commit
// marks it (then completed at once), releases it, its shard releases its
// owner's claims, or its Store closes; and a window held at one key takes
// nothing past it.
func TestRecordClaimsAcrossStores(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	ctx := context.Background()
	k := make([]store.MarkKey, 6)
	for i := range k {
		k[i] = store.MarkKeyOf("scope", fmt.Sprint("key-", i))
	}
	const A, P, C = store.Acquired, store.InProgress, store.Completed

	wantClaims(t, "a", claimKeys(t, a, oa, k[0], k[1], k[2], k[3]), A, A, A, A)
	c := claimKeys(t, b, ob, k[0])
	wantClaims(t, "b over a's key", c, P)
	if !c.HeldUntil.Equal(c.LeaseUntil) {
		t.Fatalf("HeldUntil %v, want the claimer's own lease %v", c.HeldUntil, c.LeaseUntil)
	}
	wantClaims(t, "b held in the middle", claimKeys(t, b, ob, k[4], k[1], k[5]), A, P, 0)
	// b kept nothing past the held key: a gets k[5].
	eventually(t, "a past b's held key", a, oa, k[5])
	wantClaims(t, "a over b's key", claimKeys(t, a, oa, k[4]), P)

	// A mark ends the claim at once for every claimer: the mark is looked
	// up when the lock cannot be taken.
	w := &store.Write{
		Checkpoint:    store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"},
		NewCheckpoint: store.Checkpoint{Sequence: "1"},
		Marks:         []store.Mark{{Key: k[0], Expires: time.Now().Add(time.Hour)}},
		Release:       []store.MarkKey{k[1]},
		ReleaseOwner:  oa,
	}
	if err := a.Commit(ctx, w); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, "b over a's marked key", claimKeys(t, b, ob, k[0]), C)
	eventually(t, "b over a's released key", b, ob, k[1])
	if err := a.ReleaseRecordClaims(ctx, oa); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b over the keys a's owner let go", b, ob, k[2], k[3])
	wantClaims(t, "a over b's keys", claimKeys(t, a, oa, k[2]), P)
	b.Close()
	eventually(t, "a after b closed", a, oa, k[1], k[2], k[3], k[4])
}

// TestRecordClaimsConcurrentStores: owners of two Stores claiming
// overlapping windows at once, each in its own order, never fail, and no
// key is acquired by two of them.
func TestRecordClaimsConcurrentStores(t *testing.T) {
	a, h := openStore(t, WithPurgeInterval(0))
	stores := []*Store{a, openPeer(t, h)}
	keys := make([]store.MarkKey, 64)
	for i := range keys {
		keys[i] = store.MarkKeyOf("scope", fmt.Sprint("concurrent-", i))
	}
	const owners = 8
	results := make([]*store.RecordClaims, owners)
	errs := make([]error, owners)
	var wg sync.WaitGroup
	now := time.Now()
	for o := range owners {
		window := make([]store.MarkKey, len(keys))
		for i := range keys {
			window[i] = keys[(i+o*7)%len(keys)]
		}
		results[o] = &store.RecordClaims{Owner: store.MarkKeyOf("owner", fmt.Sprint(o)), Keys: window, Now: now, LeaseUntil: now.Add(time.Minute)}
		wg.Go(func() { errs[o] = stores[o%2].ClaimRecords(context.Background(), results[o]) })
	}
	wg.Wait()
	holder := map[store.MarkKey]int{}
	for o, c := range results {
		if errs[o] != nil {
			t.Fatalf("owner %d: %v", o, errs[o])
		}
		for i, st := range c.Status {
			if st != store.Acquired {
				continue
			}
			if prev, ok := holder[c.Keys[i]]; ok && prev != o {
				t.Fatalf("key %d acquired by owners %d and %d", i, prev, o)
			}
			holder[c.Keys[i]] = o
		}
	}
	if len(holder) == 0 {
		t.Fatal("no owner acquired anything")
	}
}

// TestLockSessionLost: when the lock session ends under a Store (its
// connection cut, here by the server), its claims end, the other Store
// takes them, the next claim reports the loss, and the one after it opens
// a new session; a commit that marks a key whose claim was lost is
// refused until the key is claimed again.
func TestLockSessionLost(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	ctx := context.Background()
	k1, k2 := store.MarkKeyOf("scope", "lost-1"), store.MarkKeyOf("scope", "lost-2")
	wantClaims(t, "a", claimKeys(t, a, oa, k1), store.Acquired)
	endLockSession(t, a)
	eventually(t, "b after a's session ended", b, ob, k1)
	now := time.Now()
	err := a.ClaimRecords(ctx, &store.RecordClaims{Owner: oa, Keys: []store.MarkKey{k2}, Now: now, LeaseUntil: now.Add(time.Minute)})
	if err == nil {
		t.Fatal("the claim after the session ended did not report it")
	}
	t.Logf("reported: %v", err)
	wantClaims(t, "a again", claimKeys(t, a, oa, k2, k1), store.Acquired, store.InProgress)
	if n := a.locks.opened(); n != 2 {
		t.Fatalf("%d lock sessions opened, want 2", n)
	}

	// The run a started under the lost claim of k1 must not commit: b may
	// have run it meanwhile. k2, claimed by the new session, commits.
	commit := func(key store.MarkKey, seq string) error { return a.Commit(ctx, markWrite(seq, key)) }
	if err := commit(k1, "1"); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("commit of the lost claim's mark: %v, want store.ErrRecordClaimLost", err)
	}
	if err := commit(k2, "2"); err != nil {
		t.Fatalf("commit of the new session's claim: %v", err)
	}
	// Once b is done with k1 and a claims it again, a's commit lands.
	if err := b.ReleaseRecordClaims(ctx, ob); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a after b let k1 go", a, oa, k1)
	if err := commit(k1, "3"); err != nil {
		t.Fatalf("commit after claiming k1 again: %v", err)
	}
}

// TestFencedClaimKeepsLocks: a claim refused by its fence keeps nothing
// it took, and keeps the session, and so every other claim of the Store.
func TestFencedClaimKeepsLocks(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	ctx := context.Background()
	k1, k2 := store.MarkKeyOf("scope", "fenced-1"), store.MarkKeyOf("scope", "fenced-2")
	wantClaims(t, "a", claimKeys(t, a, oa, k1), store.Acquired)
	now := time.Now()
	c := &store.RecordClaims{Owner: oa, Keys: []store.MarkKey{k2}, Now: now, LeaseUntil: now.Add(time.Minute),
		Fence: &store.Fence{Key: store.MarkKeyOf("lease", "none"), Token: 7}}
	if err := a.ClaimRecords(ctx, c); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("fenced claim: %v, want ErrFenced", err)
	}
	wantClaims(t, "b over a's key", claimKeys(t, b, ob, k1), store.InProgress)
	eventually(t, "b over the fenced claim's key", b, ob, k2)
	if n := a.locks.opened(); n != 1 {
		t.Fatalf("%d lock sessions opened, want 1", n)
	}
}

// TestLockSweep: a claim whose lease ended lockSweepGrace ago is let go by
// the sweep, for other processes, and is lost to its owner; one still
// within it is kept.
func TestLockSweep(t *testing.T) {
	a, b, ob, k := claimedByA(t, "swept")
	ctx := context.Background()
	a.locks.sweep(time.Now().Add(time.Minute)) // the lease just ended
	if err := a.locks.flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, "b within the grace", claimKeys(t, b, ob, k), store.InProgress)
	a.locks.sweep(time.Now().Add(time.Minute + lockSweepGrace + time.Second))
	if err := a.locks.flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, "b after the sweep", claimKeys(t, b, ob, k), store.Acquired)
	// a's run under the swept claim, should it come back, must not
	// commit beside b's.
	if err := a.Commit(ctx, markWrite("1", k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("commit of the swept claim's mark: %v, want store.ErrRecordClaimLost", err)
	}
}

// opened returns how many lock sessions l opened.
func (l *lockSession) opened() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sessions
}

// TestLockRoom: a claim that would hold more locks than the session's room
// (the size of the server's lock table) is refused with an error naming the
// setting, before it takes anything, and the session and its claims stay.
func TestLockRoom(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	k := make([]store.MarkKey, 5)
	for i := range k {
		k[i] = store.MarkKeyOf("scope", fmt.Sprint("room-", i))
	}
	wantClaims(t, "a", claimKeys(t, a, oa, k[0]), store.Acquired)
	a.locks.callMu.Lock()
	if a.locks.room < 1000 {
		t.Errorf("room %d: want the size of the server's lock table", a.locks.room)
	}
	a.locks.room = 3
	a.locks.callMu.Unlock()
	now := time.Now()
	err := a.ClaimRecords(context.Background(), &store.RecordClaims{Owner: oa, Keys: k[1:], Now: now, LeaseUntil: now.Add(time.Minute)})
	if err == nil || !strings.Contains(err.Error(), "max_locks_per_transaction") {
		t.Fatalf("claim past the room: %v, want an error naming max_locks_per_transaction", err)
	}
	wantClaims(t, "b over a's key", claimKeys(t, b, ob, k[0]), store.InProgress)
	wantClaims(t, "b over the refused keys", claimKeys(t, b, ob, k[1:]...), store.Acquired, store.Acquired, store.Acquired, store.Acquired)
	wantClaims(t, "a within the room", claimKeys(t, a, oa, k[0], store.MarkKeyOf("scope", "room-5")), store.Acquired, store.Acquired)
	if n := a.locks.opened(); n != 1 {
		t.Fatalf("%d lock sessions opened, want 1", n)
	}
}

// markWrite is a Write that marks keys.
func markWrite(seq string, keys ...store.MarkKey) *store.Write {
	w := &store.Write{
		Checkpoint:    store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"},
		NewCheckpoint: store.Checkpoint{Sequence: idem.Sequence(seq)},
	}
	for _, k := range keys {
		w.Marks = append(w.Marks, store.Mark{Key: k, Expires: time.Now().Add(time.Hour)})
	}
	return w
}

// endLockSession has the server end s's lock session, as a cut
// connection would, without s learning of it, and waits until it has
// ended (its locks gone with it).
func endLockSession(t *testing.T, s *Store) {
	t.Helper()
	s.locks.callMu.Lock()
	pid := s.locks.conn.PgConn().PID()
	s.locks.callMu.Unlock()
	var ended bool
	if err := s.pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1, 60000)", pid).Scan(&ended); err != nil || !ended {
		t.Fatalf("pg_terminate_backend = %v, %v", ended, err)
	}
}

// TestCommitGateSessionEnded: a commit whose keys' lock session ended
// before it landed is refused, though the Store has not learned of the
// loss: another process may have taken the keys meanwhile. Its checkpoint
// does not move.
func TestCommitGateSessionEnded(t *testing.T) {
	a, b, ob, k := claimedByA(t, "gate-ended")
	ctx := context.Background()
	endLockSession(t, a)
	eventually(t, "b after a's session ended", b, ob, k)
	if err := a.Commit(ctx, markWrite("1", k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("commit under the ended session: %v, want store.ErrRecordClaimLost", err)
	}
	if cp, ok, err := a.Checkpoint(ctx, store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "0"}); err != nil || ok {
		t.Fatalf("checkpoint after the refused commit: %q, %v, %v; want none", cp.Sequence, ok, err)
	}
	// b, which holds k now, commits it.
	if err := b.Commit(ctx, markWrite("2", k)); err != nil {
		t.Fatalf("commit of the new holder: %v", err)
	}
}

// claimedByA opens two Stores over one schema, as two processes, and
// claims key (in scope "scope") for a's owner in a.
func claimedByA(t *testing.T, key string) (a, b *Store, ob, k store.MarkKey) {
	t.Helper()
	a, b, oa, ob := twoStores(t)
	k = store.MarkKeyOf("scope", key)
	wantClaims(t, "a", claimKeys(t, a, oa, k), store.Acquired)
	return a, b, ob, k
}

// commitInFlight claims key for Store a, of two Stores, and begins a's
// commit of a Write that marks it, to its gate: a commit in flight.
func commitInFlight(t *testing.T, key string) (a, b *Store, ob store.MarkKey, w *store.Write, g *commitGate) {
	t.Helper()
	a, b, ob, k := claimedByA(t, key)
	w = markWrite("1", k)
	g, err := a.locks.gate(w)
	if err != nil || g == nil {
		t.Fatalf("gate = %v, %v", g, err)
	}
	return a, b, ob, w, g
}

// TestCommitGateHoldsClaimers: while a commit whose gate passed is in
// flight, a claimer that takes the key's lock (its session having ended
// meanwhile) finds the key held; once the commit landed, it finds the
// mark. So no run of the key begins while a commit of it may still land.
func TestCommitGateHoldsClaimers(t *testing.T) {
	a, b, ob, w, g := commitInFlight(t, "gate-held")
	ctx := context.Background()
	k := w.Marks[0].Key
	// a's commit, stopped after its gate: the marks written and the gate
	// taken in an open transaction.
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	keys, expires := markArgs(w.Marks)
	if _, err := tx.Exec(ctx, a.q.putMarks, keys, expires); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, a.q.commitGate, g.gate, g.live); err != nil {
		t.Fatalf("commit_gate with the session alive: %v", err)
	}

	endLockSession(t, a)
	// b takes the lock, which the server let go with a's session, and
	// finds the gate taken.
	wantClaims(t, "b while a's commit is in flight", claimKeys(t, b, ob, k), store.InProgress)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a.locks.done(g, w, true)
	wantClaims(t, "b after a's commit landed", claimKeys(t, b, ob, k), store.Completed)
	// That claim found a's session ended with no commit in flight, and
	// removed its row.
	if n := lockSessionRows(t, b); n != 1 {
		t.Fatalf("%d rows in lock_sessions, want b's alone", n)
	}
}

// lockSessionRows counts the lock sessions registered in s's schema.
func lockSessionRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{s.schema}.Sanitize()+".lock_sessions").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLockSessionRows: each lock session registers, and a Store's Close
// removes its row.
func TestLockSessionRows(t *testing.T) {
	a, b, oa, ob := twoStores(t)
	claimKeys(t, a, oa, store.MarkKeyOf("scope", "rows-a"))
	claimKeys(t, b, ob, store.MarkKeyOf("scope", "rows-b"))
	if n := lockSessionRows(t, b); n != 2 {
		t.Fatalf("%d rows in lock_sessions, want 2", n)
	}
	a.Close()
	if n := lockSessionRows(t, b); n != 1 {
		t.Fatalf("%d rows in lock_sessions after a closed, want 1", n)
	}
}

// TestCommitGateSessionEndedInTx: the gate holds for a commit in the
// handler's transaction too.
func TestCommitGateSessionEndedInTx(t *testing.T) {
	a, b, ob, k := claimedByA(t, "gate-tx")
	ctx := context.Background()
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	endLockSession(t, a)
	eventually(t, "b after a's session ended", b, ob, k)
	if err := tx.Commit(ctx, markWrite("1", k)); !errors.Is(err, store.ErrRecordClaimLost) {
		t.Fatalf("Tx.Commit under the ended session: %v, want store.ErrRecordClaimLost", err)
	}
}

// TestClaimEndedDuringCommit: a claim that ends while a commit of its key
// is in flight keeps its lock until the commit ended, so that no other
// process takes the key while the commit may still land.
func TestClaimEndedDuringCommit(t *testing.T) {
	a, b, ob, w, g := commitInFlight(t, "ended-in-flight")
	ctx := context.Background()
	k := w.Marks[0].Key
	if err := a.ReleaseRecordClaims(ctx, store.MarkKeyOf("owner", "a")); err != nil {
		t.Fatal(err)
	}
	if err := a.locks.flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, "b while a's commit is in flight", claimKeys(t, b, ob, k), store.InProgress)
	a.locks.done(g, w, false) // the commit failed: nothing marks k
	eventually(t, "b after a's commit ended", b, ob, k)
}
