package pattern

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Projection decodes a record's JSON data keeping only what a set of
// patterns look at under one field: matching a projected value gives the
// same answer as matching the fully decoded one, at a fraction of the cost,
// since a record's data is usually much larger than what a filter reads.
type Projection struct {
	root *tree
	// whole is set when some pattern matches the field itself (a leaf), so
	// the value is decoded in full.
	whole bool
	// used is false when no pattern names the field: nothing is decoded.
	used bool
}

// tree is the set of object members patterns look at; a nil child keeps
// the member's whole value.
type tree struct {
	members map[string]*tree
}

// NewProjection is the projection of the field name for patterns ps.
func NewProjection(name string, ps ...*Pattern) *Projection {
	pr := &Projection{root: &tree{members: map[string]*tree{}}}
	for _, p := range ps {
		f, ok := p.root.fields[name]
		if !ok {
			continue
		}
		pr.used = true
		if f.obj == nil {
			pr.whole = true
			continue
		}
		merge(pr.root, f.obj)
	}
	return pr
}

func merge(t *tree, o *object) {
	for _, name := range o.names {
		f := o.fields[name]
		child, seen := t.members[name]
		switch {
		case seen && child == nil:
			// Kept whole already.
		case f.obj == nil:
			t.members[name] = nil
		default:
			if !seen {
				child = &tree{members: map[string]*tree{}}
				t.members[name] = child
			}
			merge(child, f.obj)
		}
	}
}

// Used reports whether any pattern looks at the field.
func (pr *Projection) Used() bool { return pr.used }

// Decode decodes data as the patterns see it, or returns ErrNotJSON when
// data is not JSON (exactly when Decode, the full decoder, would).
func (pr *Projection) Decode(data []byte) (any, error) {
	if pr.whole {
		return Decode(data)
	}
	if !json.Valid(data) {
		return nil, ErrNotJSON
	}
	s := scanner{data: data}
	v, ok := s.value(pr.root)
	if !ok {
		return nil, ErrNotJSON
	}
	return v, nil
}

// scanner walks valid JSON, building only the projected parts.
type scanner struct {
	data []byte
	i    int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads the value at s.i: projected through t when it is an object
// (or an array of objects), in full when t is nil. ok is false where
// encoding/json would fail to decode the document into an interface (a
// number out of float64's range, even in a member nobody looks at).
func (s *scanner) value(t *tree) (any, bool) {
	s.space()
	switch c := s.data[s.i]; {
	case c == '{':
		return s.object(t)
	case c == '[':
		return s.array(t)
	case c == '"':
		str, ok := s.str(t == nil)
		return str, ok
	case c == 't':
		s.i += 4
		return true, true
	case c == 'f':
		s.i += 5
		return false, true
	case c == 'n':
		s.i += 4
		return nil, true
	default:
		return s.number()
	}
}

func (s *scanner) object(t *tree) (any, bool) {
	var m map[string]any
	if t == nil || len(t.members) > 0 {
		m = make(map[string]any)
	}
	ok := s.elements(true, true, func(key string) bool {
		var child *tree
		keep := t == nil
		if !keep {
			child, keep = t.members[key]
		}
		if !keep {
			return s.skip()
		}
		v, ok := s.value(child)
		m[key] = v
		return ok
	})
	return orEmpty(m), ok
}

// orEmpty keeps a projected object an object even when nothing of it is
// kept.
func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (s *scanner) array(t *tree) (any, bool) {
	out := []any{}
	ok := s.elements(false, false, func(string) bool {
		// Under a projected object only objects can match: other
		// elements are skipped.
		if t != nil && s.data[s.i] != '{' && s.data[s.i] != '[' {
			return s.skip()
		}
		v, ok := s.value(t)
		out = append(out, v)
		return ok
	})
	return out, ok
}

// elements walks the container at s.i, an object's members or an array's
// elements, calling elem at each value with the member's key (decoded
// only if keys).
func (s *scanner) elements(object, keys bool, elem func(key string) bool) bool {
	end := byte(']')
	if object {
		end = '}'
	}
	s.i++ // '{' or '['
	s.space()
	if s.data[s.i] == end {
		s.i++
		return true
	}
	for {
		s.space()
		var key string
		if object {
			k, ok := s.str(keys)
			if !ok {
				return false
			}
			key = k
			s.space()
			s.i++ // ':'
			s.space()
		}
		if !elem(key) {
			return false
		}
		s.space()
		if s.data[s.i] != ',' {
			s.i++ // the end
			return true
		}
		s.i++
	}
}

// str reads a string; it decodes it only if decode (else returns "").
func (s *scanner) str(decode bool) (string, bool) {
	start := s.i
	s.i++ // '"'
	plain := true
	for {
		c := s.data[s.i]
		if c == '"' {
			break
		}
		if c == '\\' {
			plain = false
			s.i += 2
			continue
		}
		if c >= utf8.RuneSelf {
			plain = false
		}
		s.i++
	}
	s.i++
	if !decode {
		return "", true
	}
	if plain {
		return string(s.data[start+1 : s.i-1]), true
	}
	var out string
	if err := json.Unmarshal(s.data[start:s.i], &out); err != nil {
		return "", false
	}
	return out, true
}

func (s *scanner) number() (any, bool) {
	start := s.i
	for s.i < len(s.data) {
		switch c := s.data[s.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			s.i++
			continue
		}
		break
	}
	f, err := strconv.ParseFloat(string(s.data[start:s.i]), 64)
	if err != nil {
		return nil, false
	}
	return f, true
}

// skip passes over a value nobody looks at, checking only what makes
// encoding/json fail on valid JSON: numbers out of range.
func (s *scanner) skip() bool {
	s.space()
	switch c := s.data[s.i]; {
	case c == '{' || c == '[':
		return s.elements(c == '{', false, func(string) bool { return s.skip() })
	case c == '"':
		_, ok := s.str(false)
		return ok
	case c == 't', c == 'n':
		s.i += 4
		return true
	case c == 'f':
		s.i += 5
		return true
	default:
		_, ok := s.number()
		return ok
	}
}
