// Package storetest is the conformance suite every store.Driver passes (and
// every store.Claims, for drivers that keep idempotency records), and
// the benchmarks that compare drivers on identical work. A driver's test is
// one line:
//
//	func TestConformance(t *testing.T) { storetest.RunConformance(t, harness{}) }
//
// The suite is driver-agnostic: it touches a driver only through
// store.Driver, keeps each subtest in its own key space (names derived from
// the subtest), and decides mark expiry with explicit timestamps, never by
// sleeping. On-failure records land in streams the suite cannot read
// generically; each driver tests them in its own package.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Harness opens drivers for the suite.
type Harness interface {
	// Open returns a driver over a store that the calling test or
	// benchmark may share with others (the suite keeps to its own keys).
	// The harness releases it with t.Cleanup.
	Open(ctx context.Context, t testing.TB) (store.Driver, error)
	// Reopen simulates a restart: it abandons crashed (as a process that
	// died would) and returns a new driver over the same store. Everything
	// crashed acknowledged must be there.
	Reopen(ctx context.Context, t testing.TB, crashed store.Driver) (store.Driver, error)
}

// RunConformance runs the suite's tests as parallel subtests of t.
func RunConformance(t *testing.T, h Harness) {
	tests := []struct {
		name string
		run  func(*testing.T, *fixture)
	}{
		{"CheckpointAbsent", testCheckpointAbsent},
		{"CheckpointRoundTrip", testCheckpointRoundTrip},
		{"CheckpointKeysDistinct", testCheckpointKeysDistinct},
		{"DeleteCheckpoint", testDeleteCheckpoint},
		{"ProgressRoundTrip", testProgressRoundTrip},
		{"SequencesOrderAsNumbers", testSequencesOrderAsNumbers},
		{"NonDecimalSequencesRefused", testNonDecimalSequencesRefused},
		{"MarksCompletedAndExpired", testMarks},
		{"State", testState},
		{"WriteLandsWholly", testWriteLandsWholly},
		{"WriteReuse", testWriteReuse},
		{"ConcurrentCommits", testConcurrentCommits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newFixture(t, h))
		})
	}
	for _, tc := range recordTests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newFixture(t, h))
		})
	}
	for _, tc := range rangeTests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newFixture(t, h))
		})
	}
	for _, tc := range claimTests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, h)
			tc.run(t, f, claimsOf(f))
		})
	}
}

type fixture struct {
	t   *testing.T
	h   Harness
	ctx context.Context
	d   store.Driver
	// ns is unique to the test: every name the test uses starts with it.
	ns string
}

func newFixture(t *testing.T, h Harness) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	d, err := h.Open(ctx, t)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return &fixture{t: t, h: h, ctx: ctx, d: d, ns: fmt.Sprintf("%s@%d", t.Name(), time.Now().UnixNano())}
}

func (f *fixture) reopen() {
	f.t.Helper()
	d, err := f.h.Reopen(f.ctx, f.t, f.d)
	if err != nil {
		f.t.Fatalf("Reopen: %v", err)
	}
	f.d = d
}

func (f *fixture) cpKey(shard string) store.CheckpointKey {
	return store.CheckpointKey{Mapping: f.ns + "/mapping", Stream: "stream", Shard: shard}
}

func (f *fixture) progressKey(shard string) store.ProgressKey {
	return store.ProgressKey{Scope: f.ns + "/scope", Stream: "stream", Shard: shard}
}

// mark derives a mark key unique to the test.
func (f *fixture) mark(i int) store.MarkKey {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", f.ns, i))
	return store.MarkKey(sum[:16])
}

func (f *fixture) commit(w *store.Write) {
	f.t.Helper()
	if err := f.d.Commit(f.ctx, w); err != nil {
		f.t.Fatalf("Commit: %v", err)
	}
}

func (f *fixture) checkpoint(key store.CheckpointKey) (store.Checkpoint, bool) {
	f.t.Helper()
	c, ok, err := f.d.Checkpoint(f.ctx, key)
	if err != nil {
		f.t.Fatalf("Checkpoint(%+v): %v", key, err)
	}
	return c, ok
}

