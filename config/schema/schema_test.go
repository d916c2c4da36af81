package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/idem-run/idem/config"
)

// schemaFile is the committed copy of the schema, relative to this package.
var schemaFile = filepath.Join("..", "..", "docs", "idem.schema.json")

const regenerate = "go run ./cmd/idem config schema > docs/idem.schema.json"

func TestSchemaUpToDate(t *testing.T) {
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("%v: generate it with `%s`", err, regenerate)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/idem.schema.json is not what `idem config schema` prints (a config type or its doc comments changed): regenerate it with `%s`", regenerate)
	}
}

// validator compiles the schema with a JSON Schema validator, which also
// checks it against the draft-07 metaschema.
func validator(t *testing.T) *jsonschema.Schema {
	t.Helper()
	data, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("idem.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("idem.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yamlTree decodes a YAML document into the JSON values a validator reads:
// maps with string keys, lists, strings, numbers, booleans and nulls.
func yamlTree(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("YAML: %v", err)
	}
	return jsonTree(t, v)
}

// jsonTree converts a decoded YAML value into JSON values, through JSON
// itself, so that the validator sees exactly what a JSON file would give.
func jsonTree(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(jsonable(v))
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonable turns what a YAML decoder may give that JSON has no form for
// (maps with keys of other types, timestamps) into JSON values.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = jsonable(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[fmt.Sprint(k)] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = jsonable(e)
		}
		return out
	case time.Time:
		return v.Format(time.RFC3339Nano)
	}
	return v
}

// schemaLine is the first line of every example config: it points editors
// running yaml-language-server at the schema.
var schemaLine = regexp.MustCompile(`^# yaml-language-server: \$schema=(\S+)\n`)

func TestSchemaExamples(t *testing.T) {
	sch := validator(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, file := range files {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			m := schemaLine.FindSubmatch(data)
			if m == nil {
				t.Fatalf("%s does not start with `# yaml-language-server: $schema=<relative path of docs/idem.schema.json>`", file)
			}
			if got := filepath.Join(filepath.Dir(file), filepath.FromSlash(string(m[1]))); got != schemaFile {
				t.Errorf("%s: $schema=%s is %s, not %s", file, m[1], got, schemaFile)
			}
			if err := sch.Validate(yamlTree(t, data)); err != nil {
				t.Errorf("%s: %v", file, err)
			}
			if _, err := config.Load(file); err != nil {
				t.Errorf("%s: %v", file, err)
			}
		})
	}
	// The test data's full config too.
	data, err := os.ReadFile(filepath.Join("..", "testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(yamlTree(t, data)); err != nil {
		t.Errorf("testdata/example.yaml: %v", err)
	}
}

// readmePlaceholders are the parts of README blocks that stand for a value
// the reader supplies, and a value of that form. None today: secrets come
// from the environment (${IDEM_TOKEN}), which the schema accepts as is.
var readmePlaceholders = map[string]string{}

// readmeSkipped are README blocks, by first line, that are no config and
// why. None today: every block is a whole config or a config's top-level
// keys (a fragment under functions: is a config with functions only).
var readmeSkipped = map[string]string{}

// TestSchemaREADME validates every ```yaml block of README.md against the
// schema. The blocks need not be complete (one may name a stream another
// block configures), so they are not given to Parse.
func TestSchemaREADME(t *testing.T) {
	sch := validator(t)
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllSubmatchIndex(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```yaml blocks")
	}
	used := make(map[string]bool)
	for _, b := range blocks {
		block := string(readme[b[2]:b[3]])
		line := 1 + bytes.Count(readme[:b[2]], []byte("\n"))
		first, _, _ := strings.Cut(block, "\n")
		if reason, ok := readmeSkipped[first]; ok {
			t.Logf("README.md:%d: skipped: %s", line, reason)
			continue
		}
		for p, v := range readmePlaceholders {
			if strings.Contains(block, p) {
				block = strings.ReplaceAll(block, p, v)
				used[p] = true
			}
		}
		if err := sch.Validate(yamlTree(t, []byte(block))); err != nil {
			t.Errorf("README.md:%d: the ```yaml block fails the schema: %v", line, err)
		}
	}
	for p := range readmePlaceholders {
		if !used[p] {
			t.Errorf("placeholder %s is in no README block: remove it from readmePlaceholders", p)
		}
	}
}

