package config

import (
	"cmp"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// File is the whole config file. It is plain data: the wiring converts it into
// engine and driver options in one place.
type File struct {
	// DataDir is where the embedded streams and the store keep their data,
	// relative to the working directory unless absolute. `idem serve --data
	// DIR` overrides it. (In Go: set the field and call Validate again.)
	// Default: ./idem-data
	DataDir string `yaml:"dataDir"`
	// Listen is the host:port of idem's HTTP API. Port 0 picks a free port.
	// `idem serve --listen ADDR` overrides it, as --data does dataDir.
	// Default: 127.0.0.1:7070
	Listen string `yaml:"listen"`
	// Region is the AWS region idem presents itself in, one for every
	// place: the ARNs it prints, events' awsRegion, AWS_REGION of process
	// functions (unless a process function sets its own region). Lambda
	// clients expect well-formed ARNs, whose region is a real one.
	// Default: us-east-1
	Region string `yaml:"region"`
	// Streams are the embedded streams, each with a unique name.
	// Default: none
	Streams []Stream `yaml:"streams"`
	// Functions are the functions mappings can invoke, each with a unique
	// name.
	// Default: none
	Functions []Function `yaml:"functions"`
	// Mappings connect a stream to a function, each with a unique name.
	// Default: none
	Mappings []Mapping `yaml:"mappings"`
	// Store is where checkpoints, completion marks, state and on-failure
	// records live when they must be shared by several idem processes.
	// Default: the embedded store, in dataDir.
	Store Store `yaml:"store"`
	// Auth protects the HTTP API with tokens: full ones, and read-only ones.
	// Default: see Auth (no authentication)
	Auth Auth `yaml:"auth"`
	// Lease lets several idem processes sharing a PostgreSQL or Redis store
	// run the same mappings, one process per shard at a time.
	// Default: nil (off: one process owns the store)
	Lease *Lease `yaml:"lease"`
	// Debug exposes debugging endpoints of `idem serve` on listeners of
	// their own, apart from the HTTP API.
	// Default: nil (off)
	Debug *Debug `yaml:"debug"`
}

// Debug is the top-level `debug` key.
type Debug struct {
	// Pprof is the host:port where `idem serve` serves Go's net/http/pprof
	// profiles under /debug/pprof/, on a listener of its own without
	// authentication. Its host must be a loopback address (127.0.0.0/8,
	// ::1 or localhost), since the profiles expose the process's internals.
	// Default: none (off)
	Pprof string `yaml:"pprof"`
}

// Store chooses the store: at most one of its kinds may be set. With none,
// the embedded store keeps everything in dataDir, in the same atomic write
// as the embedded streams' bookkeeping.
type Store struct {
	// Postgres keeps idem's records in PostgreSQL, where a Go handler's SQL
	// writes can commit in the same transaction.
	Postgres *PostgresStore `yaml:"postgres"`
	// Redis keeps idem's records in Redis; durable only with appendonly yes
	// and appendfsync always.
	Redis *RedisStore `yaml:"redis"`
	// DynamoDB keeps idem's records in one Amazon DynamoDB table, created
	// if absent (on-demand billing).
	DynamoDB *DynamoDBStore `yaml:"dynamodb"`
}

// PostgresStore is `store.postgres`.
type PostgresStore struct {
	// DSN is a libpq connection string or URL,
	// e.g. postgres://idem@127.0.0.1:5432/idem.
	// Default: none, required
	DSN string `yaml:"dsn"`
	// Schema holds idem's tables, created and migrated at start.
	// Default: idem
	Schema string `yaml:"schema"`
	// SeparateDeferredInserts sends each statement deferred with
	// postgres.Defer as it was deferred, rather than a run of INSERTs of
	// one VALUES row and one text as one INSERT of their rows (the same
	// rows, in the same order, several times faster). Set it for tables
	// whose statement-level or AFTER ROW triggers, rules or
	// self-referencing foreign keys must see each record's statement.
	// Default: false
	SeparateDeferredInserts bool `yaml:"separateDeferredInserts"`
}

// RedisStore is `store.redis`.
type RedisStore struct {
	// Addr is the server's host:port.
	// Default: 127.0.0.1:6379
	Addr string `yaml:"addr"`
	// DB is the logical database number, 0 to 15.
	// Default: 0
	DB int `yaml:"db"`
	// Prefix namespaces idem's keys, so deployments can share a server.
	// Default: idem
	Prefix string `yaml:"prefix"`
}

// DynamoDBStore is `store.dynamodb`. Credentials come from the AWS SDK's
// default chain (environment, shared files, instance or task role).
type DynamoDBStore struct {
	// Table holds every record of idem: 3 to 255 of A-Z a-z 0-9 _ - and '.'.
	// Deployments that must not share records use tables of their own.
	// Default: idem
	Table string `yaml:"table"`
	// Region is the AWS region of the table.
	// Default: the SDK's (AWS_REGION, the shared config file)
	Region string `yaml:"region"`
	// Endpoint is the URL requests go to instead of DynamoDB's for the
	// region: DynamoDB Local or another emulator, or a VPC endpoint.
	// Default: DynamoDB's endpoint for the region
	Endpoint string `yaml:"endpoint"`
}

// Stream is an embedded stream.
type Stream struct {
	// Name identifies the stream: 1 to 128 of A-Z a-z 0-9 . _ -.
	// Default: none, required
	Name string `yaml:"name"`
	// Shards is the number of shards, 1 to 1024. Records with the same
	// partition key always go to the same shard, in order.
	// Default: 1
	Shards int `yaml:"shards"`
	// Retention is how long records are kept, 1h to 8760h. It also bounds how
	// far back TRIM_HORIZON reaches, which is why idempotency retention may
	// not be shorter.
	// Default: 24h
	Retention Duration `yaml:"retention"`
}

// Function is a function mappings can invoke. With HTTP set it is invoked
// over HTTP; otherwise (no kind, or `go: {}`) it is an in-process Go function
// that the program embedding idem must register under Name. This package
// cannot check that registration: the server does, at start.
type Function struct {
	// Name identifies the function: 1 to 128 of A-Z a-z 0-9 . _ -. It is the
	// default idempotency scope of the mappings that invoke it, so renaming a
	// function whose mappings set no explicit scope starts a new scope.
	// Default: none, required
	Name string `yaml:"name"`
	// HTTP makes this an HTTP function. Not allowed together with Go.
	// Default: nil (in-process Go function)
	HTTP *HTTPFunction `yaml:"http,omitempty"`
	// Go makes explicit that this is an in-process Go function. Not allowed
	// together with HTTP.
	// Default: nil (same meaning when HTTP is nil too)
	Go *GoFunction `yaml:"go,omitempty"`
	// Process runs an unmodified AWS Lambda function (a `bootstrap` built
	// with aws-lambda-go, or any runtime speaking the Lambda Runtime API) as
	// child processes of idem. Not allowed together with HTTP or Go.
	// Default: nil
	Process *ProcessFunction `yaml:"process,omitempty"`
	// Timeout bounds one invocation, above 0 and at most 900s (Lambda's
	// limit). A timed-out invocation is a function error of type
	// Function.Timeout.
	// Default: 3s
	Timeout Duration `yaml:"timeout"`
	// Async is how the function's asynchronous invocations (Invoke API,
	// X-Amz-Invocation-Type: Event) are retried and where failed ones go.
	// Default: see Async
	Async Async `yaml:"async"`
	// Idempotency makes repeated direct invocations (Invoke API) return the
	// first result without running the function again.
	// Default: see FunctionIdempotency
	Idempotency FunctionIdempotency `yaml:"idempotency"`
}

// InProcess reports whether the function is an in-process Go function, to be
// registered by the embedding program, rather than an HTTP one.
func (f *Function) InProcess() bool { return f.HTTP == nil && f.Process == nil }

// ProcessFunction is `functions[].process`: how to start the function's
// processes. idem serves them the Lambda Runtime API on loopback.
type ProcessFunction struct {
	// Command is the executable, e.g. ./bootstrap; relative to Dir.
	// Default: none, required
	Command string `yaml:"command"`
	// Args are its arguments.
	// Default: none
	Args []string `yaml:"args"`
	// Env adds environment variables to the ones idem sets (AWS_REGION,
	// AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_RUNTIME_API, ..., and PATH, LANG,
	// TZ and LD_LIBRARY_PATH, which it overrides).
	// Default: none
	Env map[string]string `yaml:"env"`
	// InheritEnv passes idem's own environment to the processes too, below
	// env and the variables idem sets. Off, they get only Lambda's variables
	// and env, and none of idem's secrets (IDEM_TOKEN, database DSNs, cloud
	// credentials).
	// Default: false
	InheritEnv bool `yaml:"inheritEnv"`
	// Dir is the working directory (LAMBDA_TASK_ROOT).
	// Default: idem's working directory
	Dir string `yaml:"dir"`
	// Concurrency is how many processes run, each one invocation at a time,
	// 1 to 1024.
	// Default: 1
	Concurrency int `yaml:"concurrency"`
	// MemorySize in MB, 128 to 10240, is only reported to the function
	// (AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
	// Default: 128
	MemorySize int `yaml:"memorySize"`
	// Region is the AWS_REGION the function sees, and the region of the
	// ARN it is invoked under.
	// Default: the top-level region
	Region string `yaml:"region"`
}

// HTTPFunction is a function reached over HTTP: idem POSTs each batch as a
// Lambda event and reads a Lambda response.
type HTTPFunction struct {
	// URL is the absolute http or https URL batches are posted to.
	// Default: none, required
	URL string `yaml:"url"`
}

// GoFunction marks an in-process Go function. It has no settings yet; it
// exists so that `go: {}` states the kind explicitly.
type GoFunction struct{}

// Mapping is an event source mapping: it reads batches from a stream and
// invokes a function with them, with AWS Lambda's rules for stream sources
// (see ESM.md) and idem's exactly-once additions (Idempotency,
// PermanentErrorTypes, Retry).
type Mapping struct {
	// Name identifies the mapping: 1 to 128 of A-Z a-z 0-9 . _ -. Its
	// checkpoints are kept under this name.
	// Default: none, required
	Name string `yaml:"name"`
	// Source is the stream the mapping reads.
	// Default: none, required
	Source SourceRef `yaml:"source"`
	// Function is the name of the function to invoke.
	// Default: none, required
	Function string `yaml:"function"`
	// StartingPosition is where a mapping with no checkpoint starts:
	// TRIM_HORIZON (oldest retained record), LATEST (after the newest) or
	// AT_TIMESTAMP (with StartingPositionTimestamp).
	// Default: none, required (as in Lambda)
	StartingPosition string `yaml:"startingPosition"`
	// StartingPositionTimestamp is an RFC 3339 time such as
	// 2026-01-01T00:00:00Z, required with AT_TIMESTAMP. With another
	// starting position it is still checked but has no effect (so that
	// switching the position back and forth is a one-line edit). It is kept as
	// written, quoted or not; StartingPositionTime parses it.
	// Default: empty
	StartingPositionTimestamp string `yaml:"startingPositionTimestamp,omitempty"`
	// BatchSize is the most records per invocation, 1 to 10000.
	// Default: 100
	BatchSize int `yaml:"batchSize"`
	// MaximumBatchingWindow is how long to wait for a batch to fill, 0 to
	// 300s. A batch is also sent when full or at 6 MB of payload.
	// Default: 0s
	MaximumBatchingWindow Duration `yaml:"maximumBatchingWindow"`
	// BisectBatchOnFunctionError splits a failed batch in two and retries
	// each half; splits do not count as retries.
	// Default: false
	BisectBatchOnFunctionError bool `yaml:"bisectBatchOnFunctionError"`
	// MaximumRetryAttempts is -1 (retry until the record expires) or 0 to
	// 10000.
	// Default: -1
	MaximumRetryAttempts int `yaml:"maximumRetryAttempts"`
	// MaximumRecordAge discards records older than this: -1 (no limit;
	// stream retention still applies) or 60s to 604800s. In YAML it is the
	// integer -1 or a duration string; in Go any negative value means no
	// limit (Parse stores -1ns).
	// Default: -1 (no limit)
	MaximumRecordAge Duration `yaml:"maximumRecordAge"`
	// ParallelizationFactor is the number of concurrent batches per shard,
	// 1 to 10. Records with the same partition key are still processed in
	// order, never concurrently.
	// Default: 1
	ParallelizationFactor int `yaml:"parallelizationFactor"`
	// TumblingWindow groups each shard's records by arrival time into
	// windows of this length, 0 to 900s, as Lambda's: the function gets a
	// KinesisTimeWindowEvent with the state its window's previous
	// invocation returned, the state commits with the checkpoint, and a
	// final invocation with no records and isFinalInvokeForWindow closes
	// each window (a DynamoDBTimeWindowEvent with eventFormat dynamodb).
	// Needs parallelizationFactor 1 and KinesisEvent or DynamoDBEvent.
	// Default: 0 (no windows)
	TumblingWindow Duration `yaml:"tumblingWindow,omitempty"`
	// FunctionResponseTypes may hold only ReportBatchItemFailures, which
	// makes the function's batchItemFailures response count; without it a
	// response is ignored. Use the ReportBatchItemFailures method to read it.
	// Default: empty
	FunctionResponseTypes []string `yaml:"functionResponseTypes"`
	// DestinationConfig says where discarded batches go.
	// Default: no destination
	DestinationConfig DestinationConfig `yaml:"destinationConfig"`
	// EventFormat (idem extension) is the Lambda event the function
	// receives: kafka (KafkaEvent: records grouped by "topic-partition",
	// with offsets, base64 keys and values, and headers; only for a kafka
	// source), kinesis (KinesisEvent), s3 (S3Event, for a source whose
	// records are the S3 event notifications a store such as MinIO, Ceph
	// or versitygw publishes: one {"Records": [...]} holding the event
	// records of every notification of the batch) or dynamodb
	// (DynamoDBEvent, for a source whose records are DynamoDB changes: a
	// dynamodb source's stream records, or the changes Kinesis Data
	// Streams for DynamoDB writes into a kinesis source's stream,
	// converted to DynamoDB stream records whose SequenceNumber is the
	// Kinesis record's). With dynamodb, a batchItemFailures itemIdentifier
	// is a record's SequenceNumber, filterCriteria patterns and
	// idempotency.key expressions read the DynamoDB stream record
	// ({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S":
	// ["paid"]}}}}, dynamodb.Keys.id.S), a record that is no DynamoDB
	// change goes to the on-failure destination, and on-failure records
	// carry DDBStreamBatchInfo. With kafka, a
	// batchItemFailures itemIdentifier may be "<topic>-<partition>@<offset>"
	// as well as the Kinesis-style "<shardId>:<sequence>". With s3, a
	// record's default idempotency key is its notification's event
	// identity, so a notification published twice runs once; test
	// notifications (s3:TestEvent) are filtered out; a record that is not a
	// notification goes to the on-failure destination; filterCriteria
	// patterns match the notification ({"Records": {"eventName": [...]}});
	// tumblingWindow and ReportBatchItemFailures are refused (no window,
	// no item identifier).
	// Default: kafka for a kafka source, dynamodb for a dynamodb source,
	// kinesis otherwise
	EventFormat string `yaml:"eventFormat,omitempty"`
	// FilterCriteria decides which records reach the function, as Lambda's:
	// up to 5 patterns in EventBridge syntax, ORed; a record that matches
	// none is skipped and checkpointed, never retried. KinesisEvent records
	// are filtered on data (as JSON): {"data": {"type": ["order"]}};
	// KafkaEvent records on value, key, topic, partition, offset,
	// timestamp and timestampType; S3Event records on their notification
	// (Records, and MinIO's EventName and Key); DynamoDBEvent records on
	// eventID, eventName, eventVersion, eventSource, awsRegion, dynamodb,
	// eventSourceARN and userIdentity.
	// Default: none (every record is delivered)
	FilterCriteria *FilterCriteria `yaml:"filterCriteria,omitempty"`
	// PermanentErrorTypes (idem extension) are function error types, such as
	// ValidationError or HTTP.400, that skip the remaining retries at once:
	// retrying a record that fails because of its data only costs money.
	// Default: empty
	PermanentErrorTypes []string `yaml:"permanentErrorTypes"`
	// Retry (idem extension) is the backoff between retries.
	// Default: see Retry
	Retry Retry `yaml:"retry"`
	// Idempotency (idem extension) decides which records count as already
	// done.
	// Default: see Idempotency
	Idempotency Idempotency `yaml:"idempotency"`
	// Enabled turns the mapping on; a disabled mapping keeps its checkpoint
	// and reads nothing.
	// Default: true
	Enabled bool `yaml:"enabled"`
}

// ReportBatchItemFailures reports whether FunctionResponseTypes holds
// ReportBatchItemFailures, i.e. whether the function's batchItemFailures
// response counts.
func (m *Mapping) ReportBatchItemFailures() bool {
	for _, t := range m.FunctionResponseTypes {
		if t == ReportBatchItemFailuresType {
			return true
		}
	}
	return false
}

// OnFailureStream returns the stream discarded batches go to, or "" for none.
func (m *Mapping) OnFailureStream() string {
	if m.DestinationConfig.OnFailure == nil {
		return ""
	}
	return m.DestinationConfig.OnFailure.Stream
}

// StartingPositionTime returns StartingPositionTimestamp parsed, or the zero
// time when it is empty or invalid (Validate reports the latter).
func (m *Mapping) StartingPositionTime() time.Time {
	t, err := time.Parse(time.RFC3339, m.StartingPositionTimestamp)
	if err != nil {
		return time.Time{}
	}
	return t
}

// SourceRef names the stream a mapping reads.
type SourceRef struct {
	// Stream is the name of a configured embedded stream. Exactly one of
	// stream, kafka, jetstream, kinesis, redis and dynamodb is set.
	// Default: none
	Stream string `yaml:"stream"`
	// Kafka reads a Kafka topic; its partitions are the shards.
	Kafka *KafkaSource `yaml:"kafka,omitempty"`
	// JetStream reads a NATS JetStream stream.
	JetStream *JetStreamSource `yaml:"jetstream,omitempty"`
	// Kinesis reads an Amazon Kinesis data stream.
	Kinesis *KinesisSource `yaml:"kinesis,omitempty"`
	// Redis reads Redis Streams, one stream key per shard.
	Redis *RedisSource `yaml:"redis,omitempty"`
	// DynamoDB reads an Amazon DynamoDB table's stream (DynamoDB Streams):
	// its shards, rolled over every few hours, are read parents first.
	DynamoDB *DynamoDBSource `yaml:"dynamodb,omitempty"`
}

// Name is what the mapping's records name as their stream: the embedded
// stream, topic, or stream the source reads.
func (r *SourceRef) Name() string {
	switch {
	case r.Kafka != nil:
		return r.Kafka.Topic
	case r.JetStream != nil:
		return r.JetStream.Stream
	case r.Kinesis != nil:
		return r.Kinesis.Stream
	case r.Redis != nil:
		return r.Redis.Name
	case r.DynamoDB != nil:
		return r.DynamoDB.TableName()
	}
	return r.Stream
}

// External reports whether the source is not an embedded stream.
func (r *SourceRef) External() bool {
	return r.Kafka != nil || r.JetStream != nil || r.Kinesis != nil || r.Redis != nil || r.DynamoDB != nil
}

// KafkaSource is `source.kafka`.
type KafkaSource struct {
	// Brokers are seed brokers, host:port.
	// Default: none, required
	Brokers []string `yaml:"brokers"`
	// Topic is read whole: every partition is a shard "<topic>-<partition>".
	// Default: none, required
	Topic string `yaml:"topic"`
	// PollInterval is how often a caught-up reader looks for new records.
	// Default: 100ms
	PollInterval Duration `yaml:"pollInterval"`
	// Group, when set, makes every idem process that runs the mapping a
	// member of this Kafka consumer group: the group's protocol divides the
	// partitions among the processes, a partition moves only after its
	// owner committed its batch in flight, and idem's checkpoints are
	// committed as the group's offsets so Kafka tooling shows the lag
	// (idem never reads them back). It needs a shared store (PostgreSQL or
	// Redis: with the embedded store, a partition that moved would find no
	// checkpoint in the new owner's data directory) and `lease`, which
	// fences a process that stalls past its session. One mapping a group.
	// Default: none (the process reads every partition)
	Group string `yaml:"group,omitempty"`
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (a killed process) before moving its partitions, within
	// the brokers' group.min/max.session.timeout.ms.
	// Default: 10s with a group
	SessionTimeout Duration `yaml:"sessionTimeout,omitempty"`
}

// FilterCriteria is `mappings[].filterCriteria`.
type FilterCriteria struct {
	// Filters are the patterns, ORed.
	// Default: none
	Filters []Filter `yaml:"filters"`
}

// Filter is one `filterCriteria.filters[]` entry.
type Filter struct {
	// Pattern is an EventBridge event pattern, as a JSON string.
	// Default: none, required
	Pattern string `yaml:"pattern"`
}

// Patterns returns the mapping's filter patterns; none without
// filterCriteria.
func (m *Mapping) Patterns() []string {
	if m.FilterCriteria == nil {
		return nil
	}
	out := make([]string, len(m.FilterCriteria.Filters))
	for i, f := range m.FilterCriteria.Filters {
		out[i] = f.Pattern
	}
	return out
}

// JetStreamSource is `source.jetstream`.
type JetStreamSource struct {
	// URL of the NATS server(s), e.g. nats://127.0.0.1:4222.
	// Default: none, required
	URL string `yaml:"url"`
	// Stream is the JetStream stream's name.
	// Default: none, required
	Stream string `yaml:"stream"`
	// Partitions, when set, are subject filters, one shard each; without
	// them the whole stream is one shard.
	// Default: none
	Partitions []string `yaml:"partitions"`
	// PartitionByToken, when set, makes `count` shards by hashing one
	// subject token, as NATS' {{partition(count,token)}} subject mapping
	// does, so producers and idem agree on where a key goes. Every shard
	// reads the whole stream and keeps its own messages; when a subject
	// token already is the partition, prefer partitions (filtered on the
	// server). Conflicts with partitions.
	// Default: none
	PartitionByToken *TokenPartitioning `yaml:"partitionByToken,omitempty"`
}

// TokenPartitioning is `source.jetstream.partitionByToken`.
type TokenPartitioning struct {
	// Token is the 1-based index of the subject token hashed; 0 hashes the
	// whole subject.
	// Default: 0
	Token int `yaml:"token"`
	// Count is the number of shards, 1 to 1024.
	// Default: none, required
	Count int `yaml:"count"`
}

// KinesisSource is `source.kinesis`.
type KinesisSource struct {
	// Stream is the Kinesis stream's name.
	// Default: none, required
	Stream string `yaml:"stream"`
	// Region of the stream.
	// Default: the AWS SDK's (AWS_REGION)
	Region string `yaml:"region"`
	// Endpoint overrides the service endpoint, e.g. for kinesalite.
	// Default: none
	Endpoint string `yaml:"endpoint"`
}

// DynamoDBSource is `source.dynamodb`: a table's stream, read with
// DynamoDB Streams' API. The stream must be enabled on the table
// (StreamSpecification); its view type decides which images records carry.
// Credentials come from the AWS SDK's default chain; the source calls
// dynamodb:DescribeTable (with table), DescribeStream, GetShardIterator and
// GetRecords.
type DynamoDBSource struct {
	// Table names the table whose latest stream is read (its
	// LatestStreamArn): 3 to 255 of A-Z a-z 0-9 _ - and '.'. Set table or
	// streamArn.
	// Default: none
	Table string `yaml:"table,omitempty"`
	// StreamArn names the stream itself,
	// arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL: a stream
	// other than the table's latest (one disabled is still read for the
	// 24 hours DynamoDB keeps its records). Set table or streamArn.
	// Default: none
	StreamArn string `yaml:"streamArn,omitempty"`
	// Region of the table.
	// Default: the AWS SDK's (AWS_REGION), or the stream ARN's
	Region string `yaml:"region,omitempty"`
	// Endpoint overrides the DynamoDB and DynamoDB Streams endpoint, e.g.
	// for a local emulator or a VPC endpoint.
	// Default: none
	Endpoint string `yaml:"endpoint,omitempty"`
}

// TableName is the table the source reads: Table, or the table a
// StreamArn names; records name it as their stream.
func (d *DynamoDBSource) TableName() string {
	if d.Table != "" {
		return d.Table
	}
	if _, rest, ok := strings.Cut(d.StreamArn, ":table/"); ok {
		name, _, _ := strings.Cut(rest, "/stream/")
		return name
	}
	return ""
}

// StreamRegion is the region the source reads in: Region, or the one a
// StreamArn names ("" when neither says).
func (d *DynamoDBSource) StreamRegion() string {
	if d.Region != "" {
		return d.Region
	}
	if parts := strings.SplitN(d.StreamArn, ":", 5); len(parts) == 5 && parts[0] == "arn" {
		return parts[3]
	}
	return ""
}

// RedisSource is `source.redis`.
type RedisSource struct {
	// Addr is the Redis server's host:port.
	// Default: 127.0.0.1:6379
	Addr string `yaml:"addr"`
	// DB is the logical database.
	// Default: 0
	DB int `yaml:"db"`
	// Keys are the stream keys, one shard each.
	// Default: none, required
	Keys []string `yaml:"keys"`
	// Name is what records name as their stream.
	// Default: the first key
	Name string `yaml:"name"`
}

// DestinationConfig holds a mapping's destinations, as in Lambda.
type DestinationConfig struct {
	// OnFailure receives a discarded batch: Lambda's metadata record and,
	// unlike Lambda, the records themselves, so they can be redriven.
	// Default: nil (discarded batches are counted and logged only)
	OnFailure *Destination `yaml:"onFailure,omitempty"`
}

// Destination is a stream that receives records.
type Destination struct {
	// Stream is the name of a configured stream, other than the mapping's
	// own source: failed records would be fed back into the mapping.
	// Default: none, required
	Stream string `yaml:"stream"`
}

// Retry is the backoff between retries of a failed batch: exponential from
// BaseDelay, capped at MaxDelay, with jitter.
type Retry struct {
	// BaseDelay is the delay before the first retry; above 0.
	// Default: 100ms
	BaseDelay Duration `yaml:"baseDelay"`
	// MaxDelay caps the delay; at least BaseDelay.
	// Default: 30s
	MaxDelay Duration `yaml:"maxDelay"`
}

// Idempotency decides which records a mapping treats as already done. A
// record whose key is COMPLETED in the scope is not delivered again, and the
// completion marks commit atomically with the checkpoint.
type Idempotency struct {
	// Scope is the key space of completion marks: 1 to 128 of A-Z a-z 0-9
	// . _ -. Set it explicitly to keep it across function renames; mappings
	// that share a scope share their marks.
	// Default: the mapping's function name
	Scope string `yaml:"scope"`
	// Key is a JMESPath expression over the record's data as JSON whose
	// result identifies the record, e.g. order.id, so that a producer that
	// sends an order twice runs it once.
	// Default: empty (the record's identity in its source)
	Key string `yaml:"key"`
	// Retention is how long completion marks are kept; at least the source
	// stream's retention, or a replay of retained records (a new consumer at
	// TRIM_HORIZON, a reset checkpoint) could run one twice.
	// Default: the source stream's retention
	Retention Duration `yaml:"retention"`
}

// Duration is a time.Duration written in YAML as a Go duration string, such
// as 90s or 24h. The integer 0 is accepted, and the integer -1, which fields
// that allow it (MaximumRecordAge) read as "no limit"; other bare numbers are
// refused because their unit would be a guess.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d as a Go duration without trailing zero units (1m, not
// 1m0s), and -1ns as -1, the way it is written in YAML.
func (d Duration) String() string {
	if d == -1 {
		return "-1"
	}
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalYAML reads a duration string, 0 or -1, from a goccy/go-yaml
// node. Its errors say what is wrong; Parse adds the path and line.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	n = unwrap(n)
	text, ok := scalarText(n)
	switch {
	case !ok:
		return fmt.Errorf("expected a duration such as 90s or 24h, got %s", kind(n))
	case n.Type() == ast.IntegerType:
		switch text {
		case "0":
			*d = 0
			return nil
		case "-1":
			*d = -1
			return nil
		}
		return fmt.Errorf("%s is not a duration: give a unit, as in %ss or %sm (a bare number is only allowed as 0, or -1 where it means no limit)", text, text, text)
	}
	v, err := time.ParseDuration(text)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 90s, 5m or 24h", text)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d the way UnmarshalYAML reads it, so that a File can be
// written back out.
func (d Duration) MarshalYAML() (any, error) {
	if d == -1 {
		return -1, nil
	}
	return d.String(), nil
}

// Stream returns the stream with the given name, or nil.
func (f *File) Stream(name string) *Stream {
	for i := range f.Streams {
		if f.Streams[i].Name == name {
			return &f.Streams[i]
		}
	}
	return nil
}

// Function returns the function with the given name, or nil.
func (f *File) Function(name string) *Function {
	for i := range f.Functions {
		if f.Functions[i].Name == name {
			return &f.Functions[i]
		}
	}
	return nil
}

// Load reads and parses the config file at path. Each problem is reported as
// "path:line: setting: problem", one per line.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, inFile(path, err)
	}
	return f, nil
}