func (f *fixture) wantCheckpoint(key store.CheckpointKey, want store.Checkpoint) {
	f.t.Helper()
	got, ok := f.checkpoint(key)
	if !ok || got != want {
		f.t.Fatalf("Checkpoint(%+v) = %+v, %v; want %+v, true", key, got, ok, want)
	}
}

func (f *fixture) progress(key store.ProgressKey) store.Progress {
	f.t.Helper()
	p, err := f.d.Progress(f.ctx, key)
	if err != nil {
		f.t.Fatalf("Progress(%+v): %v", key, err)
	}
	return p
}

func (f *fixture) completed(keys []store.MarkKey, now time.Time) []bool {
	f.t.Helper()
	done := make([]bool, len(keys))
	if err := f.d.Completed(f.ctx, keys, now, done); err != nil {
		f.t.Fatalf("Completed: %v", err)
	}
	return done
}

func (f *fixture) wantState(ns, key string, want []byte) {
	f.t.Helper()
	got, err := f.d.State(f.ctx, ns, key)
	if want == nil {
		if !errors.Is(err, idem.ErrNotFound) {
			f.t.Fatalf("State(%q, %q) = %q, %v; want idem.ErrNotFound", ns, key, got, err)
		}
		return
	}
	if err != nil || !bytes.Equal(got, want) || got == nil {
		f.t.Fatalf("State(%q, %q) = %q, %v; want %q", ns, key, got, err, want)
	}
}

func testCheckpointAbsent(t *testing.T, f *fixture) {
	if c, ok := f.checkpoint(f.cpKey("shard-0")); ok || c != (store.Checkpoint{}) {
		t.Fatalf("absent checkpoint = %+v, %v; want zero, false", c, ok)
	}
	if p := f.progress(f.progressKey("shard-0")); p.HighWater != "" || len(p.Above) != 0 {
		t.Fatalf("absent progress = %+v, want zero", p)
	}
}

func testCheckpointRoundTrip(t *testing.T, f *fixture) {
	key := f.cpKey("shard-0")
	cp := store.Checkpoint{Sequence: kinesisSeq, Processed: 10, Skipped: 2, Discarded: 3, Lost: 1 << 40}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: cp})
	f.wantCheckpoint(key, cp)
	cp2 := store.Checkpoint{Sequence: "49590338271490256608559692538361571095921575989136588998", Processed: 110}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: cp2})
	f.wantCheckpoint(key, cp2)
	// Never backwards: the write is refused whole, marks included.
	mk := f.mark(1)
	err := f.d.Commit(f.ctx, &store.Write{Checkpoint: key, NewCheckpoint: cp,
		Marks: []store.Mark{{Key: mk, Expires: time.Now().Add(time.Hour)}}})
	if !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("Commit of an older checkpoint: %v, want ErrCheckpointBackwards", err)
	}
	f.wantCheckpoint(key, cp2)
	done := []bool{false}
	if err := f.d.Completed(f.ctx, []store.MarkKey{mk}, time.Now(), done); err != nil || done[0] {
		t.Fatalf("a refused Commit left its mark: %v, %v", done, err)
	}
	// The same checkpoint again is not backwards (a commit of out-of-order
	// completions only).
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: cp2})
	zero := f.cpKey("shard-zero")
	f.commit(&store.Write{Checkpoint: zero})
	f.wantCheckpoint(zero, store.Checkpoint{})
}