// fullConfigs set every setting of the schema between them (tested by
// TestSchemaCoversFullConfigs), with values Parse accepts, so that tests
// can change one setting and ask both the schema and Parse.
var fullConfigs = []string{`
dataDir: ./data
listen: 127.0.0.1:7070
region: eu-west-1
store:
  postgres: {dsn: "postgres://idem@127.0.0.1:5432/idem", schema: idem, separateDeferredInserts: true}
lease: {ttl: 10s}
debug: {pprof: "127.0.0.1:6060"}
auth:
  tokens: [0123456789abcdef0123456789abcdef]
  readTokens: [fedcba9876543210fedcba9876543210]
  openMetrics: true
streams:
  - {name: orders, shards: 4, retention: 24h}
  - {name: orders-failed, shards: 1, retention: 48h}
functions:
  - name: ship
    http: {url: "http://127.0.0.1:9000/"}
    timeout: 3s
    async:
      maximumRetryAttempts: 2
      maximumEventAge: 6h
      onFailure: {stream: orders-failed}
      permanentErrorTypes: [ValidationError]
      retry: {baseDelay: 1s, maxDelay: 2m}
    idempotency: {key: order.id, retention: 24h}
  - {name: count, go: {}}
  - name: proc
    process:
      command: ./bootstrap
      args: [-v]
      env: {MODE: test}
      inheritEnv: false
      dir: .
      concurrency: 2
      memorySize: 256
      region: us-east-1
mappings:
  - name: orders-to-ship
    source: {stream: orders}
    function: ship
    startingPosition: AT_TIMESTAMP
    startingPositionTimestamp: "2026-01-01T00:00:00Z"
    batchSize: 100
    maximumBatchingWindow: 1s
    bisectBatchOnFunctionError: true
    maximumRetryAttempts: 5
    maximumRecordAge: 1h
    parallelizationFactor: 1
    functionResponseTypes: [ReportBatchItemFailures]
    destinationConfig: {onFailure: {stream: orders-failed}}
    eventFormat: kinesis
    filterCriteria:
      filters: [{pattern: '{"data": {"type": ["order"]}}'}]
    permanentErrorTypes: [ValidationError]
    retry: {baseDelay: 100ms, maxDelay: 30s}
    idempotency: {scope: ship, key: order.id, retention: 24h}
    enabled: true
  - name: kafka-to-count
    source:
      kafka: {brokers: ["127.0.0.1:9092"], topic: orders, pollInterval: 100ms, group: g1, sessionTimeout: 10s}
    function: count
    startingPosition: LATEST
    eventFormat: kafka
    idempotency: {retention: 1h}
  - name: windows
    source:
      jetstream: {url: "nats://127.0.0.1:4222", stream: ORDERS, partitionByToken: {token: 2, count: 4}}
    function: count
    startingPosition: TRIM_HORIZON
    tumblingWindow: 60s
  - name: subjects
    source:
      jetstream: {url: "nats://127.0.0.1:4222", stream: ORDERS, partitions: [orders.a, orders.b]}
    function: proc
    startingPosition: TRIM_HORIZON
  - name: kinesis
    source:
      kinesis: {stream: orders, region: us-east-1, endpoint: "http://127.0.0.1:4567"}
    function: count
    startingPosition: LATEST
  - name: redis
    source:
      redis: {addr: "127.0.0.1:6379", db: 1, keys: [orders-0, orders-1], name: orders}
    function: count
    startingPosition: LATEST
  - name: dynamodb
    source:
      dynamodb: {table: orders, region: us-east-1, endpoint: "http://127.0.0.1:8000"}
    function: count
    startingPosition: TRIM_HORIZON
  - name: dynamodb-stream
    source:
      dynamodb: {streamArn: "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-01-01T00:00:00.000"}
    function: count
    startingPosition: LATEST
`, `
store:
  redis: {addr: "127.0.0.1:6379", db: 2, prefix: idem}
streams:
  - {name: events}
functions:
  - {name: count}
mappings:
  - {name: events-to-count, source: {stream: events}, function: count, startingPosition: LATEST}
`, `
store:
  dynamodb: {table: idem.prod, region: eu-west-1, endpoint: "http://127.0.0.1:8000"}
streams:
  - {name: events}
functions:
  - {name: count}
mappings:
  - {name: events-to-count, source: {stream: events}, function: count, startingPosition: LATEST}
`}

