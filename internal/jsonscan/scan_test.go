package jsonscan

import (
	"encoding/json"
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
