package redisstream

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/idem-run/idem"
)

const maxU = ^uint64(0)

// bigOf is ms*2^64+seq, computed independently with math/big.
func bigOf(ms, seq uint64) *big.Int {
	v := new(big.Int).SetUint64(ms)
	v.Lsh(v, 64)
	return v.Add(v, new(big.Int).SetUint64(seq))
}

func TestSequenceOfIDEdges(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want string
	}{
		{"0-0", strings.Repeat("0", 40)},
		{"0-1", strings.Repeat("0", 39) + "1"},
		{"0-18446744073709551615", strings.Repeat("0", 20) + "18446744073709551615"},
		{"1-0", strings.Repeat("0", 20) + "18446744073709551616"},
		{"1-1", strings.Repeat("0", 20) + "18446744073709551617"},
		{"18446744073709551615-18446744073709551615", "0340282366920938463463374607431768211455"}, // 2^128-1
		{"1526919030474-55", ""},
	} {
		got, err := SequenceOfID(tc.id)
		if err != nil {
			t.Fatalf("SequenceOfID(%q): %v", tc.id, err)
		}
		if len(got) != SequenceWidth {
			t.Fatalf("SequenceOfID(%q) = %q: %d digits, want %d", tc.id, got, len(got), SequenceWidth)
		}
		e, _ := parseEntryID(tc.id)
		if want := bigOf(e.ms, e.seq).String(); strings.TrimLeft(string(got), "0") != strings.TrimLeft(want, "0") {
			t.Fatalf("SequenceOfID(%q) = %q, want the number %s", tc.id, got, want)
		}
		if tc.want != "" && string(got) != tc.want {
			t.Fatalf("SequenceOfID(%q) = %q, want %q", tc.id, got, tc.want)
		}
		back, err := IDOfSequence(got)
		if err != nil || back != tc.id {
			t.Fatalf("IDOfSequence(%q) = %q, %v; want %q", got, back, err, tc.id)
		}
	}
}

func TestSequenceOrderAtEdges(t *testing.T) {
	// In ID order: each must map below the next, as numbers and as text.
	ids := []entryID{
		{0, 0}, {0, 1}, {0, 2}, {0, maxU - 1}, {0, maxU},
		{1, 0}, {1, 1}, {1, maxU},
		{2, 0},
		{1526919030474, 55}, {1526919030474, maxU}, {1526919030475, 0},
		{maxU - 1, maxU}, {maxU, 0}, {maxU, 1}, {maxU, maxU - 1}, {maxU, maxU},
	}
	for i := 1; i < len(ids); i++ {
		a, b := ids[i-1].sequence(), ids[i].sequence()
		if a.Compare(b) >= 0 || !(string(a) < string(b)) {
			t.Fatalf("%v -> %q is not below %v -> %q", ids[i-1], a, ids[i], b)
		}
		if n, ok := ids[i-1].next(); !ok || n.cmp(ids[i]) > 0 {
			t.Fatalf("%v.next() = %v, %v", ids[i-1], n, ok)
		}
		if p := ids[i].prev(); p.cmp(ids[i-1]) < 0 || p.cmp(ids[i]) >= 0 {
			t.Fatalf("%v.prev() = %v", ids[i], p)
		}
	}
	if n, _ := (entryID{0, maxU}).next(); n != (entryID{1, 0}) {
		t.Fatalf("next of 0-max = %v, want 1-0", n)
	}
	if p := (entryID{1, 0}).prev(); p != (entryID{0, maxU}) {
		t.Fatalf("prev of 1-0 = %v, want 0-max", p)
	}
	if _, ok := maxID.next(); ok {
		t.Fatal("the largest ID has a next")
	}
}