// location is one setting of a full config.
type location struct {
	path   string         // the schema's path: mappings[].batchSize
	at     []any          // keys and indexes from the root of the config
	schema map[string]any // the setting's schema
}

func (l location) String() string {
	var b strings.Builder
	for _, k := range l.at {
		switch k := k.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", k)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, k)
		}
	}
	return b.String()
}

// schemaTree is the generated schema, decoded.
func schemaTree(t *testing.T) map[string]any {
	t.Helper()
	data, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	return root
}

// locations lists the settings of tree, the root first, then in the order
// of a walk with sorted keys.
func locations(t *testing.T, tree any) []location {
	t.Helper()
	root := schemaTree(t)
	var out []location
	var walk func(v any, s map[string]any, path string, at []any)
	walk = func(v any, s map[string]any, path string, at []any) {
		out = append(out, location{path, at, s})
		switch v := v.(type) {
		case map[string]any:
			props, _ := s["properties"].(map[string]any)
			for _, k := range slices.Sorted(maps.Keys(v)) {
				cs, _ := props[k].(map[string]any)
				p := joinSchemaPath(path, k)
				if cs == nil {
					cs, _ = s["additionalProperties"].(map[string]any)
					p = path + "{}"
				}
				if cs == nil {
					t.Fatalf("%s: %s is not in the schema", location{path, at, s}, k)
				}
				walk(v[k], cs, p, append(slices.Clip(at), k))
			}
		case []any:
			items, _ := s["items"].(map[string]any)
			for i, e := range v {
				walk(e, items, path+"[]", append(slices.Clip(at), i))
			}
		}
	}
	walk(tree, root, "", nil)
	return out
}

func joinSchemaPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// withValue returns a copy of tree with the setting at changed to v, or
// removed when v is deleted.
func withValue(t *testing.T, tree any, at []any, v any) any {
	t.Helper()
	out := jsonTree(t, tree)
	if len(at) == 0 {
		return v
	}
	parent := out
	for _, k := range at[:len(at)-1] {
		switch k := k.(type) {
		case int:
			parent = parent.([]any)[k]
		case string:
			parent = parent.(map[string]any)[k]
		}
	}
	switch k := at[len(at)-1].(type) {
	case int:
		parent.([]any)[k] = v
	case string:
		if v == deleted {
			delete(parent.(map[string]any), k)
		} else {
			parent.(map[string]any)[k] = v
		}
	}
	return out
}

// deleted, given to withValue, removes the setting.
var deleted = &struct{}{}

// verdicts reports whether the schema and Parse accept tree.
func verdicts(t *testing.T, sch *jsonschema.Schema, tree any) (schemaErr, parseErr error) {
	t.Helper()
	data, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	_, parseErr = config.Parse(data) // JSON is YAML
	return sch.Validate(jsonTree(t, tree)), parseErr
}

// fullTrees returns the full configs, after checking that both the schema
// and Parse accept them.
func fullTrees(t *testing.T, sch *jsonschema.Schema) []any {
	t.Helper()
	var trees []any
	for i, c := range fullConfigs {
		tree := yamlTree(t, []byte(c))
		if serr, perr := verdicts(t, sch, tree); serr != nil || perr != nil {
			t.Fatalf("fullConfigs[%d]: schema: %v; Parse: %v", i, serr, perr)
		}
		trees = append(trees, tree)
	}
	return trees
}

