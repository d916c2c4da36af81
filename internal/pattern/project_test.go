package pattern

import (
	"testing"
)

// matchBoth matches data under "data" decoded in full and projected.
func matchBoth(t *testing.T, p *Pattern, data string) (full, projected bool) {
	t.Helper()
	ev := map[string]any{}
	if v, err := Decode([]byte(data)); err == nil {
		ev["data"] = v
	}
	full = p.Match(ev)
	ev = map[string]any{}
	pr := NewProjection("data", p)
	v, err := pr.Decode([]byte(data))
	if (err == nil) != func() bool { _, e := Decode([]byte(data)); return e == nil }() {
		t.Fatalf("%s: projected decode error %v disagrees with the full decoder", data, err)
	}
	if err == nil {
		ev["data"] = v
	}
	return full, p.Match(ev)
}

func TestProjectionAgrees(t *testing.T) {
	for _, tc := range []struct{ pattern, data string }{
		{`{"data": {"type": ["order.created"]}}`, event},
		{`{"data": {"items": {"sku": ["B-2"]}}}`, `{"items": [{"sku": "A-1"}, 7, [{"sku": "B-2"}], {"sku": "B-2"}], "pad": "x"}`},
		{`{"data": {"a": [{"exists": false}]}}`, `{"b": {"a": 1}}`},
		{`{"data": {"a": {"b": [1]}}}`, `{"a": 1, "a": {"b": 1}}`},
		{`{"data": {"a": [1]}}`, `{"a": 1, "big": 1e999}`},
		{`{"data": {"s": ["é\"x"]}}`, `{"s": "\u00e9\"x", "t": "\ud800"}`},
		{`{"data": {"s": ["\ufffd"]}}`, "{\"s\": \"\xff\"}"},
		{`{"data": [{"exists": true}]}`, `[1, 2]`},
		{`{"data": {"a": [{"exists": true}]}}`, `"not an object"`},
		{`{"data": {"a": [{"exists": true}]}}`, `not json`},
		{`{"data": {"a": {"b": [{"exists": false}]}}}`, `{"a": {}}`},
		{`{"data": {"a": {"b": [{"exists": false}]}}}`, `{"a": []}`},
	} {
		p, err := Compile(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if full, projected := matchBoth(t, p, tc.data); full != projected {
			t.Errorf("%s on %s: full %v, projected %v", tc.pattern, tc.data, full, projected)
		}
	}
}

// FuzzProjection: matching projected data always agrees with matching the
// fully decoded data.
func FuzzProjection(f *testing.F) {
	f.Add(`{"data": {"type": [{"prefix": "order."}], "items": {"qty": [{"numeric": [">", 1]}]}}}`, event)
	f.Add(`{"data": {"a": [{"exists": false}], "b": {"c": [null]}}}`, `{"b": [{"c": null}, 1], "x": [1e308, "\\u0041"]}`)
	f.Fuzz(func(t *testing.T, pattern, data string) {
		p, err := Compile(pattern)
		if err != nil {
			return
		}
		if full, projected := matchBoth(t, p, data); full != projected {
			t.Fatalf("%s on %s: full %v, projected %v", pattern, data, full, projected)
		}
	})
}

func BenchmarkMatchProjected(b *testing.B) {
	p, err := Compile(`{"data": {"type": [{"prefix": "order."}], "amount": [{"numeric": [">", 100]}]}}`)
	if err != nil {
		b.Fatal(err)
	}
	pr := NewProjection("data", p)
	data := []byte(recordData)
	b.ReportAllocs()
	for b.Loop() {
		v, err := pr.Decode(data)
		if err != nil || !p.Match(map[string]any{"data": v}) {
			b.Fatal("no match")
		}
	}
}
