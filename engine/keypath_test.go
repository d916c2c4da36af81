package engine

import (
	"fmt"
	"strings"
	"testing"

	"github.com/idem-run/idem"
)

func TestCompileKeyPath(t *testing.T) {
	for _, c := range []struct {
		expr string
		want string // the steps, or "" for not a plain path
	}{
		{"id", "id"},
		{"order.id", "order|id"},
		{"Records[0].s3.object.key", "Records|[0]|s3|object|key"},
		{"a[2][10].b_1", "a|[2]|[10]|b_1"},
		{"[3]", "[3]"},
		{`"with space".id`, "with space|id"},
		{`a."dotted.name"`, "a|dotted.name"},
		{"a.b[-1]", ""},
		{"a[01]", ""},
		{"a[]", ""},
		{"a[*].b", ""},
		{"a .b", ""},
		{"a.", ""},
		{".a", ""},
		{"a..b", ""},
		{"a.[0]", ""},
		{"1a", ""},
		{`"esc\"aped"`, ""},
		{`""`, ""},
		{"a || b", ""},
		{"join('-', [a, b])", ""},
		{"a[99999999999]", ""},
		{"", ""},
	} {
		p, ok := compileKeyPath(c.expr)
		var got []string
		for _, s := range p {
			if s.field != "" {
				got = append(got, s.field)
			} else {
				got = append(got, fmt.Sprintf("[%d]", s.index))
			}
		}
		if g := strings.Join(got, "|"); g != c.want || ok != (c.want != "") {
			t.Errorf("compileKeyPath(%q) = %q, %v; want %q", c.expr, g, ok, c.want)
		}
	}
}

// keyPathCases are documents and expressions where the scan and the
// JMESPath evaluation must agree: seeds for FuzzKeyPath too.
var keyPathCases = []struct{ data, expr string }{
	{`{"id":"ord-1","n":2}`, "id"},
	{` {"order": {"id": 42, "x": [1, 2, {"y": null}]}} `, "order.id"},
	{`{"Records":[{"s3":{"object":{"key":"a/b.jpg"}}}]}`, "Records[0].s3.object.key"},
	{`{"a":[1,2,3]}`, "a[2]"},
	{`{"a":[1,2,3]}`, "a[3]"},
	{`{"a":1.50}`, "a"},
	{`{"a":-0}`, "a"},
	{`{"a":1e3}`, "a"},
	{`{"a":1E-7}`, "a"},
	{`{"a":1e999}`, "a"},
	{`{"a":12345678901234567890}`, "a"},
	{`{"a":true}`, "a"},
	{`{"a":false}`, "a"},
	{`{"a":null}`, "a"},
	{`{"a":""}`, "a"},
	{`{"a":{"b":1}}`, "a"},
	{`{"a":[1]}`, "a"},
	{`{"a":"x","a":"y"}`, "a"},
	{`{"a":{"b":"x"},"a":{"c":"y"}}`, "a.b"},
	{`{"\u0061":"escaped name"}`, "a"},
	{`{"a":"\u00e9t\u00e9 \ud83d\ude00"}`, "a"},
	{"{\"a\":\"bad \xff utf8\"}", "a"},
	{"{\"a\xff\":\"x\",\"a\":\"y\"}", "a"},
	{`{"a":"x"} trailing`, "a"},
	{`{"a":"x",}`, "a"},
	{`{"a":"x" "b":1}`, "a"},
	{`{"a":01}`, "a"},
	{`{"a":1.}`, "a"},
	{`{"a":.5}`, "a"},
	{`{"a":+1}`, "a"},
	{`{"a":tru}`, "a"},
	{`{"a":"x","b":nul}`, "a"},
	{`{"a":"x","b":[1,2,}`, "a"},
	{`{"a":"x","b":"\q"}`, "a"},
	{"{\"a\":\"x\",\"b\":\"ctl\x01\"}", "a"},
	{`not json`, "a"},
	{``, "a"},
	{`[{"id":"first"},{"id":"second"}]`, "[1].id"},
	{`{"a":"x"}`, "[0]"},
	{`["x"]`, "a"},
	{`{"with space":{"id":"q"}}`, `"with space".id`},
	{strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70), "a"},
	{`{"a":"x","deep":` + strings.Repeat(`[`, 100) + strings.Repeat(`]`, 100) + `}`, "a"},
}

// TestKeyPathAgrees: where the scan gives a key, it is the key JMESPath
// gives; where JMESPath gives none, neither does the scan.
func TestKeyPathAgrees(t *testing.T) {
	for _, c := range keyPathCases {
		checkKeyPath(t, c.data, c.expr)
	}
}

// FuzzKeyPath holds the scan to the JMESPath evaluation over arbitrary
// documents and paths: go test -fuzz FuzzKeyPath ./engine/
func FuzzKeyPath(f *testing.F) {
	for _, c := range keyPathCases {
		f.Add(c.data, c.expr)
	}
	f.Fuzz(func(t *testing.T, data, expr string) {
		checkKeyPath(t, data, expr)
	})
}

func checkKeyPath(t *testing.T, data, expr string) {
	t.Helper()
	if _, ok := compileKeyPath(expr); !ok {
		return
	}
	k, err := newKeyer("s", expr, "")
	if err != nil {
		return // a plain path JMESPath refuses: none is known
	}
	want, reason := k.evalKey([]byte(data))
	got, ok := k.path.key([]byte(data))
	if ok && (reason != "" || got != want) {
		t.Errorf("%q over %q: scanned %q, JMESPath %q (%s)", expr, data, got, want, reason)
	}
	// The record's key is what JMESPath gives, whichever way it came.
	r := idem.Record{Stream: "s", ShardID: "0", Sequence: "1", Data: []byte(data)}
	err = k.key(&r)
	if (err != nil) != (reason != "") || err == nil && r.IdempotencyKey != want {
		t.Errorf("%q over %q: key %q, %v; want %q (%s)", expr, data, r.IdempotencyKey, err, want, reason)
	}
}

// BenchmarkRecordKey compares the scan with decoding the record whole,
// on the payload idem bench keys by its "id".
func BenchmarkRecordKey(b *testing.B) {
	data := []byte(`{"id":"000000123456","kind":"order","amount":1234,"currency":"EUR","customer":{"id":"c-42","tier":"gold"},"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"note":"` + strings.Repeat("x", 40) + `"}`)
	for _, c := range []struct {
		name string
		scan bool
	}{{"Scan", true}, {"Decode", false}} {
		b.Run(c.name, func(b *testing.B) {
			k, err := newKeyer("s", "id", "")
			if err != nil {
				b.Fatal(err)
			}
			if !c.scan {
				k.path = nil
			}
			r := idem.Record{Data: data}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := k.key(&r); err != nil || r.IdempotencyKey != "000000123456" {
					b.Fatal(r.IdempotencyKey, err)
				}
			}
		})
	}
}
