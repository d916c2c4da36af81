package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// recordTests cover progress per mapping and record claims (ClaimRecords),
// which every driver implements.
var recordTests = []struct {
	name string
	run  func(*testing.T, *fixture)
}{
	{"MappingProgressRoundTrip", testMappingProgressRoundTrip},
	{"MappingProgressIndependent", testMappingProgressIndependent},
	{"RecordClaimsAcquire", testRecordClaimsAcquire},
	{"RecordClaimsHeldPrefix", testRecordClaimsHeldPrefix},
	{"RecordClaimsDuplicateKeys", testRecordClaimsDuplicateKeys},
	{"RecordClaimsTakeover", testRecordClaimsTakeover},
	{"RecordClaimsMarks", testRecordClaimsMarks},
	{"RecordClaimsEndedByCommit", testRecordClaimsEndedByCommit},
	{"RecordClaimsLostBeforeCommit", testRecordClaimsLostBeforeCommit},
	{"RecordClaimsFenced", testRecordClaimsFenced},
	{"RecordClaimsLargeWindow", testRecordClaimsLargeWindow},
	{"RecordClaimsConcurrent", testRecordClaimsConcurrent},
	{"StoreClock", testStoreClock},
}

// mappingProgress is key's progress for mapping m.
func (f *fixture) mappingProgress(shard, m string) store.ProgressKey {
	k := f.progressKey(shard)
	k.Mapping = m
	return k
}

// scopeProgress returns ScopeProgress of key, sorted by mapping.
func (f *fixture) scopeProgress(key store.ProgressKey) []store.MappingProgress {
	f.t.Helper()
	ps, err := f.d.ScopeProgress(f.ctx, key)
	if err != nil {
		f.t.Fatalf("ScopeProgress(%+v): %v", key, err)
	}
	slices.SortFunc(ps, func(a, b store.MappingProgress) int { return cmp.Compare(a.Mapping, b.Mapping) })
	return ps
}

func sameProgress(a, b store.Progress) bool {
	return a.HighWater == b.HighWater && slices.Equal(a.Above, b.Above) && a.Filter == b.Filter
}

// testMappingProgressRoundTrip: each mapping of a scope keeps its own
// progress, Filter verbatim (any bytes); Mapping "" is the scope-wide row;
// ScopeProgress lists them all, and nothing of another shard or scope.
func testMappingProgressRoundTrip(t *testing.T, f *fixture) {
	cpKey := f.cpKey("shard-0")
	want := map[string]store.Progress{
		"":              {HighWater: sq(7), Above: []idem.Sequence{sq(9)}},
		f.ns + "/a":     {HighWater: sq(100), Above: []idem.Sequence{sq(102), kinesisSeq}, Filter: `{"data":{"type":["order"]}}`},
		f.ns + "/b":     {HighWater: sq(50), Filter: "|,;\x00\xff\\x00 \u00e9"},
		f.ns + "/a\x00": {HighWater: sq(1)},
	}
	for m, p := range want {
		f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true, ProgressKey: f.mappingProgress("shard-0", m), Progress: p})
	}
	verify := func(when string) {
		t.Helper()
		for m, p := range want {
			if got := f.progress(f.mappingProgress("shard-0", m)); !sameProgress(got, p) {
				t.Fatalf("%s: Progress of mapping %q = %+v, want %+v", when, m, got, p)
			}
		}
		// key.Mapping is ignored.
		got := f.scopeProgress(f.mappingProgress("shard-0", "whatever"))
		if len(got) != len(want) {
			t.Fatalf("%s: ScopeProgress = %+v, want %d mappings", when, got, len(want))
		}
		for _, mp := range got {
			if p, ok := want[mp.Mapping]; !ok || !sameProgress(mp.Progress, p) {
				t.Fatalf("%s: ScopeProgress lists mapping %q with %+v, want %+v", when, mp.Mapping, mp.Progress, p)
			}
		}
	}
	verify("before reopen")
	f.reopen()
	verify("after reopen")

	// A filter can be cleared.
	p := store.Progress{HighWater: sq(60)}
	f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true, ProgressKey: f.mappingProgress("shard-0", f.ns+"/b"), Progress: p})
	if got := f.progress(f.mappingProgress("shard-0", f.ns+"/b")); !sameProgress(got, p) {
		t.Fatalf("Progress after clearing the filter = %+v, want %+v", got, p)
	}
	// Nothing of another shard, scope or absent mapping.
	if got := f.scopeProgress(f.progressKey("shard-1")); len(got) != 0 {
		t.Fatalf("ScopeProgress of another shard = %+v, want none", got)
	}
	other := f.mappingProgress("shard-0", f.ns+"/a")
	other.Scope += "x"
	if got := f.scopeProgress(other); len(got) != 0 {
		t.Fatalf("ScopeProgress of another scope = %+v, want none", got)
	}
	if got := f.progress(f.mappingProgress("shard-0", f.ns+"/c")); !sameProgress(got, store.Progress{}) {
		t.Fatalf("Progress of a mapping never written = %+v, want zero", got)
	}
}

