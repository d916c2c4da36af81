// Package schema generates the JSON Schema of idem's config file, the one
// `idem config schema` prints and docs/idem.schema.json holds. It is apart
// from package config so that that package keeps to reading and checking a
// config: a program that only parses one does not take in the generator,
// which reflects on config.File and parses the Go source of the config types
// (config.Sources) for their doc comments, the descriptions and defaults.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/source"
)

// The schema is generated, never written by hand: its keys and types come
// from the File type by reflection, its descriptions, defaults and required
// keys from the fields' doc comments (config.Sources, parsed when Generate
// runs, so the schema cannot drift from the documentation), and what a doc
// comment cannot say in a form a program reads (ranges, patterns, enums, the
// keys of which at most one may be set) from schemaRules, which names
// package config's constants where it has them. Tests check every rule
// against config.Parse.
//
// The schema is at most as permissive as Parse about keys, types, enums and
// integer ranges: a file it accepts has the shape Parse accepts. It is
// stricter in corners: a key written with no value (null) is refused except
// `go:`, where it means something, and so is a number or boolean written
// for a string setting, except env values and args (PORT: 8080). What
// depends on other settings (names that must refer to configured streams
// and functions) is left to Parse, and so are durations' ranges: JSON
// Schema cannot compare a duration string with a bound.

// schemaDialect is the JSON Schema version of Generate's output: draft-07, the
// newest that yaml-language-server and most editors implement fully.
const schemaDialect = "http://json-schema.org/draft-07/schema#"

