package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// rangeTests cover range claims (ClaimRange, Write.EndRange), which every
// driver implements.
var rangeTests = []struct {
	name string
	run  func(*testing.T, *fixture)
}{
	{"RangeClaimHeld", testRangeClaimHeld},
	{"RangeClaimDisjoint", testRangeClaimDisjoint},
	{"RangeClaimReplacesOwn", testRangeClaimReplacesOwn},
	{"RangeClaimExpired", testRangeClaimExpired},
	{"RangeClaimEndedByCommit", testRangeClaimEndedByCommit},
	{"RangeClaimProgress", testRangeClaimProgress},
	{"RangeClaimFenced", testRangeClaimFenced},
	{"RangeClaimNumeric", testRangeClaimNumeric},
	{"RangeClaimConcurrent", testRangeClaimConcurrent},
}

// rangeAt claims [from, to] of shard for mapping m at now, with a lease
// until until, and fails the test on an error.
func (f *fixture) rangeAt(shard, m string, from, to idem.Sequence, now, until time.Time) *store.RangeClaim {
	f.t.Helper()
	c := &store.RangeClaim{Key: f.mappingProgress(shard, f.ns+"/"+m), From: from, To: to, Now: now, LeaseUntil: until}
	if err := f.d.ClaimRange(f.ctx, c); err != nil {
		f.t.Fatalf("ClaimRange(%s [%s, %s]): %v", m, from, to, err)
	}
	if c.Held && c.Progress != nil {
		f.t.Fatalf("ClaimRange(%s [%s, %s]): held, with Progress %+v", m, from, to, c.Progress)
	}
	return c
}

// wantClaimed fails unless c claimed its range.
func wantClaimed(t *testing.T, what string, c *store.RangeClaim) {
	t.Helper()
	if c.Held || !c.HeldUntil.IsZero() {
		t.Fatalf("%s: Held %v until %v, want claimed", what, c.Held, c.HeldUntil)
	}
}

// wantHeld fails unless c found its range held until until.
func wantHeld(t *testing.T, what string, c *store.RangeClaim, until time.Time) {
	t.Helper()
	if !c.Held || !c.HeldUntil.Equal(until) {
		t.Fatalf("%s: Held %v until %v, want held until %v", what, c.Held, c.HeldUntil, until)
	}
}

// testRangeClaimHeld: a range overlapping another mapping's live range is
// held until that range's lease ends (the earliest of several), and the
// refused claim writes nothing.
func testRangeClaimHeld(t *testing.T, f *fixture) {
	now := baseTime()
	aLease, cLease := now.Add(time.Minute), now.Add(30*time.Second)
	wantClaimed(t, "a", f.rangeAt("shard-0", "a", sq(1), sq(100), now, aLease))
	wantHeld(t, "b over a", f.rangeAt("shard-0", "b", sq(50), sq(150), now, now.Add(time.Hour)), aLease)
	// b's refused claim wrote nothing: c takes what b asked for beyond a's.
	wantClaimed(t, "c over b's refused range", f.rangeAt("shard-0", "c", sq(120), sq(150), now, cLease))
	wantHeld(t, "b over a and c", f.rangeAt("shard-0", "b", sq(50), sq(200), now, now.Add(time.Hour)), cLease)
	wantHeld(t, "b over c", f.rangeAt("shard-0", "b", sq(150), sq(150), now, now.Add(time.Hour)), cLease)
	if _, local := f.h.(ProcessLocalClaims); !local {
		f.reopen()
		wantHeld(t, "b over a after a restart", f.rangeAt("shard-0", "b", sq(100), sq(100), now, now.Add(time.Hour)), aLease)
	}
	// Another shard, another scope: nothing held.
	wantClaimed(t, "b on another shard", f.rangeAt("shard-1", "b", sq(1), sq(200), now, now.Add(time.Hour)))
	other := &store.RangeClaim{Key: store.ProgressKey{Scope: f.ns + "/other-scope", Stream: "stream", Shard: "shard-0", Mapping: f.ns + "/b"},
		From: sq(1), To: sq(200), Now: now, LeaseUntil: now.Add(time.Hour)}
	if err := f.d.ClaimRange(f.ctx, other); err != nil {
		t.Fatal(err)
	}
	wantClaimed(t, "b in another scope", other)
}

