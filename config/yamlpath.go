package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// index maps positions in the YAML document to setting paths such as
// mappings[0].batchSize. yaml.v3 reports decoding problems by line only
// ("line 7: field batchSiz not found in type config.Mapping"); the index lets
// Parse report them by path, which stays meaningful in flow style, where many
// settings share a line.
type index struct {
	keys    map[keyPos]*bucket  // (line, key) → key nodes
	values  map[keyPos]*bucket  // (line, valueKey) → value nodes
	at      map[[2]int]*entry   // (line, column) → value node
	lines   map[string]int      // path → line where it is set
	present map[string]bool     // paths set to a non-null value (merges included)
	null    map[string]bool     // paths set to null
	seqLen  map[string]int      // path → number of items of a list
	errs    []*FieldError       // problems yaml.v3 lets through (1.5 into an int)
	budget  int                 // nodes left to visit through merge aliases
	merging map[*yaml.Node]bool // anchors being merged, against cycles
}

type keyPos struct {
	line int
	key  string
}

type entry struct {
	path string
	node *yaml.Node
	used bool
}

// mergeBudget bounds the nodes visited through `<<: *alias` merges, so that a
// document built to expand exponentially costs bounded work.
const mergeBudget = 10000

func newIndex(root *yaml.Node) *index {
	idx := &index{
		keys:    make(map[keyPos]*bucket),
		values:  make(map[keyPos]*bucket),
		at:      make(map[[2]int]*entry),
		lines:   make(map[string]int),
		present: make(map[string]bool),
		null:    make(map[string]bool),
		seqLen:  make(map[string]int),
		budget:  mergeBudget,
		merging: make(map[*yaml.Node]bool),
	}
	idx.walk(root, "", true)
	return idx
}

// walk records n, found at path. Outside merges (record false) it only marks
// paths present: the nodes are indexed where they are written.
func (idx *index) walk(n *yaml.Node, path string, record bool) {
	if !record {
		if idx.budget--; idx.budget < 0 {
			return
		}
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				continue // yaml.v3 reports non-string keys; nothing to index
			}
			if isMerge(k) {
				idx.merge(v, path)
				continue
			}
			p := joinPath(path, k.Value)
			if isNull(v) {
				idx.null[p] = true
			} else {
				idx.present[p] = true
			}
			if record {
				add(idx.keys, keyPos{k.Line, k.Value}, &entry{path: p, node: k})
				if _, ok := idx.lines[p]; !ok {
					idx.lines[p] = k.Line
				}
				idx.value(v, p)
			}
			idx.walk(v, p, record)
		}
	case yaml.SequenceNode:
		if record {
			idx.seqLen[path] = len(n.Content)
		}
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			if !isNull(c) {
				idx.present[p] = true
			}
			if record {
				if _, ok := idx.lines[p]; !ok {
					idx.lines[p] = c.Line
				}
				idx.value(c, p)
				if isNull(c) {
					// yaml.v3 drops a null item silently, shifting the
					// items after it.
					idx.errs = append(idx.errs, &FieldError{Path: p, Line: c.Line, Err: errors.New("empty list item")})
				}
			}
			idx.walk(c, p, record)
		}
	}
}

// value records the value node of path and checks what yaml.v3 would accept
// silently: a float such as 1.5 decodes into an int field as 1.
func (idx *index) value(v *yaml.Node, p string) {
	e := &entry{path: p, node: v}
	add(idx.values, keyPos{v.Line, valueKey(v.Kind, v.Value)}, e)
	if _, ok := idx.at[[2]int{v.Line, v.Column}]; !ok {
		idx.at[[2]int{v.Line, v.Column}] = e
	}
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float" && isInt(typeAt(p)) {
		idx.errs = append(idx.errs, &FieldError{Path: p, Line: v.Line, Err: fmt.Errorf("expected an integer, got %s", v.Value)})
	}
}

