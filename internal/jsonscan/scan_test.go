package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// depth is how deeply arrays and objects nest in b, outside its strings.
func depth(b []byte) int {
	d, most, in := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == '{' || c == '['):
			d++
			most = max(most, d)
		case !in && (c == '}' || c == ']'):
			d--
		}
	}
	return most
}

var seeds = []string{
	`{}`, `[]`, `0`, `-0.5e+10`, `"a\u00e9\n"`, `true`, `null`, ` {"a": [1, {"b": null}], "c": "x"} `,
	`{"a":1,}`, `[1 2]`, `01`, `1.`, `.5`, `+1`, `tru`, `"\q"`, "\"ctl\x01\"", `{"a"}`, `{"a":}`, `[`, `"`,
}

// TestSkip: Skip and End accept exactly what json.Valid accepts, nesting
// allowing.
func TestSkip(t *testing.T) {
	for _, c := range seeds {
		check(t, []byte(c))
	}
}

// FuzzSkip holds Skip to json.Valid: go test -fuzz FuzzSkip ./internal/jsonscan/
func FuzzSkip(f *testing.F) {
	for _, c := range seeds {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) { check(t, b) })
}

func check(t *testing.T, b []byte) {
	t.Helper()
	s := Scanner{Data: b}
	got := s.Skip() && s.End()
	want := json.Valid(b)
	if got && !want {
		t.Fatalf("Skip accepted %q, which is not JSON", b)
	}
	if want && !got && depth(b) <= MaxDepth {
		t.Fatalf("Skip refused %q, which is JSON", b)
	}
}

// TestMayEnd: mayEnd reports every word holding a quote, a backslash or a
// control character, at every place, beside bytes of every value; a word
// of other bytes is passed over unless a borrow says otherwise, which
// only ever happens beside a control character.
func TestMayEnd(t *testing.T) {
	special := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	for c := range 256 {
		for fill := range 256 {
			for at := range 8 {
				var w [8]byte
				for i := range w {
					w[i] = byte(fill)
				}
				w[at] = byte(c)
				got := mayEnd(binary.LittleEndian.Uint64(w[:]))
				want := special(byte(c)) || special(byte(fill))
				if got != want {
					t.Fatalf("mayEnd(%q) = %v, want %v", w, got, want)
				}
			}
		}
	}
}

// FuzzString holds String to json.Unmarshal of a string, with strings of
// every length around the eight bytes read at a time.
func FuzzString(f *testing.F) {
	for _, c := range []string{`"abcdefghijklmnop"`, `"abcdefg\"hijk"`, "\"abcdefgh\x01\"", `"\u00e9 and more than eight"`, `"é, ü and ∑ too"`} {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Scanner{Data: b}
		raw, escaped, ok := s.String()
		var v string
		if !ok {
			if json.Unmarshal(b, &v) == nil {
				t.Fatalf("String refused %q, a JSON string", b)
			}
			if r := (Scanner{Data: b}); func() bool { _, _, ok := stringBytewise(&r); return ok }() {
				t.Fatalf("String refused %q, which the bytewise reference takes", b)
			}
			return
		}
		if err := json.Unmarshal(b[:s.Pos], &v); err != nil {
			t.Fatalf("String accepted %q of %q: %v", b[:s.Pos], b, err)
		}
		if q := s.Pos - len(raw) - 2; q < 0 || b[q] != '"' || string(b[q+1:s.Pos-1]) != string(raw) {
			t.Fatalf("String(%q) = %q: not the bytes between the quotes", b, raw)
		}
		if escaped != bytes.ContainsRune(raw, '\\') {
			t.Fatalf("String(%q) escaped = %v", b, escaped)
		}
		r := Scanner{Data: b}
		if rraw, resc, rok := stringBytewise(&r); !rok || string(rraw) != string(raw) || resc != escaped || r.Pos != s.Pos {
			t.Fatalf("String(%q) = %q, %v at %d; the bytewise reference: %q, %v, %v at %d", b, raw, escaped, s.Pos, rraw, resc, rok, r.Pos)
		}
	})
}

// stringBytewise is String as it was before it read eight bytes at a
// time: the reference FuzzString and BenchmarkString hold it to.
func stringBytewise(s *Scanner) (raw []byte, escaped, ok bool) {
	if !s.Take('"') {
		return nil, false, false
	}
	start := s.Pos
	for i := start; i < len(s.Data); i++ {
		switch c := s.Data[i]; {
		case c == '"':
			s.Pos = i + 1
			return s.Data[start:i], escaped, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			escaped = true
			if i, ok = escapeEnd(s.Data, i); !ok {
				return nil, false, false
			}
		}
	}
	return nil, false, false
}

// BenchmarkString: String against the byte-at-a-time reference, on
// strings of 8, 40 and 400 bytes (with an escape in the last).
//
//	go test -run '^$' -bench String ./internal/jsonscan/
func BenchmarkString(b *testing.B) {
	for _, n := range []int{8, 40, 400} {
		data := []byte(`"` + strings.Repeat("x", n/2) + `\n` + strings.Repeat("é", n/4) + `", 1`)
		if n < 400 {
			data = []byte(`"` + strings.Repeat("x", n) + `", 1`)
		}
		for _, c := range []struct {
			name string
			scan func(*Scanner) ([]byte, bool, bool)
		}{{"words", (*Scanner).String}, {"bytes", stringBytewise}} {
			b.Run(fmt.Sprintf("%d/%s", n, c.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					s := Scanner{Data: data}
					if _, _, ok := c.scan(&s); !ok {
						b.Fatal("refused")
					}
				}
			})
		}
	}
}