// testRangeClaimDisjoint: ranges that do not overlap are both claimed;
// bounds are inclusive.
func testRangeClaimDisjoint(t *testing.T, f *fixture) {
	now := baseTime()
	lease := now.Add(time.Minute)
	wantClaimed(t, "a", f.rangeAt("shard-0", "a", sq(1), sq(100), now, lease))
	wantClaimed(t, "b after a", f.rangeAt("shard-0", "b", sq(101), sq(200), now, lease))
	wantClaimed(t, "c before a", f.rangeAt("shard-0", "c", sq(0), sq(0), now, lease))
	wantHeld(t, "d on a's last", f.rangeAt("shard-0", "d", sq(100), sq(100), now, lease), lease)
	wantHeld(t, "d on b's last", f.rangeAt("shard-0", "d", sq(200), sq(300), now, lease), lease)
	wantClaimed(t, "d after b", f.rangeAt("shard-0", "d", sq(201), sq(300), now, lease))
}

// testRangeClaimReplacesOwn: a mapping's claim replaces its earlier range
// (its own range never holds it), with the new lease.
func testRangeClaimReplacesOwn(t *testing.T, f *fixture) {
	now := baseTime()
	wantClaimed(t, "a", f.rangeAt("shard-0", "a", sq(1), sq(100), now, now.Add(time.Minute)))
	wantClaimed(t, "a over its own range", f.rangeAt("shard-0", "a", sq(50), sq(150), now, now.Add(2*time.Minute)))
	wantClaimed(t, "b over a's earlier range", f.rangeAt("shard-0", "b", sq(1), sq(49), now, now.Add(time.Minute)))
	wantHeld(t, "c over a's new range", f.rangeAt("shard-0", "c", sq(150), sq(160), now, now.Add(time.Minute)), now.Add(2*time.Minute))
	// The window moves on: the records before it are free.
	wantClaimed(t, "a's next window", f.rangeAt("shard-0", "a", sq(151), sq(250), now, now.Add(3*time.Minute)))
	wantClaimed(t, "c after a moved on", f.rangeAt("shard-0", "c", sq(150), sq(150), now, now.Add(time.Minute)))
	wantHeld(t, "b over a's next window", f.rangeAt("shard-0", "b", sq(200), sq(200), now, now.Add(time.Minute)), now.Add(3*time.Minute))
}

// testRangeClaimExpired: a range whose lease ended (at LeaseUntil) is
// ignored; its mapping then finds the taker's range.
func testRangeClaimExpired(t *testing.T, f *fixture) {
	now := baseTime()
	wantClaimed(t, "a", f.rangeAt("shard-0", "a", sq(1), sq(100), now, now.Add(time.Second)))
	wantHeld(t, "b while a's lease runs", f.rangeAt("shard-0", "b", sq(1), sq(100), now.Add(999*time.Millisecond), now.Add(time.Hour)), now.Add(time.Second))
	wantClaimed(t, "b at a's lease end", f.rangeAt("shard-0", "b", sq(1), sq(100), now.Add(time.Second), now.Add(time.Minute)))
	wantHeld(t, "a after b took over", f.rangeAt("shard-0", "a", sq(1), sq(100), now.Add(2*time.Second), now.Add(time.Hour)), now.Add(time.Minute))
	wantClaimed(t, "a after b's lease", f.rangeAt("shard-0", "a", sq(1), sq(100), now.Add(time.Minute), now.Add(time.Hour)))
}

// testRangeClaimEndedByCommit: a Write with EndRange ends its mapping's
// range, atomically with the progress it commits (the next claimer sees
// both); a refused Write ends nothing, and EndRange ends no other
// mapping's range.
func testRangeClaimEndedByCommit(t *testing.T, f *fixture) {
	now := baseTime()
	lease := now.Add(time.Hour)
	a, b := f.ns+"/a", f.ns+"/b"
	cpKey := f.cpKey("shard-0")
	wantClaimed(t, "a", f.rangeAt("shard-0", "a", sq(1), sq(100), now, lease))
	wantClaimed(t, "b", f.rangeAt("shard-0", "b", sq(101), sq(200), now, lease))

	// b's commit ends b's range only.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(200)},
		HasProgress: true, ProgressKey: f.mappingProgress("shard-0", b), Progress: store.Progress{HighWater: sq(200)}, EndRange: true})
	wantHeld(t, "c over a after b's commit", f.rangeAt("shard-0", "c", sq(1), sq(300), now, lease), lease)

	// A refused Write ends nothing.
	err := f.d.Commit(f.ctx, &store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		HasProgress: true, ProgressKey: f.mappingProgress("shard-0", a), Progress: store.Progress{HighWater: sq(100)}, EndRange: true})
	if !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("Commit of an older checkpoint: %v, want ErrCheckpointBackwards", err)
	}
	wantHeld(t, "c over a after a refused commit", f.rangeAt("shard-0", "c", sq(50), sq(50), now, lease), lease)

	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(300)},
		HasProgress: true, ProgressKey: f.mappingProgress("shard-0", a), Progress: store.Progress{HighWater: sq(90), Above: []idem.Sequence{sq(95)}}, EndRange: true})
	c := f.rangeAt("shard-0", "c", sq(1), sq(300), now, lease)
	wantClaimed(t, "c after a's commit", c)
	got := sortedProgress(c.Progress)
	want := []store.MappingProgress{
		{Mapping: a, Progress: store.Progress{HighWater: sq(90), Above: []idem.Sequence{sq(95)}}},
		{Mapping: b, Progress: store.Progress{HighWater: sq(200)}},
	}
	if !sameMappingProgress(got, want) {
		t.Fatalf("Progress = %+v, want %+v", got, want)
	}

	// EndRange without progress ends the range too.
	f.commit(&store.Write{Checkpoint: cpKey, NewCheckpoint: store.Checkpoint{Sequence: sq(400)},
		ProgressKey: f.mappingProgress("shard-0", f.ns+"/c"), EndRange: true})
	wantClaimed(t, "a after c's commit", f.rangeAt("shard-0", "a", sq(1), sq(300), now, lease))
}