// Patterns of the schema, in the regular expression syntax JSON Schema uses
// (ECMA 262) and RE2 both accept.
const (
	// durationPattern is the syntax of time.ParseDuration without a minus
	// sign: no setting allows a negative duration written as a string.
	durationPattern = `^\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	namePattern     = `^[A-Za-z0-9._-]+$`
	tokenPattern    = `^[!-~]+$`
	listenPattern   = `^(\[[^\]]*\]|[^:\[\]]*):[0-9]{1,5}$`
	// loopbackPattern is a listen address on a loopback host, which
	// debug.pprof must be.
	loopbackPattern = `^(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|\[::1\]|localhost):[0-9]{1,5}$`
	// envRefPattern finds a reference to an environment variable, ${NAME}
	// or ${NAME:-default}, which Parse expands in string settings: a
	// setting that has one is checked after expansion, by Parse.
	envRefPattern = `\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}`
)

// schemaRule is what the schema says about one setting beyond its type,
// description and default.
type schemaRule struct {
	minimum, maximum     *int
	minLength, maxLength int
	minItems, maxItems   int
	pattern              string
	format               string
	enum                 []string
	// required makes the key required when its doc comment does not say
	// so (a list that must not be empty once its parent is set).
	required bool
	// nullable accepts the key with no value, for the keys that Parse reads
	// as set (`go:` is `go: {}`).
	nullable bool
	// scalar accepts a number or boolean for a string, which YAML users
	// write unquoted (PORT: 8080) and Parse reads as its text.
	scalar bool
	// zero accepts a duration written as the integer 0; noLimit as -1.
	zero, noLimit bool
	// atMostOne and exactlyOne are keys of an object of which at most
	// (exactly) one may be set: the kinds of a store, function or source.
	atMostOne, exactlyOne []string
}

func between(lo, hi int) schemaRule { return schemaRule{minimum: &lo, maximum: &hi} }

func atLeast(lo int) schemaRule { return schemaRule{minimum: &lo} }

// schemaRules holds the rules of validate.go (and invoke.go, lease.go) that
// the schema can state, by setting path; "[]" stands for every item of a
// list. TestSchemaRangesMatchValidate checks each range against Validate.
var schemaRules = map[string]schemaRule{
	"listen":                                 {pattern: listenPattern},
	"debug.pprof":                            {pattern: loopbackPattern},
	"region":                                 {pattern: `^[a-z]{2}(-[a-z]+)+-[0-9]+$`},
	"store":                                  {atMostOne: []string{"postgres", "redis", "dynamodb"}},
	"store.dynamodb.table":                   {pattern: `^[A-Za-z0-9_.-]+$`, minLength: 3, maxLength: 255},
	"store.dynamodb.region":                  {pattern: `^[a-z]{2}(-[a-z]+)+-[0-9]+$`},
	"store.postgres.schema":                  {pattern: `^[a-z][a-z0-9_]*$`, maxLength: 63},
	"store.redis.db":                         between(0, 15),
	"store.redis.prefix":                     {pattern: `^[^{} \t\n]+$`},
	"auth.tokens[]":                          {pattern: tokenPattern, minLength: config.MinTokenLen, maxLength: config.MaxTokenLen},
	"auth.readTokens[]":                      {pattern: tokenPattern, minLength: config.MinTokenLen, maxLength: config.MaxTokenLen},
	"streams[].name":                         {pattern: namePattern, maxLength: config.MaxNameLen},
	"streams[].shards":                       between(config.MinShards, config.MaxShards),
	"functions[]":                            {atMostOne: []string{"http", "go", "process"}},
	"functions[].name":                       {pattern: namePattern, maxLength: config.MaxNameLen},
	"functions[].go":                         {nullable: true},
	"functions[].async.maximumRetryAttempts": between(0, config.MaxAsyncRetryAttempts),
	"functions[].async.permanentErrorTypes[]":            {pattern: `\S`},
	"functions[].process.args[]":                         {scalar: true},
	"functions[].process.env{}":                          {scalar: true},
	"functions[].process.concurrency":                    between(1, 1024),
	"functions[].process.memorySize":                     between(128, 10240),
	"mappings[].name":                                    {pattern: namePattern, maxLength: config.MaxNameLen},
	"mappings[].source":                                  {exactlyOne: []string{"stream", "kafka", "jetstream", "kinesis", "redis", "dynamodb"}},
	"mappings[].source.dynamodb":                         {exactlyOne: []string{"table", "streamArn"}},
	"mappings[].source.dynamodb.table":                   {pattern: `^[A-Za-z0-9_.-]+$`, minLength: 3, maxLength: 255},
	"mappings[].source.dynamodb.streamArn":               {pattern: `^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/[A-Za-z0-9_.-]{3,255}/stream/[^/]+$`},
	"mappings[].source.dynamodb.region":                  {pattern: `^[a-z]{2}(-[a-z]+)+-[0-9]+$`},
	"mappings[].source.kafka.sessionTimeout":             {zero: true},
	"mappings[].source.jetstream":                        {atMostOne: []string{"partitions", "partitionByToken"}},
	"mappings[].source.jetstream.partitionByToken.token": atLeast(0),
	"mappings[].source.jetstream.partitionByToken.count": between(1, 1024),
	"mappings[].source.redis.db":                         between(0, 15),
	"mappings[].startingPosition":                        {enum: []string{string(source.TrimHorizon), string(source.Latest), string(source.AtTimestamp)}},
	"mappings[].startingPositionTimestamp":               {format: "date-time"},
	"mappings[].batchSize":                               between(config.MinBatchSize, config.MaxBatchSize),
	"mappings[].maximumBatchingWindow":                   {zero: true},
	"mappings[].maximumRetryAttempts":                    between(config.MinRetryAttempts, config.MaxRetryAttempts),
	"mappings[].maximumRecordAge":                        {noLimit: true},
	"mappings[].parallelizationFactor":                   between(config.MinParallelization, config.MaxParallelization),
	"mappings[].tumblingWindow":                          {zero: true},
	"mappings[].functionResponseTypes[]":                 {enum: []string{config.ReportBatchItemFailuresType}},
	"mappings[].eventFormat":                             {enum: []string{string(idem.EventFormatDynamoDB), string(idem.EventFormatKafka), string(idem.EventFormatKinesis), string(idem.EventFormatS3)}},
	"mappings[].filterCriteria.filters":                  {required: true, maxItems: config.MaxFilters},
	"mappings[].permanentErrorTypes[]":                   {pattern: `\S`},
	"mappings[].idempotency.scope":                       {pattern: namePattern, maxLength: config.MaxNameLen},
	// With an external source, whose retention idem does not know,
	// nothing bounds it.
	"mappings[].idempotency.retention": {zero: true},
}

// Generate returns the JSON Schema (draft-07) of the config file, indented,
// as `idem config schema` prints it and docs/idem.schema.json holds it:
// editors use it to complete and check idem.yaml (with a
// `# yaml-language-server: $schema=...` first line), and CI can check a file
// with any JSON Schema validator. It refuses unknown keys wherever Parse
// does. Passing the schema is necessary, not sufficient: Parse also checks
// what depends on other settings.
func Generate() ([]byte, error) {
	docs, err := readDocs()
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	g := &generator{docs: docs, used: make(map[string]bool)}
	root := g.object(reflect.TypeFor[config.File](), "", nil)
	root.Schema = schemaDialect
	root.Comment = "Generated by `idem config schema` from the config package's types and doc comments; do not edit."
	root.Title = "idem.yaml"
	root.Description = "The config file of idem, as `idem serve -c FILE` reads it. Passing this schema is necessary, not sufficient: idem also checks what depends on other settings (names of configured streams and functions, durations' ranges)."
	for path := range schemaRules {
		if !g.used[path] {
			g.errs = append(g.errs, fmt.Errorf("schemaRules has %s, which is no setting", path))
		}
	}
	if err := errors.Join(g.errs...); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return buf.Bytes(), nil
}