// TestSchemaCoversFullConfigs checks that fullConfigs set every setting the
// schema has, so that the tests below reach them all.
func TestSchemaCoversFullConfigs(t *testing.T) {
	root := schemaTree(t)
	want := make(map[string]bool)
	var walk func(s map[string]any, path string)
	walk = func(s map[string]any, path string) {
		if props, ok := s["properties"].(map[string]any); ok {
			for k, c := range props {
				p := joinSchemaPath(path, k)
				want[p] = true
				walk(c.(map[string]any), p)
			}
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(items, path+"[]")
		}
	}
	walk(root, "")
	sch := validator(t)
	for _, tree := range fullTrees(t, sch) {
		for _, l := range locations(t, tree) {
			delete(want, l.path)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(want)) {
		t.Errorf("no full config sets %s: add it to fullConfigs", p)
	}
}

// TestSchemaRefusesUnknownKeys adds a key to each object of the full
// configs that idem reads strictly: the schema must refuse it where Parse
// does, i.e. everywhere but in env.
func TestSchemaRefusesUnknownKeys(t *testing.T) {
	sch := validator(t)
	for _, tree := range fullTrees(t, sch) {
		for _, l := range locations(t, tree) {
			if _, ok := valueAt(tree, l.at).(map[string]any); !ok {
				continue
			}
			at := append(slices.Clip(l.at), "unknownSetting")
			serr, perr := verdicts(t, sch, withValue(t, tree, at, "x"))
			switch {
			case perr != nil && serr == nil:
				t.Errorf("%s: the schema accepts an unknown key that Parse refuses (%v)", l, perr)
			case perr == nil && serr != nil:
				t.Errorf("%s: the schema refuses a key that Parse accepts: %v", l, serr)
			}
		}
	}
}

// TestSchemaRefusesTypo is the mistake the schema exists for: a misspelt
// key, which an editor now underlines.
func TestSchemaRefusesTypo(t *testing.T) {
	sch := validator(t)
	tree := yamlTree(t, []byte(`
streams: [{name: orders}]
functions: [{name: count}]
mappings:
  - name: orders-to-count
    source: {stream: orders}
    function: count
    startingPosition: LATEST
    maximumRetryAttemps: 3
`))
	serr, perr := verdicts(t, sch, tree)
	if serr == nil {
		t.Error("the schema accepts maximumRetryAttemps")
	} else if !strings.Contains(serr.Error(), "maximumRetryAttemps") {
		t.Errorf("the schema's error does not name the key: %v", serr)
	}
	if perr == nil {
		t.Error("Parse accepts maximumRetryAttemps")
	}
}

func valueAt(tree any, at []any) any {
	v := tree
	for _, k := range at {
		switch k := k.(type) {
		case int:
			v = v.([]any)[k]
		case string:
			v = v.(map[string]any)[k]
		}
	}
	return v
}

// TestSchemaRangesMatchValidate checks every bound of the schema (minimum
// and maximum, lengths, numbers of items) against Parse, at the first
// place a full config sets the setting: at the bound both accept, past it
// both refuse.
func TestSchemaRangesMatchValidate(t *testing.T) {
	sch := validator(t)
	// Names that other settings refer to: changing one breaks the
	// reference, so only the schema is asked about the value at a bound.
	referenced := map[string]bool{"streams[].name": true, "functions[].name": true}
	seen := make(map[string]bool)
	checked := 0
	for _, tree := range fullTrees(t, sch) {
		for _, l := range locations(t, tree) {
			if seen[l.path] {
				continue
			}
			seen[l.path] = true
			check := func(kind string, v any, ok bool, parseToo bool) {
				t.Helper()
				checked++
				serr, perr := verdicts(t, sch, withValue(t, tree, l.at, v))
				if ok {
					if serr != nil {
						t.Errorf("%s = %.40v (%s): the schema refuses it: %v", l, v, kind, serr)
					}
					if parseToo && perr != nil {
						t.Errorf("%s = %.40v (%s): the schema accepts it, Parse refuses it: %v", l, v, kind, perr)
					}
					return
				}
				if serr == nil {
					t.Errorf("%s = %.40v (%s): the schema accepts it", l, v, kind)
				}
				if perr == nil {
					t.Errorf("%s = %.40v (%s): the schema refuses it, Parse accepts it", l, v, kind)
				}
			}
			if n, ok := l.schema["minimum"].(float64); ok {
				check("minimum", n, true, true)
				check("minimum", n-1, false, true)
			}
			if n, ok := l.schema["maximum"].(float64); ok {
				check("maximum", n, true, true)
				check("maximum", n+1, false, true)
			}
			c := constraints(l.schema)
			if n, ok := c["minLength"].(float64); ok {
				if n > 1 {
					check("minLength", strings.Repeat("a", int(n)), true, !referenced[l.path])
				}
				check("minLength", strings.Repeat("a", int(n)-1), false, true)
			}
			if n, ok := c["maxLength"].(float64); ok {
				check("maxLength", strings.Repeat("a", int(n)), true, !referenced[l.path])
				check("maxLength", strings.Repeat("a", int(n)+1), false, true)
			}
			item := func(n int) []any {
				list := valueAt(tree, l.at).([]any)
				out := make([]any, n)
				for i := range out {
					out[i] = list[0]
				}
				return out
			}
			if n, ok := l.schema["minItems"].(float64); ok {
				check("minItems", item(int(n)), true, true)
				check("minItems", item(int(n)-1), false, true)
			}
			if n, ok := l.schema["maxItems"].(float64); ok {
				check("maxItems", item(int(n)), true, true)
				check("maxItems", item(int(n)+1), false, true)
			}
		}
	}
	if checked < 40 {
		t.Errorf("only %d bounds checked", checked)
	}
}

// constraints returns the schema of a string setting's own values: the
// first branch where a reference to an environment variable is the other.
func constraints(s map[string]any) map[string]any {
	alts, _ := s["anyOf"].([]any)
	if len(alts) == 2 && alts[1].(map[string]any)["pattern"] == envRefPattern {
		return alts[0].(map[string]any)
	}
	return s
}

// TestSchemaDurations checks, for each duration setting, that the integers
// the schema accepts (0, -1) are the ones Parse accepts somewhere the full
// configs set it, and that other integers are refused by both.
func TestSchemaDurations(t *testing.T) {
	sch := validator(t)
	type verdict struct{ schema, someParse, everyParse bool }
	byPath := make(map[string]map[float64]*verdict)
	for _, tree := range fullTrees(t, sch) {
		for _, l := range locations(t, tree) {
			if !isDuration(l.schema) {
				continue
			}
			if byPath[l.path] == nil {
				byPath[l.path] = make(map[float64]*verdict)
			}
			for _, n := range []float64{-1, 0, 5} {
				serr, perr := verdicts(t, sch, withValue(t, tree, l.at, n))
				v := byPath[l.path][n]
				if v == nil {
					v = &verdict{schema: serr == nil, everyParse: true}
					byPath[l.path][n] = v
				}
				v.someParse = v.someParse || perr == nil
				v.everyParse = v.everyParse && perr == nil
			}
		}
	}
	if len(byPath) < 15 {
		t.Fatalf("only %d duration settings found", len(byPath))
	}
	for path, byValue := range byPath {
		for n, v := range byValue {
			switch {
			case v.schema && !v.someParse:
				t.Errorf("%s: %v: the schema accepts it, Parse refuses it", path, n)
			case !v.schema && v.everyParse:
				t.Errorf("%s: %v: the schema refuses it, Parse accepts it", path, n)
			}
		}
	}
}

// isDuration reports whether s is the schema of a Duration.
func isDuration(s map[string]any) bool {
	if s["pattern"] == durationPattern {
		return true
	}
	alts, _ := s["anyOf"].([]any)
	return len(alts) > 0 && alts[0].(map[string]any)["pattern"] == durationPattern
}

// TestSchemaDefaultsMatchParse removes each setting that has a default in
// the schema from a full config and checks that Parse gives it that value.
func TestSchemaDefaultsMatchParse(t *testing.T) {
	sch := validator(t)
	seen := make(map[string]bool)
	for _, tree := range fullTrees(t, sch) {
		for _, l := range locations(t, tree) {
			dflt, ok := l.schema["default"]
			if !ok || seen[l.path] {
				continue
			}
			seen[l.path] = true
			data, err := json.Marshal(withValue(t, tree, l.at, deleted))
			if err != nil {
				t.Fatal(err)
			}
			f, err := config.Parse(data)
			if err != nil {
				t.Errorf("%s: Parse without it: %v", l, err)
				continue
			}
			got := fieldAt(t, reflect.ValueOf(f).Elem(), l.at)
			if want := goValue(t, got.Type(), dflt); got.Interface() != want {
				t.Errorf("%s: the schema's default is %v, Parse gives %v", l, dflt, got.Interface())
			}
		}
	}
	if len(seen) < 25 {
		t.Errorf("only %d defaults checked", len(seen))
	}
}

// fieldAt returns the value of the setting at in f.
func fieldAt(t *testing.T, v reflect.Value, at []any) reflect.Value {
	t.Helper()
	for _, k := range at {
		for v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		switch k := k.(type) {
		case int:
			v = v.Index(k)
		case string:
			found := false
			for i := range v.NumField() {
				if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == k {
					v, found = v.Field(i), true
					break
				}
			}
			if !found {
				t.Fatalf("%v: no field %s in %s", at, k, v.Type())
			}
		}
	}
	return v
}

// goValue converts a default of the schema to the Go type of its field.
func goValue(t *testing.T, typ reflect.Type, v any) any {
	t.Helper()
	switch {
	case typ == durationType:
		switch v := v.(type) {
		case float64:
			return config.Duration(v)
		case string:
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatal(err)
			}
			return config.Duration(d)
		}
	case typ.Kind() == reflect.Int:
		return int(v.(float64))
	}
	return reflect.ValueOf(v).Convert(typ).Interface()
}

