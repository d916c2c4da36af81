package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// LegacyHarness opens stores for RunLegacy: stores that earlier versions
// of idem wrote, with marks and claims records under the FNV-1a keys of
// store.LegacyMarkKeyOf, and that this version then upgrades.
type LegacyHarness interface {
	// Harness's Reopen restarts a store, as a new process of this
	// version; its Open is not used.
	Harness
	// OpenFresh returns a driver over a store no other test uses, which
	// nobody has asked LegacyKeysUntil yet. The harness releases it with
	// t.Cleanup.
	OpenFresh(ctx context.Context, t testing.TB) (store.Driver, error)
	// Upgrade does to d's store what starting this version over a store
	// an earlier version wrote does (a restart, a schema migration), and
	// returns the driver to go on with.
	Upgrade(ctx context.Context, t testing.TB, d store.Driver) (store.Driver, error)
}

// RunLegacy checks that a store upgraded from a version whose MarkKeyOf
// was FNV-1a treats what completed before the upgrade as completed after
// it, through store.Legacy, until it expires; and that a store this
// version created never makes anyone look legacy keys up.
func RunLegacy(t *testing.T, h LegacyHarness) {
	t.Run("NewStoreHasNone", func(t *testing.T) { testLegacyNone(t, h) })
	t.Run("CompletedBeforeUpgradeStaysDone", func(t *testing.T) { testLegacyDone(t, h) })
}

func openFresh(t *testing.T, h LegacyHarness) store.Driver {
	t.Helper()
	d, err := h.OpenFresh(context.Background(), t)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.(store.LegacyKeyed); !ok {
		t.Fatalf("%T does not implement store.LegacyKeyed", d)
	}
	return d
}

