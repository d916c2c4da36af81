package engine

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/idem-run/idem/internal/jsonscan"
)

// A key expression is nearly always a plain path to a field:
// "order.id", "detail.items[0].sku", "Records[0].s3.object.key". Decoding
// the whole payload into Go maps to evaluate it cost about as much as the
// rest of the record's trip through the engine, so such a path is found by
// scanning the payload's bytes instead (keyPath), in one pass that also
// checks that the payload is JSON.
//
// The scan gives the key the JMESPath evaluation would give, or declines
// and lets that evaluation decide: whatever it is unsure of (a missing or
// null value, an object or array as the key, an escaped member name, a
// document nested deeper than it tracks) goes the slow way, which then
// reports the same KeyError as before. FuzzKeyPath holds the two to the
// same answer.

// keyPath is a key expression made only of fields and non-negative
// indexes, compiled for keyPath.key.
type keyPath []pathStep

// pathStep is a field name, or an index when field is empty.
type pathStep struct {
	field string
	index int
}

// maxPathIndex bounds an index of a plain path; larger ones go the slow way.
const maxPathIndex = 1 << 20

// compileKeyPath returns the plain path that expression is, or false when
// it is anything else: the grammar is JMESPath's identifiers (unquoted, or
// quoted without escapes), "." between fields, and "[N]" indexes, with no
// whitespace.
func compileKeyPath(expression string) (keyPath, bool) {
	var p keyPath
	s := expression
	afterDot := false
	for len(s) > 0 {
		switch {
		case s[0] == '[' && !afterDot:
			end := 1
			for end < len(s) && s[end] >= '0' && s[end] <= '9' {
				end++
			}
			if end == 1 || end >= len(s) || s[end] != ']' || (s[1] == '0' && end > 2) {
				return nil, false
			}
			n, err := strconv.Atoi(s[1:end])
			if err != nil || n > maxPathIndex {
				return nil, false
			}
			p = append(p, pathStep{index: n})
			s = s[end+1:]
		case s[0] == '.' && len(p) > 0 && !afterDot:
			afterDot = true
			s = s[1:]
			continue
		case s[0] == '"' && (afterDot || len(p) == 0):
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' || s[end] < 0x20 {
					return nil, false
				}
				end++
			}
			if end == 1 || end >= len(s) || !utf8.ValidString(s[1:end]) {
				return nil, false
			}
			p = append(p, pathStep{field: s[1:end]})
			s = s[end+1:]
		case isIdentStart(s[0]) && (afterDot || len(p) == 0):
			end := 1
			for end < len(s) && (isIdentStart(s[end]) || s[end] >= '0' && s[end] <= '9') {
				end++
			}
			p = append(p, pathStep{field: s[:end]})
			s = s[end:]
		default:
			return nil, false
		}
		afterDot = false
	}
	if afterDot || len(p) == 0 {
		return nil, false
	}
	return p, true
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// key returns the idempotency key the path names in data, as
// keyer.exprKeyOf would make it from the JMESPath result, or false to
// leave data to that slow way.
func (p keyPath) key(data []byte) (string, bool) {
	s := jsonscan.Scanner{Data: data}
	start, end, ok := follow(&s, p)
	if !ok || !s.End() {
		return "", false
	}
	return scalarKey(data[start:end])
}

// scalarKey is the key a string, number or boolean JSON value makes.
func scalarKey(v []byte) (string, bool) {
	switch v[0] {
	case '"':
		raw := v[1 : len(v)-1]
		if len(raw) == 0 {
			return "", false
		}
		if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
			return string(raw), true
		}
		var str string
		if json.Unmarshal(v, &str) != nil || str == "" {
			return "", false
		}
		return str, true
	case 't':
		return "true", true
	case 'f':
		return "false", true
	case 'n', '{', '[':
		return "", false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(f, 'f', -1, 64), true
}

// follow reads the value at s, which the steps of p lead into, and
// returns the span of the value at the path's end. Every value on the way
// is read to its end, so that the document's syntax is checked whole and
// an object's last member of a name is the one taken, as encoding/json
// takes it.
func follow(s *jsonscan.Scanner, p keyPath) (start, end int, ok bool) {
	if len(p) == 0 {
		s.Space()
		start = s.Pos
		if !s.Skip() {
			return 0, 0, false
		}
		return start, s.Pos, true
	}
	found := false
	// value reads a member's or an element's value: the rest of the path
	// is followed into the one the first step names (a later member of
	// the same name replaces it), the others are skipped.
	value := func(match bool) bool {
		if !match {
			return s.Skip()
		}
		st, en, ok := follow(s, p[1:])
		if ok {
			start, end, found = st, en, true
		}
		return ok
	}
	if step := p[0]; step.field != "" {
		ok = s.Object(func(name []byte, escaped bool) bool {
			match := string(name) == step.field
			if !match && (escaped || !utf8.Valid(name)) {
				return false // it might unescape to the field
			}
			return value(match)
		})
	} else {
		ok = s.Array(func(i int) bool { return value(i == step.index) })
	}
	return start, end, ok && found
}