// testCheckpointKeysDistinct: keys whose parts concatenate to the same text
// are distinct, and so are their progress and state.
func testCheckpointKeysDistinct(t *testing.T, f *fixture) {
	a := store.CheckpointKey{Mapping: f.ns + "/a/b", Stream: "c", Shard: "d"}
	b := store.CheckpointKey{Mapping: f.ns + "/a", Stream: "b/c", Shard: "d"}
	c := store.CheckpointKey{Mapping: f.ns + "/a", Stream: "b", Shard: "c/d"}
	d := store.CheckpointKey{Mapping: f.ns + "/a\x00b", Stream: "c", Shard: "d"}
	keys := []store.CheckpointKey{a, b, c, d}
	for i, k := range keys {
		f.commit(&store.Write{Checkpoint: k, NewCheckpoint: store.Checkpoint{Sequence: sq(i + 1)},
			HasProgress: true, ProgressKey: asProgressKey(k), Progress: store.Progress{HighWater: sq(i + 10)}})
	}
	for i, k := range keys {
		f.wantCheckpoint(k, store.Checkpoint{Sequence: sq(i + 1)})
		if p := f.progress(asProgressKey(k)); p.HighWater != sq(i+10) {
			t.Fatalf("progress of %+v = %+v, want high water %d", k, p, i+10)
		}
	}
	ns := f.ns + "/"
	f.commit(&store.Write{Checkpoint: a, NewCheckpoint: store.Checkpoint{Sequence: sq(1)}, State: []store.StateOp{
		{Namespace: ns + "a/b", Key: "c", Value: []byte("1")},
		{Namespace: ns + "a", Key: "b/c", Value: []byte("2")},
		{Namespace: ns + "a\x00b", Key: "c", Value: []byte("3")},
		{Namespace: ns + "a", Key: "b\x00c", Value: []byte("4")},
	}})
	f.wantState(ns+"a/b", "c", []byte("1"))
	f.wantState(ns+"a", "b/c", []byte("2"))
	f.wantState(ns+"a\x00b", "c", []byte("3"))
	f.wantState(ns+"a", "b\x00c", []byte("4"))
}

func asProgressKey(k store.CheckpointKey) store.ProgressKey {
	return store.ProgressKey{Scope: k.Mapping, Stream: k.Stream, Shard: k.Shard}
}

func testDeleteCheckpoint(t *testing.T, f *fixture) {
	key := f.cpKey("shard-0")
	other := f.cpKey("shard-1")
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(7)}})
	f.commit(&store.Write{Checkpoint: other, NewCheckpoint: store.Checkpoint{Sequence: sq(9)}})
	if err := f.d.DeleteCheckpoint(f.ctx, key); err != nil {
		t.Fatalf("DeleteCheckpoint: %v", err)
	}
	if c, ok := f.checkpoint(key); ok {
		t.Fatalf("deleted checkpoint = %+v, true", c)
	}
	f.wantCheckpoint(other, store.Checkpoint{Sequence: sq(9)})
	if err := f.d.DeleteCheckpoint(f.ctx, key); err != nil {
		t.Fatalf("DeleteCheckpoint of a missing checkpoint: %v", err)
	}
	// Deleted means deleted after a restart too, and a new one can start
	// lower: the reset the deletion exists for.
	f.reopen()
	if c, ok := f.checkpoint(key); ok {
		t.Fatalf("deleted checkpoint after reopen = %+v, true", c)
	}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: sq(2)}})
	f.wantCheckpoint(key, store.Checkpoint{Sequence: sq(2)})
}

func testProgressRoundTrip(t *testing.T, f *fixture) {
	key := f.progressKey("shard-0")
	cpKey := f.cpKey("shard-0")
	for _, p := range []store.Progress{
		{HighWater: sq(5)},
		{HighWater: sq(100), Above: []idem.Sequence{sq(102), sq(103), sq(110), sq(1 << 40)}},
		{HighWater: sq(uint64(1<<64 - 3)), Above: []idem.Sequence{sq(uint64(1<<64 - 1)), kinesisSeq}},
		{HighWater: sq(200)},
	} {
		f.commit(&store.Write{Checkpoint: cpKey, HasProgress: true, ProgressKey: key, Progress: p})
		got := f.progress(key)
		if got.HighWater != p.HighWater || !slices.Equal(got.Above, p.Above) {
			t.Fatalf("Progress = %+v, want %+v", got, p)
		}
	}
	// A Write without HasProgress leaves progress alone.
	f.commit(&store.Write{Checkpoint: cpKey, ProgressKey: key, Progress: store.Progress{HighWater: sq(1)}})
	if got := f.progress(key); got.HighWater != sq(200) {
		t.Fatalf("Progress after a Write without it = %+v, want high water 200", got)
	}
	if other := f.progress(f.progressKey("shard-1")); other.HighWater != "" {
		t.Fatalf("another shard's progress = %+v", other)
	}
}

