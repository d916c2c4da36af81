// Package pattern compiles and matches EventBridge event patterns, the
// syntax of a Lambda event source mapping's filterCriteria, so that a
// mapping's filters mean in idem what they mean on AWS.
//
// A pattern is a JSON object whose leaves are arrays of matchers; an event
// (decoded JSON) matches when every field the pattern names matches one of
// its field's matchers. A field whose value is an array matches when one of
// its elements does. Matchers: a string, number, boolean or null for an
// exact match (numbers compare numerically), and the objects
// {"prefix": s}, {"suffix": s}, {"equals-ignore-case": s},
// {"wildcard": "a*b"}, {"anything-but": v | [v…] | {"prefix": s} |
// {"suffix": s}}, {"numeric": ["<", 5, ">=", 0]}, {"exists": true|false}
// and {"cidr": "10.0.0.0/8"}.
package pattern

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// MaxLength is the longest pattern Lambda accepts, in bytes.
const MaxLength = 4096

// Pattern is a compiled event pattern. It is safe for concurrent use.
type Pattern struct {
	root *object
}

// object is a pattern object: every field must match.
type object struct {
	names  []string // sorted, for a stable order of evaluation
	fields map[string]*field
}

// field is one pattern field: a nested object, or matchers (a leaf).
type field struct {
	obj      *object
	matchers []matcher
	// absent is true when the field matches by being absent
	// ({"exists": false}).
	absent bool
}

// matcher matches one leaf value of an event.
type matcher interface {
	match(v any) bool
}

// Error is a pattern that does not compile. Path names the place in the
// pattern, as "data.temperature[0].numeric".
type Error struct {
	Path string
	Err  error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(path, format string, args ...any) error {
	return &Error{Path: path, Err: fmt.Errorf(format, args...)}
}

// Compile parses src, an event pattern in JSON.
func Compile(src string) (*Pattern, error) {
	if len(src) > MaxLength {
		return nil, errorf("", "pattern is %d bytes, above the limit of %d", len(src), MaxLength)
	}
	dec := json.NewDecoder(strings.NewReader(src))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errorf("", "not JSON: %v", err)
	}
	if dec.More() {
		return nil, errorf("", "not JSON: text after the pattern object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errorf("", "a pattern is a JSON object, not %s", kind(v))
	}
	if len(m) == 0 {
		return nil, errorf("", "empty pattern: name at least one field")
	}
	root, err := compileObject("", m)
	if err != nil {
		return nil, err
	}
	return &Pattern{root: root}, nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func compileObject(path string, m map[string]any) (*object, error) {
	o := &object{fields: make(map[string]*field, len(m))}
	for name := range m {
		o.names = append(o.names, name)
	}
	sort.Strings(o.names)
	for _, name := range o.names {
		p := join(path, name)
		switch v := m[name].(type) {
		case map[string]any:
			if len(v) == 0 {
				return nil, errorf(p, "empty object: name a field, or give an array of values")
			}
			sub, err := compileObject(p, v)
			if err != nil {
				return nil, err
			}
			o.fields[name] = &field{obj: sub}
		case []any:
			f, err := compileLeaf(p, v)
			if err != nil {
				return nil, err
			}
			o.fields[name] = f
		default:
			return nil, errorf(p, "a pattern field is an array of values or an object, not %s (write [%s])", kind(v), raw(v))
		}
	}
	return o, nil
}

func compileLeaf(path string, vs []any) (*field, error) {
	if len(vs) == 0 {
		return nil, errorf(path, "empty array: it would match nothing")
	}
	f := &field{}
	for i, v := range vs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch v := v.(type) {
		case string:
			f.matchers = append(f.matchers, exactString(v))
		case json.Number:
			n, err := number(p, v)
			if err != nil {
				return nil, err
			}
			f.matchers = append(f.matchers, exactNumber(n))
		case bool:
			f.matchers = append(f.matchers, exactBool(v))
		case nil:
			f.matchers = append(f.matchers, isNull{})
		case map[string]any:
			m, absent, err := compileOperator(p, v)
			if err != nil {
				return nil, err
			}
			if absent {
				f.absent = true
				continue
			}
			f.matchers = append(f.matchers, m)
		default:
			return nil, errorf(p, "%s is not a value to match", kind(v))
		}
	}
	return f, nil
}

// compileOperator compiles {"op": arg}; absent is true for
// {"exists": false}.
func compileOperator(path string, m map[string]any) (matcher, bool, error) {
	if len(m) != 1 {
		return nil, false, errorf(path, "a matcher object has one key (prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr), not %d", len(m))
	}
	for op, arg := range m {
		p := path + "." + op
		switch op {
		case "prefix", "suffix", "equals-ignore-case", "wildcard":
			s, ok := arg.(string)
			if !ok {
				return nil, false, errorf(p, "needs a string, not %s", kind(arg))
			}
			return stringOperator(p, op, s)
		case "exists":
			b, ok := arg.(bool)
			if !ok {
				return nil, false, errorf(p, "needs true or false, not %s", kind(arg))
			}
			if !b {
				return nil, true, nil
			}
			return exists{}, false, nil
		case "numeric":
			n, err := compileNumeric(p, arg)
			return n, false, err
		case "anything-but":
			a, err := compileAnythingBut(p, arg)
			return a, false, err
		case "cidr":
			s, ok := arg.(string)
			if !ok {
				return nil, false, errorf(p, "needs a string such as \"10.0.0.0/24\", not %s", kind(arg))
			}
			prefix, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, false, errorf(p, "%q is not a CIDR block: %v", s, err)
			}
			return cidr(prefix.Masked()), false, nil
		default:
			return nil, false, errorf(path, "unknown matcher %q (allowed: prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists, cidr)", op)
		}
	}
	panic("unreachable")
}