// TestSchemaAgreesWithParse changes one setting of a full config into a
// mistake, each of a kind the schema states (kinds of which one may be set,
// enums, patterns, types), and checks that both refuse it.
func TestSchemaAgreesWithParse(t *testing.T) {
	sch := validator(t)
	trees := fullTrees(t, sch)
	full, redis := trees[0], trees[1]
	tests := []struct {
		name string
		tree any
		at   []any
		v    any
	}{
		{"two stores", redis, []any{"store", "postgres"}, map[string]any{"dsn": "postgres://x"}},
		{"two function kinds", full, []any{"functions", 0, "go"}, map[string]any{}},
		{"http and a null go", full, []any{"functions", 0, "go"}, nil},
		{"process and go", full, []any{"functions", 2, "go"}, map[string]any{}},
		{"two sources", full, []any{"mappings", 0, "source", "kinesis"}, map[string]any{"stream": "s"}},
		{"no source", full, []any{"mappings", 0, "source"}, map[string]any{}},
		{"empty stream source", full, []any{"mappings", 0, "source", "stream"}, ""},
		{"table and streamArn", full, []any{"mappings", 6, "source", "dynamodb", "streamArn"}, "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/x"},
		{"dynamodb without a table", full, []any{"mappings", 6, "source", "dynamodb", "table"}, deleted},
		{"stream ARN of Kinesis", full, []any{"mappings", 7, "source", "dynamodb", "streamArn"}, "arn:aws:kinesis:us-east-1:000000000000:stream/orders"},
		{"partitions and partitionByToken", full, []any{"mappings", 3, "source", "jetstream", "partitionByToken"}, map[string]any{"count": 2}},
		{"startingPosition", full, []any{"mappings", 0, "startingPosition"}, "OLDEST"},
		{"eventFormat", full, []any{"mappings", 0, "eventFormat"}, "json"},
		{"functionResponseTypes", full, []any{"mappings", 0, "functionResponseTypes", 0}, "ReportItemFailures"},
		{"name with a space", full, []any{"mappings", 0, "name"}, "orders to ship"},
		{"scope with a slash", full, []any{"mappings", 0, "idempotency", "scope"}, "a/b"},
		{"token with a space", full, []any{"auth", "tokens", 0}, "0123456789abcdef 0123456789abcdef"},
		{"uppercase schema", full, []any{"store", "postgres", "schema"}, "Idem"},
		{"schema starting with a digit", full, []any{"store", "postgres", "schema"}, "1dem"},
		{"prefix with braces", redis, []any{"store", "redis", "prefix"}, "{idem}"},
		{"listen without a port", full, []any{"listen"}, "localhost"},
		{"listen with a named port", full, []any{"listen"}, "localhost:http"},
		{"pprof on every interface", full, []any{"debug", "pprof"}, "0.0.0.0:6060"},
		{"pprof without a host", full, []any{"debug", "pprof"}, ":6060"},
		{"blank error type", full, []any{"mappings", 0, "permanentErrorTypes", 0}, " "},
		{"duration without a unit", full, []any{"streams", 0, "retention"}, "24"},
		{"negative duration", full, []any{"functions", 0, "timeout"}, "-3s"},
		{"float for an integer", full, []any{"mappings", 0, "batchSize"}, 1.5},
		{"string for an integer", full, []any{"mappings", 0, "batchSize"}, "100"},
		{"string for a boolean", full, []any{"mappings", 0, "enabled"}, "yes"},
		{"list for an object", full, []any{"lease"}, []any{}},
		{"null list item", full, []any{"streams", 1}, nil},
		{"missing name", full, []any{"streams", 0, "name"}, deleted},
		{"missing startingPosition", full, []any{"mappings", 0, "startingPosition"}, deleted},
		{"missing dsn", full, []any{"store", "postgres", "dsn"}, deleted},
		{"missing count", full, []any{"mappings", 2, "source", "jetstream", "partitionByToken", "count"}, deleted},
		{"no filters", full, []any{"mappings", 0, "filterCriteria", "filters"}, []any{}},
		{"empty top level", full, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, perr := verdicts(t, sch, withValue(t, tt.tree, tt.at, tt.v))
			if serr == nil {
				t.Error("the schema accepts it")
			}
			if perr == nil {
				t.Error("Parse accepts it")
			}
		})
	}
	// And what both accept although it may look wrong.
	accepted := []struct {
		name string
		at   []any
		v    any
	}{
		{"null go", []any{"functions", 1, "go"}, nil},
		{"number in env", []any{"functions", 2, "process", "env", "PORT"}, 8080},
		{"boolean in env", []any{"functions", 2, "process", "env", "DEBUG"}, true},
		{"number in args", []any{"functions", 2, "process", "args", 0}, 8080},
		{"integer 0 for a duration", []any{"mappings", 0, "maximumBatchingWindow"}, 0},
		{"environment in listen", []any{"listen"}, "${IDEM_TEST_UNSET_LISTEN:-127.0.0.1:7070}"},
		{"environment in a token", []any{"auth", "tokens", 0}, "${IDEM_TEST_UNSET_TOKEN:-0123456789abcdef}"},
		{"environment in an enum", []any{"mappings", 0, "startingPosition"}, "${IDEM_TEST_UNSET_POSITION:-AT_TIMESTAMP}"},
		{"environment in a name", []any{"mappings", 0, "name"}, "orders-${IDEM_TEST_UNSET_SUFFIX:-x}"},
		{"environment in a schema", []any{"store", "postgres", "schema"}, "${IDEM_TEST_UNSET_SCHEMA:-idem}"},
	}
	for _, tt := range accepted {
		serr, perr := verdicts(t, sch, withValue(t, full, tt.at, tt.v))
		if serr != nil || perr != nil {
			t.Errorf("%s: schema: %v; Parse: %v", tt.name, serr, perr)
		}
	}
}

