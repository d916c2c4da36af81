package store

import (
	"hash/fnv"
	"testing"
)

// TestMarkKeyOfIsFNV128a: MarkKeyOf computes hash/fnv's FNV-1a 128 of
// scope, NUL, key; keys already in stores depend on it.
func TestMarkKeyOfIsFNV128a(t *testing.T) {
	for _, c := range [][2]string{{"", ""}, {"scope", "key"}, {"ship-order", "orders/shardId-000000000000/00000000000000000042"}, {"\x00step", "a/b/c"}, {"é", "\xff\x00\x01"}} {
		h := fnv.New128a()
		h.Write([]byte(c[0]))
		h.Write([]byte{0})
		h.Write([]byte(c[1]))
		var want MarkKey
		h.Sum(want[:0])
		if got := MarkKeyOf(c[0], c[1]); got != want {
			t.Errorf("MarkKeyOf(%q, %q) = %x, want %x", c[0], c[1], got, want)
		}
	}
}

func FuzzMarkKeyOf(f *testing.F) {
	f.Add("scope", "key")
	f.Fuzz(func(t *testing.T, scope, key string) {
		h := fnv.New128a()
		h.Write([]byte(scope))
		h.Write([]byte{0})
		h.Write([]byte(key))
		var want MarkKey
		h.Sum(want[:0])
		if got := MarkKeyOf(scope, key); got != want {
			t.Fatalf("MarkKeyOf(%q, %q) = %x, want %x", scope, key, got, want)
		}
	})
}

func BenchmarkMarkKeyOf(b *testing.B) {
	for b.Loop() {
		MarkKeyOf("ship-order", "orders/shardId-000000000000/00000000000000000042")
	}
}

// BenchmarkMarkKeyOfHashFNV is what MarkKeyOf cost through hash/fnv, for
// the ratio BENCHMARKS.md reports.
func BenchmarkMarkKeyOfHashFNV(b *testing.B) {
	for b.Loop() {
		h := fnv.New128a()
		h.Write([]byte("ship-order"))
		h.Write([]byte{0})
		h.Write([]byte("orders/shardId-000000000000/00000000000000000042"))
		var mk MarkKey
		h.Sum(mk[:0])
	}
}