// merge marks the keys that a `<<:` merge brings into path as present.
func (idx *index) merge(v *yaml.Node, path string) {
	switch v.Kind {
	case yaml.AliasNode:
		// An anchor merged into itself is yaml.v3's to report; following
		// it here would not end.
		if v.Alias != nil && !idx.merging[v.Alias] {
			idx.merging[v.Alias] = true
			idx.merge(v.Alias, path)
			delete(idx.merging, v.Alias)
		}
	case yaml.SequenceNode:
		for _, c := range v.Content {
			idx.merge(c, path)
		}
	case yaml.MappingNode:
		idx.walk(v, path, false)
	}
}

func isInt(t reflect.Type) bool { return t != nil && t.Kind() == reflect.Int }

// isItem reports whether p is list[N].
func isItem(p, list string) bool {
	rest, ok := strings.CutPrefix(p, list+"[")
	if !ok || !strings.HasSuffix(rest, "]") {
		return false
	}
	_, err := strconv.Atoi(rest[:len(rest)-1])
	return err == nil
}

// cutLast splits a.b.c into a.b and c.
func cutLast(p string) (parent, key string, ok bool) {
	i := strings.LastIndexByte(p, '.')
	if i < 0 {
		return "", p, p != ""
	}
	return p[:i], p[i+1:], true
}

func (idx *index) set(path string) bool { return idx.present[path] }

// shifted returns the items of f's lists whose index may be wrong. yaml.v3
// drops a list item it cannot decode at all (a null, a duplicate key in it),
// so the items after it move up. When a list of f is shorter than in the
// file, every item from the first one with such a problem on is suspect.
func (idx *index) shifted(f *File, errs []*FieldError) []*FieldError {
	// The first item with a problem that drops it, per list.
	firstDrop := make(map[string]int)
	for _, e := range errs {
		item := e.Path
		if e.dup {
			item, _, _ = cutLast(item) // the mapping that holds the key
		}
		i := strings.LastIndexByte(item, '[')
		if i < 0 || !strings.HasSuffix(item, "]") {
			continue
		}
		k, err := strconv.Atoi(item[i+1 : len(item)-1])
		if err != nil {
			continue
		}
		if first, ok := firstDrop[item[:i]]; !ok || k < first {
			firstDrop[item[:i]] = k
		}
	}
	var out []*FieldError
	check := func(path string, n int) bool {
		want, ok := idx.seqLen[path]
		if !ok || want == n {
			return true
		}
		first, ok := firstDrop[path]
		if !ok {
			first = 0 // dropped for a reason not seen: trust no index
		}
		for k := first; k < want; k++ {
			out = append(out, &FieldError{Path: path + "[" + strconv.Itoa(k) + "]"})
		}
		return false
	}
	check("streams", len(f.Streams))
	check("functions", len(f.Functions))
	if check("mappings", len(f.Mappings)) {
		for i, m := range f.Mappings {
			check(fmt.Sprintf("mappings[%d].functionResponseTypes", i), len(m.FunctionResponseTypes))
			check(fmt.Sprintf("mappings[%d].permanentErrorTypes", i), len(m.PermanentErrorTypes))
		}
	}
	return out
}

// undecoded returns the mappings that yaml.v3 left undecoded because they
// hold a duplicate key (it decodes none of such a mapping's keys), and
// whether the top-level mapping is one: validating the zero values they
// left would report their settings as missing, when they are set twice.
func undecoded(errs []*FieldError) (lost []*FieldError, root bool) {
	for _, e := range errs {
		if !e.dup {
			continue
		}
		parent, _, _ := cutLast(e.Path)
		if parent == "" {
			root = true
			continue
		}
		lost = append(lost, &FieldError{Path: parent})
	}
	return lost, root
}