// kinesisSeq is a 56-digit Kinesis sequence number: far beyond 64 bits.
const kinesisSeq idem.Sequence = "49590338271490256608559692538361571095921575989136588898"

// testSequencesOrderAsNumbers: a driver keeps sequences verbatim, whatever
// their width, and orders them as the numbers they spell (never as text, nor
// by parsing them into 64 bits): sources number records unpadded (Kafka
// offsets), padded to 20 digits (the embedded stream) or in 56 digits
// (Kinesis).
func testSequencesOrderAsNumbers(t *testing.T, f *fixture) {
	key := f.cpKey("shard-0")
	// Each is numerically at or above the one before; several are below it
	// as text, or do not fit 64 bits.
	for _, s := range []idem.Sequence{
		"9",
		"10",                    // below "9" as text
		"00000000000000000010",  // the same number, padded
		"00000000000000000011",  // below "10" as text
		"18446744073709551615",  // the largest uint64
		"18446744073709551616",  // one more: 20 digits that overflow
		"100000000000000000000", // 21 digits, below the last as text
		kinesisSeq,
		"0" + kinesisSeq, // the same number, one more digit
	} {
		cp := store.Checkpoint{Sequence: s, Processed: 1}
		f.commit(&store.Write{Checkpoint: key, NewCheckpoint: cp})
		f.wantCheckpoint(key, cp)
	}
	// Numerically lower is backwards, even when it is above as text or
	// longer.
	for _, s := range []idem.Sequence{
		"9",
		"99999999999999999999",
		"49590338271490256608559692538361571095921575989136588897",
		"0000049590338271490256608559692538361571095921575989136588897",
	} {
		err := f.d.Commit(f.ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: s}})
		if !errors.Is(err, store.ErrCheckpointBackwards) {
			t.Fatalf("Commit of checkpoint %q after %q: %v, want ErrCheckpointBackwards", s, "0"+kinesisSeq, err)
		}
	}
	f.wantCheckpoint(key, store.Checkpoint{Sequence: "0" + kinesisSeq, Processed: 1})
	next := store.Checkpoint{Sequence: "49590338271490256608559692538361571095921575989136588899", Processed: 2}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: next})

	// Above is ascending as numbers; the driver keeps it as written.
	pKey := f.progressKey("shard-0")
	prog := store.Progress{HighWater: "9", Above: []idem.Sequence{
		"10", "00000000000000000011", "100", "18446744073709551616", "100000000000000000000", kinesisSeq,
	}}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: next, HasProgress: true, ProgressKey: pKey, Progress: prog})
	check := func(when string) {
		t.Helper()
		f.wantCheckpoint(key, next)
		got := f.progress(pKey)
		if got.HighWater != prog.HighWater || !slices.Equal(got.Above, prog.Above) {
			t.Fatalf("%s: Progress = %+v, want %+v", when, got, prog)
		}
		for _, c := range []struct {
			seq  idem.Sequence
			done bool
		}{
			{"", true}, {"00000000000000000009", true}, {"10", true}, {"0000000010", true}, {"11", true},
			{"12", false}, {"99", false}, {"00000000000000000100", true}, {"18446744073709551615", false},
			{"18446744073709551616", true}, {"100000000000000000000", true}, {"0" + kinesisSeq, true},
			{"49590338271490256608559692538361571095921575989136588899", false},
		} {
			if d := got.Done(c.seq); d != c.done {
				t.Fatalf("%s: Progress %+v: Done(%q) = %v, want %v", when, got, c.seq, d, c.done)
			}
		}
	}
	check("before reopen")
	f.reopen()
	check("after reopen")
}

