package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// parseDocument returns the top-level mapping of the one YAML document in
// data, or the reason there is none.
func parseDocument(data []byte) (root ast.Node, ferr *FieldError) {
	defer func() {
		if r := recover(); r != nil {
			root, ferr = nil, &FieldError{Err: fmt.Errorf("invalid YAML: the YAML parser failed: %v", r)}
		}
	}()
	if !utf8.Valid(data) {
		return nil, &FieldError{Err: errors.New("invalid YAML: the file is not UTF-8")}
	}
	// goccy/go-yaml's parser takes time quadratic in the nesting of [ and {.
	depth := 0
	for _, tk := range lexer.Tokenize(string(data)) {
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			if depth++; depth > maxDepth {
				return nil, &FieldError{Line: tk.Position.Line, Err: fmt.Errorf("invalid YAML: line %d: nested more than %d levels deep", tk.Position.Line, maxDepth)}
			}
		case token.SequenceEndType, token.MappingEndType:
			depth--
		}
	}
	// Duplicate keys are left to the decoder, which names their path.
	file, err := parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		var se interface{ GetMessage() string }
		if !errors.As(err, &se) {
			return nil, &FieldError{Err: fmt.Errorf("invalid YAML: %w", err)}
		}
		// goccy/go-yaml quotes the character it stopped at as is.
		msg := strings.NewReplacer("\t", `\t`, "\r", `\r`, "\n", `\n`).Replace(se.GetMessage())
		if l := line(err); l > 0 {
			return nil, &FieldError{Line: l, Err: fmt.Errorf("invalid YAML: line %d: %s", l, msg)}
		}
		return nil, &FieldError{Err: fmt.Errorf("invalid YAML: %s", msg)}
	}
	if len(file.Docs) > 1 {
		l := line(file.Docs[1].Body)
		if tk := file.Docs[1].Start; tk != nil {
			l = tk.Position.Line
		}
		return nil, &FieldError{Line: l, Err: fmt.Errorf("line %d: a second YAML document (after ---) is not allowed: the config is one document", l)}
	}
	if len(file.Docs) == 0 {
		return nil, emptyError()
	}
	root = unwrap(file.Docs[0].Body)
	switch root.(type) {
	case nil, *ast.NullNode:
		return nil, emptyError()
	case ast.MapNode:
		return root, nil
	}
	return nil, &FieldError{Line: line(root), Err: fmt.Errorf("line %d: the top level must be a mapping with keys dataDir, listen, streams, functions and mappings, not %s", line(root), kind(root))}
}

func emptyError() *FieldError {
	return &FieldError{Err: errors.New("config is empty: expected a YAML mapping with streams, functions and mappings")}
}

// maxDepth bounds the nesting of [ and { in a file.
const maxDepth = 1000

// maxExpansion bounds the values that aliases add to those written, so that
// a document built to expand exponentially through aliases costs bounded
// work.
const maxExpansion = 1 << 16

// decoder fills a File from goccy/go-yaml's syntax tree. The library's own
// decoder stops at the first problem and converts where the file is
// probably wrong (1.5 into an int field as 1, "100" as 100); this one reports
// every problem with the path and line of its setting, and takes a value
// only in the YAML type the field has.
type decoder struct {
	env     *expander
	anchors map[*ast.AliasNode]ast.Node // alias → the node it stands for
	active  map[ast.Node]bool           // collections being decoded, against alias cycles
	budget  int
	errs    []*FieldError
	lines   map[string]int  // path → line where it is written
	set     map[string]bool // paths given a non-null value (merges included)
	null    map[string]bool // paths given null
}

func newDecoder(root ast.Node, size int, env *expander) *decoder {
	d := &decoder{
		env:     env,
		anchors: make(map[*ast.AliasNode]ast.Node),
		active:  make(map[ast.Node]bool),
		budget:  size + maxExpansion, // a value takes at least a byte
		lines:   make(map[string]int),
		set:     make(map[string]bool),
		null:    make(map[string]bool),
	}
	// An alias stands for the last anchor of its name before it, in
	// document order, which is the order ast.Walk visits nodes in.
	named := make(map[string]ast.Node)
	ast.Walk(visitor(func(n ast.Node) {
		switch n := n.(type) {
		case *ast.AnchorNode:
			if n.Name != nil {
				named[n.Name.GetToken().Value] = n.Value
			}
		case *ast.AliasNode:
			if n.Value != nil {
				if target, ok := named[n.Value.GetToken().Value]; ok {
					d.anchors[n] = target
				}
			}
		}
	}), root)
	return d
}

type visitor func(ast.Node)

func (v visitor) Visit(n ast.Node) ast.Visitor {
	if n != nil {
		v(n)
	}
	return v
}

func (d *decoder) fail(path string, n ast.Node, err error) {
	d.errs = append(d.errs, &FieldError{Path: path, Line: line(n), Err: err})
}

