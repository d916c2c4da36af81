package pattern

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const event = `{
  "partitionKey": "customer-42",
  "data": {
    "type": "order.created",
    "amount": 120.5,
    "count": 3,
    "currency": "EUR",
    "express": true,
    "coupon": null,
    "tags": ["new", "priority"],
    "items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 5}],
    "ip": "10.0.3.7",
    "file": "photos/2026/cat.png"
  }
}`

func TestMatch(t *testing.T) {
	var ev map[string]any
	if err := json.Unmarshal([]byte(event), &ev); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pattern string
		want    bool
	}{
		{`{"partitionKey": ["customer-42"]}`, true},
		{`{"partitionKey": ["customer-7", "customer-42"]}`, true},
		{`{"partitionKey": ["customer-7"]}`, false},
		{`{"data": {"type": ["order.created"]}}`, true},
		{`{"data": {"type": ["order.created"], "currency": ["USD"]}}`, false},
		{`{"data": {"type": [{"prefix": "order."}]}}`, true},
		{`{"data": {"type": [{"suffix": ".created"}]}}`, true},
		{`{"data": {"type": [{"equals-ignore-case": "ORDER.CREATED"}]}}`, true},
		{`{"data": {"file": [{"wildcard": "photos/*/*.png"}]}}`, true},
		{`{"data": {"file": [{"wildcard": "photos/*.jpg"}]}}`, false},
		{`{"data": {"amount": [120.5]}}`, true},
		{`{"data": {"count": [3.0]}}`, true},
		{`{"data": {"amount": [{"numeric": [">", 100, "<=", 200]}]}}`, true},
		{`{"data": {"amount": [{"numeric": ["<", 100]}]}}`, false},
		{`{"data": {"count": [{"numeric": ["=", 3]}]}}`, true},
		{`{"data": {"type": [{"numeric": [">", 0]}]}}`, false},
		{`{"data": {"express": [true]}}`, true},
		{`{"data": {"express": [false]}}`, false},
		{`{"data": {"coupon": [null]}}`, true},
		{`{"data": {"missing": [null]}}`, false},
		{`{"data": {"coupon": [{"exists": true}]}}`, true},
		{`{"data": {"missing": [{"exists": false}]}}`, true},
		{`{"data": {"currency": [{"exists": false}]}}`, false},
		{`{"data": {"items": [{"exists": true}]}}`, false}, // exists matches leaves only
		{`{"data": {"tags": ["priority"]}}`, true},
		{`{"data": {"tags": ["urgent"]}}`, false},
		{`{"data": {"items": {"sku": ["B-2"]}}}`, true},
		{`{"data": {"items": {"sku": ["C-3"]}}}`, false},
		{`{"data": {"items": {"qty": [{"numeric": [">=", 5]}]}}}`, true},
		{`{"data": {"currency": [{"anything-but": "USD"}]}}`, true},
		{`{"data": {"currency": [{"anything-but": ["EUR", "USD"]}]}}`, false},
		{`{"data": {"type": [{"anything-but": {"prefix": "order."}}]}}`, false},
		{`{"data": {"missing": [{"anything-but": "x"}]}}`, false},
		{`{"data": {"ip": [{"cidr": "10.0.0.0/16"}]}}`, true},
		{`{"data": {"ip": [{"cidr": "192.168.0.0/16"}]}}`, false},
		{`{"data": {"type": ["order.created"]}, "partitionKey": [{"prefix": "customer-"}]}`, true},
		{`{"data": ["x"]}`, false}, // a leaf never matches an object
	} {
		p, err := Compile(tc.pattern)
		if err != nil {
			t.Errorf("%s: %v", tc.pattern, err)
			continue
		}
		if got := p.Match(ev); got != tc.want {
			t.Errorf("%s: match %v, want %v", tc.pattern, got, tc.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{`[1]`, "a pattern is a JSON object, not an array"},
		{`{`, "not JSON"},
		{`{} {}`, "not JSON: text after the pattern object"},
		{`{}`, "empty pattern"},
		{`{"a": "x"}`, `a: a pattern field is an array of values or an object, not a string (write ["x"])`},
		{`{"a": []}`, "a: empty array: it would match nothing"},
		{`{"a": {}}`, "a: empty object"},
		{`{"a": {"b": [{"numeric": [">"]}]}}`, "a.b[0].numeric: needs [op, number]"},
		{`{"a": [{"numeric": ["!=", 1]}]}`, `a[0].numeric[0]: unknown operator "!="`},
		{`{"a": [{"numeric": [">", 1, ">", 2]}]}`, "a[0].numeric: two bounds need one lower"},
		{`{"a": [{"numeric": [">", "1"]}]}`, "a[0].numeric[1]: a number, not a string"},
		{`{"a": [{"prefix": 1}]}`, "a[0].prefix: needs a string, not a number"},
		{`{"a": [{"exists": "yes"}]}`, "a[0].exists: needs true or false"},
		{`{"a": [{"regex": "x"}]}`, `a[0]: unknown matcher "regex"`},
		{`{"a": [{"prefix": "x", "suffix": "y"}]}`, "a[0]: a matcher object has one key"},
		{`{"a": [{"cidr": "10.0.0.0/33"}]}`, `a[0].cidr: "10.0.0.0/33" is not a CIDR block`},
		{`{"a": [{"wildcard": "a**b"}]}`, "a[0].wildcard: \"a**b\" has consecutive wildcards"},
		{`{"a": [{"anything-but": true}]}`, "a[0].anything-but: anything-but takes a string"},
		{`{"a": [[1]]}`, "a[0]: an array is not a value to match"},
		{`{"a": [1e999]}`, "a[0]: 1e999 is out of range"},
		{`{"a": ["` + strings.Repeat("x", MaxLength) + `"]}`, "above the limit of 4096"},
	} {
		_, err := Compile(tc.pattern)
		var pe *Error
		if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.60s: error %v, want one containing %q", tc.pattern, err, tc.want)
		}
	}
}