// jsonSchema is one schema of the output. Its fields are in the order a
// reader wants them; Properties keeps the order of the Go fields.
type jsonSchema struct {
	Schema               string        `json:"$schema,omitempty"`
	Comment              string        `json:"$comment,omitempty"`
	Title                string        `json:"title,omitempty"`
	Description          string        `json:"description,omitempty"`
	Type                 any           `json:"type,omitempty"`
	Format               string        `json:"format,omitempty"`
	Enum                 []any         `json:"enum,omitempty"`
	Default              any           `json:"default,omitempty"`
	Pattern              string        `json:"pattern,omitempty"`
	MinLength            int           `json:"minLength,omitempty"`
	MaxLength            int           `json:"maxLength,omitempty"`
	Minimum              *int          `json:"minimum,omitempty"`
	Maximum              *int          `json:"maximum,omitempty"`
	MinItems             int           `json:"minItems,omitempty"`
	MaxItems             int           `json:"maxItems,omitempty"`
	Items                *jsonSchema   `json:"items,omitempty"`
	Properties           properties    `json:"properties,omitempty"`
	AdditionalProperties any           `json:"additionalProperties,omitempty"`
	Required             []string      `json:"required,omitempty"`
	AnyOf                []*jsonSchema `json:"anyOf,omitempty"`
	OneOf                []*jsonSchema `json:"oneOf,omitempty"`
	Not                  *jsonSchema   `json:"not,omitempty"`
}

// properties are an object's properties, in order.
type properties []property

type property struct {
	key    string
	schema *jsonSchema
}