// resolve returns the node n stands for: the anchored node for an alias,
// without anchor and tag (except !!str, which decides the type).
func (d *decoder) resolve(n ast.Node, path string) (ast.Node, bool) {
	for range 100 {
		switch a := unwrap(n).(type) {
		case *ast.AliasNode:
			target, ok := d.anchors[a]
			if !ok {
				d.fail(path, a, fmt.Errorf("alias %s has no anchor before it", a))
				return nil, false
			}
			if d.active[unwrap(target)] {
				d.fail(path, a, fmt.Errorf("alias %s refers to a value that contains it", a))
				return nil, false
			}
			n = target
		default:
			return a, true
		}
	}
	d.fail(path, n, errors.New("too many aliases of aliases"))
	return nil, false
}

// unwrap drops anchors and tags other than !!str from n.
func unwrap(n ast.Node) ast.Node {
	for {
		switch a := n.(type) {
		case *ast.AnchorNode:
			n = a.Value
		case *ast.TagNode:
			if a.Start.Value == "!!str" {
				return a
			}
			n = a.Value
		default:
			return n
		}
	}
}

// spend counts one value against the budget, and reports whether any is left.
func (d *decoder) spend() bool {
	d.budget--
	return d.budget >= 0
}

// decode stores n, found at path, in v.
func (d *decoder) decode(n ast.Node, v reflect.Value, path string) {
	n, ok := d.resolve(n, path)
	if !ok || !d.spend() {
		return
	}
	if isNull(n) {
		d.null[path] = true
		return
	}
	d.set[path] = true
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	if u, ok := v.Addr().Interface().(interface{ UnmarshalYAML(ast.Node) error }); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			d.fail(path, n, err)
		}
		return
	}
	d.active[n] = true
	defer delete(d.active, n)
	switch v.Kind() {
	case reflect.Struct, reflect.Map:
		m, ok := n.(ast.MapNode)
		if !ok {
			d.mismatch(path, n, v.Type())
			return
		}
		if v.Kind() == reflect.Map && v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, e := range d.entries(m, path) {
			p := joinPath(path, e.key)
			if v.Kind() == reflect.Map {
				elem := reflect.New(v.Type().Elem()).Elem()
				d.decode(e.value, elem, p)
				v.SetMapIndex(reflect.ValueOf(e.key), elem)
			} else if i, ok := fieldIndex(v.Type(), e.key); ok {
				d.decode(e.value, v.Field(i), p)
			} else {
				d.errs = append(d.errs, &FieldError{Path: p, Line: e.line, Err: errors.New("unknown key")})
			}
		}
	case reflect.Slice:
		s, ok := n.(*ast.SequenceNode)
		if !ok {
			d.mismatch(path, n, v.Type())
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), len(s.Values), len(s.Values)))
		for i, item := range s.Values {
			p := path + "[" + strconv.Itoa(i) + "]"
			d.record(p, item)
			if isNull(unwrap(item)) {
				d.fail(p, item, errors.New("empty list item"))
				continue
			}
			d.decode(item, v.Index(i), p)
		}
	case reflect.String:
		s, ok := scalarText(n)
		if !ok {
			d.mismatch(path, n, v.Type())
			return
		}
		s, err := d.env.expand(path, s)
		if err != nil {
			d.fail(path, n, err)
			return
		}
		v.SetString(s)
	case reflect.Int:
		var x int64
		ok := false
		if i, isInt := n.(*ast.IntegerNode); isInt {
			switch val := i.Value.(type) {
			case int64:
				x, ok = val, true
			case uint64:
				x, ok = int64(val), val <= 1<<63-1
			}
		}
		if !ok || v.OverflowInt(x) {
			d.mismatch(path, n, v.Type())
			return
		}
		v.SetInt(x)
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			d.mismatch(path, n, v.Type())
			return
		}
		v.SetBool(b.Value)
	default:
		d.fail(path, n, fmt.Errorf("cannot hold a value of Go type %s", v.Type()))
	}
}

// record notes the line where path is written, the first time.
func (d *decoder) record(path string, n ast.Node) {
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = line(n)
	}
}

// entry is one key of a mapping, written in it or merged into it.
type entry struct {
	key   string
	line  int
	value ast.Node
}

// entries returns the keys of m, written ones first, then the ones merged
// in with `<<:` that m does not set itself (earlier merges win, as in YAML
// 1.1). A key written twice is a problem: which value was meant is a guess.
func (d *decoder) entries(m ast.MapNode, path string) []entry {
	var out []entry
	seen := make(map[string]int)
	var merges []ast.Node
	for it := m.MapRange(); it.Next(); {
		k := it.Key()
		if k.IsMergeKey() {
			merges = append(merges, it.Value())
			continue
		}
		e := entry{key: keyText(k), line: line(k), value: it.Value()}
		p := joinPath(path, e.key)
		if first, dup := seen[e.key]; dup {
			d.errs = append(d.errs, &FieldError{Path: p, Line: e.line, Err: fmt.Errorf("duplicate key (first at line %d)", first)})
			continue
		}
		seen[e.key] = e.line
		d.record(p, k)
		out = append(out, e)
	}
	for _, src := range merges {
		out = d.merge(out, seen, src, path)
	}
	return out
}