// FuzzCompile: no pattern panics the compiler, and a compiled pattern
// matches any event without panicking.
func FuzzCompile(f *testing.F) {
	f.Add(`{"data": {"amount": [{"numeric": [">", 100, "<=", 200]}], "type": [{"prefix": "order."}]}}`, event)
	f.Add(`{"data": {"items": {"sku": [{"anything-but": ["A", 1]}]}, "ip": [{"cidr": "::/0"}]}}`, `{"data": [1, {"items": []}]}`)
	f.Add(`{"a": [{"wildcard": "*x*"}, null, true, {"exists": false}]}`, `{"a": "yxz"}`)
	f.Fuzz(func(t *testing.T, pattern, ev string) {
		p, err := Compile(pattern)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *pattern.Error", err)
			}
			return
		}
		v, err := Decode([]byte(ev))
		if m, ok := v.(map[string]any); err == nil && ok {
			p.Match(m)
		}
	})
}

// recordData is the data of event's record, as a filter decodes it.
const recordData = `{"type": "order.created", "amount": 120.5, "count": 3, "currency": "EUR", "express": true, "coupon": null,
  "tags": ["new", "priority"], "items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 5}], "ip": "10.0.3.7", "file": "photos/2026/cat.png",
  "customer": {"id": "c-42", "name": "Ada", "address": {"street": "1 Main St", "city": "Springfield", "zip": "12345"}}, "note": "leave at the door"}`

func BenchmarkMatch(b *testing.B) {
	p, err := Compile(`{"data": {"type": [{"prefix": "order."}], "amount": [{"numeric": [">", 100]}]}}`)
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(recordData)
	b.ReportAllocs()
	for b.Loop() {
		v, err := Decode(data)
		if err != nil || !p.Match(map[string]any{"data": v}) {
			b.Fatal("no match")
		}
	}
}
