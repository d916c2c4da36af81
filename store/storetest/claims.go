package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem/store"
)

// claimTests run for drivers that implement store.Claims.
var claimTests = []struct {
	name string
	run  func(*testing.T, *fixture, store.Claims)
}{
	{"ClaimOneWinner", testClaimOneWinner},
	{"ClaimCompletedReturnsResult", testClaimCompleted},
	{"ClaimPayloadMismatch", testClaimPayloadMismatch},
	{"ClaimLeaseTakeoverFences", testClaimTakeover},
	{"ClaimReleaseAndExpiry", testClaimReleaseAndExpiry},
	{"ClaimSurvivesRestart", testClaimSurvivesRestart},
	{"ClaimExtend", testClaimExtend},
	{"FencedCommit", testFencedCommit},
	{"TakeoverOfAHeldClaim", testTakeoverOfAHeldClaim},
	{"TakeoverCompletedAndMismatch", testTakeoverCompletedAndMismatch},
	{"TakeoverRace", testTakeoverRace},
}

func claimsOf(f *fixture) store.Claims {
	c, ok := f.d.(store.Claims)
	if !ok {
		f.t.Skipf("%T does not implement store.Claims", f.d)
	}
	return c
}

func payload(s string) store.PayloadHash { return sha256.Sum256([]byte(s)) }

