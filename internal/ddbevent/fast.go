package ddbevent

import (
	"bytes"
	"encoding/base64"
)

// Checking a record decoded whole into Go values (checkItem) cost most of
// the time of turning it into its DynamoDBEventRecord, which the engine,
// the batch's size and the function's event each need. The checks below
// read the bytes instead, in one pass and without allocating, and only
// ever accept: where they find anything wrong or unusual (an escape in a
// type's name or a base64 value, a type given twice with different
// names, nesting past maxDepth), the full check decides and says why.
// FuzzFastChecks holds them to never accept what the full check refuses.

// maxDepth bounds the nesting of L and M values the fast check follows.
const maxDepth = 32

// scanner reads JSON that encoding/json has found valid already (it is a
// member of a document json.Unmarshal is decoding), so it checks the
// shape, not the syntax.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// take reads c, after white space.
func (s *scanner) take(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its bytes between the quotes, and
// whether it holds an escape.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	if !s.take('"') {
		return nil, false, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped, true
		case '\\':
			escaped = true
			s.i++
		}
		s.i++
	}
	return nil, false, false
}

// list reads an array, each element with elem.
func (s *scanner) list(elem func() bool) bool {
	if !s.take('[') {
		return false
	}
	if s.take(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.take(']') {
			return true
		}
		if !s.take(',') {
			return false
		}
	}
}

// object reads an object, each member's value with value(name).
func (s *scanner) object(value func(name []byte, escaped bool) bool) bool {
	if !s.take('{') {
		return false
	}
	if s.take('}') {
		return true
	}
	for {
		name, esc, ok := s.str()
		if !ok || !s.take(':') || !value(name, esc) {
			return false
		}
		if s.take('}') {
			return true
		}
		if !s.take(',') {
			return false
		}
	}
}

// validItem reports whether b, Keys or an image, is an object of typed
// attribute values that checkItem accepts.
func validItem(b []byte) bool {
	s := &scanner{b: b}
	return s.object(func([]byte, bool) bool { return s.typed(0) }) && s.end()
}

// end reports whether nothing but white space is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// typed reads one typed attribute value, {"<type>": value}: one type,
// perhaps given more than once (encoding/json keeps the last; each is
// checked here).
func (s *scanner) typed(depth int) bool {
	if depth > maxDepth {
		return false
	}
	var typ []byte
	members := 0
	ok := s.object(func(name []byte, esc bool) bool {
		members++
		if esc || typ != nil && !bytes.Equal(name, typ) {
			return false
		}
		typ = name
		return s.value(typ, depth)
	})
	return ok && members > 0
}

// value reads the value of a typed attribute value of type typ.
func (s *scanner) value(typ []byte, depth int) bool {
	switch string(typ) {
	case "S", "N":
		_, _, ok := s.str()
		return ok
	case "B":
		return s.base64()
	case "BOOL":
		return s.literal("true") || s.literal("false")
	case "NULL":
		return s.literal("true")
	case "SS", "NS":
		return s.list(func() bool { _, _, ok := s.str(); return ok })
	case "BS":
		return s.list(s.base64)
	case "L":
		return s.list(func() bool { return s.typed(depth + 1) })
	case "M":
		return s.object(func([]byte, bool) bool { return s.typed(depth + 1) })
	}
	return false
}

// base64 reads a string of standard base64, as checkValue's isBase64
// accepts it.
func (s *scanner) base64() bool {
	raw, esc, ok := s.str()
	if !ok || esc {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(string(raw))
	return err == nil
}

func (s *scanner) literal(word string) bool {
	s.ws()
	if bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		s.i += len(word)
		return true
	}
	return false
}

// compact reports whether data, valid JSON, holds no white space outside
// its strings: json.Compact would return it unchanged.
func compact(data []byte) bool {
	in := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}
