package postgres

import (
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// TestEscape: escape makes valid text without NUL, keeps the usual string
// as it is, and unescape reverses it.
func TestEscape(t *testing.T) {
	cases := map[string]string{
		"":                   "",
		"orders-to-ship":     "orders-to-ship",
		"ключ/ü":             "ключ/ü",
		`a\b`:                `a\\b`,
		"a\x00b":             `a\0b`,
		"\xff\xfe":           `\xff\xfe`,
		`\0`:                 `\\0`,
		"\xe2\x82":           `\xe2\x82`, // a truncated rune
		"\xef\xbf\xbd":       "\xef\xbf\xbd",
		"x\\\x00\xc0\xafend": `x\\\0\xc0\xafend`,
	}
	for in, want := range cases {
		got := escape(in)
		if got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
		back, err := unescape(got)
		if err != nil || back != in {
			t.Errorf("unescape(%q) = %q, %v; want %q", got, back, err, in)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]string{}
	alphabet := []byte{0, '\\', 'x', '0', 'a', 0xc3, 0xa9, 0xff, 0x80}
	for range 20000 {
		b := make([]byte, r.IntN(8))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		in := string(b)
		e := escape(in)
		if !utf8.ValidString(e) {
			t.Fatalf("escape(%q) = %q is not valid UTF-8", in, e)
		}
		for i := 0; i < len(e); i++ {
			if e[i] == 0 {
				t.Fatalf("escape(%q) = %q holds NUL", in, e)
			}
		}
		if prev, ok := seen[e]; ok && prev != in {
			t.Fatalf("escape(%q) = escape(%q) = %q", in, prev, e)
		}
		seen[e] = in
		if back, err := unescape(e); err != nil || back != in {
			t.Fatalf("unescape(escape(%q)) = %q, %v", in, back, err)
		}
	}
	for _, bad := range []string{`\`, `\q`, `\x`, `\xf`, `\xzz`, `\xFF`} {
		if _, err := unescape(bad); err == nil {
			t.Errorf("unescape(%q) succeeded", bad)
		}
	}
}