func legacyUntil(t *testing.T, d store.Driver) time.Time {
	t.Helper()
	until, err := d.(store.LegacyKeyed).LegacyKeysUntil(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return until
}

// legacyCommit commits marks of keys in scope, made by key, expiring at
// expires.
func legacyCommit(t *testing.T, d store.Driver, mk func(scope, key string) store.MarkKey, scope string, expires time.Time, keys ...string) {
	t.Helper()
	w := &store.Write{Checkpoint: store.CheckpointKey{Mapping: scope, Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: idem.Sequence("1")}}
	for _, k := range keys {
		w.Marks = append(w.Marks, store.Mark{Key: mk(scope, k), Expires: expires})
	}
	if err := d.Commit(context.Background(), w); err != nil {
		t.Fatal(err)
	}
}

func testLegacyNone(t *testing.T, h LegacyHarness) {
	ctx := context.Background()
	d := openFresh(t, h)
	d, err := h.Upgrade(ctx, t, d)
	if err != nil {
		t.Fatal(err)
	}
	if until := legacyUntil(t, d); !until.IsZero() {
		t.Fatalf("a store this version created: LegacyKeysUntil = %v, want the zero time", until)
	}
	// Records written since never make it hold legacy keys.
	base := baseTime()
	legacyCommit(t, d, store.MarkKeyOf, "legacy-none", base.Add(time.Hour), "a", "b")
	if c, ok := d.(store.Claims); ok {
		cl, err := c.Claim(ctx, store.MarkKeyOf("legacy-none", "c"), payload("p"), time.Minute, base)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Complete(ctx, cl, []byte("r"), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if d, err = h.Reopen(ctx, t, d); err != nil {
		t.Fatal(err)
	}
	if until := legacyUntil(t, d); !until.IsZero() {
		t.Fatalf("after writes and a restart: LegacyKeysUntil = %v, want the zero time", until)
	}
	l, err := store.LegacyOf(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if l.Active(base) {
		t.Fatal("Legacy is active over a store with no legacy keys")
	}
}

func testLegacyDone(t *testing.T, h LegacyHarness) {
	ctx := context.Background()
	const scope = "legacy-done"
	base := baseTime()
	d := openFresh(t, h)

	// What an earlier version left: marks, and claims records completed
	// and in progress, all under FNV-1a keys.
	legacyCommit(t, d, store.LegacyMarkKeyOf, scope, base.Add(time.Hour), "paid")
	legacyCommit(t, d, store.LegacyMarkKeyOf, scope, base.Add(2*time.Hour), "late")
	latest := base.Add(2 * time.Hour)
	claims, hasClaims := d.(store.Claims)
	if hasClaims {
		cl, err := claims.Claim(ctx, store.LegacyMarkKeyOf(scope, "invoked"), payload("p"), time.Minute, base)
		if err != nil {
			t.Fatal(err)
		}
		if err := claims.Complete(ctx, cl, []byte("result"), base.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := claims.Claim(ctx, store.LegacyMarkKeyOf(scope, "running"), payload("p"), 10*time.Minute, base); err != nil {
			t.Fatal(err)
		}
		latest = base.Add(3 * time.Hour)
	}

	d, err := h.Upgrade(ctx, t, d)
	if err != nil {
		t.Fatal(err)
	}
	until := legacyUntil(t, d)
	if until.Before(latest) {
		t.Fatalf("LegacyKeysUntil = %v, before the last legacy record expires (%v)", until, latest)
	}
	l, err := store.LegacyOf(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Active(base) {
		t.Fatal("Legacy is not active over a store holding legacy marks")
	}

	// The same keys after the upgrade: what completed is not run again.
	keys := []string{"paid", "fresh", "late"}
	claimAt := func(now time.Time, owner string) *store.RecordClaims {
		t.Helper()
		rc := &store.RecordClaims{Owner: store.MarkKeyOf(scope+"/owner", owner), Marks: true, Now: now, LeaseUntil: now.Add(time.Minute)}
		for _, k := range keys {
			rc.Keys = append(rc.Keys, store.MarkKeyOf(scope, k))
		}
		if err := l.ClaimRecords(ctx, d, rc, scope, func(i int) string { return keys[i] }); err != nil {
			t.Fatal(err)
		}
		return rc
	}
	rc := claimAt(base, "a")
	wantStatus(t, "claim after the upgrade", rc, time.Time{}, store.Completed, store.Acquired, store.Completed)
	// Another owner finds the fresh key held, and the legacy ones done
	// before it.
	keys = []string{"late", "fresh", "paid"}
	rc = claimAt(base, "b")
	wantStatus(t, "claim of the held key", rc, base.Add(time.Minute), store.Completed, store.InProgress, 0)
	// Once a legacy mark expires, its key runs again, as any mark's.
	keys = []string{"paid", "late"}
	rc = claimAt(base.Add(90*time.Minute), "c")
	wantStatus(t, "claim after the first legacy mark expired", rc, time.Time{}, store.Acquired, store.Completed)

	// A mark written now does not make the store hold legacy keys longer,
	// after a restart either.
	legacyCommit(t, d, store.MarkKeyOf, scope, base.Add(100*time.Hour), "new")
	if d, err = h.Reopen(ctx, t, d); err != nil {
		t.Fatal(err)
	}
	if again := legacyUntil(t, d); !again.Equal(until) {
		t.Fatalf("LegacyKeysUntil moved from %v to %v after a new mark", until, again)
	}

	if !hasClaims {
		return
	}
	claims = d.(store.Claims)
	mk := store.MarkKeyOf(scope, "invoked")
	c, err := l.Claim(ctx, claims, mk, scope, "invoked", payload("p"), time.Minute, base)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != store.Completed || !bytes.Equal(c.Result, []byte("result")) {
		t.Fatalf("claim of a key completed before the upgrade: %v %q, want COMPLETED %q", c.Status, c.Result, "result")
	}
	if _, err := l.Claim(ctx, claims, mk, scope, "invoked", payload("other"), time.Minute, base); !errors.Is(err, store.ErrPayloadMismatch) {
		t.Fatalf("claim with another payload: %v, want ErrPayloadMismatch", err)
	}
	if c, ok, err := l.Lookup(ctx, claims, mk, scope, "invoked", base); err != nil || !ok || c.Status != store.Completed {
		t.Fatalf("lookup: %v %v %v, want COMPLETED", c.Status, ok, err)
	}
	running := store.MarkKeyOf(scope, "running")
	if _, err := l.Claim(ctx, claims, running, scope, "running", payload("p"), time.Minute, base); !errors.Is(err, store.ErrClaimHeld) {
		t.Fatalf("claim of a key in progress before the upgrade: %v, want ErrClaimHeld", err)
	}
	if taker, ok := claims.(interface {
		store.Claims
		store.ClaimTaker
	}); ok {
		c, err := l.Takeover(ctx, taker, running, scope, "running", payload("p"), time.Minute, base)
		if err != nil || c.Status != store.Acquired {
			t.Fatalf("takeover of a key in progress before the upgrade: %v %v, want ACQUIRED", c.Status, err)
		}
	}
	// After the legacy record expired, the key is claimed afresh.
	c, err = l.Claim(ctx, claims, mk, scope, "invoked", payload("p"), time.Minute, base.Add(4*time.Hour))
	if err != nil || c.Status != store.Acquired {
		t.Fatalf("claim after the legacy record expired: %v %v, want ACQUIRED", c.Status, err)
	}
}