// testNonDecimalSequencesRefused: a Write whose checkpoint or progress
// holds something other than decimal digits is refused whole, and the
// checkpoint and progress stay readable and writable: a driver that stored
// it could not order it, or read it back.
func testNonDecimalSequencesRefused(t *testing.T, f *fixture) {
	key, pKey := f.cpKey("shard-0"), f.progressKey("shard-0")
	good := store.Checkpoint{Sequence: sq(5), Processed: 5}
	goodProg := store.Progress{HighWater: sq(5), Above: []idem.Sequence{sq(7)}}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: good, HasProgress: true, ProgressKey: pKey, Progress: goodProg})
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, bad := range []store.Write{
		{NewCheckpoint: store.Checkpoint{Sequence: "abc"}},
		{NewCheckpoint: store.Checkpoint{Sequence: "-6"}},
		{NewCheckpoint: store.Checkpoint{Sequence: "6.5"}},
		{NewCheckpoint: store.Checkpoint{Sequence: " 6"}},
		{NewCheckpoint: store.Checkpoint{Sequence: "6,7"}},
		{NewCheckpoint: good, HasProgress: true, Progress: store.Progress{HighWater: "6x"}},
		{NewCheckpoint: good, HasProgress: true, Progress: store.Progress{HighWater: sq(5), Above: []idem.Sequence{sq(7), "8,9"}}},
		{NewCheckpoint: good, HasProgress: true, Progress: store.Progress{HighWater: sq(5), Above: []idem.Sequence{"x"}}},
	} {
		w := bad
		w.Checkpoint, w.ProgressKey = key, pKey
		w.Marks = []store.Mark{{Key: f.mark(i), Expires: base.Add(time.Hour)}}
		if err := f.d.Commit(f.ctx, &w); err == nil {
			t.Fatalf("Commit of checkpoint %q, progress %+v (HasProgress %v) succeeded, want an error", w.NewCheckpoint.Sequence, w.Progress, w.HasProgress)
		}
		if done := f.completed([]store.MarkKey{f.mark(i)}, base); done[0] {
			t.Fatalf("a refused Commit (write %d) left its mark", i)
		}
	}
	check := func(when string) {
		t.Helper()
		f.wantCheckpoint(key, good)
		if p := f.progress(pKey); p.HighWater != goodProg.HighWater || !slices.Equal(p.Above, goodProg.Above) {
			t.Fatalf("%s: progress = %+v, want %+v", when, p, goodProg)
		}
	}
	check("after refused writes")
	f.reopen()
	check("after reopen")
	next := store.Checkpoint{Sequence: sq(6), Processed: 6}
	f.commit(&store.Write{Checkpoint: key, NewCheckpoint: next})
	f.wantCheckpoint(key, next)
}

func testMarks(t *testing.T, f *fixture) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	keys := []store.MarkKey{f.mark(0), f.mark(1), f.mark(2), f.mark(3)}
	f.commit(&store.Write{Checkpoint: f.cpKey("shard-0"), Marks: []store.Mark{
		{Key: keys[0], Expires: base.Add(time.Hour)},
		{Key: keys[1], Expires: base.Add(time.Minute)},
		{Key: keys[2], Expires: base.Add(-time.Second)},
	}})
	check := func(now time.Time, want ...bool) {
		t.Helper()
		if got := f.completed(keys, now); !slices.Equal(got, want) {
			t.Fatalf("Completed at base%+v = %v, want %v", now.Sub(base), got, want)
		}
	}
	check(base, true, true, false, false)
	check(base.Add(time.Minute-time.Microsecond), true, true, false, false)
	check(base.Add(time.Minute), true, false, false, false)
	check(base.Add(time.Hour), false, false, false, false)
	check(base.Add(-time.Hour), true, true, true, false)

	// A later commit renews a mark.
	f.commit(&store.Write{Checkpoint: f.cpKey("shard-0"), Marks: []store.Mark{{Key: keys[1], Expires: base.Add(2 * time.Hour)}}})
	check(base.Add(time.Hour), false, true, false, false)

	// Empty and repeated lookups.
	if err := f.d.Completed(f.ctx, nil, base, nil); err != nil {
		t.Fatalf("Completed of no keys: %v", err)
	}
	if got := f.completed([]store.MarkKey{keys[0], keys[0], keys[3]}, base); !slices.Equal(got, []bool{true, true, false}) {
		t.Fatalf("Completed with a repeated key = %v", got)
	}
	f.reopen()
	check(base, true, true, false, false)
}