// MarshalJSON writes the properties as one JSON object, in order.
func (ps properties) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			buf.WriteByte(',')
		}
		// Encode as Generate does: descriptions keep their < and >.
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(p.key); err != nil {
			return nil, err
		}
		buf.WriteByte(':')
		if err := enc.Encode(p.schema); err != nil {
			return nil, err
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// generator builds the schema of File.
type generator struct {
	docs map[string]string // "Type" and "Type.Field" → doc comment
	used map[string]bool   // the paths of schemaRules met
	errs []error
}

var durationType = reflect.TypeFor[config.Duration]()

// object returns the schema of struct type t at path. overrides replace the
// defaults its fields' doc comments state: a parent's doc comment says
// "Default: {baseDelay: 1s, maxDelay: 2m}" where the type's fields have
// other defaults elsewhere.
func (g *generator) object(t reflect.Type, path string, overrides map[string]string) *jsonSchema {
	s := &jsonSchema{Type: "object", AdditionalProperties: false, Properties: properties{}}
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || key == "" || key == "-" {
			continue
		}
		p := key
		if path != "" {
			p = path + "." + key
		}
		doc, ok := g.docs[t.Name()+"."+f.Name]
		if !ok {
			g.errs = append(g.errs, fmt.Errorf("%s (%s.%s) has no doc comment", p, t.Name(), f.Name))
			continue
		}
		body, dflt := splitDefault(doc)
		if o, ok := overrides[key]; ok {
			dflt = o
		}
		ps := g.value(f.Type, p, dflt)
		ps.Description = describe(body, dflt, f.Name, key, t, structType(f.Type))
		if v, ok := defaultValue(f.Type, dflt); ok {
			ps.Default = v
		}
		rule := schemaRules[p]
		if strings.HasPrefix(dflt, "none, required") || rule.required {
			s.Required = append(s.Required, key)
			switch f.Type.Kind() {
			case reflect.String:
				if ps.AnyOf == nil {
					ps.MinLength = max(ps.MinLength, 1)
				}
			case reflect.Slice:
				ps.MinItems = max(ps.MinItems, 1)
			}
		}
		s.Properties = append(s.Properties, property{key, ps})
	}
	rule := schemaRules[path]
	if len(rule.atMostOne) > 0 {
		var pairs []*jsonSchema
		for i, a := range rule.atMostOne {
			for _, b := range rule.atMostOne[i+1:] {
				pairs = append(pairs, allOf(isSet(s, a), isSet(s, b)))
			}
		}
		if len(pairs) == 1 {
			s.Not = pairs[0]
		} else {
			s.Not = &jsonSchema{AnyOf: pairs}
		}
	}
	for _, k := range rule.exactlyOne {
		s.OneOf = append(s.OneOf, isSet(s, k))
	}
	return s
}

// allOf returns a schema that both a and b must pass, written as one where
// it can be: each of them only requires keys and constrains their values.
func allOf(a, b *jsonSchema) *jsonSchema {
	return &jsonSchema{
		Required:   append(append([]string(nil), a.Required...), b.Required...),
		Properties: append(append(properties(nil), a.Properties...), b.Properties...),
	}
}

// isSet returns the schema of "key is set" in object s, as Parse counts it:
// a string must not be empty, a list must have items.
func isSet(s *jsonSchema, key string) *jsonSchema {
	set := &jsonSchema{Required: []string{key}}
	for _, p := range s.Properties {
		if p.key != key {
			continue
		}
		switch p.schema.Type {
		case "string":
			set.Properties = properties{{key, &jsonSchema{MinLength: 1}}}
		case "array":
			set.Properties = properties{{key, &jsonSchema{MinItems: 1}}}
		}
	}
	return set
}