// testMappingProgressIndependent: mappings of one scope committing at once
// never overwrite each other's progress, whatever the interleaving.
func testMappingProgressIndependent(t *testing.T, f *fixture) {
	mappings, commits := 4, 30
	if testing.Short() {
		commits = 10
	}
	progressOf := func(g, c int) store.Progress {
		return store.Progress{HighWater: sq(c*10 + g), Above: []idem.Sequence{sq(c*10 + g + 1000)}, Filter: fmt.Sprintf("filter-%d", g)}
	}
	var wg sync.WaitGroup
	errs := make(chan error, mappings)
	for g := range mappings {
		wg.Go(func() {
			m := fmt.Sprintf("%s/m%d", f.ns, g)
			for c := 1; c <= commits; c++ {
				w := &store.Write{
					Checkpoint: store.CheckpointKey{Mapping: m, Stream: "stream", Shard: "shard-0"}, NewCheckpoint: store.Checkpoint{Sequence: sq(c)},
					HasProgress: true, ProgressKey: f.mappingProgress("shard-0", m), Progress: progressOf(g, c),
				}
				if err := f.d.Commit(f.ctx, w); err != nil {
					errs <- fmt.Errorf("mapping %d commit %d: %w", g, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := f.scopeProgress(f.progressKey("shard-0"))
	if len(got) != mappings {
		t.Fatalf("ScopeProgress = %+v, want %d mappings", got, mappings)
	}
	for g := range mappings {
		m := fmt.Sprintf("%s/m%d", f.ns, g)
		want := progressOf(g, commits)
		if p := f.progress(f.mappingProgress("shard-0", m)); !sameProgress(p, want) {
			t.Fatalf("Progress of %s = %+v, want %+v", m, p, want)
		}
		if got[g].Mapping != m || !sameProgress(got[g].Progress, want) {
			t.Fatalf("ScopeProgress[%d] = %+v, want %s %+v", g, got[g], m, want)
		}
	}
}

// owner derives an owner unique to the test, apart from its record keys.
func (f *fixture) owner(name string) store.MarkKey { return store.MarkKeyOf(f.ns+"/owner", name) }

// claimRecords runs ClaimRecords and fails the test on an error.
func (f *fixture) claimRecords(c *store.RecordClaims) *store.RecordClaims {
	f.t.Helper()
	if err := f.d.ClaimRecords(f.ctx, c); err != nil {
		f.t.Fatalf("ClaimRecords(owner %x, %d keys): %v", c.Owner[:4], len(c.Keys), err)
	}
	if len(c.Status) != len(c.Keys) {
		f.t.Fatalf("ClaimRecords: %d statuses for %d keys", len(c.Status), len(c.Keys))
	}
	return c
}

// claimAt claims keys for owner at now with a lease until until.
func (f *fixture) claimAt(owner store.MarkKey, now, until time.Time, keys ...store.MarkKey) *store.RecordClaims {
	f.t.Helper()
	return f.claimRecords(&store.RecordClaims{Owner: owner, Keys: keys, Now: now, LeaseUntil: until})
}

// wantStatus fails unless c's statuses are want, and its HeldUntil is
// heldUntil (zero: none held).
func wantStatus(t *testing.T, what string, c *store.RecordClaims, heldUntil time.Time, want ...store.ClaimStatus) {
	t.Helper()
	if !slices.Equal(c.Status, want) || !c.HeldUntil.Equal(heldUntil) {
		t.Fatalf("%s: Status %v HeldUntil %v; want %v, %v", what, c.Status, c.HeldUntil, want, heldUntil)
	}
}

// baseTime is a time that every driver keeps exactly (milliseconds).
func baseTime() time.Time { return time.Now().Truncate(time.Millisecond) }

// testRecordClaimsAcquire: free keys are acquired in one call; their owner
// acquires them again while its lease runs (a retry) with a new lease, and
// another owner finds them in progress, after a restart too.
func testRecordClaimsAcquire(t *testing.T, f *fixture) {
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	k := []store.MarkKey{f.mark(1), f.mark(2), f.mark(3)}
	const A, P = store.Acquired, store.InProgress

	c := f.claimAt(a, now, now.Add(time.Minute), k...)
	wantStatus(t, "first claim", c, time.Time{}, A, A, A)
	if c.Held() != len(k) {
		t.Fatalf("Held = %d, want %d", c.Held(), len(k))
	}
	// Reused, as the engine reuses it: Status is resized, HeldUntil cleared.
	c.Keys, c.Now, c.LeaseUntil = k[:2], now.Add(time.Second), now.Add(2*time.Minute)
	wantStatus(t, "the owner again", f.claimRecords(c), time.Time{}, A, A)

	if f.recordClaimsOutliveDriver() {
		f.reopen()
	}
	wantStatus(t, "another owner", f.claimAt(b, now.Add(time.Second), now.Add(time.Hour), k[0], k[2]), now.Add(2*time.Minute), P, 0)
	// k[2]'s lease was not renewed.
	wantStatus(t, "another owner, unrenewed key", f.claimAt(b, now.Add(time.Second), now.Add(time.Hour), k[2]), now.Add(time.Minute), P)
	// No keys: nothing to do.
	wantStatus(t, "no keys", f.claimAt(b, now, now.Add(time.Hour)), time.Time{})
}

// testRecordClaimsHeldPrefix: a key held by another owner stops the claim:
// it is InProgress, HeldUntil is its lease, and the keys after it are
// neither claimed nor changed, while the keys before it are claimed.
func testRecordClaimsHeldPrefix(t *testing.T, f *fixture) {
	now := baseTime()
	a, b, c := f.owner("a"), f.owner("b"), f.owner("c")
	k := make([]store.MarkKey, 8)
	for i := range k {
		k[i] = f.mark(i)
	}
	const A, P = store.Acquired, store.InProgress
	aLease, bLease := now.Add(time.Minute), now.Add(30*time.Second)

	// a holds k[2] and k[5]; b holds k[6].
	wantStatus(t, "a", f.claimAt(a, now, aLease, k[2], k[5]), time.Time{}, A, A)
	wantStatus(t, "b", f.claimAt(b, now, bLease, k[6]), time.Time{}, A)

	// b: k[0] k[1] acquired, k[2] a's, k[3] k[4] k[5] untouched.
	got := f.claimAt(b, now, now.Add(time.Hour), k[0], k[1], k[2], k[3], k[4], k[5])
	wantStatus(t, "b over a's key", got, aLease, A, A, P, 0, 0, 0)
	if got.Held() != 2 {
		t.Fatalf("Held = %d, want 2", got.Held())
	}
	// b claimed k[0] and k[1]; it did not claim k[3] or k[4], and k[5] is
	// still a's, under its own lease.
	wantStatus(t, "c over b's keys", f.claimAt(c, now, now.Add(time.Hour), k[0]), now.Add(time.Hour), P)
	wantStatus(t, "c over b's keys", f.claimAt(c, now, now.Add(time.Hour), k[1]), now.Add(time.Hour), P)
	wantStatus(t, "c over skipped keys", f.claimAt(c, now, now.Add(time.Hour), k[3], k[4]), time.Time{}, A, A)
	wantStatus(t, "c over a's later key", f.claimAt(c, now, now.Add(time.Hour), k[5]), aLease, P)

	// The owner's own earlier claims after the held key stay as they were:
	// a over b's k[6], then its own k[5] and k[2].
	wantStatus(t, "a over b's key", f.claimAt(a, now, now.Add(2*time.Hour), k[6], k[5], k[2]), bLease, P, 0, 0)
	wantStatus(t, "c over a's keys", f.claimAt(c, now, now.Add(time.Hour), k[5]), aLease, P)
	wantStatus(t, "c over a's keys", f.claimAt(c, now, now.Add(time.Hour), k[2]), aLease, P)
	// The first key held by another stops the claim at once.
	wantStatus(t, "first key held", f.claimAt(c, now, now.Add(time.Hour), k[6], k[7]), bLease, P, 0)
	wantStatus(t, "a over the key after it", f.claimAt(a, now, now.Add(time.Hour), k[7]), time.Time{}, A)
}

// testRecordClaimsDuplicateKeys: a key repeated in a window (two records
// with one payload key) is acquired at each place; a repeat after the held
// key keeps the claim its first place took.
func testRecordClaimsDuplicateKeys(t *testing.T, f *fixture) {
	now := baseTime()
	a, b, c := f.owner("a"), f.owner("b"), f.owner("c")
	k0, k1, held := f.mark(0), f.mark(1), f.mark(2)
	const A, P = store.Acquired, store.InProgress
	wantStatus(t, "repeats", f.claimAt(a, now, now.Add(time.Minute), k0, k0, k1, k0), time.Time{}, A, A, A, A)
	wantStatus(t, "b holds", f.claimAt(b, now, now.Add(time.Minute), held), time.Time{}, A)
	k2 := f.mark(3)
	wantStatus(t, "a repeats around a held key", f.claimAt(a, now, now.Add(time.Hour), k2, held, k2), now.Add(time.Minute), A, P, 0)
	wantStatus(t, "c over the repeated key", f.claimAt(c, now, now.Add(time.Hour), k2), now.Add(time.Hour), P)
}

// testRecordClaimsTakeover: a lease that ended is taken over by another
// owner, and the old owner then finds its key in progress; an owner takes
// its own expired claim again.
func testRecordClaimsTakeover(t *testing.T, f *fixture) {
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	k := f.mark(1)
	const A, P = store.Acquired, store.InProgress
	wantStatus(t, "a", f.claimAt(a, now, now.Add(time.Second), k), time.Time{}, A)
	wantStatus(t, "b while a's lease runs", f.claimAt(b, now.Add(999*time.Millisecond), now.Add(time.Hour), k), now.Add(time.Second), P)
	// A lease ends at its LeaseUntil: at that instant it is free.
	wantStatus(t, "b after a's lease", f.claimAt(b, now.Add(time.Second), now.Add(time.Minute), k), time.Time{}, A)
	wantStatus(t, "a after the takeover", f.claimAt(a, now.Add(2*time.Second), now.Add(time.Hour), k), now.Add(time.Minute), P)
	wantStatus(t, "b's own expired claim", f.claimAt(b, now.Add(time.Hour), now.Add(2*time.Hour), k), time.Time{}, A)
	wantStatus(t, "a after b renewed", f.claimAt(a, now.Add(time.Hour), now.Add(3*time.Hour), k), now.Add(2*time.Hour), P)
}

// testRecordClaimsMarks: with Marks, a key whose mark is live at Now is
// Completed and not claimed; an expired mark does not count; without
// Marks, marks are not looked up.
func testRecordClaimsMarks(t *testing.T, f *fixture) {
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	done, expired, free := f.mark(1), f.mark(2), f.mark(3)
	const A, P, C = store.Acquired, store.InProgress, store.Completed
	f.commit(&store.Write{Checkpoint: f.cpKey("shard-0"), Marks: []store.Mark{
		{Key: done, Expires: now.Add(time.Hour)}, {Key: expired, Expires: now.Add(-time.Minute)},
	}})
	c := f.claimRecords(&store.RecordClaims{Owner: a, Keys: []store.MarkKey{done, expired, free, done}, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)})
	wantStatus(t, "with marks", c, time.Time{}, C, A, A, C)
	// a did not claim the completed key: b takes it without looking marks up.
	wantStatus(t, "b without marks", f.claimAt(b, now, now.Add(time.Minute), done), time.Time{}, A)
	wantStatus(t, "b over a's keys", f.claimAt(b, now, now.Add(time.Minute), expired), now.Add(time.Minute), P)
	// A completed key counts before a claim held elsewhere.
	c = f.claimRecords(&store.RecordClaims{Owner: a, Keys: []store.MarkKey{done, free}, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)})
	wantStatus(t, "a with marks over b's claim", c, time.Time{}, C, A)
	// At the mark's expiry it no longer counts.
	c = f.claimRecords(&store.RecordClaims{Owner: a, Keys: []store.MarkKey{done}, Marks: true, Now: now.Add(time.Hour), LeaseUntil: now.Add(2 * time.Hour)})
	wantStatus(t, "at the mark's expiry", c, time.Time{}, A)
}

// testRecordClaimsEndedByCommit: a commit's marks end the claims of their
// keys whoever holds them, and its Release ends ReleaseOwner's claims only,
// atomically with the rest of the Write.
func testRecordClaimsEndedByCommit(t *testing.T, f *fixture) {
	now := baseTime()
	a, b, c := f.owner("a"), f.owner("b"), f.owner("c")
	k := make([]store.MarkKey, 6)
	for i := range k {
		k[i] = f.mark(i)
	}
	const A, P, C = store.Acquired, store.InProgress, store.Completed
	aLease := now.Add(time.Hour)
	wantStatus(t, "a", f.claimAt(a, now, aLease, k...), time.Time{}, A, A, A, A, A, A)
	cpKey := f.cpKey("shard-0")

	// Marks end claims, whoever commits them.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		Marks: []store.Mark{{Key: k[0], Expires: now.Add(time.Hour)}, {Key: k[1], Expires: now.Add(time.Hour)}}})
	wantStatus(t, "b over marked keys", f.claimAt(b, now, now.Add(time.Minute), k[0], k[1]), time.Time{}, A, A)
	c1 := f.claimRecords(&store.RecordClaims{Owner: c, Keys: k[:2], Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)})
	wantStatus(t, "c with marks over b's claims", c1, time.Time{}, C, C)

	// A release by another owner leaves the claims.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(2)}, Release: k[2:4], ReleaseOwner: b})
	wantStatus(t, "after b's release", f.claimAt(c, now, now.Add(time.Minute), k[2]), aLease, P)
	wantStatus(t, "after b's release", f.claimAt(c, now, now.Add(time.Minute), k[3]), aLease, P)

	// A refused Write releases nothing.
	err := f.d.Commit(f.ctx, &store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		Release: k[2:4], ReleaseOwner: a, Marks: []store.Mark{{Key: k[4], Expires: now.Add(time.Hour)}}})
	if !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("Commit of an older checkpoint: %v, want ErrCheckpointBackwards", err)
	}
	wantStatus(t, "after a refused release", f.claimAt(c, now, now.Add(time.Minute), k[2]), aLease, P)
	wantStatus(t, "after a refused mark", f.claimAt(c, now, now.Add(time.Minute), k[4]), aLease, P)

	// The owner's release ends them; a key it released that another owner
	// claimed since would be left alone (k[5] is not released: still a's).
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(3)}, Release: k[2:5], ReleaseOwner: a})
	wantStatus(t, "c after a's release", f.claimAt(c, now, now.Add(time.Minute), k[2], k[3], k[4]), time.Time{}, A, A, A)
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(4)}, Release: k[2:4], ReleaseOwner: a})
	wantStatus(t, "b after a released c's keys", f.claimAt(b, now, now.Add(time.Minute), k[2], k[3]), now.Add(time.Minute), P, 0)
	wantStatus(t, "c over a's unreleased key", f.claimAt(c, now, now.Add(time.Minute), k[5]), aLease, P)

	// A Write may carry both: a mark for one key, a release of another.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(5)},
		Marks: []store.Mark{{Key: k[2], Expires: now.Add(time.Hour)}}, Release: []store.MarkKey{k[3], k[2]}, ReleaseOwner: c})
	wantStatus(t, "b after c's commit", f.claimAt(b, now, now.Add(time.Minute), k[2], k[3]), time.Time{}, A, A)
}