// TestDurationPattern checks durationPattern against time.ParseDuration:
// it matches what ParseDuration reads, except negative durations.
func TestDurationPattern(t *testing.T) {
	re := regexp.MustCompile(durationPattern)
	for _, s := range []string{
		"0", "+0", "-0", "0s", "90s", "1h30m", "1.5h", ".5s", "5.s", "100ms",
		"2us", "2µs", "2μs", "3ns", "1h1m1s1ms1us1ns", "-5s", "+5s",
		"", "5", "s", ".s", "1d", "1e3s", "5 s", " 5s", "5s ", "1h-1m", "0x10s", "5S",
	} {
		d, err := time.ParseDuration(s)
		want := err == nil && d >= 0 && !strings.HasPrefix(s, "-")
		if got := re.MatchString(s); got != want {
			t.Errorf("%q: pattern matches: %v, ParseDuration reads a non-negative duration: %v (%v)", s, got, want, err)
		}
	}
}

// TestSchemaDescriptions checks that every setting has a description,
// written with YAML keys rather than Go names where it starts with one.
func TestSchemaDescriptions(t *testing.T) {
	root := schemaTree(t)
	var walk func(s map[string]any, path string)
	walk = func(s map[string]any, path string) {
		if props, ok := s["properties"].(map[string]any); ok {
			for k, c := range props {
				cs := c.(map[string]any)
				p := joinSchemaPath(path, k)
				d, _ := cs["description"].(string)
				if !strings.HasPrefix(strings.ToLower(d), strings.ToLower(k)) {
					t.Errorf("%s: description %.60q does not start with the key", p, d)
				}
				walk(cs, p)
			}
		}
		if items, ok := s["items"].(map[string]any); ok {
			walk(items, path+"[]")
		}
	}
	walk(root, "")
}

func TestYAMLSentences(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"batchSize is 1 to 10000.", "batchSize is 1 to 10000."},
		{"command is the executable, e.g. ./bootstrap; relative to dir. Parse reads it.", "command is the executable, e.g. ./bootstrap; relative to dir."},
		{"It is 1.5 or 2; in Go it is a float.", "It is 1.5 or 2."},
		{"Use the Patterns method to read it.", ""},
		{"A Go duration; time.ParseDuration reads it", "A Go duration; time.ParseDuration reads it"},
		{"It has a default; Parse applies it", "It has a default."},
	} {
		if got := yamlSentences(tt.in); got != tt.want {
			t.Errorf("yamlSentences(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