// value returns the schema of a value of type t at path, without its
// description.
func (g *generator) value(t reflect.Type, path, dflt string) *jsonSchema {
	rule, ok := schemaRules[path]
	if ok {
		g.used[path] = true
	}
	var s *jsonSchema
	switch {
	case t == durationType:
		s = &jsonSchema{Type: "string", Pattern: durationPattern}
		var ints []any
		if rule.noLimit {
			ints = append(ints, -1)
		}
		if rule.zero {
			ints = append(ints, 0)
		}
		if len(ints) > 0 {
			s = &jsonSchema{AnyOf: []*jsonSchema{s, {Type: "integer", Enum: ints}}}
		}
	case t.Kind() == reflect.Pointer:
		return g.value(t.Elem(), path, dflt)
	case t.Kind() == reflect.Struct:
		s = g.object(t, path, flowMap(dflt))
	case t.Kind() == reflect.String:
		s = &jsonSchema{Type: "string"}
	case t.Kind() == reflect.Int:
		s = &jsonSchema{Type: "integer"}
	case t.Kind() == reflect.Bool:
		s = &jsonSchema{Type: "boolean"}
	case t.Kind() == reflect.Slice:
		s = &jsonSchema{Type: "array", Items: g.value(t.Elem(), path+"[]", "")}
		if t.Elem().Kind() == reflect.Struct {
			s.Items.Description = describe(g.docs[t.Elem().Name()], "", "", "", t.Elem())
		}
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		s = &jsonSchema{Type: "object", AdditionalProperties: g.value(t.Elem(), path+"{}", "")}
	default:
		g.errs = append(g.errs, fmt.Errorf("%s: no schema for Go type %s", path, t))
		return &jsonSchema{}
	}
	s.Minimum, s.Maximum = rule.minimum, rule.maximum
	s.MinLength, s.MaxLength = rule.minLength, rule.maxLength
	s.MinItems, s.MaxItems = rule.minItems, rule.maxItems
	if rule.pattern != "" {
		s.Pattern = rule.pattern
	}
	s.Format = rule.format
	for _, e := range rule.enum {
		s.Enum = append(s.Enum, e)
	}
	if rule.scalar {
		s.Type = []string{"string", "number", "boolean"}
	}
	if t.Kind() == reflect.String && s.Type == "string" && (s.Pattern != "" || len(s.Enum) > 0 || s.MinLength > 1 || s.MaxLength > 0 || s.Format != "") {
		s = &jsonSchema{AnyOf: []*jsonSchema{s, {
			Description: "A value from the environment, ${NAME} or ${NAME:-default}, which idem checks once expanded.",
			Type:        "string",
			Pattern:     envRefPattern,
		}}}
	}
	if rule.nullable {
		s.Type = []string{s.Type.(string), "null"}
	}
	return s
}

// readDocs returns the doc comments of the config types and of their
// fields, keyed "Type" and "Type.Field".
func readDocs() (map[string]string, error) {
	entries, err := config.Sources.ReadDir(".")
	if err != nil {
		return nil, err
	}
	docs := make(map[string]string)
	fset := token.NewFileSet()
	for _, e := range entries {
		src, err := config.Sources.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		file, err := parser.ParseFile(fset, e.Name(), src, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				doc := ts.Doc
				if doc == nil && len(gd.Specs) == 1 {
					doc = gd.Doc
				}
				docs[ts.Name.Name] = doc.Text()
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				for _, f := range st.Fields.List {
					for _, n := range f.Names {
						if f.Doc != nil {
							docs[ts.Name.Name+"."+n.Name] = f.Doc.Text()
						}
					}
				}
			}
		}
	}
	return docs, nil
}

// splitDefault splits a doc comment into its text and what its last
// paragraph, "Default: ...", says.
func splitDefault(doc string) (body, dflt string) {
	lines := strings.Split(strings.TrimSpace(doc), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, "Default:"); ok {
			return strings.Join(lines[:i], "\n"), strings.Join(strings.Fields(rest+" "+strings.Join(lines[i+1:], " ")), " ")
		}
	}
	return strings.Join(lines, "\n"), ""
}

// describe turns the doc comment of field name (key in YAML) into a
// description for the YAML file: its paragraphs unwrapped, the Go names it
// starts with or mentions, of the fields of types, written as their keys,
// and the default, where there is one to state, in a paragraph of its own.
func describe(body, dflt, name, key string, types ...reflect.Type) string {
	if name != "" {
		if rest, ok := strings.CutPrefix(body, name); ok && (rest == "" || !isIdentRune(rest[0])) {
			body = key + rest
		}
	}
	var paras []string
	for _, p := range strings.Split(body, "\n\n") {
		paras = append(paras, yamlSentences(strings.Join(strings.Fields(p), " ")))
	}
	text := strings.Join(paras, "\n\n")
	for _, t := range types {
		if t == nil {
			continue
		}
		for i := range t.NumField() {
			f := t.Field(i)
			k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			// Only names of several words whose key is the name in
			// lowerCamelCase: a single word (Name, HTTP, Go) is as likely
			// the English word, and JetStream (key jetstream) the product.
			if !multiWord(f.Name) || k != strings.ToLower(f.Name[:1])+f.Name[1:] {
				continue
			}
			text = regexp.MustCompile(`\b`+f.Name+`\b`).ReplaceAllString(text, k)
		}
	}
	switch {
	case dflt == "" || strings.HasPrefix(dflt, "see "):
		// Nothing to state, or the fields below state it.
	case strings.HasPrefix(dflt, "nil"):
		// A Go word: in YAML the key is left out.
		text += "\n\nDefault: none" + strings.TrimPrefix(dflt, "nil")
	default:
		text += "\n\nDefault: " + dflt
	}
	return strings.TrimSpace(text)
}