// testRecordClaimsLostBeforeCommit: a Write with a MarkOwner lands only
// if each key it marks is still MarkOwner's claim, whatever its lease, or
// is neither claimed nor marked. A key another owner took over once the
// lease ran out, whether that owner committed its mark since or not, makes
// ErrRecordClaimLost, and nothing of the Write lands: not its checkpoint,
// its state, its other marks, nor the end of MarkOwner's other claims.
func testRecordClaimsLostBeforeCommit(t *testing.T, f *fixture) {
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	k := make([]store.MarkKey, 6)
	for i := range k {
		k[i] = f.mark(i)
	}
	const A, P, C = store.Acquired, store.InProgress, store.Completed
	aLease := now.Add(time.Second)
	wantStatus(t, "a", f.claimAt(a, now, aLease, k[:4]...), time.Time{}, A, A, A, A)
	// b takes k[1] and k[2] over once a's lease ran out, and commits k[2].
	wantStatus(t, "b over a's expired claims", f.claimAt(b, aLease, now.Add(time.Hour), k[1], k[2]), time.Time{}, A, A)
	f.commit(&store.Write{Checkpoint: f.cpKey("shard-b"), NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		Marks: []store.Mark{{Key: k[2], Expires: now.Add(time.Hour)}}, MarkOwner: b})

	cpKey := f.cpKey("shard-a")
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(1)}})
	ns := f.ns + "/state"
	refused := func(what string, keys ...store.MarkKey) {
		t.Helper()
		w := &store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(2)}, MarkOwner: a,
			State: []store.StateOp{{Namespace: ns, Key: "effect", Value: []byte(what)}}}
		for _, key := range keys {
			w.Marks = append(w.Marks, store.Mark{Key: key, Expires: now.Add(time.Hour)})
		}
		if err := f.d.Commit(f.ctx, w); !errors.Is(err, store.ErrRecordClaimLost) {
			t.Fatalf("Commit marking %s: %v, want ErrRecordClaimLost", what, err)
		}
		if cp, _ := f.checkpoint(cpKey); cp.Sequence != sq(1) {
			t.Fatalf("after the refused commit marking %s: checkpoint %q, want %q", what, cp.Sequence, sq(1))
		}
		if v, err := f.d.State(f.ctx, ns, "effect"); !errors.Is(err, idem.ErrNotFound) {
			t.Fatalf("after the refused commit marking %s: state %q, %v; want none", what, v, err)
		}
	}
	refused("a key another owner holds", k[0], k[1])
	refused("a key another owner marked", k[0], k[2])
	refused("a key another owner holds, marked twice", k[1], k[0], k[1])
	// The refused writes marked nothing, and ended none of a's claims.
	done := make([]bool, 2)
	if err := f.d.Completed(f.ctx, []store.MarkKey{k[0], k[1]}, now, done); err != nil || done[0] || done[1] {
		t.Fatalf("Completed(k0, k1) after the refused commits = %v, %v; want neither", done, err)
	}
	wantStatus(t, "k0 after the refused commits", f.claimAt(b, now, now.Add(time.Minute), k[0]), aLease, P)

	// a's own claims, its lease run out or not, and a key nobody claimed
	// or marked, land; so does a key marked twice in one Write.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(2)}, MarkOwner: a,
		Marks: []store.Mark{{Key: k[0], Expires: now.Add(time.Hour)}, {Key: k[3], Expires: now.Add(time.Hour)},
			{Key: k[4], Expires: now.Add(time.Hour)}, {Key: k[3], Expires: now.Add(time.Hour)}},
		State: []store.StateOp{{Namespace: ns, Key: "effect", Value: []byte("landed")}}})
	if v, err := f.d.State(f.ctx, ns, "effect"); err != nil || string(v) != "landed" {
		t.Fatalf("state after the commit = %q, %v; want landed", v, err)
	}
	c := f.claimRecords(&store.RecordClaims{Owner: b, Keys: []store.MarkKey{k[0], k[3], k[4], k[5]}, Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)})
	wantStatus(t, "b after a's commit", c, time.Time{}, C, C, C, A)
}