// testRangeClaimProgress: a claim returns every mapping's progress of the
// scope over the shard (its own and the scope-wide one of mapping ""
// included, nothing of another shard or scope), as ScopeProgress does;
// none when there is none, and none when held.
func testRangeClaimProgress(t *testing.T, f *fixture) {
	now := baseTime()
	lease := now.Add(time.Minute)
	c := f.rangeAt("shard-0", "a", sq(1), sq(100), now, lease)
	wantClaimed(t, "a", c)
	if len(c.Progress) != 0 {
		t.Fatalf("Progress before any = %+v, want none", c.Progress)
	}
	cpKey := f.cpKey("shard-0")
	want := map[string]store.Progress{
		"":          {HighWater: sq(7), Above: []idem.Sequence{sq(9)}},
		f.ns + "/a": {HighWater: sq(100), Above: []idem.Sequence{sq(102), kinesisSeq}, Filter: `{"data":{"type":["order"]}}`},
		f.ns + "/b": {HighWater: sq(50), Filter: "|,;\x00\xff\\x00 \u00e9"},
	}
	for m, p := range want {
		f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true, ProgressKey: f.mappingProgress("shard-0", m), Progress: p})
	}
	// Not the scope's shard: not returned.
	f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true, ProgressKey: f.mappingProgress("shard-1", f.ns+"/a"), Progress: store.Progress{HighWater: sq(1)}})
	f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true,
		ProgressKey: store.ProgressKey{Scope: f.ns + "/other-scope", Stream: "stream", Shard: "shard-0", Mapping: f.ns + "/a"}, Progress: store.Progress{HighWater: sq(1)}})

	c = f.rangeAt("shard-0", "a", sq(101), sq(200), now, lease)
	wantClaimed(t, "a again", c)
	got := sortedProgress(c.Progress)
	if len(got) != len(want) {
		t.Fatalf("Progress = %+v, want %d mappings", got, len(want))
	}
	for _, mp := range got {
		if p, ok := want[mp.Mapping]; !ok || !sameProgress(mp.Progress, p) {
			t.Fatalf("Progress of mapping %q = %+v, want %+v", mp.Mapping, mp.Progress, p)
		}
	}
	if scope := f.scopeProgress(f.progressKey("shard-0")); !sameMappingProgress(got, scope) {
		t.Fatalf("Progress = %+v, ScopeProgress = %+v", got, scope)
	}
	if h := f.rangeAt("shard-0", "b", sq(150), sq(150), now, lease); !h.Held || h.Progress != nil {
		t.Fatalf("b over a's range: Held %v, Progress %+v; want held, no progress", h.Held, h.Progress)
	}
}