// testClaimOneWinner: many goroutines claim one key at once, in many trials;
// exactly one acquires each time, the others see ErrClaimHeld.
func testClaimOneWinner(t *testing.T, f *fixture, c store.Claims) {
	const trials, claimers = 30, 16
	now := time.Now()
	for trial := range trials {
		key := f.mark(trial)
		var won, held atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for range claimers {
			wg.Go(func() {
				cl, err := c.Claim(f.ctx, key, payload("p"), time.Minute, now)
				switch {
				case err == nil && cl.Status == store.Acquired:
					won.Add(1)
				case errors.Is(err, store.ErrClaimHeld):
					held.Add(1)
				default:
					errs <- fmt.Errorf("Claim = %+v, %v", cl, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if won.Load() != 1 || held.Load() != claimers-1 {
			t.Fatalf("trial %d: %d acquired, %d held; want 1 and %d", trial, won.Load(), held.Load(), claimers-1)
		}
	}
}

// testClaimCompleted: a completed record returns its result and hash to
// later claimers, until it expires; then it can be claimed again.
func testClaimCompleted(t *testing.T, f *fixture, c store.Claims) {
	key, now := f.mark(0), time.Now()
	cl, err := c.Claim(f.ctx, key, payload("p"), time.Minute, now)
	if err != nil || cl.Status != store.Acquired {
		t.Fatalf("Claim = %+v, %v", cl, err)
	}
	if err := c.Complete(f.ctx, cl, []byte(`{"ok":1}`), now.Add(time.Hour)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	again, err := c.Claim(f.ctx, key, payload("p"), time.Minute, now.Add(time.Second))
	if err != nil || again.Status != store.Completed || string(again.Result) != `{"ok":1}` || again.PayloadHash != payload("p") {
		t.Fatalf("Claim of a completed key = %+v, %v", again, err)
	}
	got, ok, err := c.Lookup(f.ctx, key, now.Add(time.Second))
	if err != nil || !ok || got.Status != store.Completed || string(got.Result) != `{"ok":1}` {
		t.Fatalf("Lookup = %+v, %v, %v", got, ok, err)
	}
	// Expiry is decided from the timestamp passed in.
	if _, ok, err := c.Lookup(f.ctx, key, now.Add(2*time.Hour)); err != nil || ok {
		t.Fatalf("Lookup after expiry = %v, %v; want none", ok, err)
	}
	fresh, err := c.Claim(f.ctx, key, payload("other"), time.Minute, now.Add(2*time.Hour))
	if err != nil || fresh.Status != store.Acquired || fresh.Token <= cl.Token {
		t.Fatalf("Claim after expiry = %+v, %v; want acquired with a token above %d", fresh, err, cl.Token)
	}
}

// testClaimPayloadMismatch: one key with another payload is an error, in
// progress or completed.
func testClaimPayloadMismatch(t *testing.T, f *fixture, c store.Claims) {
	key, now := f.mark(0), time.Now()
	cl, err := c.Claim(f.ctx, key, payload("a"), time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Claim(f.ctx, key, payload("b"), time.Minute, now); !errors.Is(err, store.ErrPayloadMismatch) {
		t.Fatalf("Claim in progress with another payload: %v, want ErrPayloadMismatch", err)
	}
	if err := c.Complete(f.ctx, cl, []byte("r"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Claim(f.ctx, key, payload("b"), time.Minute, now); !errors.Is(err, store.ErrPayloadMismatch) {
		t.Fatalf("Claim of completed with another payload: %v, want ErrPayloadMismatch", err)
	}
}

// testClaimTakeover: an expired lease is taken over with a higher token;
// the old owner's Complete and Release are fenced and change nothing.
func testClaimTakeover(t *testing.T, f *fixture, c store.Claims) {
	key, now := f.mark(0), time.Now()
	old, err := c.Claim(f.ctx, key, payload("p"), time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Claim(f.ctx, key, payload("p"), time.Second, now.Add(500*time.Millisecond)); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("Claim under a running lease: %v, want ErrClaimHeld", err)
	}
	got, ok, err := c.Lookup(f.ctx, key, now.Add(500*time.Millisecond))
	if err != nil || !ok || got.Status != store.InProgress {
		t.Fatalf("Lookup under a running lease = %+v, %v, %v; want IN_PROGRESS", got, ok, err)
	}
	taken, err := c.Claim(f.ctx, key, payload("p"), time.Minute, now.Add(2*time.Second))
	if err != nil || taken.Status != store.Acquired || taken.Token <= old.Token {
		t.Fatalf("takeover = %+v, %v; want a token above %d", taken, err, old.Token)
	}
	if err := c.Complete(f.ctx, old, []byte("stale"), now.Add(time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Complete: %v, want ErrFenced", err)
	}
	if err := c.Release(f.ctx, old); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Release: %v, want ErrFenced", err)
	}
	if err := c.Complete(f.ctx, taken, []byte("fresh"), now.Add(time.Hour)); err != nil {
		t.Fatalf("new owner's Complete: %v", err)
	}
	got, ok, err = c.Lookup(f.ctx, key, now.Add(3*time.Second))
	if err != nil || !ok || string(got.Result) != "fresh" {
		t.Fatalf("Lookup = %+v, %v, %v; want the new owner's result", got, ok, err)
	}
}

// testClaimReleaseAndExpiry: a released claim can be taken at once, with a
// higher token.
func testClaimReleaseAndExpiry(t *testing.T, f *fixture, c store.Claims) {
	key, now := f.mark(0), time.Now()
	first, err := c.Claim(f.ctx, key, payload("p"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Release(f.ctx, first); err != nil {
		t.Fatalf("Release: %v", err)
	}
	second, err := c.Claim(f.ctx, key, payload("p"), time.Hour, now)
	if err != nil || second.Status != store.Acquired || second.Token <= first.Token {
		t.Fatalf("Claim after Release = %+v, %v", second, err)
	}
}

// testClaimSurvivesRestart: acquired and completed records are durable.
func testClaimSurvivesRestart(t *testing.T, f *fixture, _ store.Claims) {
	now := time.Now()
	c := claimsOf(f)
	done, err := c.Claim(f.ctx, f.mark(0), payload("p"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Complete(f.ctx, done, []byte("result"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Claim(f.ctx, f.mark(1), payload("p"), time.Hour, now); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	c = claimsOf(f)
	if got, ok, err := c.Lookup(f.ctx, f.mark(0), now); err != nil || !ok || got.Status != store.Completed || string(got.Result) != "result" {
		t.Fatalf("completed record after restart = %+v, %v, %v", got, ok, err)
	}
	if _, err := c.Claim(f.ctx, f.mark(1), payload("p"), time.Hour, now); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("claim after restart: %v, want ErrClaimHeld", err)
	}
}

// testClaimExtend: Extend moves a lease on while the token holds the key,
// even once the lease ran out without a takeover; after a takeover it is
// fenced and changes nothing.
func testClaimExtend(t *testing.T, f *fixture, c store.Claims) {
	key, now := f.mark(0), time.Now()
	cl, err := c.Claim(f.ctx, key, payload("lease"), time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Extend(f.ctx, cl, now.Add(time.Minute)); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if _, err := c.Claim(f.ctx, key, payload("lease"), time.Second, now.Add(30*time.Second)); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("Claim under an extended lease: %v, want ErrClaimHeld", err)
	}
	got, ok, err := c.Lookup(f.ctx, key, now.Add(30*time.Second))
	if err != nil || !ok || got.Token != cl.Token || got.LeaseUntil.Sub(now.Add(time.Minute)).Abs() > time.Millisecond {
		t.Fatalf("Lookup under an extended lease = %+v, %v, %v; want token %d until %s", got, ok, err, cl.Token, now.Add(time.Minute))
	}
	// Ran out, not taken over: still the owner's to extend.
	if err := c.Extend(f.ctx, cl, now.Add(3*time.Minute)); err != nil {
		t.Fatalf("Extend of a lapsed lease not taken over: %v", err)
	}
	taken, err := c.Claim(f.ctx, key, payload("lease"), time.Minute, now.Add(4*time.Minute))
	if err != nil || taken.Token <= cl.Token {
		t.Fatalf("takeover = %+v, %v", taken, err)
	}
	if err := c.Extend(f.ctx, cl, now.Add(time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Extend: %v, want ErrFenced", err)
	}
	if _, err := c.Claim(f.ctx, key, payload("lease"), time.Minute, now.Add(6*time.Minute)); err != nil {
		t.Fatalf("Claim once the new lease ran out (the old owner's Extend must not have moved it): %v", err)
	}
}

// testFencedCommit: a Write fenced by a lease applies only while the
// lease's token holds the key: a stale token's Write is refused whole
// (checkpoint, progress, marks, state), a key without a record fences every
// token, and the current token's Write applies.
func testFencedCommit(t *testing.T, f *fixture, c store.Claims) {
	now := time.Now()
	lease := f.mark(1000)
	cpKey, pKey, ns := f.cpKey("shard-0"), f.progressKey("shard-0"), f.ns+"/scope"
	mk := f.mark(1)
	write := func(seq int, value string, fence *store.Fence) *store.Write {
		return &store.Write{
			Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(seq), Processed: uint64(seq)},
			HasProgress: true, ProgressKey: pKey, Progress: store.Progress{HighWater: sq(seq)},
			Marks: []store.Mark{{Key: mk, Expires: now.Add(time.Hour)}},
			State: []store.StateOp{{Namespace: ns, Key: "k", Value: []byte(value)}},
			Fence: fence,
		}
	}
	untouched := func(when string) {
		t.Helper()
		if _, ok := f.checkpoint(cpKey); ok {
			t.Fatalf("%s: a checkpoint was written", when)
		}
		if p := f.progress(pKey); p.HighWater != "" {
			t.Fatalf("%s: progress = %+v, want none", when, p)
		}
		if f.completed([]store.MarkKey{mk}, now)[0] {
			t.Fatalf("%s: the mark was written", when)
		}
		f.wantState(ns, "k", nil)
	}

	if err := f.d.Commit(f.ctx, write(1, "none", &store.Fence{Key: lease, Token: 1})); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit fenced by a key without a record: %v, want ErrFenced", err)
	}
	untouched("after a commit fenced by a missing record")

	old, err := c.Claim(f.ctx, lease, payload("lease"), time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := c.Claim(f.ctx, lease, payload("lease"), time.Minute, now.Add(2*time.Second))
	if err != nil || taken.Token <= old.Token {
		t.Fatalf("takeover = %+v, %v", taken, err)
	}
	if err := f.d.Commit(f.ctx, write(5, "stale", &store.Fence{Key: lease, Token: old.Token})); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit with a stale token: %v, want ErrFenced", err)
	}
	untouched("after a stale owner's commit")

	// The current token applies, even once its lease ran out (nobody took
	// it over): the fence is the token, not the time.
	f.commit(write(3, "fresh", &store.Fence{Key: lease, Token: taken.Token}))
	f.wantCheckpoint(cpKey, store.Checkpoint{Sequence: sq(3), Processed: 3})
	if p := f.progress(pKey); p.HighWater != sq(3) {
		t.Fatalf("progress = %+v, want high water 3", p)
	}
	if !f.completed([]store.MarkKey{mk}, now)[0] {
		t.Fatal("the current owner's mark was not written")
	}
	f.wantState(ns, "k", []byte("fresh"))

	// The stale owner is still refused after the current one wrote.
	if err := f.d.Commit(f.ctx, write(9, "stale", &store.Fence{Key: lease, Token: old.Token})); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit with a stale token after the owner's: %v, want ErrFenced", err)
	}
	f.wantCheckpoint(cpKey, store.Checkpoint{Sequence: sq(3), Processed: 3})
	if got, err := f.d.State(f.ctx, ns, "k"); err != nil || !bytes.Equal(got, []byte("fresh")) {
		t.Fatalf("state after a stale commit = %q, %v; want fresh", got, err)
	}
}

// takerOf returns c's Takeover. Every idem store implements it: a driver
// with Claims but without it (or a wrapper that does not forward it) fails.
func takerOf(t *testing.T, c store.Claims) store.ClaimTaker {
	t.Helper()
	tk, ok := c.(store.ClaimTaker)
	if !ok {
		t.Fatalf("%T implements store.Claims but not store.ClaimTaker", c)
	}
	return tk
}

// testTakeoverOfAHeldClaim: Takeover acquires a free key, and takes a key
// held under a running lease over, with a higher token; the old owner is
// fenced (Complete, Release, Extend change nothing), and the new owner
// holds the key against Claim.
func testTakeoverOfAHeldClaim(t *testing.T, f *fixture, c store.Claims) {
	tk := takerOf(t, c)
	key, now := f.mark(0), time.Now()
	first, err := tk.Takeover(f.ctx, key, payload("p"), time.Hour, now)
	if err != nil || first.Status != store.Acquired || first.Token == 0 {
		t.Fatalf("Takeover of a free key = %+v, %v; want acquired", first, err)
	}
	old, err := tk.Takeover(f.ctx, key, payload("p"), time.Hour, now)
	if err != nil || old.Status != store.Acquired || old.Token <= first.Token {
		t.Fatalf("Takeover of its own held key = %+v, %v; want a token above %d", old, err, first.Token)
	}
	taken, err := tk.Takeover(f.ctx, key, payload("p"), time.Hour, now.Add(time.Second))
	if err != nil || taken.Status != store.Acquired || taken.Token <= old.Token {
		t.Fatalf("Takeover under a running lease = %+v, %v; want a token above %d", taken, err, old.Token)
	}
	if got := taken.LeaseUntil; got.Sub(now.Add(time.Hour+time.Second)).Abs() > time.Millisecond {
		t.Fatalf("taken over lease ends at %s, want %s", got, now.Add(time.Hour+time.Second))
	}
	if err := c.Complete(f.ctx, old, []byte("stale"), now.Add(time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Complete: %v, want ErrFenced", err)
	}
	if err := c.Release(f.ctx, old); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Release: %v, want ErrFenced", err)
	}
	if err := c.Extend(f.ctx, old, now.Add(2*time.Hour)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("old owner's Extend: %v, want ErrFenced", err)
	}
	if _, err := c.Claim(f.ctx, key, payload("p"), time.Hour, now.Add(2*time.Second)); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("Claim of a taken over key: %v, want ErrClaimHeld", err)
	}
	got, ok, err := c.Lookup(f.ctx, key, now.Add(2*time.Second))
	if err != nil || !ok || got.Status != store.InProgress || got.Token != taken.Token {
		t.Fatalf("Lookup = %+v, %v, %v; want IN_PROGRESS with token %d", got, ok, err, taken.Token)
	}
	if err := c.Complete(f.ctx, taken, []byte("fresh"), now.Add(time.Hour)); err != nil {
		t.Fatalf("new owner's Complete: %v", err)
	}
	got, ok, err = c.Lookup(f.ctx, key, now.Add(3*time.Second))
	if err != nil || !ok || got.Status != store.Completed || string(got.Result) != "fresh" {
		t.Fatalf("Lookup = %+v, %v, %v; want the new owner's result", got, ok, err)
	}
	// A released claim is taken like any other.
	rel, err := tk.Takeover(f.ctx, f.mark(1), payload("p"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Release(f.ctx, rel); err != nil {
		t.Fatal(err)
	}
	if again, err := tk.Takeover(f.ctx, f.mark(1), payload("p"), time.Hour, now); err != nil || again.Status != store.Acquired || again.Token <= rel.Token {
		t.Fatalf("Takeover of a released key = %+v, %v; want a token above %d", again, err, rel.Token)
	}
}

// testTakeoverCompletedAndMismatch: Takeover returns a completed record
// until it expires and refuses a live record made for another payload, in
// progress or completed; an expired record is replaced, whatever its
// payload.
func testTakeoverCompletedAndMismatch(t *testing.T, f *fixture, c store.Claims) {
	tk := takerOf(t, c)
	key, now := f.mark(0), time.Now()
	cl, err := c.Claim(f.ctx, key, payload("a"), time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Takeover(f.ctx, key, payload("b"), time.Hour, now); !errors.Is(err, store.ErrPayloadMismatch) {
		t.Fatalf("Takeover in progress with another payload: %v, want ErrPayloadMismatch", err)
	}
	if err := c.Complete(f.ctx, cl, []byte(`{"ok":1}`), now.Add(time.Hour)); err != nil {
		t.Fatalf("Complete after a refused Takeover: %v", err)
	}
	got, err := tk.Takeover(f.ctx, key, payload("a"), time.Hour, now.Add(time.Second))
	if err != nil || got.Status != store.Completed || string(got.Result) != `{"ok":1}` || got.Token != cl.Token || got.PayloadHash != payload("a") {
		t.Fatalf("Takeover of a completed key = %+v, %v; want the completed record", got, err)
	}
	if _, err := tk.Takeover(f.ctx, key, payload("b"), time.Hour, now.Add(time.Second)); !errors.Is(err, store.ErrPayloadMismatch) {
		t.Fatalf("Takeover of completed with another payload: %v, want ErrPayloadMismatch", err)
	}
	fresh, err := tk.Takeover(f.ctx, key, payload("b"), time.Hour, now.Add(2*time.Hour))
	if err != nil || fresh.Status != store.Acquired || fresh.Token <= cl.Token {
		t.Fatalf("Takeover after expiry = %+v, %v; want acquired with a token above %d", fresh, err, cl.Token)
	}
	// An in-progress record whose lease ran out is replaced, even for
	// another payload, as Claim replaces it.
	lapsed, err := tk.Takeover(f.ctx, key, payload("c"), time.Hour, now.Add(4*time.Hour))
	if err != nil || lapsed.Status != store.Acquired || lapsed.Token <= fresh.Token {
		t.Fatalf("Takeover of a lapsed lease for another payload = %+v, %v; want a token above %d", lapsed, err, fresh.Token)
	}
}

// testTakeoverRace: many goroutines take one key over at once, in many
// trials: each gets its own token, and only the highest token completes;
// every other owner is fenced.
func testTakeoverRace(t *testing.T, f *fixture, c store.Claims) {
	tk := takerOf(t, c)
	const trials, takers = 20, 8
	now := time.Now()
	for trial := range trials {
		key := f.mark(trial)
		claims := make(chan store.Claim, takers)
		errs := make(chan error, takers)
		var wg sync.WaitGroup
		for range takers {
			wg.Go(func() {
				cl, err := tk.Takeover(f.ctx, key, payload("p"), time.Hour, now)
				if err != nil || cl.Status != store.Acquired {
					errs <- fmt.Errorf("Takeover = %+v, %v", cl, err)
					return
				}
				claims <- cl
			})
		}
		wg.Wait()
		close(errs)
		close(claims)
		for err := range errs {
			t.Fatal(err)
		}
		tokens := make(map[uint64]bool)
		var last store.Claim
		for cl := range claims {
			if tokens[cl.Token] {
				t.Fatalf("trial %d: token %d given twice", trial, cl.Token)
			}
			tokens[cl.Token] = true
			if cl.Token > last.Token {
				last = cl
			}
		}
		for tok := range tokens {
			err := c.Complete(f.ctx, store.Claim{Key: key, Token: tok}, []byte("r"), now.Add(time.Hour))
			switch {
			case tok == last.Token && err != nil:
				t.Fatalf("trial %d: the last owner's Complete: %v", trial, err)
			case tok != last.Token && !errors.Is(err, store.ErrFenced):
				t.Fatalf("trial %d: an earlier owner's Complete: %v, want ErrFenced", trial, err)
			}
		}
	}
}