// testRecordClaimsFenced: a claim fenced by a lease the fence key's claims
// record no longer holds (or never held) is refused with ErrFenced and
// claims nothing; the current token's claim goes through.
func testRecordClaimsFenced(t *testing.T, f *fixture) {
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	k := []store.MarkKey{f.mark(1), f.mark(2)}
	lease := f.mark(1000)
	const A = store.Acquired
	fenced := func(what string, fence *store.Fence) {
		t.Helper()
		c := &store.RecordClaims{Owner: a, Keys: k, Now: now, LeaseUntil: now.Add(time.Hour), Fence: fence}
		if err := f.d.ClaimRecords(f.ctx, c); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("%s: ClaimRecords = %v, want ErrFenced", what, err)
		}
		wantStatus(t, what+": nothing claimed", f.claimAt(b, now, now.Add(time.Second), k...), time.Time{}, A, A)
		f.commit(&store.Write{Checkpoint: f.cpKey("shard-0"), Release: k, ReleaseOwner: b})
	}
	fenced("a key without a record", &store.Fence{Key: lease, Token: 1})

	cl, ok := f.d.(store.Claims)
	if !ok {
		return
	}
	old, err := cl.Claim(f.ctx, lease, payload("lease"), time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := cl.Claim(f.ctx, lease, payload("lease"), time.Minute, now.Add(2*time.Second))
	if err != nil || taken.Token <= old.Token {
		t.Fatalf("takeover = %+v, %v", taken, err)
	}
	fenced("a stale token", &store.Fence{Key: lease, Token: old.Token})
	c := f.claimRecords(&store.RecordClaims{Owner: a, Keys: k, Now: now, LeaseUntil: now.Add(time.Hour),
		Fence: &store.Fence{Key: lease, Token: taken.Token}})
	wantStatus(t, "the current token", c, time.Time{}, A, A)
}

