package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"strings"
	"testing"
)

// sha256Key is MarkKeyOf's definition, spelled out with crypto/sha256's
// streaming API.
func sha256Key(scope, key string) MarkKey {
	h := sha256.New()
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(scope))))
	h.Write([]byte(scope))
	h.Write([]byte(key))
	return MarkKey(h.Sum(nil)[:16])
}

// TestMarkKeyOfKnownAnswers pins MarkKeyOf to SHA-256 of u64be(len(scope)),
// scope, key, truncated to 16 bytes: keys already in stores depend on it.
// The answers were computed outside Go (Python's hashlib).
func TestMarkKeyOfKnownAnswers(t *testing.T) {
	for _, c := range []struct{ scope, key, want string }{
		{"", "", "af5570f5a1810b7af78caf4bc70a660f"},
		{"scope", "key", "0787c9b99591ba02940b1cfe33576bbf"},
		{"ship-order", "orders/shardId-000000000000/00000000000000000042", "81b03c13685225cc592493b9c1ab3163"},
	} {
		if got := MarkKeyOf(c.scope, c.key); hex.EncodeToString(got[:]) != c.want {
			t.Errorf("MarkKeyOf(%q, %q) = %x, want %s", c.scope, c.key, got, c.want)
		}
	}
}

// TestMarkKeyOfIsSHA256: the stack and the pooled paths both compute the
// definition, on both sides of the stack buffer's size.
func TestMarkKeyOfIsSHA256(t *testing.T) {
	for _, n := range []int{0, 1, markKeyStack - 9, markKeyStack - 8, markKeyStack - 7, 2*markKeyStack + 3, 10000} {
		for _, split := range []int{0, n / 3, n} {
			in := strings.Repeat("é\x00x", n)[:n]
			scope, key := in[:split], in[split:]
			if got, want := MarkKeyOf(scope, key), sha256Key(scope, key); got != want {
				t.Errorf("MarkKeyOf(len %d, len %d) = %x, want %x", len(scope), len(key), got, want)
			}
		}
	}
}

// TestMarkKeyOfUnambiguous: the scope's length prefix keeps apart pairs
// whose concatenation is the same, which FNV-1a's NUL separator did not
// for scopes holding a NUL.
func TestMarkKeyOfUnambiguous(t *testing.T) {
	for _, c := range [][4]string{
		{"a", "bc", "ab", "c"},
		{"", "ab", "ab", ""},
		{"a\x00b", "c", "a", "b\x00c"},
	} {
		if MarkKeyOf(c[0], c[1]) == MarkKeyOf(c[2], c[3]) {
			t.Errorf("MarkKeyOf(%q, %q) == MarkKeyOf(%q, %q)", c[0], c[1], c[2], c[3])
		}
	}
	if LegacyMarkKeyOf("a\x00b", "c") != LegacyMarkKeyOf("a", "b\x00c") {
		t.Error("the legacy FNV-1a keys were expected to collide on a NUL in the scope")
	}
}

// TestMarkKeyOfDoesNotAllocate: the engine hashes every record of a
// window, short keys and long ones.
func TestMarkKeyOfDoesNotAllocate(t *testing.T) {
	long := strings.Repeat("k", 4*markKeyStack)
	MarkKeyOf("scope", long) // fill the pool
	for _, key := range []string{"orders/shardId-000000000000/00000000000000000042", long} {
		if raceEnabled && key == long {
			continue // sync.Pool drops some of what it is given under the race detector
		}
		if n := testing.AllocsPerRun(100, func() { MarkKeyOf("ship-order", key) }); n != 0 {
			t.Errorf("MarkKeyOf with a key of %d bytes: %v allocations, want 0", len(key), n)
		}
	}
}

// TestLegacyMarkKeyOfIsFNV128a: LegacyMarkKeyOf computes hash/fnv's FNV-1a
// 128 of scope, NUL, key: records earlier versions wrote are found under
// it.
func TestLegacyMarkKeyOfIsFNV128a(t *testing.T) {
	for _, c := range [][2]string{{"", ""}, {"scope", "key"}, {"ship-order", "orders/shardId-000000000000/00000000000000000042"}, {"\x00step", "a/b/c"}, {"é", "\xff\x00\x01"}} {
		if got, want := LegacyMarkKeyOf(c[0], c[1]), fnvKey(c[0], c[1]); got != want {
			t.Errorf("LegacyMarkKeyOf(%q, %q) = %x, want %x", c[0], c[1], got, want)
		}
	}
}

func fnvKey(scope, key string) MarkKey {
	h := fnv.New128a()
	h.Write([]byte(scope))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var mk MarkKey
	h.Sum(mk[:0])
	return mk
}

func FuzzMarkKeyOf(f *testing.F) {
	f.Add("scope", "key")
	f.Fuzz(func(t *testing.T, scope, key string) {
		if got, want := MarkKeyOf(scope, key), sha256Key(scope, key); got != want {
			t.Fatalf("MarkKeyOf(%q, %q) = %x, want %x", scope, key, got, want)
		}
		if got, want := LegacyMarkKeyOf(scope, key), fnvKey(scope, key); got != want {
			t.Fatalf("LegacyMarkKeyOf(%q, %q) = %x, want %x", scope, key, got, want)
		}
	})
}

// The benchmarks below put MarkKeyOf (SHA-256) beside what it replaced
// (FNV-1a 128, LegacyMarkKeyOf) for the ratio BENCHMARKS.md reports:
//
//	go test -run '^$' -bench 'MarkKeyOf' -benchmem ./store/

func BenchmarkMarkKeyOf(b *testing.B) {
	for b.Loop() {
		MarkKeyOf("ship-order", "orders/shardId-000000000000/00000000000000000042")
	}
}

func BenchmarkMarkKeyOfLegacyFNV(b *testing.B) {
	for b.Loop() {
		LegacyMarkKeyOf("ship-order", "orders/shardId-000000000000/00000000000000000042")
	}
}

// BenchmarkMarkKeyOfLong hashes a 1 KiB key, through the pooled hasher.
func BenchmarkMarkKeyOfLong(b *testing.B) {
	key := strings.Repeat("k", 1024)
	for b.Loop() {
		MarkKeyOf("ship-order", key)
	}
}

func BenchmarkMarkKeyOfLongLegacyFNV(b *testing.B) {
	key := strings.Repeat("k", 1024)
	for b.Loop() {
		LegacyMarkKeyOf("ship-order", key)
	}
}
