package ddbevent

import (
	"bytes"
	"encoding/base64"

	"github.com/idem-run/idem/internal/jsonscan"
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

// scanner reads an item's JSON (internal/jsonscan), which checks its
// syntax on the way: encoding/json has found it valid already, but the
// check costs little and keeps the fast path correct on its own.
type scanner struct{ jsonscan.Scanner }

// validItem reports whether b, Keys or an image, is an object of typed
// attribute values that checkItem accepts.
func validItem(b []byte) bool {
	s := &scanner{jsonscan.Scanner{Data: b}}
	return s.Object(func([]byte, bool) bool { return s.typed(0) }) && s.End()
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
	ok := s.Object(func(name []byte, esc bool) bool {
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
		_, _, ok := s.String()
		return ok
	case "B":
		return s.base64()
	case "BOOL":
		return s.Literal("true") || s.Literal("false")
	case "NULL":
		return s.Literal("true")
	case "SS", "NS":
		return s.Array(func(int) bool { _, _, ok := s.String(); return ok })
	case "BS":
		return s.Array(func(int) bool { return s.base64() })
	case "L":
		return s.Array(func(int) bool { return s.typed(depth + 1) })
	case "M":
		return s.Object(func([]byte, bool) bool { return s.typed(depth + 1) })
	}
	return false
}

// base64 reads a string of standard base64, as checkValue's isBase64
// accepts it.
func (s *scanner) base64() bool {
	raw, esc, ok := s.String()
	if !ok || esc {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(string(raw))
	return err == nil
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