func testState(t *testing.T, f *fixture) {
	ns := f.ns + "/scope"
	f.wantState(ns, "missing", nil)
	f.commit(&store.Write{Checkpoint: f.cpKey("s"), State: []store.StateOp{
		{Namespace: ns, Key: "a", Value: []byte("alpha")},
		{Namespace: ns, Key: "b", Value: []byte{0, 1, 2, 255}},
		{Namespace: ns, Key: "empty", Value: []byte{}},
		{Namespace: ns + "-other", Key: "a", Value: []byte("other")},
	}})
	f.wantState(ns, "a", []byte("alpha"))
	f.wantState(ns, "b", []byte{0, 1, 2, 255})
	f.wantState(ns+"-other", "a", []byte("other"))
	if v, err := f.d.State(f.ctx, ns, "empty"); err != nil || len(v) != 0 {
		t.Fatalf("State of an empty value = %q, %v; want empty, nil", v, err)
	}

	// The caller owns what State returns.
	v, err := f.d.State(f.ctx, ns, "a")
	if err != nil {
		t.Fatal(err)
	}
	copy(v, "XXXXX")
	f.wantState(ns, "a", []byte("alpha"))

	// Overwrite, delete, delete a missing key; later ops of a Write win.
	f.commit(&store.Write{Checkpoint: f.cpKey("s"), State: []store.StateOp{
		{Namespace: ns, Key: "a", Value: []byte("first")},
		{Namespace: ns, Key: "a", Value: []byte("second")},
		{Namespace: ns, Key: "b", Delete: true},
		{Namespace: ns, Key: "never", Delete: true},
		{Namespace: ns, Key: "c", Value: []byte("gone")},
		{Namespace: ns, Key: "c", Delete: true},
	}})
	f.wantState(ns, "a", []byte("second"))
	f.wantState(ns, "b", nil)
	f.wantState(ns, "c", nil)
	f.wantState(ns, "never", nil)
}

func testWriteLandsWholly(t *testing.T, f *fixture) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ns := f.ns + "/scope"
	cpKey, pKey := f.cpKey("shard-0"), f.progressKey("shard-0")
	n := 100
	if l, ok := f.d.(store.TxLimiter); ok {
		n = min(n, l.MaxWriteItems()-3) // beside the checkpoint, progress and state
	}
	marks := make([]store.Mark, n)
	keys := make([]store.MarkKey, len(marks))
	for i := range marks {
		keys[i] = f.mark(i)
		marks[i] = store.Mark{Key: keys[i], Expires: base.Add(time.Hour)}
	}
	cp := store.Checkpoint{Sequence: sq(100), Processed: 97, Skipped: 2, Discarded: 1}
	prog := store.Progress{HighWater: sq(100), Above: []idem.Sequence{sq(105)}}
	f.commit(&store.Write{
		Checkpoint: cpKey, NewCheckpoint: cp,
		HasProgress: true, ProgressKey: pKey, Progress: prog,
		Marks: marks,
		State: []store.StateOp{{Namespace: ns, Key: "count", Value: []byte("97")}},
	})
	verify := func(when string) {
		t.Helper()
		f.wantCheckpoint(cpKey, cp)
		if p := f.progress(pKey); p.HighWater != prog.HighWater || !slices.Equal(p.Above, prog.Above) {
			t.Fatalf("%s: progress = %+v, want %+v", when, p, prog)
		}
		for i, ok := range f.completed(keys, base) {
			if !ok {
				t.Fatalf("%s: mark %d not completed", when, i)
			}
		}
		f.wantState(ns, "count", []byte("97"))
	}
	verify("before reopen")
	f.reopen()
	verify("after reopen")
}

