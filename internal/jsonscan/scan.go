// Package jsonscan reads JSON in place, one pass over its bytes, checking
// its syntax as encoding/json does and allocating nothing. It is for hot
// paths that need one value out of a document, or the shape of one, where
// decoding the document whole into Go values costs ten times as much: the
// engine's idempotency keys (a field of each record's payload) and the
// check of a DynamoDB change's typed attribute values.
//
// Callers only ever use it to accept: anything it refuses, or does not
// track (nesting deeper than MaxDepth), goes to encoding/json, which then
// decides and says what is wrong.
package jsonscan

import (
	"bytes"
	"encoding/binary"
)

// MaxDepth is how deeply nested arrays and objects Skip follows.
const MaxDepth = 64

// Scanner is a position in a JSON document.
type Scanner struct {
	Data []byte
	Pos  int
}

// Space skips white space.
func (s *Scanner) Space() {
	for s.Pos < len(s.Data) {
		switch s.Data[s.Pos] {
		case ' ', '\t', '\n', '\r':
			s.Pos++
		default:
			return
		}
	}
}

// End reports whether nothing but white space is left.
func (s *Scanner) End() bool {
	s.Space()
	return s.Pos == len(s.Data)
}

// Take reads c, after white space.
func (s *Scanner) Take(c byte) bool {
	s.Space()
	if s.Pos < len(s.Data) && s.Data[s.Pos] == c {
		s.Pos++
		return true
	}
	return false
}

// String reads a string, after white space, and returns its bytes between
// the quotes and whether it holds an escape.
func (s *Scanner) String() (raw []byte, escaped, ok bool) {
	if !s.Take('"') {
		return nil, false, false
	}
	start := s.Pos
	for i := start; ; i++ {
		// Eight bytes at a time while none of them needs a look, then
		// one at a time up to the one that does: the words are tried
		// once a run, not again at each byte before its end.
		for i+8 <= len(s.Data) && !mayEnd(binary.LittleEndian.Uint64(s.Data[i:])) {
			i += 8
		}
		for i < len(s.Data) && s.Data[i] != '"' && s.Data[i] != '\\' && s.Data[i] >= 0x20 {
			i++
		}
		if i >= len(s.Data) {
			return nil, false, false
		}
		switch s.Data[i] {
		case '"':
			s.Pos = i + 1
			return s.Data[start:i], escaped, true
		case '\\':
			escaped = true
			if i, ok = escapeEnd(s.Data, i); !ok {
				return nil, false, false
			}
		default: // a control character
			return nil, false, false
		}
	}
}

// escapeEnd checks the escape whose backslash is data[i], and returns the
// place of its last byte.
func escapeEnd(data []byte, i int) (int, bool) {
	i++
	if i >= len(data) {
		return 0, false
	}
	switch data[i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i, true
	case 'u':
		if i+4 >= len(data) {
			return 0, false
		}
		for _, h := range data[i+1 : i+5] {
			if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
				return 0, false
			}
		}
		return i + 4, true
	}
	return 0, false
}

// mayEnd reports whether one of the eight bytes of w may be a quote, a
// backslash or a control character: the bytes a string's scan looks at.
// As a test of the word it is exact (TestMayEnd), whatever the other
// bytes, UTF-8 included.
func mayEnd(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(x uint64) bool { return (x-ones)&^x&highs != 0 }
	return (w-ones*0x20)&^w&highs != 0 || // a byte below 0x20
		hasZero(w^(ones*'"')) || hasZero(w^(ones*'\\'))
}

// Literal reads word (true, false or null), after white space.
func (s *Scanner) Literal(word string) bool {
	s.Space()
	if !bytes.HasPrefix(s.Data[s.Pos:], []byte(word)) {
		return false
	}
	s.Pos += len(word)
	return true
}

// Number reads a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, after white space.
func (s *Scanner) Number() bool {
	s.Space()
	d := s.Data
	i := s.Pos
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
	s.Pos = i
	return true
}

// Object reads an object, after white space, calling member for each
// member with its name once its colon is read: member reads the value.
func (s *Scanner) Object(member func(name []byte, escaped bool) bool) bool {
	if !s.Take('{') {
		return false
	}
	if s.Take('}') {
		return true
	}
	for {
		name, esc, ok := s.String()
		if !ok || !s.Take(':') || !member(name, esc) {
			return false
		}
		if s.Take('}') {
			return true
		}
		if !s.Take(',') {
			return false
		}
	}
}

// Array reads an array, after white space, calling elem to read each
// element.
func (s *Scanner) Array(elem func(i int) bool) bool {
	if !s.Take('[') {
		return false
	}
	if s.Take(']') {
		return true
	}
	for i := 0; ; i++ {
		if !elem(i) {
			return false
		}
		if s.Take(']') {
			return true
		}
		if !s.Take(',') {
			return false
		}
	}
}

// Skip reads one value, after white space, of any kind, following at most
// MaxDepth nested arrays and objects (without recursion or allocation).
func (s *Scanner) Skip() bool {
	var stack [MaxDepth]byte // the open brackets
	depth := 0
	for {
		// A value.
		s.Space()
		if s.Pos >= len(s.Data) {
			return false
		}
		switch c := s.Data[s.Pos]; {
		case c == '{' || c == '[':
			if depth == MaxDepth {
				return false
			}
			s.Pos++
			if s.Take(c + 2) { // '}' or ']': empty
				break
			}
			stack[depth] = c
			depth++
			if c == '{' && !s.memberName() {
				return false
			}
			continue
		case c == '"':
			if _, _, ok := s.String(); !ok {
				return false
			}
		case c == 't':
			if !s.Literal("true") {
				return false
			}
		case c == 'f':
			if !s.Literal("false") {
				return false
			}
		case c == 'n':
			if !s.Literal("null") {
				return false
			}
		default:
			if !s.Number() {
				return false
			}
		}
		// After a value: close brackets, or a comma and the next one.
		for {
			if depth == 0 {
				return true
			}
			if s.Take(stack[depth-1] + 2) {
				depth--
				continue
			}
			if !s.Take(',') {
				return false
			}
			if stack[depth-1] == '{' && !s.memberName() {
				return false
			}
			break
		}
	}
}

// memberName reads an object member's name and its colon.
func (s *Scanner) memberName() bool {
	_, _, ok := s.String()
	return ok && s.Take(':')
}