// testRecordClaimsLargeWindow: a window of thousands of keys is claimed in
// one call, in order, up to the one key held elsewhere.
func testRecordClaimsLargeWindow(t *testing.T, f *fixture) {
	n := 3000
	if testing.Short() {
		n = 500
	}
	now := baseTime()
	a, b := f.owner("a"), f.owner("b")
	keys := make([]store.MarkKey, n)
	for i := range keys {
		keys[i] = f.mark(i)
	}
	heldAt := n * 2 / 3
	wantStatus(t, "b", f.claimAt(b, now, now.Add(time.Minute), keys[heldAt]), time.Time{}, store.Acquired)
	c := f.claimAt(a, now, now.Add(time.Hour), keys...)
	if c.Held() != heldAt || !c.HeldUntil.Equal(now.Add(time.Minute)) {
		t.Fatalf("Held = %d until %v, want %d until %v", c.Held(), c.HeldUntil, heldAt, now.Add(time.Minute))
	}
	for i, st := range c.Status {
		want := store.Acquired
		switch {
		case i == heldAt:
			want = store.InProgress
		case i > heldAt:
			want = 0
		}
		if st != want {
			t.Fatalf("Status[%d] = %v, want %v", i, st, want)
		}
	}
	// The keys after the held one are free.
	c = f.claimAt(b, now, now.Add(time.Minute), keys[heldAt:]...)
	if c.Held() != n-heldAt {
		t.Fatalf("b over the rest: Held = %d, want none (%d)", c.Held(), n-heldAt)
	}
}

