package idem_test

import (
	"cmp"
	"context"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/idem-run/idem"
)

func TestSequenceCompare(t *testing.T) {
	for _, c := range []struct {
		a, b idem.Sequence
		want int
	}{
		{"", "", 0},
		{"", "0", 0},
		{"", "00000000000000000000", 0},
		{"", "1", -1},
		{"9", "10", -1},
		{"00000000000000000009", "10", -1},
		{"00000000000000000010", "10", 0},
		{"49590338271490256608559692538361571095921575989136588898", "18446744073709551615", 1},
		{"49590338271490256608559692538361571095921575989136588898", "49590338271490256608559692538361571095921575989136588899", -1},
		{"0", "00", 0},
		{"0", "1", -1},
		{"2", "10", -1},        // below as a number, above as text
		{"10", "09", 1},        // equal widths
		{"100", "0099", 1},     // fewer digits, more value
		{"0000000001", "1", 0}, // padding of any width
		{"18446744073709551616", "18446744073709551615", 1},
		{"100000000000000000000", "99999999999999999999", 1},
		{"0049590338271490256608559692538361571095921575989136588898", "49590338271490256608559692538361571095921575989136588898", 0},
	} {
		if got := c.a.Compare(c.b); got != c.want {
			t.Errorf("%q.Compare(%q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := c.b.Compare(c.a); got != -c.want {
			t.Errorf("%q.Compare(%q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestSequenceUint64(t *testing.T) {
	for _, c := range []struct {
		s    idem.Sequence
		n    uint64
		fits bool
	}{
		{"", 0, true},
		{"000", 0, true},
		{idem.SequenceOf(42), 42, true},
		{"18446744073709551615", 1<<64 - 1, true},
		{"18446744073709551616", 0, false},
		{"12a", 0, false},
		{"-1", 0, false},
		{"0x", 0, false},
		{"0", 0, true},
		{"7", 7, true},
		{"0000000000000000000000000000018446744073709551615", 1<<64 - 1, true}, // padding beyond 20 digits
		{"00000000000000000000000000000", 0, true},
		{"99999999999999999999", 0, false},
		{"49590338271490256608559692538361571095921575989136588898", 0, false},
		{"+1", 0, false},
		{" 1", 0, false},
		{"1_000", 0, false},
		{"00a", 0, false},
		{"a00", 0, false},
	} {
		n, ok := c.s.Uint64()
		if n != c.n || ok != c.fits {
			t.Errorf("%q.Uint64() = %d, %v; want %d, %v", c.s, n, ok, c.n, c.fits)
		}
	}
}

func TestSequenceOf(t *testing.T) {
	if got := idem.SequenceOf(42); got != "00000000000000000042" {
		t.Fatalf("SequenceOf(42) = %q", got)
	}
	if got := idem.SequenceOf(1<<64 - 1); got != "18446744073709551615" {
		t.Fatalf("SequenceOf(max) = %q", got)
	}
	if got := string(idem.AppendSequence([]byte("x"), 7)); got != "x00000000000000000007" {
		t.Fatalf("AppendSequence = %q", got)
	}
	if got := idem.SequenceOf(0); got != "00000000000000000000" || got.Compare("") != 0 {
		t.Fatalf("SequenceOf(0) = %q, which should equal the zero Sequence", got)
	}
	for _, n := range []uint64{0, 1, 9, 10, 1234567890, 1<<63 + 5, 1<<64 - 1} {
		s := idem.SequenceOf(n)
		if len(s) != 20 || !s.Valid() {
			t.Fatalf("SequenceOf(%d) = %q, want 20 digits", n, s)
		}
		if back, ok := s.Uint64(); !ok || back != n {
			t.Fatalf("SequenceOf(%d).Uint64() = %d, %v", n, back, ok)
		}
	}
}

func TestSequenceValidLessMax(t *testing.T) {
	for _, c := range []struct {
		s     idem.Sequence
		valid bool
	}{
		{"", true}, {"0", true}, {"0123456789", true}, {"49590338271490256608559692538361571095921575989136588898", true},
		{"-1", false}, {"1.5", false}, {"1e3", false}, {" ", false}, {"١", false},
	} {
		if got := c.s.Valid(); got != c.valid {
			t.Errorf("%q.Valid() = %v, want %v", c.s, got, c.valid)
		}
	}
	if !idem.Sequence("9").Less("10") || idem.Sequence("10").Less("9") || idem.Sequence("10").Less("0010") {
		t.Error("Less does not order as numbers")
	}
	for _, c := range []struct{ a, b, want idem.Sequence }{
		{"", "1", "1"},
		{"9", "10", "10"},
		{"10", "9", "10"},
		{"0010", "10", "0010"}, // equal: the first
		{"18446744073709551616", idem.SequenceOf(1<<64 - 1), "18446744073709551616"},
	} {
		if got := idem.MaxSequence(c.a, c.b); got != c.want {
			t.Errorf("MaxSequence(%q, %q) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

// FuzzSequenceCompare: Compare orders digit strings as math/big does.
func FuzzSequenceCompare(f *testing.F) {
	f.Add("", "0")
	f.Add("0009", "10")
	f.Add("49590338271490256608559692538361571095921575989136588898", "18446744073709551615")
	f.Fuzz(func(t *testing.T, a, b string) {
		if !idem.Sequence(a).Valid() || !idem.Sequence(b).Valid() {
			return
		}
		x, y := new(big.Int), new(big.Int)
		x.SetString("0"+a, 10)
		y.SetString("0"+b, 10)
		if got, want := idem.Sequence(a).Compare(idem.Sequence(b)), x.Cmp(y); got != want {
			t.Fatalf("Compare(%q, %q) = %d, math/big says %d", a, b, got, want)
		}
		if n, ok := idem.Sequence(a).Uint64(); ok != x.IsUint64() || (ok && n != x.Uint64()) {
			t.Fatalf("Uint64(%q) = %d, %v; math/big says %s", a, n, ok, x)
		}
		if got := idem.Sequence(b).Compare(idem.Sequence(a)); got != -x.Cmp(y) {
			t.Fatalf("Compare(%q, %q) = %d, not the opposite of Compare(%q, %q)", b, a, got, a, b)
		}
		if idem.Sequence(a).Compare(idem.Sequence("000"+a)) != 0 {
			t.Fatalf("%q does not equal itself with leading zeros", a)
		}
	})
}

// FuzzSequenceOf: SequenceOf orders as the numbers do, as text and by
// Compare, also against the unpadded spelling.
func FuzzSequenceOf(f *testing.F) {
	f.Add(uint64(0), uint64(1))
	f.Add(uint64(9), uint64(10))
	f.Add(uint64(1<<64-1), uint64(1<<63))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		want := cmp.Compare(a, b)
		sa, sb := idem.SequenceOf(a), idem.SequenceOf(b)
		if got := sa.Compare(sb); got != want {
			t.Fatalf("SequenceOf(%d).Compare(SequenceOf(%d)) = %d, want %d", a, b, got, want)
		}
		if got := strings.Compare(string(sa), string(sb)); got != want {
			t.Fatalf("SequenceOf(%d) and SequenceOf(%d) sort as text %d, want %d", a, b, got, want)
		}
		if got := sa.Compare(idem.Sequence(strconv.FormatUint(b, 10))); got != want {
			t.Fatalf("SequenceOf(%d).Compare(%q) = %d, want %d", a, strconv.FormatUint(b, 10), got, want)
		}
	})
}

// TestStepWithoutJournal: outside idem a step just runs, with the record's
// key; Step without a record in context is a clear error.
func TestStepWithoutJournal(t *testing.T) {
	r := &idem.Record{ShardID: "s", Sequence: "1", IdempotencyKey: "in/s/1"}
	got, err := idem.StepFor(context.Background(), r, "charge", func(_ context.Context, key string) (string, error) {
		return key, nil
	})
	if err != nil || got != "in/s/1/charge" {
		t.Fatalf("StepFor = %q, %v", got, err)
	}
	if _, err := idem.Step(context.Background(), "charge", func(context.Context, string) (int, error) { return 1, nil }); err == nil {
		t.Fatal("Step without a record in context succeeded")
	}
	h := idem.RecordFunc(func(ctx context.Context, _ *idem.Record) error {
		_, err := idem.Step(ctx, "x", func(context.Context, string) (int, error) { return 1, nil })
		return err
	})
	if _, err := h.HandleBatch(context.Background(), &idem.Batch{Records: []idem.Record{*r}}); err != nil {
		t.Fatalf("Step inside a RecordFunc: %v", err)
	}
}
