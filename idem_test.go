package idem_test

import (
	"context"
	"math/big"
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