func TestParseSequence(t *testing.T) {
	for _, tc := range []struct {
		seq  idem.Sequence
		want entryID
	}{
		{"", entryID{}},
		{"0", entryID{}},
		{"000", entryID{}},
		{"1", entryID{0, 1}},
		{"18446744073709551616", entryID{1, 0}},
		{"0000000000000000000000000000000000000000000000000000018446744073709551617", entryID{1, 1}}, // wider than 40
		{"340282366920938463463374607431768211455", maxID},
	} {
		got, err := parseSequence(tc.seq)
		if err != nil || got != tc.want {
			t.Fatalf("parseSequence(%q) = %v, %v; want %v", tc.seq, got, err, tc.want)
		}
	}
	for _, bad := range []idem.Sequence{
		"340282366920938463463374607431768211456", // 2^128
		"999999999999999999999999999999999999999999",
		"-1", "1-2", " 1", "1a", "+1",
	} {
		if _, err := parseSequence(bad); !errors.Is(err, ErrInvalidSequence) {
			t.Fatalf("parseSequence(%q): %v, want ErrInvalidSequence", bad, err)
		}
	}
	for _, bad := range []string{"", "1", "1-", "-1", "1-2-3", "a-1", "1-+2", "18446744073709551616-0", "1-18446744073709551616"} {
		if _, err := SequenceOfID(bad); !errors.Is(err, ErrInvalidSequence) {
			t.Fatalf("SequenceOfID(%q): %v, want ErrInvalidSequence", bad, err)
		}
	}
	if p := (entryID{}).position(); p != "" {
		t.Fatalf("position of 0-0 = %q, want the zero Sequence", p)
	}
}

// FuzzSequenceMapping checks, for any two IDs, that the mapping round-trips
// exactly, has a fixed width, is the number ms*2^64+seq, and orders as the
// IDs do, both as numbers and as text.
func FuzzSequenceMapping(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(1))
	f.Add(uint64(0), maxU, uint64(1), uint64(0))
	f.Add(maxU, maxU, maxU, maxU-1)
	f.Add(uint64(1526919030474), uint64(55), uint64(1526919030474), uint64(56))
	f.Add(uint64(1e19), uint64(0), uint64(1e19-1), maxU)
	f.Fuzz(func(t *testing.T, ms1, seq1, ms2, seq2 uint64) {
		a, b := entryID{ms1, seq1}, entryID{ms2, seq2}
		sa, err := SequenceOfID(a.String())
		if err != nil {
			t.Fatal(err)
		}
		sb := b.sequence()
		if len(sa) != SequenceWidth || len(sb) != SequenceWidth {
			t.Fatalf("widths %d, %d", len(sa), len(sb))
		}
		n, ok := new(big.Int).SetString(string(sa), 10)
		if !ok || n.Cmp(bigOf(ms1, seq1)) != 0 {
			t.Fatalf("%v -> %q, want %s", a, sa, bigOf(ms1, seq1))
		}
		back, err := IDOfSequence(sa)
		if err != nil || back != a.String() {
			t.Fatalf("IDOfSequence(%q) = %q, %v; want %q", sa, back, err, a)
		}
		// Any spelling of the number maps back too.
		if got, err := parseSequence(idem.Sequence(n.String())); err != nil || got != a {
			t.Fatalf("parseSequence(%q) = %v, %v; want %v", n.String(), got, err, a)
		}
		want := a.cmp(b)
		if got := sa.Compare(sb); got != want {
			t.Fatalf("Compare(%q, %q) = %d, IDs %v, %v compare %d", sa, sb, got, a, b, want)
		}
		if got := strings.Compare(string(sa), string(sb)); got != want {
			t.Fatalf("text order of %q, %q = %d, IDs compare %d", sa, sb, got, want)
		}
		if want < 0 {
			if nx, ok := a.next(); !ok || nx.cmp(b) > 0 || nx.prev() != a {
				t.Fatalf("%v.next() = %v, %v", a, nx, ok)
			}
		}
	})
}

// FuzzParseSequence checks that any string either is refused or reads as
// a number that spells back to an equal Sequence.
func FuzzParseSequence(f *testing.F) {
	for _, s := range []string{"", "0", "1", "18446744073709551616", "340282366920938463463374607431768211455", "340282366920938463463374607431768211456", "12a", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseSequence(idem.Sequence(s))
		n, isNum := new(big.Int).SetString(s, 10)
		valid := s == "" || (isNum && idem.Sequence(s).Valid() && n.BitLen() <= 128)
		if (err == nil) != valid {
			t.Fatalf("parseSequence(%q): err %v, valid %v", s, err, valid)
		}
		if err != nil {
			return
		}
		if got := e.sequence(); got.Compare(idem.Sequence(s)) != 0 {
			t.Fatalf("parseSequence(%q) spells back as %q", s, got)
		}
		if id, err := parseEntryID(e.String()); err != nil || id != e {
			t.Fatalf("%v does not round-trip as %q: %v", e, e.String(), err)
		}
	})
}