// testWriteReuse: the engine Resets and refills one Write per shard; a
// driver must not keep references into it after Commit returns.
func testWriteReuse(t *testing.T, f *fixture) {
	ns := f.ns + "/scope"
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &store.Write{}
	val := []byte("one")
	w.Checkpoint = f.cpKey("shard-0")
	w.NewCheckpoint = store.Checkpoint{Sequence: sq(1)}
	w.HasProgress, w.ProgressKey = true, f.progressKey("shard-0")
	w.Progress.Above = append(w.Progress.Above, sq(3))
	w.Progress.HighWater = sq(1)
	w.Marks = append(w.Marks, store.Mark{Key: f.mark(0), Expires: base.Add(time.Hour)})
	w.State = append(w.State, store.StateOp{Namespace: ns, Key: "k", Value: val})
	f.commit(w)

	w.Reset()
	copy(val, "two")
	w.Checkpoint = f.cpKey("shard-1")
	w.NewCheckpoint = store.Checkpoint{Sequence: sq(2)}
	w.HasProgress, w.ProgressKey = true, f.progressKey("shard-1")
	w.Progress.HighWater = sq(5)
	w.Marks = append(w.Marks, store.Mark{Key: f.mark(1), Expires: base.Add(time.Hour)})
	w.State = append(w.State, store.StateOp{Namespace: ns, Key: "k2", Value: []byte("v2")})
	f.commit(w)

	f.wantCheckpoint(f.cpKey("shard-0"), store.Checkpoint{Sequence: sq(1)})
	f.wantCheckpoint(f.cpKey("shard-1"), store.Checkpoint{Sequence: sq(2)})
	if p := f.progress(f.progressKey("shard-0")); p.HighWater != sq(1) || !slices.Equal(p.Above, []idem.Sequence{sq(3)}) {
		t.Fatalf("first progress = %+v", p)
	}
	if p := f.progress(f.progressKey("shard-1")); p.HighWater != sq(5) || len(p.Above) != 0 {
		t.Fatalf("second progress = %+v", p)
	}
	if got := f.completed([]store.MarkKey{f.mark(0), f.mark(1)}, base); !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("marks = %v", got)
	}
	f.wantState(ns, "k", []byte("one"))
	f.wantState(ns, "k2", []byte("v2"))
}