// Parse reads a config file's bytes, expands environment variables from
// the process environment (see the package doc), applies defaults to absent
// keys and validates the result. On any problem it returns a nil File and
// every problem found, each a *FieldError, joined with errors.Join.
func Parse(data []byte) (*File, error) {
	return ParseWithEnv(data, os.LookupEnv)
}

// ParseWithEnv is Parse with the environment given by lookup, which has
// os.LookupEnv's signature: tests, and tools that check a file for another
// environment, give their own. A nil lookup has every variable unset.
func ParseWithEnv(data []byte, lookup func(name string) (value string, ok bool)) (*File, error) {
	root, ferr := parseDocument(data)
	if ferr != nil {
		return nil, join([]*FieldError{ferr})
	}
	env := newExpander(lookup)
	d := newDecoder(root, len(data), env)
	var f File
	d.decode(root, reflect.ValueOf(&f).Elem(), "")
	if d.budget < 0 {
		return nil, join([]*FieldError{{Err: fmt.Errorf("invalid YAML: aliases expand the file to more than %d values", len(data)+maxExpansion)}})
	}
	errs := d.errs

	d.materializeNulls(&f)
	f.applyDefaults(func(path string) bool { return d.set[path] })

	// Validation problems under a path that failed to decode are
	// consequences of that failure (a zero left behind), not news.
	skip := newPathSet(errs)
	for _, e := range f.check() {
		if !skip.covers(e.Path) {
			e.Line = d.lineOf(e.Path)
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		env.redact(errs)
		// In file order, so that the report reads top to bottom.
		slices.SortStableFunc(errs, func(a, b *FieldError) int { return cmp.Compare(a.Line, b.Line) })
		return nil, join(errs)
	}
	return &f, nil
}

// pathSet holds the paths of problems, to recognise the problems that follow
// from them.
type pathSet map[string]bool

func newPathSet(errs []*FieldError) pathSet {
	s := make(pathSet)
	for _, e := range errs {
		if e.Path != "" {
			s[e.Path] = true
		}
	}
	return s
}

// covers reports whether path is, or is under, a path in s.
func (s pathSet) covers(path string) bool {
	for path != "" {
		if s[path] {
			return true
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return false
		}
		path = path[:i]
	}
	return false
}

// Defaults, in the one place they live. Each field's doc repeats its default.
const (
	defaultDataDir               = "./idem-data"
	defaultListen                = "127.0.0.1:7070"
	defaultShards                = 1
	defaultRetention             = Duration(24 * time.Hour)
	defaultTimeout               = Duration(3 * time.Second)
	defaultBatchSize             = 100
	defaultMaximumRetryAttempts  = -1
	defaultMaximumRecordAge      = Duration(-1)
	defaultParallelizationFactor = 1
	defaultBaseDelay             = Duration(100 * time.Millisecond)
	defaultMaxDelay              = Duration(30 * time.Second)
)

// DefaultRegion is the region of a file without `region:`, as the AWS
// CLI's and SDKs' most common default.
const DefaultRegion = "us-east-1"

// applyDefaults fills settings that the file left out. set reports whether a
// path was given a non-null value; a setting is defaulted only when it was not
// set and is still zero (a value merged in with `<<:` is not zero).
func (f *File) applyDefaults(set func(path string) bool) {
	if !set("dataDir") && f.DataDir == "" {
		f.DataDir = defaultDataDir
	}
	if !set("listen") && f.Listen == "" {
		f.Listen = defaultListen
	}
	if !set("region") && f.Region == "" {
		f.Region = DefaultRegion
	}
	for i := range f.Mappings {
		src, p := &f.Mappings[i].Source, fmt.Sprintf("mappings[%d].source.", i)
		if k := src.Kafka; k != nil && !set(p+"kafka.pollInterval") && k.PollInterval == 0 {
			k.PollInterval = Duration(100 * time.Millisecond)
		}
		if k := src.Kafka; k != nil && k.Group != "" && !set(p+"kafka.sessionTimeout") && k.SessionTimeout == 0 {
			k.SessionTimeout = Duration(10 * time.Second)
		}
		if r := src.Redis; r != nil {
			if !set(p+"redis.addr") && r.Addr == "" {
				r.Addr = "127.0.0.1:6379"
			}
			if !set(p+"redis.name") && r.Name == "" && len(r.Keys) > 0 {
				r.Name = r.Keys[0]
			}
		}
	}
	if pg := f.Store.Postgres; pg != nil && !set("store.postgres.schema") && pg.Schema == "" {
		pg.Schema = "idem"
	}
	if d := f.Store.DynamoDB; d != nil && !set("store.dynamodb.table") && d.Table == "" {
		d.Table = "idem"
	}
	if r := f.Store.Redis; r != nil {
		if !set("store.redis.addr") && r.Addr == "" {
			r.Addr = "127.0.0.1:6379"
		}
		if !set("store.redis.prefix") && r.Prefix == "" {
			r.Prefix = "idem"
		}
	}
	for i := range f.Streams {
		s, p := &f.Streams[i], fmt.Sprintf("streams[%d].", i)
		if !set(p+"shards") && s.Shards == 0 {
			s.Shards = defaultShards
		}
		if !set(p+"retention") && s.Retention == 0 {
			s.Retention = defaultRetention
		}
	}
	for i := range f.Functions {
		fn, p := &f.Functions[i], fmt.Sprintf("functions[%d].", i)
		if !set(p+"timeout") && fn.Timeout == 0 {
			fn.Timeout = defaultTimeout
		}
		if pf := fn.Process; pf != nil {
			if !set(p+"process.concurrency") && pf.Concurrency == 0 {
				pf.Concurrency = 1
			}
			if !set(p+"process.memorySize") && pf.MemorySize == 0 {
				pf.MemorySize = 128
			}
			if !set(p+"process.region") && pf.Region == "" {
				pf.Region = f.Region
			}
		}
	}
	for i := range f.Mappings {
		m, p := &f.Mappings[i], fmt.Sprintf("mappings[%d].", i)
		if !set(p+"batchSize") && m.BatchSize == 0 {
			m.BatchSize = defaultBatchSize
		}
		if !set(p+"maximumRetryAttempts") && m.MaximumRetryAttempts == 0 {
			m.MaximumRetryAttempts = defaultMaximumRetryAttempts
		}
		if !set(p+"maximumRecordAge") && m.MaximumRecordAge == 0 {
			m.MaximumRecordAge = defaultMaximumRecordAge
		}
		if !set(p+"parallelizationFactor") && m.ParallelizationFactor == 0 {
			m.ParallelizationFactor = defaultParallelizationFactor
		}
		if !set(p+"eventFormat") && m.EventFormat == "" {
			switch {
			case m.Source.Kafka != nil:
				m.EventFormat = eventFormatKafka
			case m.Source.DynamoDB != nil:
				m.EventFormat = eventFormatDynamoDB
			default:
				m.EventFormat = eventFormatKinesis
			}
		}
		if !set(p+"retry.baseDelay") && m.Retry.BaseDelay == 0 {
			m.Retry.BaseDelay = defaultBaseDelay
		}
		if !set(p+"retry.maxDelay") && m.Retry.MaxDelay == 0 {
			m.Retry.MaxDelay = defaultMaxDelay
		}
		if !set(p+"idempotency.scope") && m.Idempotency.Scope == "" {
			m.Idempotency.Scope = m.Function
		}
		if !set(p+"idempotency.retention") && m.Idempotency.Retention == 0 {
			if s := f.Stream(m.Source.Stream); s != nil && m.Source.Stream != "" {
				m.Idempotency.Retention = s.Retention
			}
		}
		if !set(p+"enabled") && !m.Enabled {
			m.Enabled = true
		}
	}
	f.applyInvokeDefaults(set)
	f.applyLeaseDefaults(set)
}