func stringOperator(path, op, s string) (matcher, bool, error) {
	switch op {
	case "prefix":
		return prefix(s), false, nil
	case "suffix":
		return suffix(s), false, nil
	case "equals-ignore-case":
		return equalFold(s), false, nil
	}
	if strings.Contains(s, "**") {
		return nil, false, errorf(path, "%q has consecutive wildcards", s)
	}
	return wildcard(strings.Split(s, "*")), false, nil
}

func compileNumeric(path string, arg any) (matcher, error) {
	args, ok := arg.([]any)
	if !ok || (len(args) != 2 && len(args) != 4) {
		return nil, errorf(path, "needs [op, number] or [op, number, op, number], e.g. [\">\", 0, \"<=\", 5]")
	}
	var r numeric
	for i := 0; i < len(args); i += 2 {
		op, ok := args[i].(string)
		if !ok {
			return nil, errorf(fmt.Sprintf("%s[%d]", path, i), "an operator (=, <, <=, >, >=), not %s", kind(args[i]))
		}
		num, ok := args[i+1].(json.Number)
		if !ok {
			return nil, errorf(fmt.Sprintf("%s[%d]", path, i+1), "a number, not %s", kind(args[i+1]))
		}
		n, err := number(fmt.Sprintf("%s[%d]", path, i+1), num)
		if err != nil {
			return nil, err
		}
		switch op {
		case "=", "<", "<=", ">", ">=":
		default:
			return nil, errorf(fmt.Sprintf("%s[%d]", path, i), "unknown operator %q (allowed: =, <, <=, >, >=)", op)
		}
		r = append(r, bound{op: op, n: n})
	}
	if len(r) == 2 && (r[0].op == "=" || r[1].op == "=" || strings.HasPrefix(r[0].op, "<") == strings.HasPrefix(r[1].op, "<")) {
		return nil, errorf(path, "two bounds need one lower (> or >=) and one upper (< or <=)")
	}
	return r, nil
}

func compileAnythingBut(path string, arg any) (matcher, error) {
	switch a := arg.(type) {
	case string, json.Number:
		m, err := exactOf(path, a)
		return anythingBut{m}, err
	case []any:
		if len(a) == 0 {
			return nil, errorf(path, "empty array")
		}
		var out anythingBut
		for i, v := range a {
			m, err := exactOf(fmt.Sprintf("%s[%d]", path, i), v)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	case map[string]any:
		if len(a) == 1 {
			for op, v := range a {
				s, ok := v.(string)
				if (op == "prefix" || op == "suffix" || op == "equals-ignore-case" || op == "wildcard") && ok {
					m, _, err := stringOperator(path+"."+op, op, s)
					return anythingBut{m}, err
				}
			}
		}
		return nil, errorf(path, "anything-but takes a value, an array of values, or one of prefix, suffix, equals-ignore-case and wildcard with a string")
	}
	return nil, errorf(path, "anything-but takes a string, a number or an array of them, not %s", kind(arg))
}

func exactOf(path string, v any) (matcher, error) {
	switch v := v.(type) {
	case string:
		return exactString(v), nil
	case json.Number:
		n, err := number(path, v)
		return exactNumber(n), err
	}
	return nil, errorf(path, "a string or a number, not %s", kind(v))
}

func number(path string, n json.Number) (float64, error) {
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) {
		return 0, errorf(path, "%s is out of range", n)
	}
	return f, nil
}

// kind names a decoded JSON value's type, for errors.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func raw(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "…"
	}
	return string(b)
}

// Match reports whether event, decoded JSON (map[string]any at the top;
// numbers as float64 or json.Number), matches the pattern.
func (p *Pattern) Match(event map[string]any) bool {
	return p.root.match(event)
}

func (o *object) match(m map[string]any) bool {
	for _, name := range o.names {
		f := o.fields[name]
		v, present := m[name]
		if !f.match(v, present) {
			return false
		}
	}
	return true
}

func (f *field) match(v any, present bool) bool {
	if !present {
		return f.absent
	}
	if f.obj != nil {
		return matchNested(f.obj, v)
	}
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			if f.matchLeaf(e) {
				return true
			}
		}
		return false
	}
	return f.matchLeaf(v)
}