func testConcurrentCommits(t *testing.T, f *fixture) {
	workers, commits := 16, 20
	if testing.Short() {
		workers, commits = 8, 5
	}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ns := f.ns + "/scope"
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Go(func() {
			shard := fmt.Sprintf("shard-%d", g)
			for c := 1; c <= commits; c++ {
				w := &store.Write{
					Checkpoint: f.cpKey(shard), NewCheckpoint: store.Checkpoint{Sequence: sq(c), Processed: uint64(c)},
					HasProgress: true, ProgressKey: f.progressKey(shard), Progress: store.Progress{HighWater: sq(c)},
					State: []store.StateOp{{Namespace: ns, Key: shard, Value: fmt.Appendf(nil, "%d", c)}},
				}
				for m := range 10 {
					w.Marks = append(w.Marks, store.Mark{Key: f.mark(g*10000 + c*100 + m), Expires: base.Add(time.Hour)})
				}
				if err := f.d.Commit(f.ctx, w); err != nil {
					errs <- fmt.Errorf("worker %d commit %d: %w", g, c, err)
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
	verify := func(when string) {
		t.Helper()
		for g := range workers {
			shard := fmt.Sprintf("shard-%d", g)
			f.wantCheckpoint(f.cpKey(shard), store.Checkpoint{Sequence: sq(commits), Processed: uint64(commits)})
			if p := f.progress(f.progressKey(shard)); p.HighWater != sq(commits) {
				t.Fatalf("%s: %s progress = %+v", when, shard, p)
			}
			f.wantState(ns, shard, fmt.Appendf(nil, "%d", commits))
			var keys []store.MarkKey
			for c := 1; c <= commits; c++ {
				for m := range 10 {
					keys = append(keys, f.mark(g*10000+c*100+m))
				}
			}
			for i, ok := range f.completed(keys, base) {
				if !ok {
					t.Fatalf("%s: %s mark %d missing", when, shard, i)
				}
			}
		}
	}
	verify("before reopen")
	f.reopen()
	verify("after reopen")
}

// RunBenchmarks measures Commit on the work idem's modes do per batch of 100
// records, serially and with concurrent committers (as shards commit),
// reporting records/s. Commits are durable, as store.Driver requires.
func RunBenchmarks(b *testing.B, h Harness) {
	for _, bc := range []struct {
		name  string
		marks int
		claim bool
	}{
		{"Checkpoint", 0, false},
		{"Checkpoint+100Marks", 100, false},
		// Payload keys under claims: ClaimRecords of the batch's keys
		// (marks looked up), then the Commit whose marks end the claims.
		{"ClaimRecords+Checkpoint+100Marks", 100, true},
	} {
		for _, parallel := range []bool{false, true} {
			name := bc.name + "/durable/serial"
			if parallel {
				name = bc.name + "/durable/parallel"
			}
			b.Run(name, func(b *testing.B) { benchCommit(b, h, bc.marks, bc.claim, parallel) })
		}
	}
}

const benchBatch = 100

func benchCommit(b *testing.B, h Harness, marks int, claim, parallel bool) {
	ctx := context.Background()
	d, err := h.Open(ctx, b)
	if err != nil {
		b.Fatal(err)
	}
	// A store whose atomic write holds a bounded number of items
	// (store.TxLimiter) commits batches of as many marks as fit beside the
	// checkpoint, and records/s counts those.
	records := benchBatch
	if l, ok := d.(store.TxLimiter); ok && marks >= l.MaxWriteItems() {
		marks = l.MaxWriteItems() - 1
		records = marks
	}
	// Keys of their own: a shared store outlives one benchmark run, and
	// its checkpoints must not move backwards.
	mapping := fmt.Sprintf("bench/%s@%d", b.Name(), time.Now().UnixNano())
	var mu sync.Mutex
	worker := 0
	newWriter := func() func() error {
		mu.Lock()
		worker++
		id := worker
		mu.Unlock()
		w := &store.Write{}
		shard := fmt.Sprintf("shard-%d", id)
		c := &store.RecordClaims{Owner: store.MarkKeyOf(mapping, shard), Marks: true}
		var seq uint64
		return func() error {
			w.Reset()
			seq += benchBatch
			w.Checkpoint = store.CheckpointKey{Mapping: mapping, Stream: "stream", Shard: shard}
			w.NewCheckpoint = store.Checkpoint{Sequence: sq(seq), Processed: seq}
			expires := time.Now().Add(time.Hour)
			for i := range marks {
				var k store.MarkKey
				binary.BigEndian.PutUint64(k[:8], uint64(id)<<32|uint64(i))
				binary.BigEndian.PutUint64(k[8:], seq)
				w.Marks = append(w.Marks, store.Mark{Key: k, Expires: expires})
			}
			if claim {
				c.Keys = c.Keys[:0]
				for i := range w.Marks {
					c.Keys = append(c.Keys, w.Marks[i].Key)
				}
				c.Now = time.Now()
				c.LeaseUntil = c.Now.Add(time.Minute)
				if err := d.ClaimRecords(ctx, c); err != nil {
					return err
				}
				if c.Held() != len(c.Keys) {
					return fmt.Errorf("key %d of a fresh batch held elsewhere", c.Held())
				}
			}
			return d.Commit(ctx, w)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	if parallel {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			commit := newWriter()
			for pb.Next() {
				if err := commit(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		commit := newWriter()
		for range b.N {
			if err := commit(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*records)/time.Since(start).Seconds(), "records/s")
}

// sq is the suite's shorthand for a 20-digit sequence.
func sq[N int | uint64](n N) idem.Sequence { return idem.SequenceOf(uint64(n)) }