// merge appends to out the keys of src, a mapping or a list of mappings,
// that seen does not hold yet.
func (d *decoder) merge(out []entry, seen map[string]int, src ast.Node, path string) []entry {
	src, ok := d.resolve(src, path)
	if !ok || !d.spend() {
		return out
	}
	d.active[src] = true
	defer delete(d.active, src)
	switch s := src.(type) {
	case *ast.SequenceNode:
		for _, item := range s.Values {
			out = d.merge(out, seen, item, path)
		}
	case ast.MapNode:
		// The problems of src itself are reported where it is written.
		n := len(d.errs)
		merged := d.entries(s, path)
		d.errs = d.errs[:n]
		for _, e := range merged {
			if _, ok := seen[e.key]; !ok {
				seen[e.key] = e.line
				out = append(out, e)
			}
		}
	default:
		d.fail(path, src, fmt.Errorf("<<: expected a mapping or a list of mappings to merge, got %s", describeNode(src)))
	}
	return out
}

// mismatch reports n, which a field of Go type t cannot hold.
func (d *decoder) mismatch(path string, n ast.Node, t reflect.Type) {
	want := "a mapping"
	switch t.Kind() {
	case reflect.Slice:
		want = "a list"
	case reflect.Int:
		want = "an integer"
	case reflect.Bool:
		want = "true or false"
	case reflect.String:
		want = "a string"
	}
	d.fail(path, n, fmt.Errorf("expected %s, got %s", want, describeNode(n)))
}

// fieldIndex returns the index of the field of struct type t whose yaml tag
// names key.
func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == key {
			return i, true
		}
	}
	return 0, false
}

// scalarText returns the text of a scalar, as written (quotes and escapes
// resolved); a string field takes any scalar, 2026-01-01 and 42 included.
func scalarText(n ast.Node) (string, bool) {
	switch s := n.(type) {
	case *ast.StringNode:
		return s.Value, true
	case *ast.LiteralNode:
		return s.Value.Value, true
	case *ast.TagNode: // !!str
		return scalarText(unwrap(s.Value))
	case ast.ScalarNode:
		if tk := s.GetToken(); tk != nil {
			return tk.Value, true
		}
	}
	return "", false
}

// describeNode shows what the file has, for "got ..." messages: strings quoted,
// other scalars as written.
func describeNode(n ast.Node) string {
	switch n.(type) {
	case *ast.StringNode, *ast.LiteralNode, *ast.TagNode:
		s, _ := scalarText(n)
		return strconv.Quote(s)
	case ast.ScalarNode:
		s, _ := scalarText(n)
		return s
	}
	return kind(n)
}

// kind names the kind of n, for messages.
func kind(n ast.Node) string {
	switch n.(type) {
	case ast.MapNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.AliasNode:
		return "an alias"
	}
	return "a single value"
}

func isNull(n ast.Node) bool {
	_, null := n.(*ast.NullNode)
	return n == nil || null
}

// keyText returns a mapping key as a string: keys are names.
func keyText(k ast.MapKeyNode) string {
	if s, ok := k.(*ast.StringNode); ok {
		return s.Value
	}
	return k.String()
}

// line returns the 1-based line where n (a node, or an error of goccy/go-yaml
// that carries a token) starts, or 0.
func line(n any) int {
	if n, ok := n.(interface{ GetToken() *token.Token }); ok {
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			return tk.Position.Line
		}
	}
	return 0
}

// joinPath appends a key to a path, quoting keys that are not plain words so
// that a key such as "batch size" stays readable.
func joinPath(path, key string) string {
	if !plainKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func plainKey(key string) bool {
	if key == "" {
		return false
	}
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// lineOf returns the line where path, or its nearest enclosing setting, is
// written; 0 if neither is.
func (d *decoder) lineOf(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// materializeNulls turns `http:`, `go:` and `onFailure:` written with no
// value into empty settings, so that validation asks for their required
// fields instead of treating them as absent.
func (d *decoder) materializeNulls(f *File) {
	for i := range f.Functions {
		fn, p := &f.Functions[i], fmt.Sprintf("functions[%d].", i)
		if fn.HTTP == nil && d.null[p+"http"] {
			fn.HTTP = &HTTPFunction{}
		}
		if fn.Go == nil && d.null[p+"go"] {
			fn.Go = &GoFunction{}
		}
	}
	for i := range f.Mappings {
		m := &f.Mappings[i]
		if m.DestinationConfig.OnFailure == nil && d.null[fmt.Sprintf("mappings[%d].destinationConfig.onFailure", i)] {
			m.DestinationConfig.OnFailure = &Destination{}
		}
	}
}