func matchNested(o *object, v any) bool {
	switch v := v.(type) {
	case map[string]any:
		return o.match(v)
	case []any:
		for _, e := range v {
			if m, ok := e.(map[string]any); ok && o.match(m) {
				return true
			}
		}
	}
	return false
}

// matchLeaf matches one scalar; a leaf pattern never matches an object
// or an array.
func (f *field) matchLeaf(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	for _, m := range f.matchers {
		if m.match(v) {
			return true
		}
	}
	return false
}

// toFloat converts an event's number.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

type exactString string

func (s exactString) match(v any) bool { x, ok := v.(string); return ok && x == string(s) }

type exactNumber float64

func (n exactNumber) match(v any) bool { x, ok := toFloat(v); return ok && x == float64(n) }

type exactBool bool

func (b exactBool) match(v any) bool { x, ok := v.(bool); return ok && x == bool(b) }

type isNull struct{}

func (isNull) match(v any) bool { return v == nil }

type exists struct{}

func (exists) match(any) bool { return true }

type prefix string

func (p prefix) match(v any) bool { x, ok := v.(string); return ok && strings.HasPrefix(x, string(p)) }

type suffix string

func (s suffix) match(v any) bool { x, ok := v.(string); return ok && strings.HasSuffix(x, string(s)) }

type equalFold string

func (s equalFold) match(v any) bool {
	x, ok := v.(string)
	return ok && strings.EqualFold(x, string(s))
}

// wildcard holds the literal parts between '*'s.
type wildcard []string

func (w wildcard) match(v any) bool {
	x, ok := v.(string)
	if !ok {
		return false
	}
	if len(w) == 1 {
		return x == w[0]
	}
	if !strings.HasPrefix(x, w[0]) {
		return false
	}
	x = x[len(w[0]):]
	last := w[len(w)-1]
	for _, part := range w[1 : len(w)-1] {
		i := strings.Index(x, part)
		if i < 0 {
			return false
		}
		x = x[i+len(part):]
	}
	return len(x) >= len(last) && strings.HasSuffix(x, last)
}

type bound struct {
	op string
	n  float64
}

type numeric []bound

func (r numeric) match(v any) bool {
	x, ok := toFloat(v)
	if !ok {
		return false
	}
	for _, b := range r {
		var in bool
		switch b.op {
		case "=":
			in = x == b.n
		case "<":
			in = x < b.n
		case "<=":
			in = x <= b.n
		case ">":
			in = x > b.n
		case ">=":
			in = x >= b.n
		}
		if !in {
			return false
		}
	}
	return true
}

// anythingBut matches a present value that none of its matchers match.
type anythingBut []matcher

func (a anythingBut) match(v any) bool {
	return !slices.ContainsFunc(a, func(m matcher) bool { return m.match(v) })
}

type cidr netip.Prefix

func (c cidr) match(v any) bool {
	x, ok := v.(string)
	if !ok {
		return false
	}
	addr, err := netip.ParseAddr(x)
	return err == nil && netip.Prefix(c).Contains(addr)
}

// ErrNotJSON is returned by Decode for data that is not a JSON value.
var ErrNotJSON = errors.New("pattern: data is not JSON")

// Decode decodes data as the JSON value an event field holds, for Match;
// ErrNotJSON when it is not one.
func Decode(data []byte) (any, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, ErrNotJSON
	}
	return v, nil
}

// filterFields are the top-level fields a Lambda filter may name, by the
// event format a mapping sends: Lambda filters KinesisEvent records on
// data only, and KafkaEvent records on the value and the record's
// metadata. A mapping that sends S3Events filters each stream record's
// notification document: its Records, and the EventName and Key MinIO
// adds. DynamoDBEvent records are filtered, as Lambda filters a DynamoDB
// stream's, on the record's own fields.
var filterFields = map[string][]string{
	"kinesis":  {"data"},
	"kafka":    {"key", "offset", "partition", "timestamp", "timestampType", "topic", "value"},
	"s3":       {"EventName", "Key", "Records"},
	"dynamodb": {"awsRegion", "dynamodb", "eventID", "eventName", "eventSource", "eventSourceARN", "eventVersion", "userIdentity"},
}

// CompileFilter compiles a filterCriteria pattern of a mapping that sends
// format events ("kinesis", the default, "kafka", "s3" or "dynamodb"),
// refusing fields that such events do not have: a pattern on them would
// silently filter out every record.
func CompileFilter(src, format string) (*Pattern, error) {
	if format == "" {
		format = "kinesis"
	}
	allowed, ok := filterFields[format]
	if !ok {
		return nil, errorf("", "unknown event format %q", format)
	}
	p, err := Compile(src)
	if err != nil {
		return nil, err
	}
	for _, f := range p.root.names {
		if !slices.Contains(allowed, f) {
			return nil, errorf(f, "%s events are filtered on %s only", format, strings.Join(allowed, ", "))
		}
	}
	return p, nil
}