// testRecordClaimsConcurrent: owners claiming overlapping windows at once,
// each in its own order, never fail (no deadlock), and no key is acquired
// by two of them.
func testRecordClaimsConcurrent(t *testing.T, f *fixture) {
	owners, keys, rounds := 8, 64, 5
	if testing.Short() {
		rounds = 2
	}
	for r := range rounds {
		now := baseTime()
		ks := make([]store.MarkKey, keys)
		for i := range ks {
			ks[i] = f.mark(r*1000 + i)
		}
		results := make([]*store.RecordClaims, owners)
		errs := make([]error, owners)
		var wg sync.WaitGroup
		for o := range owners {
			window := slices.Clone(ks)
			// Each owner its own order: rotated, and every other one reversed.
			slices.Reverse(window[:o*keys/owners])
			slices.Reverse(window[o*keys/owners:])
			if o%2 == 1 {
				slices.Reverse(window)
			}
			results[o] = &store.RecordClaims{Owner: f.owner(fmt.Sprint(o)), Keys: window, Now: now, LeaseUntil: now.Add(time.Minute)}
			wg.Go(func() { errs[o] = f.d.ClaimRecords(f.ctx, results[o]) })
		}
		wg.Wait()
		holder := map[store.MarkKey]int{}
		for o, c := range results {
			if errs[o] != nil {
				t.Fatalf("round %d owner %d: %v", r, o, errs[o])
			}
			for i, st := range c.Status {
				if st != store.Acquired {
					continue
				}
				if prev, ok := holder[c.Keys[i]]; ok && prev != o {
					t.Fatalf("round %d: key %x acquired by owners %d and %d", r, c.Keys[i][:4], prev, o)
				}
				holder[c.Keys[i]] = o
			}
		}
		if len(holder) == 0 {
			t.Fatalf("round %d: no owner acquired anything", r)
		}
	}
}

