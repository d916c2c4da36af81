package function

import (
	"bytes"
	"encoding/json"
	"testing"
)

// jsonBodySize is what stringBodySize must answer: the length of s as
// encoding/json writes it with HTML escaping off, without its quotes.
func jsonBodySize(t testing.TB, s string) int {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return b.Len() - len(`""`+"\n")
}

// FuzzStringBodySize holds the word-at-a-time size to encoding/json's.
func FuzzStringBodySize(f *testing.F) {
	for _, s := range []string{
		"", "shardId-000000000000", "49590338271490256608559692538361571095921575989136588898",
		"abcdefg\"", "abcdefgh\\ijklmnop", "1234567\x1f", "\x00\x00\x00\x00\x00\x00\x00\x00",
		"héllo wörld, ünïcode", "\xff\xfe invalid", "line\u2028sep\u2029", "        ~~~~~~~~", "!!!!!!!!####$$$$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := stringBodySize(s), jsonBodySize(t, s); got != want {
			t.Fatalf("stringBodySize(%q) = %d, want %d", s, got, want)
		}
	})
}

// TestMayEscape checks every byte value in every position of a word.
func TestMayEscape(t *testing.T) {
	for c := range 256 {
		want := c < 0x20 || c == '"' || c == '\\' || c >= 0x80
		for pos := range 8 {
			w := uint64(0x6161616161616161) // "aaaaaaaa"
			w = w&^(0xff<<(8*pos)) | uint64(c)<<(8*pos)
			if got := mayEscape(w); got != want {
				t.Fatalf("mayEscape with byte %#x at %d = %v, want %v", c, pos, got, want)
			}
		}
	}
}

// BenchmarkStringBodySize sizes the strings of a Kinesis record.
func BenchmarkStringBodySize(b *testing.B) {
	strs := []string{"us-east-1", "shardId-000000000003", "49590338271490256608559692538361571095921575989136588898", "orders", "customer-1234"}
	for b.Loop() {
		for _, s := range strs {
			stringBodySize(s)
		}
	}
}
