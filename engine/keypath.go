package engine

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
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
	s := pathScanner{data: data}
	s.skipSpace()
	start, end, ok := s.follow(p)
	if !ok {
		return "", false
	}
	s.skipSpace()
	if s.pos != len(data) {
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

// pathScanner walks a JSON document, checking its syntax as
// encoding/json does; any error, or anything it does not track, makes it
// decline.
type pathScanner struct {
	data []byte
	pos  int
}

func (s *pathScanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// follow reads the value at s.pos, which the steps of p lead into, and
// returns the span of the value at the path's end. Every value on the
// way is read to its end, so that the document's syntax is checked whole
// and an object's last member of a name is the one taken, as
// encoding/json takes it.
func (s *pathScanner) follow(p keyPath) (start, end int, ok bool) {
	if len(p) == 0 {
		start = s.pos
		if !s.skipValue() {
			return 0, 0, false
		}
		return start, s.pos, true
	}
	step := p[0]
	found := false
	if step.field != "" {
		if s.pos >= len(s.data) || s.data[s.pos] != '{' {
			return 0, 0, false
		}
		s.pos++
		s.skipSpace()
		if s.pos < len(s.data) && s.data[s.pos] == '}' {
			return 0, 0, false
		}
		for {
			name, escaped, nok := s.readString()
			if !nok {
				return 0, 0, false
			}
			match := string(name) == step.field
			if !match && (escaped || !utf8.Valid(name)) {
				return 0, 0, false // it might unescape to the field
			}
			s.skipSpace()
			if s.pos >= len(s.data) || s.data[s.pos] != ':' {
				return 0, 0, false
			}
			s.pos++
			s.skipSpace()
			if !s.value(p, match, &start, &end, &found) {
				return 0, 0, false
			}
			if done, ok := s.endOrComma('}'); !ok || done {
				return start, end, found && ok
			}
		}
	}
	if s.pos >= len(s.data) || s.data[s.pos] != '[' {
		return 0, 0, false
	}
	s.pos++
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		return 0, 0, false
	}
	for i := 0; ; i++ {
		if !s.value(p, i == step.index, &start, &end, &found) {
			return 0, 0, false
		}
		if done, ok := s.endOrComma(']'); !ok || done {
			return start, end, found && ok
		}
	}
}

// value reads the value of a member or element: when it is the one the
// path's first step names, the rest of the path is followed into it and
// the span found is kept (a later member of the same name replaces it);
// otherwise it is skipped.
func (s *pathScanner) value(p keyPath, match bool, start, end *int, found *bool) bool {
	if !match {
		return s.skipValue()
	}
	st, en, ok := s.follow(p[1:])
	if ok {
		*start, *end, *found = st, en, true
	}
	return ok
}

// endOrComma reads what follows a member or element: the object's or
// array's closing bracket (done), or a comma before the next one.
func (s *pathScanner) endOrComma(closing byte) (done, ok bool) {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return false, false
	}
	switch s.data[s.pos] {
	case closing:
		s.pos++
		return true, true
	case ',':
		s.pos++
		s.skipSpace()
		return false, true
	}
	return false, false
}

// maxSkipDepth is how deeply nested a value skipValue follows; deeper
// documents go the slow way.
const maxSkipDepth = 64

// skipValue reads one JSON value at s.pos, checking its syntax.
func (s *pathScanner) skipValue() bool {
	var stack [maxSkipDepth]byte // the open brackets
	depth := 0
	for {
		// A value.
		if s.pos >= len(s.data) {
			return false
		}
		switch c := s.data[s.pos]; {
		case c == '{' || c == '[':
			if depth == maxSkipDepth {
				return false
			}
			stack[depth] = c
			depth++
			s.pos++
			s.skipSpace()
			if s.pos < len(s.data) && s.data[s.pos] == c+2 { // '}' or ']'
				s.pos++
				depth--
				break
			}
			if c == '{' {
				if !s.member() {
					return false
				}
			}
			continue
		case c == '"':
			if _, _, ok := s.readString(); !ok {
				return false
			}
		case c == 't':
			if !s.literal("true") {
				return false
			}
		case c == 'f':
			if !s.literal("false") {
				return false
			}
		case c == 'n':
			if !s.literal("null") {
				return false
			}
		default:
			if !s.number() {
				return false
			}
		}
		// After a value: close brackets, or a comma and the next one.
		for {
			if depth == 0 {
				return true
			}
			s.skipSpace()
			if s.pos >= len(s.data) {
				return false
			}
			c := s.data[s.pos]
			if c == stack[depth-1]+2 {
				s.pos++
				depth--
				continue
			}
			if c != ',' {
				return false
			}
			s.pos++
			s.skipSpace()
			if stack[depth-1] == '{' && !s.member() {
				return false
			}
			break
		}
	}
}

// member reads an object member's name and colon, up to its value.
func (s *pathScanner) member() bool {
	if _, _, ok := s.readString(); !ok {
		return false
	}
	s.skipSpace()
	if s.pos >= len(s.data) || s.data[s.pos] != ':' {
		return false
	}
	s.pos++
	s.skipSpace()
	return true
}

// readString reads a string at s.pos and returns its bytes between the
// quotes, and whether it holds an escape.
func (s *pathScanner) readString() (raw []byte, escaped, ok bool) {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return nil, false, false
	}
	start := s.pos + 1
	for i := start; i < len(s.data); i++ {
		switch c := s.data[i]; {
		case c == '"':
			s.pos = i + 1
			return s.data[start:i], escaped, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			escaped = true
			i++
			if i >= len(s.data) {
				return nil, false, false
			}
			switch s.data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.data) {
					return nil, false, false
				}
				for _, h := range s.data[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return nil, false, false
					}
				}
				i += 4
			default:
				return nil, false, false
			}
		}
	}
	return nil, false, false
}

func (s *pathScanner) literal(word string) bool {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(word)) {
		return false
	}
	s.pos += len(word)
	return true
}

// number reads a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *pathScanner) number() bool {
	d := s.data
	i := s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	digits := func() bool {
		n := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		return i > n
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.pos = i
	return true
}