// testStoreClock: a store with a clock of its own tells a time near this
// host's (the test's servers run here).
func testStoreClock(t *testing.T, f *fixture) {
	clock, ok := f.d.(store.Clock)
	if !ok {
		t.Skipf("%T has no clock of its own", f.d)
	}
	before := time.Now()
	got, err := clock.Time(f.ctx)
	after := time.Now()
	if err != nil {
		t.Fatalf("Time: %v", err)
	}
	if got.Before(before.Add(-5*time.Second)) || got.After(after.Add(5*time.Second)) {
		t.Fatalf("Time = %v, want between %v and %v (within 5s)", got, before, after)
	}
}

// ProcessLocalClaims is implemented by a Harness whose store keeps record
// claims in the memory of the one process that owns it (the embedded
// store): a restart ends every run they guarded, and the claims with
// them, so the suite does not expect them after Reopen.
type ProcessLocalClaims interface {
	ProcessLocalClaims()
}

// recordClaimsOutliveDriver reports whether the store's record claims
// survive a Reopen: not when they live in one process's memory
// (ProcessLocalClaims), nor when they stay with the driver that took them
// (store.RecordClaimReleaser: PostgreSQL's, locks of the driver's own
// session), whose restart ends them as it ends the runs they guarded.
func (f *fixture) recordClaimsOutliveDriver() bool {
	_, local := f.h.(ProcessLocalClaims)
	_, driver := f.d.(store.RecordClaimReleaser)
	return !local && !driver
}
