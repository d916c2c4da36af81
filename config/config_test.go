package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

func TestParseExample(t *testing.T) {
	f, err := Load(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if f.DataDir != "./idem-data" || f.Listen != "127.0.0.1:7070" {
		t.Errorf("dataDir, listen = %q, %q", f.DataDir, f.Listen)
	}

	wantStreams := []Stream{
		{Name: "orders", Shards: 4, Retention: Duration(24 * time.Hour)},
		{Name: "orders-failed", Shards: 1, Retention: Duration(24 * time.Hour)},
	}
	if len(f.Streams) != len(wantStreams) {
		t.Fatalf("streams = %+v", f.Streams)
	}
	for i, s := range wantStreams {
		if f.Streams[i] != s {
			t.Errorf("streams[%d] = %+v, want %+v", i, f.Streams[i], s)
		}
	}

	if len(f.Functions) != 2 {
		t.Fatalf("functions = %+v", f.Functions)
	}
	ship, counter := f.Function("ship-order"), f.Function("counter")
	if ship == nil || ship.HTTP == nil || ship.HTTP.URL != "http://127.0.0.1:9000/" || ship.Timeout.D() != 3*time.Second || ship.InProcess() {
		t.Errorf("ship-order = %+v", ship)
	}
	if counter == nil || counter.Go == nil || !counter.InProcess() || counter.Timeout.D() != 3*time.Second {
		t.Errorf("counter = %+v (default timeout 3s, in-process)", counter)
	}

	if len(f.Mappings) != 1 {
		t.Fatalf("mappings = %+v", f.Mappings)
	}
	m := f.Mappings[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"name", m.Name, "orders-to-ship"},
		{"source", m.Source.Stream, "orders"},
		{"function", m.Function, "ship-order"},
		{"startingPosition", m.StartingPosition, "TRIM_HORIZON"},
		{"startingPositionTime", m.StartingPositionTime(), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"batchSize", m.BatchSize, 100},
		{"maximumBatchingWindow", m.MaximumBatchingWindow.D(), time.Duration(0)},
		{"bisect", m.BisectBatchOnFunctionError, false},
		{"maximumRetryAttempts", m.MaximumRetryAttempts, -1},
		{"maximumRecordAge<0", m.MaximumRecordAge.D() < 0, true},
		{"parallelizationFactor", m.ParallelizationFactor, 1},
		{"ReportBatchItemFailures", m.ReportBatchItemFailures(), true},
		{"onFailure", m.OnFailureStream(), "orders-failed"},
		{"permanentErrorTypes", strings.Join(m.PermanentErrorTypes, ","), "ValidationError"},
		{"retry.baseDelay", m.Retry.BaseDelay.D(), 100 * time.Millisecond},
		{"retry.maxDelay", m.Retry.MaxDelay.D(), 30 * time.Second},
		{"idempotency.scope", m.Idempotency.Scope, "ship-order"},
		{"idempotency.key", m.Idempotency.Key, "order.id"},
		{"idempotency.retention", m.Idempotency.Retention.D(), 24 * time.Hour},
		{"enabled", m.Enabled, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseStoreDefaults(t *testing.T) {
	f, err := Parse([]byte("store: {redis: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := f.Store.Redis; r == nil || r.Addr != "127.0.0.1:6379" || r.Prefix != "idem" || r.DB != 0 {
		t.Fatalf("store.redis = %+v", r)
	}
	f, err = Parse([]byte("store: {postgres: {dsn: 'postgres://127.0.0.1/test'}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if pg := f.Store.Postgres; pg == nil || pg.Schema != "idem" {
		t.Fatalf("store.postgres = %+v", pg)
	}
	if f.Store.Redis != nil {
		t.Fatal("store.redis set without being configured")
	}
}

func TestParseDefaults(t *testing.T) {
	f, err := Parse([]byte(`
streams:
  - name: orders
    retention: 48h
functions:
  - name: ship
mappings:
  - name: m
    source: {stream: orders}
    function: ship
    startingPosition: LATEST
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := File{
		DataDir: "./idem-data",
		Listen:  "127.0.0.1:7070",
		Region:  "us-east-1",
		Streams: []Stream{{Name: "orders", Shards: 1, Retention: Duration(48 * time.Hour)}},
		Functions: []Function{{
			Name:    "ship",
			Timeout: Duration(3 * time.Second),
			Async: Async{MaximumRetryAttempts: 2, MaximumEventAge: Duration(6 * time.Hour),
				Retry: Retry{BaseDelay: Duration(time.Second), MaxDelay: Duration(2 * time.Minute)}},
			Idempotency: FunctionIdempotency{Retention: Duration(24 * time.Hour)},
		}},
		Mappings: []Mapping{{
			Name:                  "m",
			Source:                SourceRef{Stream: "orders"},
			Function:              "ship",
			StartingPosition:      "LATEST",
			BatchSize:             100,
			MaximumRetryAttempts:  -1,
			MaximumRecordAge:      -1,
			ParallelizationFactor: 1,
			EventFormat:           "kinesis",
			Retry:                 Retry{BaseDelay: Duration(100 * time.Millisecond), MaxDelay: Duration(30 * time.Second)},
			// The scope defaults to the function, the retention to the
			// source stream's.
			Idempotency: Idempotency{Scope: "ship", Retention: Duration(48 * time.Hour)},
			Enabled:     true,
		}},
	}
	if got, want := dump(t, f), dump(t, &want); got != want {
		t.Errorf("Parse =\n%s\nwant\n%s", got, want)
	}
	if !f.Functions[0].InProcess() {
		t.Errorf("a function with no kind must be in-process")
	}
	if f.Mappings[0].ReportBatchItemFailures() || f.Mappings[0].OnFailureStream() != "" {
		t.Errorf("no functionResponseTypes and no destination by default")
	}
	if !f.Mappings[0].StartingPositionTime().IsZero() {
		t.Errorf("StartingPositionTime without a timestamp must be zero")
	}
}

// TestProcessRegionDefault (issue 11, item 5): a process function without
// its own region gets the top-level one, which defaults to us-east-1.
func TestProcessRegionDefault(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"", "us-east-1"},
		{"region: eu-west-1\n", "eu-west-1"},
	} {
		f, err := Parse([]byte(tt.doc + "functions:\n  - {name: a, process: {command: ./a}}\n  - {name: b, process: {command: ./b, region: ap-south-1}}\n"))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if got := f.Functions[0].Process.Region; got != tt.want {
			t.Errorf("%q: process.region = %q, want the top-level %q", tt.doc, got, tt.want)
		}
		if got := f.Functions[1].Process.Region; got != "ap-south-1" {
			t.Errorf("%q: process.region = %q, want its own ap-south-1", tt.doc, got)
		}
	}
}

// A key that is present keeps its value: zero is not "absent".
func TestParseExplicitValuesKept(t *testing.T) {
	f, err := Parse([]byte(mappingDoc(`
    maximumRetryAttempts: 0
    enabled: false
    maximumRecordAge: 60s
    idempotency: {retention: 72h, scope: ship-v1}
    retry: {baseDelay: 1s}
    startingPositionTimestamp: "2026-01-01T00:00:00+02:00"
`)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m := f.Mappings[0]
	if m.MaximumRetryAttempts != 0 || m.Enabled || m.MaximumRecordAge.D() != time.Minute {
		t.Errorf("explicit values lost: %+v", m)
	}
	if m.Idempotency.Retention.D() != 72*time.Hour || m.Idempotency.Scope != "ship-v1" {
		t.Errorf("idempotency = %+v", m.Idempotency)
	}
	if m.Retry.BaseDelay.D() != time.Second || m.Retry.MaxDelay.D() != 30*time.Second {
		t.Errorf("retry = %+v", m.Retry)
	}
}

// Values merged in with YAML merge keys count as set, so defaults don't
// overwrite them.
func TestParseMergeKeys(t *testing.T) {
	f, err := Parse([]byte(`
streams: [{name: orders}]
functions: [{name: ship}]
mappings:
  - &base
    name: a
    source: {stream: orders}
    function: ship
    startingPosition: LATEST
    enabled: false
    maximumRetryAttempts: 0
  - <<: *base
    name: b
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b := f.Mappings[1]
	if b.Name != "b" || b.Enabled || b.MaximumRetryAttempts != 0 || b.BatchSize != 100 {
		t.Errorf("merged mapping = %+v", b)
	}
}

// mappingDoc returns a valid config whose one mapping gets extra lines, each
// indented by four spaces. Later keys in extra may not repeat earlier ones.
func mappingDoc(extra string) string {
	return `streams:
  - {name: orders}
  - {name: orders-failed, retention: 48h}
functions:
  - {name: ship, http: {url: "http://127.0.0.1:9000/"}}
  - {name: count}
mappings:
  - name: m
    source: {stream: orders}
    function: ship
    startingPosition: LATEST
` + strings.TrimPrefix(extra, "\n")
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every problem, in order
	}{
		// Process functions.
		{"process without command", "functions: [{name: f, process: {concurrency: 0}}]\n",
			[]string{"functions[0].process.command: required (the function's executable, e.g. ./bootstrap)",
				"functions[0].process.concurrency: 0 is below the minimum 1"}},
		{"process and http", "functions: [{name: f, http: {url: 'http://x/'}, process: {command: ./b}}]\n",
			[]string{"functions[0].process: not allowed together with functions[0].http: a function has one kind"}},
		// External sources.
		{"two source kinds", mappingSourceDoc("{stream: s, kafka: {brokers: ['k:9092'], topic: t}}"),
			[]string{"mappings[0].source: set one of stream, kafka, jetstream, kinesis, redis and dynamodb"}},
		{"kafka without brokers", mappingSourceDoc("{kafka: {topic: t, brokers: [nohost]}}"),
			[]string{`mappings[0].source.kafka.brokers[0]: "nohost" is not host:port`}},
		{"unknown event format", mappingDoc("    eventFormat: sqs\n"),
			[]string{`mappings[0].eventFormat: "sqs" is not supported (allowed: dynamodb, kafka, kinesis, s3)`}},
		{"kafka event format without a kafka source", mappingDoc("    eventFormat: kafka\n"),
			[]string{`mappings[0].eventFormat: "kafka" needs a kafka source`}},
		{"s3 event format with a window and item failures", mappingDoc("    eventFormat: s3\n    tumblingWindow: 30s\n    functionResponseTypes: [ReportBatchItemFailures]\n"), []string{
			"mappings[0].tumblingWindow: not available with eventFormat s3 (an S3Event has no window)",
			"mappings[0].functionResponseTypes[0]: ReportBatchItemFailures is not available with eventFormat s3: an S3Event's records carry no item identifier a function could report; set bisectBatchOnFunctionError: true to isolate a failing record",
		}},
		{"dynamodb filter on a kinesis field", mappingSourceDoc("{dynamodb: {table: orders}}, filterCriteria: {filters: [{pattern: '{\"data\": {\"eventName\": [\"INSERT\"]}}'}]}"), []string{
			"mappings[0].filterCriteria.filters[0].pattern: data: dynamodb events are filtered on awsRegion, dynamodb, eventID, eventName, eventSource, eventSourceARN, eventVersion, userIdentity only",
		}},
		{"s3 filter on a kinesis field", mappingDoc("    eventFormat: s3\n    filterCriteria: {filters: [{pattern: '{\"data\": {\"a\": [1]}}'}]}\n"), []string{
			"mappings[0].filterCriteria.filters[0].pattern: data: s3 events are filtered on EventName, Key, Records only",
		}},
		{"jetstream token partitioning out of range", mappingSourceDoc("{jetstream: {url: 'nats://h:4222', stream: s, partitionByToken: {token: -1, count: 0}}}"),
			[]string{"mappings[0].source.jetstream.partitionByToken.token: -1 is negative (1-based token index, or 0 for the whole subject)",
				"mappings[0].source.jetstream.partitionByToken.count: 0 is out of range (1 to 1024)"}},
		{"jetstream with both partitionings", mappingSourceDoc("{jetstream: {url: 'nats://h:4222', stream: s, partitions: ['a.>'], partitionByToken: {token: 2, count: 4}}}"),
			[]string{"mappings[0].source.jetstream.partitionByToken: conflicts with partitions: set one"}},
		{"kafka session timeout without a group", mappingSourceDoc("{kafka: {brokers: ['k:9092'], topic: t, sessionTimeout: 5s}}"),
			[]string{"mappings[0].source.kafka.sessionTimeout: needs kafka.group"}},
		{"kafka group with a shared store and no lease", "store: {redis: {addr: '127.0.0.1:6379'}}\n" + mappingSourceDoc("{kafka: {brokers: ['k:9092'], topic: t, group: g}}"),
			[]string{"mappings[0].source.kafka.group: needs lease with a shared store: the group balances partitions, but only leases stop a process that stalled past its session from committing"}},
		{"kafka group with the embedded store", mappingSourceDoc("{kafka: {brokers: ['k:9092'], topic: t, group: g}}"),
			[]string{"mappings[0].source.kafka.group: a consumer group needs a shared store (store.postgres, store.redis or store.dynamodb, with lease): the group moves partitions between processes, and with the embedded store each process keeps its checkpoints in its own ./idem-data, so a partition that moves would restart from startingPosition"}},
		{"two mappings in one kafka group", "store: {redis: {addr: '127.0.0.1:6379'}}\nlease: {}\nstreams: [{name: s}]\nfunctions: [{name: f}]\nmappings:\n" +
			"  - {name: m, function: f, startingPosition: LATEST, source: {kafka: {brokers: ['k:9092'], topic: t, group: g}}}\n" +
			"  - {name: n, function: f, startingPosition: LATEST, source: {kafka: {brokers: ['k:9092'], topic: u, group: g}}}\n",
			[]string{`mappings[1].source.kafka.group: "g" is mappings[0]'s group too: give each mapping a group of its own`}},
		{"redis without keys", mappingSourceDoc("{redis: {}}"),
			[]string{"mappings[0].source.redis.keys: required (one stream key per shard)"}},
		{"dynamodb without a table", mappingSourceDoc("{dynamodb: {region: Europe}}"),
			[]string{"mappings[0].source.dynamodb.table: required (or dynamodb.streamArn): the table whose stream is read",
				`mappings[0].source.dynamodb.region: "Europe" is not an AWS region such as us-east-1`}},
		{"dynamodb with a table and a stream", mappingSourceDoc("{dynamodb: {table: orders, streamArn: 'arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/x'}}"),
			[]string{"mappings[0].source.dynamodb.streamArn: conflicts with dynamodb.table: set one"}},
		{"dynamodb stream ARN of another service", mappingSourceDoc("{dynamodb: {streamArn: 'arn:aws:kinesis:us-east-1:000000000000:stream/orders'}}"),
			[]string{`mappings[0].source.dynamodb.streamArn: "arn:aws:kinesis:us-east-1:000000000000:stream/orders" is not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)`}},
		{"dynamodb at a timestamp", strings.Replace(mappingSourceDoc("{dynamodb: {table: orders}}"), "startingPosition: LATEST", "startingPosition: AT_TIMESTAMP, startingPositionTimestamp: '2026-01-01T00:00:00Z'", 1),
			[]string{"mappings[0].startingPosition: AT_TIMESTAMP is not supported by a dynamodb source: DynamoDB Streams has no such iterator, and Lambda refuses it too (allowed: TRIM_HORIZON, LATEST)"}},
		// Stores.
		{"both stores", "store: {postgres: {dsn: x}, redis: {}}\n",
			[]string{"store: set one of store.postgres and store.redis, not both"}},
		{"postgres without dsn", "store: {postgres: {schema: Bad-Name}}\n",
			[]string{"store.postgres.dsn: required (e.g. postgres://idem@127.0.0.1:5432/idem)",
				`store.postgres.schema: "Bad-Name" must be 1 to 63 of a-z 0-9 _, starting with a letter`}},
		{"redis db", "store: {redis: {addr: localhost, db: 16}}\n",
			[]string{`store.redis.addr: "localhost" is not host:port`, "store.redis.db: 16 is above the maximum 15"}},
		{"store unknown kind", "store: {mysql: {dsn: x}}\n",
			[]string{"store.mysql: unknown key"}},
		// Ranges.
		{"batchSize above max", mappingDoc("    batchSize: 20000\n"),
			[]string{"mappings[0].batchSize: 20000 is above the maximum 10000"}},
		{"batchSize zero is not absent", mappingDoc("    batchSize: 0\n"),
			[]string{"mappings[0].batchSize: 0 is below the minimum 1"}},
		{"batching window", mappingDoc("    maximumBatchingWindow: 301s\n"),
			[]string{"mappings[0].maximumBatchingWindow: 5m1s is above the maximum 5m"}},
		{"negative batching window", mappingDoc("    maximumBatchingWindow: -1s\n"),
			[]string{"mappings[0].maximumBatchingWindow: -1s is below the minimum 0s"}},
		{"retry attempts below", mappingDoc("    maximumRetryAttempts: -2\n"),
			[]string{"mappings[0].maximumRetryAttempts: -2 is below the minimum -1"}},
		{"retry attempts above", mappingDoc("    maximumRetryAttempts: 10001\n"),
			[]string{"mappings[0].maximumRetryAttempts: 10001 is above the maximum 10000"}},
		{"record age below", mappingDoc("    maximumRecordAge: 30s\n"),
			[]string{"mappings[0].maximumRecordAge: 30s is below the minimum 1m (or -1 for no limit)"}},
		{"record age above", mappingDoc("    maximumRecordAge: 604801s\n"),
			[]string{"mappings[0].maximumRecordAge: 168h0m1s is above the maximum 168h (or -1 for no limit)"}},
		{"record age negative", mappingDoc("    maximumRecordAge: -5s\n"),
			[]string{"mappings[0].maximumRecordAge: -5s is not allowed (-1 for no limit, or 1m to 168h)"}},
		{"parallelization", mappingDoc("    parallelizationFactor: 11\n"),
			[]string{"mappings[0].parallelizationFactor: 11 is above the maximum 10"}},
		{"function response type", mappingDoc("    functionResponseTypes: [ReportBatchItemFailures, Partial]\n"),
			[]string{`mappings[0].functionResponseTypes[1]: "Partial" is not supported (allowed: ReportBatchItemFailures)`}},
		{"base delay zero", mappingDoc("    retry: {baseDelay: 0s}\n"),
			[]string{"mappings[0].retry.baseDelay: 0s must be greater than 0s"}},
		{"max delay below base", mappingDoc("    retry: {baseDelay: 1s, maxDelay: 10ms}\n"),
			[]string{"mappings[0].retry.maxDelay: 10ms is below the minimum 1s (mappings[0].retry.baseDelay)"}},
		{"permanent error type empty", mappingDoc("    permanentErrorTypes: [ValidationError, \"\"]\n"),
			[]string{"mappings[0].permanentErrorTypes[1]: empty (an error type such as ValidationError)"}},
		{"stream ranges", `
streams:
  - {name: a, shards: 0, retention: 30m}
  - {name: b, shards: 2000, retention: 8761h}
`, []string{
			"streams[0].shards: 0 is below the minimum 1",
			"streams[0].retention: 30m is below the minimum 1h",
			"streams[1].shards: 2000 is above the maximum 1024",
			"streams[1].retention: 8761h is above the maximum 8760h",
		}},
		{"timeouts", `
functions:
  - {name: a, timeout: 0s}
  - {name: b, timeout: 901s}
  - {name: c, timeout: -1}
`, []string{
			"functions[0].timeout: 0s must be greater than 0s and at most 15m",
			"functions[1].timeout: 15m1s is above the maximum 15m",
			"functions[2].timeout: -1 must be greater than 0s and at most 15m",
		}},
		{"top level", "dataDir: \"\"\nlisten: localhost\n", []string{
			"dataDir: required (a directory; default ./idem-data)",
			`listen: "localhost" is not a host:port address: address localhost: missing port in address`,
		}},
		{"listen port", "listen: \"localhost:http\"\n",
			[]string{`listen: port "http" is not a number from 0 to 65535`}},

		// Required and closed sets.
		{"missing startingPosition", `
streams: [{name: orders}]
functions: [{name: ship}]
mappings:
  - {name: m, source: {stream: orders}, function: ship}
`, []string{"mappings[0].startingPosition: required (one of TRIM_HORIZON, LATEST, AT_TIMESTAMP)"}},
		{"bad startingPosition", strings.Replace(mappingDoc(""), "LATEST", "OLDEST", 1),
			[]string{`mappings[0].startingPosition: "OLDEST" is not one of TRIM_HORIZON, LATEST, AT_TIMESTAMP`}},
		{"AT_TIMESTAMP needs a timestamp", strings.Replace(mappingDoc(""), "LATEST", "AT_TIMESTAMP", 1),
			[]string{"mappings[0].startingPositionTimestamp: required when mappings[0].startingPosition is AT_TIMESTAMP (an RFC 3339 time such as 2026-01-01T00:00:00Z)"}},
		{"bad timestamp", mappingDoc("    startingPositionTimestamp: 2026-01-01\n"),
			[]string{`mappings[0].startingPositionTimestamp: "2026-01-01" is not an RFC 3339 time such as 2026-01-01T00:00:00Z`}},
		{"missing everything", "mappings: [{}]\n", []string{
			"mappings[0].name: required (1 to 128 characters of A-Z a-z 0-9 . _ -)",
			"mappings[0].source.stream: required (the name of a configured stream, or another kind of source: kafka, jetstream, kinesis, redis, dynamodb)",
			"mappings[0].function: required (the name of a configured function)",
			"mappings[0].startingPosition: required (one of TRIM_HORIZON, LATEST, AT_TIMESTAMP)",
			"mappings[0].idempotency.scope: required (1 to 128 characters of A-Z a-z 0-9 . _ -; Parse defaults it to the function name)",
		}},

		// References.
		{"unknown stream", strings.Replace(mappingDoc(""), "{stream: orders}", "{stream: ordrs}", 1),
			[]string{`mappings[0].source.stream: unknown stream "ordrs" (configured: orders, orders-failed)`}},
		{"unknown function", strings.Replace(mappingDoc(""), "function: ship", "function: shp", 1),
			[]string{`mappings[0].function: unknown function "shp" (configured: ship, count)`}},
		{"no streams at all", "functions: [{name: f}]\nmappings: [{name: m, source: {stream: s}, function: f, startingPosition: LATEST}]\n",
			[]string{`mappings[0].source.stream: unknown stream "s" (no streams are configured)`}},
		{"unknown onFailure stream", mappingDoc("    destinationConfig: {onFailure: {stream: dlq}}\n"),
			[]string{`mappings[0].destinationConfig.onFailure.stream: unknown stream "dlq" (configured: orders, orders-failed)`}},
		{"onFailure is the source", mappingDoc("    destinationConfig: {onFailure: {stream: orders}}\n"),
			[]string{`mappings[0].destinationConfig.onFailure.stream: "orders" is also mappings[0].source.stream: failed records would be fed back into the mapping that failed them`}},
		{"onFailure without stream", mappingDoc("    destinationConfig: {onFailure: }\n"),
			[]string{"mappings[0].destinationConfig.onFailure.stream: required (the name of a configured stream)"}},

		// Idempotency.
		{"bad JMESPath", mappingDoc("    idempotency: {key: \"order.[\"}\n"),
			[]string{`mappings[0].idempotency.key: "order.[" is not a valid JMESPath expression: SyntaxError: Incomplete expression`}},
		{"idempotency retention shorter than stream", mappingDoc("    idempotency: {retention: 1h}\n"),
			[]string{`mappings[0].idempotency.retention: 1h is shorter than the retention 24h of source stream "orders": a replay of its retained records could run one twice (allowed: at least 24h)`}},
		{"bad scope", mappingDoc("    idempotency: {scope: \"ship v1\"}\n"),
			[]string{`mappings[0].idempotency.scope: "ship v1" is not a valid scope (allowed: 1 to 128 characters of A-Z a-z 0-9 . _ -)`}},

		// Names.
		{"names", `
streams:
  - {name: orders}
  - {name: orders}
  - {name: "or ders"}
  - {name: ` + strings.Repeat("x", 129) + `}
functions:
  - {name: f}
  - {name: f}
  - {name: ""}
`, []string{
			`streams[1].name: "orders" is already the name of streams[0]`,
			`streams[2].name: "or ders" is not a valid name (allowed: 1 to 128 characters of A-Z a-z 0-9 . _ -)`,
			`streams[3].name: "` + strings.Repeat("x", 129) + `" is not a valid name (allowed: 1 to 128 characters of A-Z a-z 0-9 . _ -)`,
			`functions[1].name: "f" is already the name of functions[0]`,
			"functions[2].name: required (1 to 128 characters of A-Z a-z 0-9 . _ -)",
		}},
		{"duplicate mapping names", mappingDoc(`  - name: m
    source: {stream: orders}
    function: count
    startingPosition: LATEST
`), []string{`mappings[1].name: "m" is already the name of mappings[0]`}},

		// Function kinds.
		{"http url", `
functions:
  - {name: a, http: {url: "ftp://example.com/"}}
  - {name: b, http: {url: "/relative"}}
  - {name: c, http: {}}
  - {name: d, http: }
  - {name: e, http: {url: "http://%zz"}}
  - {name: f, http: {url: "http://x/"}, go: {}}
`, []string{
			`functions[0].http.url: "ftp://example.com/" is not an absolute http or https URL`,
			`functions[1].http.url: "/relative" is not an absolute http or https URL`,
			"functions[2].http.url: required (an absolute http or https URL)",
			"functions[3].http.url: required (an absolute http or https URL)",
			`functions[4].http.url: "http://%zz" is not an absolute http or https URL: parse "http://%zz": invalid URL escape "%zz"`,
			"functions[5].go: not allowed together with functions[5].http: a function is either HTTP or in-process Go",
		}},

		// Strict decoding.
		{"unknown key", mappingDoc("    batchSiz: 5\n"),
			[]string{"mappings[0].batchSiz: unknown key"}},
		{"unknown nested key", mappingDoc("    source2: 1\n    retry: {baseDelay: 1s, maxDelay: 2s, jitter: true}\n"), []string{
			"mappings[0].source2: unknown key",
			"mappings[0].retry.jitter: unknown key",
		}},
		{"unknown keys on one line", "streams: [{name: a, shardz: 1}, {name: b, shardz: 2}]\n", []string{
			"streams[0].shardz: unknown key",
			"streams[1].shardz: unknown key",
		}},
		{"unknown top-level key", "authz: {token: x}\n",
			[]string{"authz: unknown key"}},
		{"unknown quoted key", "\"data dir\": x\n",
			[]string{`"data dir": unknown key`}},
		{"go takes no settings", "functions: [{name: f, go: {package: main}}]\n",
			[]string{"functions[0].go.package: unknown key"}},
		{"tumbling window out of range, with parallelization", mappingDoc("    tumblingWindow: 901s\n    parallelizationFactor: 2\n"), []string{
			"mappings[0].tumblingWindow: 15m1s is above the maximum 15m",
			"mappings[0].tumblingWindow: needs parallelizationFactor 1 (a shard has one window state), not 2",
		}},
		{"tumbling window with KafkaEvent", mappingSourceDoc("{kafka: {brokers: ['k:9092'], topic: t}}, tumblingWindow: 30s"), []string{
			"mappings[0].tumblingWindow: not available with eventFormat kafka (KafkaEvent has no window), as on Lambda: set eventFormat: kinesis",
		}},
		{"bad filter patterns", mappingDoc("    filterCriteria: {filters: [{pattern: \"{}\"}, {pattern: ''}, {pattern: '{\"partitionKey\": [\"a\"]}'}, {pattern: '{\"data\": {\"n\": [{\"numeric\": [\"!\", 1]}]}}'}]}\n"), []string{
			"mappings[0].filterCriteria.filters[0].pattern: empty pattern: name at least one field",
			`mappings[0].filterCriteria.filters[1].pattern: required (an EventBridge pattern in JSON, e.g. '{"data": {"type": ["order"]}}')`,
			"mappings[0].filterCriteria.filters[2].pattern: partitionKey: kinesis events are filtered on data only",
			`mappings[0].filterCriteria.filters[3].pattern: data.n[0].numeric[0]: unknown operator "!" (allowed: =, <, <=, >, >=)`,
		}},
		{"too many filters", mappingDoc("    filterCriteria: {filters: [" + strings.Repeat("{pattern: '{\"data\": {\"a\": [1]}}'}, ", 5) + "{pattern: '{\"data\": {\"a\": [1]}}'}]}\n"), []string{
			"mappings[0].filterCriteria.filters: 6 patterns, above the limit of 5",
		}},
		{"empty filters", mappingDoc("    filterCriteria: {filters: []}\n"), []string{
			"mappings[0].filterCriteria.filters: required: at least one pattern (or leave filterCriteria out)",
		}},
		{"bad duration", mappingDoc("    maximumBatchingWindow: 5x\n"),
			[]string{`mappings[0].maximumBatchingWindow: "5x" is not a duration such as 90s, 5m or 24h`}},
		{"bare number duration", "streams: [{name: s, retention: 24}]\n",
			[]string{"streams[0].retention: 24 is not a duration: give a unit, as in 24s or 24m (a bare number is only allowed as 0, or -1 where it means no limit)"}},
		{"duration as mapping", "functions: [{name: f, timeout: {seconds: 3}}]\n",
			[]string{"functions[0].timeout: expected a duration such as 90s or 24h, got a mapping"}},
		{"long values on one line", "streams: [{name: a, shards: xxxxxxxxxxxxA}, {name: b, shards: xxxxxxxxxxxxB}]\n", []string{
			`streams[0].shards: expected an integer, got "xxxxxxxxxxxxA"`,
			`streams[1].shards: expected an integer, got "xxxxxxxxxxxxB"`,
		}},
		{"durations on one line", "streams: [{name: a, retention: 1x}, {name: b, retention: 1x}]\n", []string{
			`streams[0].retention: "1x" is not a duration such as 90s, 5m or 24h`,
			`streams[1].retention: "1x" is not a duration such as 90s, 5m or 24h`,
		}},
		{"not an integer", "streams: [{name: s, shards: four}]\n",
			[]string{`streams[0].shards: expected an integer, got "four"`}},
		{"float for an integer", mappingDoc("    batchSize: 1.5\n"),
			[]string{"mappings[0].batchSize: expected an integer, got 1.5"}},
		{"quoted integer", mappingDoc("    batchSize: \"100\"\n"),
			[]string{`mappings[0].batchSize: expected an integer, got "100"`}},
		{"not a bool", mappingDoc("    enabled: maybe\n"),
			[]string{`mappings[0].enabled: expected true or false, got "maybe"`}},
		{"scalar for a list", mappingDoc("    functionResponseTypes: ReportBatchItemFailures\n"),
			[]string{`mappings[0].functionResponseTypes: expected a list, got "ReportBatchItemFailures"`}},
		{"map for a list", "streams: {orders: {}}\n",
			[]string{"streams: expected a list, got a mapping"}},
		{"duplicate key", "streams:\n  - name: a\n    name: b\n  - name: c\n    shards: 0\n", []string{
			"streams[0].name: duplicate key (first at line 2)",
			// The items of a list keep their index whatever their problems.
			"streams[1].shards: 0 is below the minimum 1",
		}},
		// The first value of a key written twice is decoded (and not
		// validated), so no setting of its mapping is reported missing.
		{"duplicate top-level key", "dataDir: ./data\nlisten: 127.0.0.1:1\nlisten: 127.0.0.1:2\n", []string{
			"listen: duplicate key (first at line 2)",
		}},
		{"duplicate nested key", "store:\n  postgres: {dsn: 'postgres://h/db', schema: a, schema: b}\n", []string{
			"store.postgres.schema: duplicate key (first at line 2)",
		}},
		{"merge cycle", "mappings:\n  - &m {name: a, enabled: {<<: *m}}\n", []string{
			"mappings[0].enabled: expected true or false, got a mapping",
			"mappings[0].source.stream: required (the name of a configured stream, or another kind of source: kafka, jetstream, kinesis, redis, dynamodb)",
			"mappings[0].function: required (the name of a configured function)",
			"mappings[0].startingPosition: required (one of TRIM_HORIZON, LATEST, AT_TIMESTAMP)",
			"mappings[0].idempotency.scope: required (1 to 128 characters of A-Z a-z 0-9 . _ -; Parse defaults it to the function name)",
		}},
		{"merge into itself", "mappings:\n  - &m {name: a, source: {<<: *m}}\n", []string{
			"mappings[0].source: alias *m refers to a value that contains it",
			"mappings[0].function: required (the name of a configured function)",
			"mappings[0].startingPosition: required (one of TRIM_HORIZON, LATEST, AT_TIMESTAMP)",
			"mappings[0].idempotency.scope: required (1 to 128 characters of A-Z a-z 0-9 . _ -; Parse defaults it to the function name)",
		}},
		{"merge of a scalar", "streams: [{<<: 5, name: a}]\n",
			[]string{"streams[0]: <<: expected a mapping or a list of mappings to merge, got 5"}},
		{"alias without anchor", "streams: [*s]\n",
			[]string{"streams[0]: alias *s has no anchor before it"}},
		{"problem in a merged value", "streams:\n  - &s {name: a, shards: x}\n  - {<<: *s, name: b}\n", []string{
			`streams[0].shards: expected an integer, got "x"`,
			`streams[1].shards: expected an integer, got "x"`,
		}},
		{"nested map for a scalar on one line", "streams: [{name: a, shards: {}}, {name: b, shards: {}}]\n", []string{
			"streams[0].shards: expected an integer, got a mapping",
			"streams[1].shards: expected an integer, got a mapping",
		}},
		{"empty list item", "streams:\n  -\n  - name: a\n", []string{
			"streams[0]: empty list item",
		}},

		// Several problems at once, in file order.
		{"all at once", `
streams:
  - {name: orders, shards: 0}
functions:
  - {name: f, timeout: 1h}
mappings:
  - name: m
    source: {stream: orders}
    function: g
    startingPosition: LATEST
    batchSiz: 1
    batchSize: 20000
`, []string{
			"streams[0].shards: 0 is below the minimum 1",
			"functions[0].timeout: 1h is above the maximum 15m",
			`mappings[0].function: unknown function "g" (configured: f)`,
			"mappings[0].batchSiz: unknown key",
			"mappings[0].batchSize: 20000 is above the maximum 10000",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want:\n%s", strings.Join(tt.want, "\n"))
			}
			if f != nil {
				t.Errorf("Parse returned a File with an error")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", "", "config is empty: expected a YAML mapping with streams, functions and mappings"},
		{"blank", "\n  \n", "config is empty: expected a YAML mapping with streams, functions and mappings"},
		{"comments only", "# nothing yet\n", "config is empty: expected a YAML mapping with streams, functions and mappings"},
		{"null", "~\n", "config is empty: expected a YAML mapping with streams, functions and mappings"},
		{"document marker", "---\n", "config is empty: expected a YAML mapping with streams, functions and mappings"},
		{"malformed", "streams:\n  - name: a\n   shards: 2\n", "invalid YAML: line 3: value is not allowed in this context"},
		{"unclosed flow", "streams: [{name: a}\n", "invalid YAML: line 1: sequence end token ']' not found"},
		{"tab indent", "streams:\n\t- name: a\n", `invalid YAML: line 2: found character '\t' that cannot start any token`},
		{"list at top", "- a\n- b\n", "line 1: the top level must be a mapping with keys dataDir, listen, streams, functions and mappings, not a list"},
		{"scalar at top", "hello\n", "line 1: the top level must be a mapping with keys dataDir, listen, streams, functions and mappings, not a single value"},
		{"too deep", "streams: " + strings.Repeat("[", 1001) + strings.Repeat("]", 1001) + "\n", "invalid YAML: line 1: nested more than 1000 levels deep"},
		{"not UTF-8", "listen: \xff\n", "invalid YAML: the file is not UTF-8"},
		{"two documents", "listen: a:1\n---\nlisten: b:2\n", "line 2: a second YAML document (after ---) is not allowed: the config is one document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", err, tt.want)
			}
		})
	}
}

// Aliases cannot make a small file cost unbounded work.
func TestParseAliasBomb(t *testing.T) {
	doc := "mappings:\n  - &m0 {name: m}\n"
	for i := 1; i < 10; i++ { // each merges the one before ten times
		doc += fmt.Sprintf("  - &m%d {<<: [%s]}\n", i, strings.Repeat(fmt.Sprintf("*m%d, ", i-1), 10))
	}
	_, err := Parse([]byte(doc))
	if err == nil || !strings.HasPrefix(err.Error(), "invalid YAML: aliases expand the file to more than") {
		t.Errorf("Parse = %.500v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "idem.yaml")
	if err := os.WriteFile(path, []byte(mappingDoc("    batchSize: 20000\n    batchSiz: 1\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + ":12: mappings[0].batchSize: 20000 is above the maximum 10000\n" +
		path + ":13: mappings[0].batchSiz: unknown key"
	if err == nil || err.Error() != want {
		t.Errorf("Load error:\n%v\nwant:\n%s", err, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "mappings[0].batchSize" || fe.Line != 12 {
		t.Errorf("errors.As FieldError = %+v", fe)
	}

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || err.Error() != path+": config is empty: expected a YAML mapping with streams, functions and mappings" {
		t.Errorf("Load(empty) = %v", err)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load(missing) = %v, want a wrapped os.ErrNotExist", err)
	}
}

func TestFieldErrors(t *testing.T) {
	_, err := Parse([]byte(mappingDoc("    batchSize: 0\n    parallelizationFactor: 0\n")))
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Parse error %T is not a joined error", err)
	}
	var got []string
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		got = append(got, fe.Path)
	}
	if strings.Join(got, " ") != "mappings[0].batchSize mappings[0].parallelizationFactor" {
		t.Errorf("paths = %v", got)
	}
}

func TestValidate(t *testing.T) {
	f, err := Parse([]byte(mappingDoc("")))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("Validate after Parse: %v", err)
	}
	// As `serve --data ""` would.
	f.DataDir = ""
	f.Streams[0].Shards = 5000
	want := "dataDir: required (a directory; default ./idem-data)\nstreams[0].shards: 5000 is above the maximum 1024"
	if err := f.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %s", err, want)
	}

	// A File built in Go gets no defaults.
	g := &File{DataDir: "d", Listen: ":0", Streams: []Stream{{Name: "s"}}}
	want = "streams[0].shards: 0 is below the minimum 1\nstreams[0].retention: 0s is below the minimum 1h"
	if err := g.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %s", err, want)
	}
	var nilFile *File
	if err := nilFile.Validate(); err == nil {
		t.Errorf("Validate(nil) = nil")
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		yaml    string
		want    time.Duration
		wantErr string
	}{
		{"90s", 90 * time.Second, ""},
		{"\"24h\"", 24 * time.Hour, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"0", 0, ""},
		{"-1", -1, ""},
		{"-1s", -time.Second, ""},
		{"5", 0, "5 is not a duration: give a unit, as in 5s or 5m (a bare number is only allowed as 0, or -1 where it means no limit)"},
		{"1.5", 0, `"1.5" is not a duration such as 90s, 5m or 24h`},
		{"soon", 0, `"soon" is not a duration such as 90s, 5m or 24h`},
		{"[1s]", 0, "expected a duration such as 90s or 24h, got a list"},
	}
	for _, tt := range tests {
		var v struct {
			D Duration `yaml:"d"`
		}
		err := yaml.Unmarshal([]byte("d: "+tt.yaml), &v)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.yaml, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want %q", tt.yaml, err, tt.wantErr)
		case tt.wantErr == "" && v.D.D() != tt.want:
			t.Errorf("%s = %v, want %v", tt.yaml, v.D.D(), tt.want)
		}
	}

	for d, want := range map[Duration]string{
		-1:                                     "-1",
		0:                                      "0s",
		Duration(100 * time.Millisecond):       "100ms",
		Duration(time.Minute):                  "1m",
		Duration(168 * time.Hour):              "168h",
		Duration(90 * time.Minute):             "1h30m",
		Duration(time.Hour + time.Second):      "1h0m1s",
		Duration(10*time.Minute + time.Second): "10m1s",
	} {
		if got := d.String(); got != want {
			t.Errorf("Duration(%d).String() = %q, want %q", int64(d), got, want)
		}
	}
}

// A parsed File written back out parses to the same File.
func TestRoundTrip(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	out := dump(t, f)
	g, err := Parse([]byte(out))
	if err != nil {
		t.Fatalf("Parse(Marshal(f)): %v\n%s", err, out)
	}
	if again := dump(t, g); again != out {
		t.Errorf("round trip changed the file:\n%s\nthen\n%s", out, again)
	}
}

func dump(t testing.TB, f *File) string {
	t.Helper()
	b, err := yaml.Marshal(f)
	if err != nil {
		t.Fatalf("yaml.Marshal: %v", err)
	}
	return string(b)
}

// mappingSourceDoc is a valid file whose one mapping reads src.
func mappingSourceDoc(src string) string {
	return "streams: [{name: s}]\nfunctions: [{name: f}]\nmappings:\n  - {name: m, function: f, startingPosition: LATEST, source: " + src + "}\n"
}

// TestEventFormatDefaults: a kafka source gets KafkaEvent unless the mapping
// asks for KinesisEvent, a dynamodb source DynamoDBEvent unless it asks
// for KinesisEvent; other sources get KinesisEvent. Any source may ask for
// S3Event, with filters on the notification, or DynamoDBEvent (a Kinesis
// stream fed by Kinesis Data Streams for DynamoDB), with filters on the
// DynamoDB record, windows and item failures.
func TestEventFormatDefaults(t *testing.T) {
	for _, tc := range []struct{ src, extra, want string }{
		{"{kafka: {brokers: ['k:9092'], topic: t}}", "", "kafka"},
		{"{kafka: {brokers: ['k:9092'], topic: t}}", ", eventFormat: kinesis", "kinesis"},
		{"{kafka: {brokers: ['k:9092'], topic: t}}", ", eventFormat: kafka", "kafka"},
		{"{stream: s}", "", "kinesis"},
		{"{stream: s}", ", eventFormat: kinesis", "kinesis"},
		{"{stream: s}", ", eventFormat: s3", "s3"},
		{"{kafka: {brokers: ['k:9092'], topic: t}}", ", eventFormat: s3", "s3"},
		{"{jetstream: {url: 'nats://127.0.0.1:4222', stream: S}}", ", eventFormat: s3, bisectBatchOnFunctionError: true, filterCriteria: {filters: [{pattern: '{\"Records\": {\"eventName\": [{\"prefix\": \"ObjectCreated:\"}]}}'}]}", "s3"},
		{"{dynamodb: {table: orders}}", "", "dynamodb"},
		{"{dynamodb: {table: orders}}", ", eventFormat: kinesis", "kinesis"},
		{"{dynamodb: {streamArn: 'arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/x'}}", ", filterCriteria: {filters: [{pattern: '{\"eventName\": [\"INSERT\"], \"dynamodb\": {\"NewImage\": {\"status\": {\"S\": [\"paid\"]}}}}'}]}", "dynamodb"},
		{"{kinesis: {stream: orders-changes}}", ", eventFormat: dynamodb, tumblingWindow: 60s, functionResponseTypes: [ReportBatchItemFailures], idempotency: {key: dynamodb.Keys.id.S}", "dynamodb"},
		{"{stream: s}", ", eventFormat: dynamodb", "dynamodb"},
	} {
		doc := "streams: [{name: s}]\nfunctions: [{name: f}]\nmappings:\n  - {name: m, function: f, startingPosition: LATEST, source: " + tc.src + tc.extra + "}\n"
		f, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%s%s: %v", tc.src, tc.extra, err)
		}
		if got := f.Mappings[0].EventFormat; got != tc.want {
			t.Errorf("%s%s: eventFormat %q, want %q", tc.src, tc.extra, got, tc.want)
		}
	}
}

// TestKafkaGroupDefaults: a group gets the default session timeout.
func TestKafkaGroupDefaults(t *testing.T) {
	f, err := Parse([]byte("store: {postgres: {dsn: 'postgres://idem@127.0.0.1/idem'}}\nlease: {}\n" + mappingSourceDoc("{kafka: {brokers: ['k:9092'], topic: t, group: g}}")))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Mappings[0].Source.Kafka.SessionTimeout; got != Duration(10*time.Second) {
		t.Errorf("sessionTimeout %s, want 10s", got)
	}
}