// goRemarks mark the sentences of doc comments that speak to Go programs
// (a File built or changed in Go, the package's methods): the schema's
// descriptions leave them out.
var goRemarks = regexp.MustCompile(`\b(Validate|Parse|StartingPositionTime|method|[Ii]n Go|This package)\b`)

// yamlSentences returns the sentences (and clauses ending in a semicolon)
// of text that are not goRemarks.
func yamlSentences(text string) string {
	var kept []string
	for text != "" {
		end := len(text)
		if i := strings.IndexAny(text, ".;"); i >= 0 {
			// A sentence ends at a period or semicolon before a space
			// or the end: 1.5 and e.g. ./bootstrap do not end one.
			for j := i; j < len(text); j++ {
				if (text[j] == '.' || text[j] == ';') && (j+1 == len(text) || text[j+1] == ' ') {
					end = j + 1
					break
				}
			}
		}
		sentence := text[:end]
		text = strings.TrimSpace(text[end:])
		if !goRemarks.MatchString(sentence) {
			kept = append(kept, sentence)
		}
	}
	out := strings.Join(kept, " ")
	if s, ok := strings.CutSuffix(out, ";"); ok {
		out = s + "."
	}
	return out
}

// structType returns the struct type that t is or points to, or nil.
func structType(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

func isIdentRune(b byte) bool {
	return b == '_' || unicode.IsLetter(rune(b)) || unicode.IsDigit(rune(b))
}

// multiWord reports whether a Go name joins several words, as
// BatchSize does.
func multiWord(name string) bool {
	for i := 1; i < len(name); i++ {
		if unicode.IsUpper(rune(name[i])) && unicode.IsLower(rune(name[i-1])) {
			return true
		}
	}
	return false
}

// defaultValue returns the JSON value of a default that a doc comment
// states as a plain value ("100", "24h", "-1 (no limit)"), and false for
// one it states in words ("the first key") or that is no value ("none").
func defaultValue(t reflect.Type, dflt string) (any, bool) {
	v, _, _ := strings.Cut(dflt, " (")
	if v == "" || strings.ContainsAny(v, " ,{") {
		return nil, false
	}
	switch {
	case t == durationType:
		if v == "0" || v == "-1" {
			n, _ := strconv.Atoi(v)
			return n, true
		}
		if _, err := time.ParseDuration(v); err == nil {
			return v, true
		}
	case t.Kind() == reflect.Int:
		if n, err := strconv.Atoi(v); err == nil {
			return n, true
		}
	case t.Kind() == reflect.Bool:
		if v == "true" || v == "false" {
			return v == "true", true
		}
	case t.Kind() == reflect.String:
		if v != "none" && v != "empty" && v != "nil" {
			return v, true
		}
	}
	return nil, false
}

// flowMap reads a default written as a YAML flow mapping of plain values,
// "{baseDelay: 1s, maxDelay: 2m}", and returns nil for any other.
func flowMap(dflt string) map[string]string {
	s, ok := strings.CutPrefix(dflt, "{")
	if !ok {
		return nil
	}
	s, ok = strings.CutSuffix(s, "}")
	if !ok {
		return nil
	}
	m := make(map[string]string)
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}