// testRangeClaimFenced: a claim fenced by a lease the fence key's claims
// record no longer holds (or never held) is refused with ErrFenced and
// claims nothing; the current token's claim goes through.
func testRangeClaimFenced(t *testing.T, f *fixture) {
	now := baseTime()
	leaseKey := f.mark(1000)
	fenced := func(what string, fence *store.Fence) {
		t.Helper()
		c := &store.RangeClaim{Key: f.mappingProgress("shard-0", f.ns+"/a"), From: sq(1), To: sq(100),
			Now: now, LeaseUntil: now.Add(time.Hour), Fence: fence}
		if err := f.d.ClaimRange(f.ctx, c); !errors.Is(err, store.ErrFenced) {
			t.Fatalf("%s: ClaimRange = %v, want ErrFenced", what, err)
		}
		if c.Held || c.Progress != nil {
			t.Fatalf("%s: Held %v, Progress %+v after a refusal", what, c.Held, c.Progress)
		}
		wantClaimed(t, what+": nothing claimed", f.rangeAt("shard-0", "b", sq(1), sq(100), now, now.Add(time.Second)))
		f.commit(&store.Write{Checkpoint: f.cpKey("shard-0"), ProgressKey: f.mappingProgress("shard-0", f.ns+"/b"), EndRange: true})
	}
	fenced("a key without a record", &store.Fence{Key: leaseKey, Token: 1})

	cl, ok := f.d.(store.Claims)
	if !ok {
		return
	}
	old, err := cl.Claim(f.ctx, leaseKey, payload("lease"), time.Second, now)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := cl.Claim(f.ctx, leaseKey, payload("lease"), time.Minute, now.Add(2*time.Second))
	if err != nil || taken.Token <= old.Token {
		t.Fatalf("takeover = %+v, %v", taken, err)
	}
	fenced("a stale token", &store.Fence{Key: leaseKey, Token: old.Token})
	c := &store.RangeClaim{Key: f.mappingProgress("shard-0", f.ns+"/a"), From: sq(1), To: sq(100),
		Now: now, LeaseUntil: now.Add(time.Hour), Fence: &store.Fence{Key: leaseKey, Token: taken.Token}}
	if err := f.d.ClaimRange(f.ctx, c); err != nil {
		t.Fatalf("the current token: %v", err)
	}
	wantClaimed(t, "the current token", c)
	wantHeld(t, "b over the fenced claim", f.rangeAt("shard-0", "b", sq(100), sq(100), now, now.Add(time.Second)), now.Add(time.Hour))
}

// testRangeClaimNumeric: ranges compare as numbers of any length, not as
// text: "9" is below "10", zero padding does not count, and 56-digit
// sequences order by value.
func testRangeClaimNumeric(t *testing.T, f *fixture) {
	now := baseTime()
	lease := now.Add(time.Minute)
	wantClaimed(t, "a 9", f.rangeAt("shard-0", "a", "9", "9", now, lease))
	wantClaimed(t, "b 10..20", f.rangeAt("shard-0", "b", "10", "20", now, lease))
	wantClaimed(t, "c 1..8", f.rangeAt("shard-0", "c", "1", "8", now, lease))
	wantHeld(t, "d 0009", f.rangeAt("shard-0", "d", "0009", "0009", now, lease), lease)
	wantHeld(t, "d 2..010", f.rangeAt("shard-0", "d", "2", "010", now, lease), lease)
	wantClaimed(t, "d 21..100", f.rangeAt("shard-0", "d", "21", "100", now, lease))

	big := idem.Sequence("4959" + strings.Repeat("0", 51) + "1") // 56 digits
	bigger := idem.Sequence("5" + strings.Repeat("0", 55))
	wantClaimed(t, "a kinesis", f.rangeAt("shard-1", "a", big, big, now, lease))
	wantClaimed(t, "b above it", f.rangeAt("shard-1", "b", bigger, bigger+"0", now, lease))
	wantClaimed(t, "c below it", f.rangeAt("shard-1", "c", "99999999999999999999", "999999999999999999999", now, lease))
	wantHeld(t, "d over it", f.rangeAt("shard-1", "d", "1000", bigger, now, lease), lease)
}

// testRangeClaimConcurrent: mappings claiming one range at once: exactly
// one claims it, every other one finds it held.
func testRangeClaimConcurrent(t *testing.T, f *fixture) {
	mappings, rounds := 8, 5
	if testing.Short() {
		rounds = 2
	}
	for r := range rounds {
		now := baseTime()
		shard := fmt.Sprintf("shard-%d", r)
		claims := make([]*store.RangeClaim, mappings)
		errs := make([]error, mappings)
		var wg sync.WaitGroup
		for m := range mappings {
			claims[m] = &store.RangeClaim{Key: f.mappingProgress(shard, fmt.Sprintf("%s/%d", f.ns, m)),
				From: sq(m), To: sq(100 + m), Now: now, LeaseUntil: now.Add(time.Minute)}
			wg.Go(func() { errs[m] = f.d.ClaimRange(f.ctx, claims[m]) })
		}
		wg.Wait()
		won := 0
		for m, c := range claims {
			if errs[m] != nil {
				t.Fatalf("round %d mapping %d: %v", r, m, errs[m])
			}
			if !c.Held {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d mappings claimed overlapping ranges, want 1", r, won)
		}
	}
}

// sortedProgress returns ps sorted by mapping.
func sortedProgress(ps []store.MappingProgress) []store.MappingProgress {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b store.MappingProgress) int { return strings.Compare(a.Mapping, b.Mapping) })
	return ps
}

// sameMappingProgress compares lists sorted by mapping.
func sameMappingProgress(a, b []store.MappingProgress) bool {
	return slices.EqualFunc(a, b, func(x, y store.MappingProgress) bool {
		return x.Mapping == y.Mapping && sameProgress(x.Progress, y.Progress)
	})
}