// line returns the line where path, or its nearest enclosing setting, is
// written; 0 if neither is.
func (idx *index) line(path string) int {
	for path != "" {
		if l, ok := idx.lines[path]; ok {
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

// materializeNulls turns `http:` and `onFailure:` written with no value into
// empty settings, so that validation asks for their required fields instead
// of treating them as absent.
func (idx *index) materializeNulls(f *File) {
	for i := range f.Functions {
		fn, p := &f.Functions[i], fmt.Sprintf("functions[%d].", i)
		if fn.HTTP == nil && idx.null[p+"http"] {
			fn.HTTP = &HTTPFunction{}
		}
		if fn.Go == nil && idx.null[p+"go"] {
			fn.Go = &GoFunction{}
		}
	}
	for i := range f.Mappings {
		m := &f.Mappings[i]
		if m.DestinationConfig.OnFailure == nil && idx.null[fmt.Sprintf("mappings[%d].destinationConfig.onFailure", i)] {
			m.DestinationConfig.OnFailure = &Destination{}
		}
	}
}

// unsupportedMappingKeys are Lambda mapping settings idem does not
// implement yet (none today). They are named as such, so that users don't
// take them for typos (or think them applied).
var unsupportedMappingKeys = map[string]bool{}

// unsupported reports whether path is such a setting.
func unsupported(path string) bool {
	parent, key, _ := cutLast(path)
	return unsupportedMappingKeys[key] && isItem(parent, "mappings")
}

// translate turns a yaml.v3 decoding error into problems named by path.
func (idx *index) translate(err error) []*FieldError {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		return []*FieldError{{Err: fmt.Errorf("invalid YAML: %s", msg)}}
	}
	out := make([]*FieldError, 0, len(te.Errors))
	for _, msg := range te.Errors {
		out = append(out, idx.translateOne(msg))
	}
	return out
}

// translateOne maps one of yaml.v3's messages (or Duration's) to a path. A
// message it does not recognise is kept, with its line.
func (idx *index) translateOne(msg string) *FieldError {
	var line, col int
	if n, _ := fmt.Sscanf(msg, "line %d, column %d: ", &line, &col); n == 2 {
		// Duration.UnmarshalYAML: "line L, column C: problem".
		_, rest, _ := strings.Cut(msg, ": ")
		if e := idx.at[[2]int{line, col}]; e != nil {
			return &FieldError{Path: e.path, Line: line, Err: errors.New(rest)}
		}
		return &FieldError{Line: line, Err: errors.New(msg)}
	}
	if n, _ := fmt.Sscanf(msg, "line %d: ", &line); n != 1 {
		return &FieldError{Err: errors.New(msg)}
	}
	_, rest, _ := strings.Cut(msg, ": ")
	fallback := &FieldError{Line: line, Err: errors.New(msg)}

	if s, ok := strings.CutPrefix(rest, "field "); ok {
		if key, _, ok := strings.Cut(s, " not found in type "); ok {
			e := idx.keyAt(line, key)
			if e == nil {
				return &FieldError{Line: line, Err: fmt.Errorf("line %d: %s: unknown key", line, key)}
			}
			if unsupported(e.path) {
				return &FieldError{Path: e.path, Line: line, Err: errors.New("not supported yet")}
			}
			return &FieldError{Path: e.path, Line: line, Err: errors.New("unknown key")}
		}
		if key, _, ok := strings.Cut(s, " already set in type "); ok {
			if e := idx.keyAt(line, key); e != nil {
				return &FieldError{Path: e.path, Line: line, Err: errors.New("set twice")}
			}
		}
		return fallback
	}
	if s, ok := strings.CutPrefix(rest, "mapping key "); ok {
		i := strings.LastIndex(s, " already defined at line ")
		if i < 0 {
			return fallback
		}
		key, err := strconv.Unquote(s[:i])
		if err != nil {
			return fallback
		}
		if e := idx.keyAt(line, key); e != nil {
			return &FieldError{Path: e.path, Line: line, Err: fmt.Errorf("duplicate key (first at line %s)", s[i+len(" already defined at line "):]), dup: true}
		}
		return fallback
	}
	if s, ok := strings.CutPrefix(rest, "cannot unmarshal "); ok {
		i := strings.LastIndex(s, " into ")
		if i < 0 {
			return fallback
		}
		got, goType := s[:i], s[i+len(" into "):]
		tag, shown, hasValue := strings.Cut(got, " `")
		shown = strings.TrimSuffix(shown, "`")
		kind := yaml.ScalarNode
		switch {
		case hasValue:
		case tag == "!!map":
			kind = yaml.MappingNode
		case tag == "!!seq":
			kind = yaml.SequenceNode
		}
		e := pick(idx.values[keyPos{line, valueKey(kind, shown)}], func(e *entry) bool {
			// Several nodes of a line can look alike (flow style); the
			// Go type yaml.v3 names tells them apart.
			if t := typeAt(e.path); t != nil && t.String() != goType {
				return false
			}
			if !hasValue {
				return true
			}
			if p, ok := strings.CutSuffix(shown, "..."); ok {
				return strings.HasPrefix(e.node.Value, p)
			}
			return e.node.Value == shown
		})
		if e == nil {
			return fallback
		}
		return &FieldError{Path: e.path, Line: line, Err: fmt.Errorf("expected %s, got %s", describeType(goType), describeNode(e.node, tag))}
	}
	return fallback
}

// keyAt returns the first key named key on line that no message used yet.
func (idx *index) keyAt(line int, key string) *entry {
	return pick(idx.keys[keyPos{line, key}], func(*entry) bool { return true })
}

// bucket holds the nodes that one kind of message could be about, in
// document order.
type bucket struct {
	items []*entry
	next  int // items before next are all used
}

func add(m map[keyPos]*bucket, k keyPos, e *entry) {
	b := m[k]
	if b == nil {
		b = &bucket{}
		m[k] = b
	}
	b.items = append(b.items, e)
}

// valueKey buckets value nodes the way yaml.v3 shows them: collections
// without a value, scalars by their first 7 bytes (it cuts longer ones to
// 7 bytes and "...").
func valueKey(kind yaml.Kind, value string) string {
	switch kind {
	case yaml.MappingNode:
		return "\x00map"
	case yaml.SequenceNode:
		return "\x00seq"
	case yaml.ScalarNode:
	default:
		return "\x00other"
	}
	value = strings.TrimSuffix(value, "...")
	return value[:min(len(value), 7)]
}

// pick returns the first unused matching entry, marking it used; yaml.v3
// reports in document order, so repeated messages about one line (flow
// style) land on successive nodes. When all are used (an anchor merged
// twice), it returns the first match again.
func pick(b *bucket, match func(*entry) bool) *entry {
	if b == nil {
		return nil
	}
	for i := b.next; i < len(b.items); i++ {
		e := b.items[i]
		if e.used || !match(e) {
			continue
		}
		e.used = true
		for b.next < len(b.items) && b.items[b.next].used {
			b.next++
		}
		return e
	}
	for _, e := range b.items {
		if match(e) {
			return e
		}
	}
	return nil
}

// typeAt returns the Go type yaml.v3 decodes path into (pointers
// dereferenced, as yaml.v3 does before it reports), or nil for a path that is
// not a setting.
func typeAt(path string) reflect.Type {
	t := reflect.TypeOf(File{})
	for path != "" {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch path[0] {
		case '[':
			end := strings.IndexByte(path, ']')
			if end < 0 || t.Kind() != reflect.Slice {
				return nil
			}
			t, path = t.Elem(), path[end+1:]
		case '.':
			path = path[1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			key := path[:end]
			if t.Kind() != reflect.Struct {
				return nil
			}
			var found reflect.Type
			for i := 0; i < t.NumField(); i++ {
				tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if tag == key {
					found = t.Field(i).Type
					break
				}
			}
			if found == nil {
				return nil
			}
			t, path = found, path[end:]
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// describeType names what a Go type wants, for "expected ..." messages.
func describeType(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case goType == "int":
		return "an integer"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "config."), strings.HasPrefix(goType, "*config."):
		return "a mapping"
	}
	return goType
}

// describeNode shows what the file has, for "got ..." messages.
func describeNode(n *yaml.Node, tag string) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if tag == "!!str" {
		return strconv.Quote(n.Value)
	}
	return n.Value
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

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge reports whether k is the merge key <<, as yaml.v3 decides it.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}
