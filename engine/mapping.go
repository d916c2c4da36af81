package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/jmespath/go-jmespath"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/source"
)

// Limits of the settings, as AWS Lambda documents them for stream event
// source mappings.
const (
	MaxBatchSize             = 10000
	MaxBatchingWindow        = 300 * time.Second
	MaxRetryAttempts         = 10000
	MinRecordAge             = 60 * time.Second
	MaxRecordAge             = 604800 * time.Second
	MaxParallelizationFactor = 10
	// MaxBatchBytes is Lambda's 6 MB invocation payload limit: a batch holds
	// at most the records whose whole event (function.EventSize: base64
	// data, each record's JSON envelope, a tumbling window's state) fits in
	// it, not their raw data. A record whose event alone is larger is
	// never invoked: it goes to the on-failure destination with the
	// condition MaximumPayloadSizeExceeded.
	MaxBatchBytes = 6 << 20
)

// Mapping is one event source mapping: which stream feeds which function,
// and how. The zero values of the optional fields mean AWS's defaults;
// Validate reports every setting out of range at once.
type Mapping struct {
	// Name identifies the mapping; its checkpoints are kept under it.
	Name string
	// Stream names the source stream (for logs, events and keys).
	Stream string
	// Source reads the stream. Required.
	Source source.Driver
	// Function names the function (for events and the default scope).
	Function string
	// Invoker invokes the function. Required.
	Invoker function.Driver
	// FunctionTimeout bounds one invocation. Default: 3s.
	FunctionTimeout time.Duration

	// BatchSize is the most records per invocation. Default: 100; 1 to 10,000.
	BatchSize int
	// MaximumBatchingWindow is how long to gather records before invoking
	// with a batch that is not full. Default: 0; at most 300s.
	MaximumBatchingWindow time.Duration
	// StartingPosition is where a mapping without a checkpoint starts.
	// Required.
	StartingPosition source.StartingPosition
	// StartingPositionTimestamp is used with AT_TIMESTAMP.
	StartingPositionTimestamp time.Time
	// BisectBatchOnFunctionError splits a failed batch in two and retries
	// each half; splits do not count as retries. Default: false.
	BisectBatchOnFunctionError bool
	// MaximumRetryAttempts: -1 retries until the record expires; 0 to 10,000.
	// Default: -1. Use RetryAttempts to set it, since 0 is a valid setting.
	MaximumRetryAttempts int
	// MaximumRecordAge discards records older than it (RecordAgeExceeded).
	// Default: 0, no limit; else 60s to 604,800s.
	MaximumRecordAge time.Duration
	// OnFailure names the stream that receives discarded batches: the
	// metadata record and the records. Default: none (discards are logged).
	OnFailure string
	// ParallelizationFactor is the number of concurrent batches per shard;
	// records of one partition key stay in order and never run concurrently.
	// Default: 1; 1 to 10.
	ParallelizationFactor int
	// ReportBatchItemFailures makes the function's batchItemFailures set the
	// checkpoint. Default: false (a result is ignored).
	ReportBatchItemFailures bool
	// PermanentErrorTypes lists function error types that skip the remaining
	// retries: a record that fails because of its data is discarded at once.
	PermanentErrorTypes []string

	// EventFormat is the Lambda event shape the function receives, set on
	// every Batch: "" or idem.EventFormatKinesis for KinesisEvent,
	// idem.EventFormatKafka for KafkaEvent (for a Kafka source),
	// idem.EventFormatS3 for S3Event (for any source whose records are S3
	// event notifications: keys default to the notification's identity,
	// test notifications are filtered out, and a record that is not a
	// notification is discarded; see s3format.go),
	// idem.EventFormatDynamoDB for DynamoDBEvent (for any source whose
	// records are DynamoDB changes, from DynamoDB Streams or Kinesis Data
	// Streams for DynamoDB: filters and key expressions read the converted
	// record, a batchItemFailures itemIdentifier is its SequenceNumber, and
	// a record that is no change is discarded; see ddbformat.go). An
	// S3Event has neither a window nor an item identifier: S3Event refuses
	// TumblingWindow and ReportBatchItemFailures. Default: KinesisEvent.
	EventFormat idem.EventFormat

	// TumblingWindow, when positive, groups each shard's records by arrival
	// time into windows of this length (up to MaxTumblingWindow): a batch
	// never spans two, each invocation gets the state its window's previous
	// invocation returned (idem.Batch.Window, BatchResult.State), committed
	// with the checkpoint, and a last invocation with no records and
	// Window.Final closes the window. Needs ParallelizationFactor 1 and
	// KinesisEvent or DynamoDBEvent (a DynamoDBTimeWindowEvent). Default:
	// 0, no windows.
	TumblingWindow time.Duration

	// Filters are filterCriteria patterns (EventBridge syntax, up to
	// MaxFilters, ORed): a record that matches none is skipped and
	// checkpointed, never delivered nor retried. KinesisEvent records are
	// filtered on {"data": …} (their data as JSON), KafkaEvent records on
	// value, key, topic, partition, offset, timestamp and timestampType,
	// S3Event records on their notification document ({"Records": …}),
	// DynamoDBEvent records on the record itself ({"eventName": …,
	// "dynamodb": {"NewImage": …}}). Default: none, every record is
	// delivered.
	Filters []string

	// Scope is the idempotency scope: records COMPLETED in it are not
	// delivered again, across mapping renames. Default: the function's name.
	Scope string
	// KeyExpression, when set, is a JMESPath expression over the record's data
	// as JSON whose value is the idempotency key. Default: the record's
	// identity, stream/shardId/sequence.
	KeyExpression string
	// MarkRetention is how long completion marks are kept. Each commit
	// keeps its marks for the longer of this and the source's retention
	// at that moment (source.Driver.Retention: how long the source may
	// still serve a record, which may grow while it runs), so a replay of
	// retained records never runs one twice. Default: the source's
	// retention.
	MarkRetention time.Duration

	// AtLeastOnce turns idempotency off: no completion progress or marks are
	// kept or consulted, only the checkpoint. A replay runs records again.
	// It exists to measure what exactly-once costs. Default: false.
	AtLeastOnce bool

	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff, with
	// full jitter, between retries, and between restarts of a shard after
	// errors (counted from the last restart whose run committed anything).
	// Defaults: 100ms and 30s.
	RetryBaseDelay time.Duration
	RetryMaxDelay  time.Duration

	// retriesSet records that MaximumRetryAttempts was set explicitly.
	retriesSet bool
}

// RetryAttempts sets MaximumRetryAttempts; it exists because 0 is a valid
// setting and the field's zero value cannot tell it from "unset".
func (m *Mapping) RetryAttempts(n int) {
	m.MaximumRetryAttempts = n
	m.retriesSet = true
}

// withDefaults returns m with AWS's defaults filled in.
func (m Mapping) withDefaults() Mapping {
	if m.BatchSize == 0 {
		m.BatchSize = 100
	}
	if !m.retriesSet && m.MaximumRetryAttempts == 0 {
		m.MaximumRetryAttempts = -1
	}
	if m.ParallelizationFactor == 0 {
		m.ParallelizationFactor = 1
	}
	if m.Scope == "" {
		m.Scope = m.Function
	}
	if m.FunctionTimeout == 0 {
		m.FunctionTimeout = 3 * time.Second
	}
	if m.RetryBaseDelay == 0 {
		m.RetryBaseDelay = 100 * time.Millisecond
	}
	if m.RetryMaxDelay == 0 {
		m.RetryMaxDelay = 30 * time.Second
	}
	if m.MarkRetention == 0 && m.Source != nil {
		m.MarkRetention = m.Source.Retention()
	}
	return m
}

// Validate reports every problem of m at once, each naming the setting and
// its allowed range.
func (m Mapping) Validate() error {
	m = m.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.Name == "" {
		bad("name: required")
	}
	if m.Source == nil {
		bad("source: required")
	}
	if m.Invoker == nil {
		bad("function: required")
	}
	if m.BatchSize < 1 || m.BatchSize > MaxBatchSize {
		bad("batchSize: %d is outside 1 to %d", m.BatchSize, MaxBatchSize)
	}
	if m.MaximumBatchingWindow < 0 || m.MaximumBatchingWindow > MaxBatchingWindow {
		bad("maximumBatchingWindow: %s is outside 0s to %s", m.MaximumBatchingWindow, MaxBatchingWindow)
	}
	switch m.StartingPosition {
	case source.TrimHorizon, source.Latest:
	case source.AtTimestamp:
		if m.StartingPositionTimestamp.IsZero() {
			bad("startingPositionTimestamp: required with AT_TIMESTAMP")
		}
	case "":
		bad("startingPosition: required (TRIM_HORIZON, LATEST or AT_TIMESTAMP)")
	default:
		bad("startingPosition: %q is not TRIM_HORIZON, LATEST or AT_TIMESTAMP", m.StartingPosition)
	}
	if m.MaximumRetryAttempts < -1 || m.MaximumRetryAttempts > MaxRetryAttempts {
		bad("maximumRetryAttempts: %d is outside -1 to %d", m.MaximumRetryAttempts, MaxRetryAttempts)
	}
	if m.MaximumRecordAge > 0 && (m.MaximumRecordAge < MinRecordAge || m.MaximumRecordAge > MaxRecordAge) {
		bad("maximumRecordAge: %s is outside %s to %s", m.MaximumRecordAge, MinRecordAge, MaxRecordAge)
	}
	if m.ParallelizationFactor < 1 || m.ParallelizationFactor > MaxParallelizationFactor {
		bad("parallelizationFactor: %d is outside 1 to %d", m.ParallelizationFactor, MaxParallelizationFactor)
	}
	if m.OnFailure != "" && m.OnFailure == m.Stream {
		bad("destinationConfig.onFailure: %q is the mapping's own source stream", m.OnFailure)
	}
	if m.KeyExpression != "" {
		if _, err := jmespath.Compile(m.KeyExpression); err != nil {
			bad("idempotency.key: %q does not compile: %v", m.KeyExpression, err)
		}
	}
	if m.TumblingWindow < 0 || m.TumblingWindow > MaxTumblingWindow {
		bad("tumblingWindow: %s is outside 0s to %s", m.TumblingWindow, MaxTumblingWindow)
	}
	if m.TumblingWindow > 0 && m.ParallelizationFactor > 1 {
		bad("tumblingWindow: needs parallelizationFactor 1 (a shard has one window state), not %d", m.ParallelizationFactor)
	}
	if m.TumblingWindow > 0 && m.EventFormat == idem.EventFormatKafka {
		bad("tumblingWindow: not available with KafkaEvent (eventFormat kafka), as on Lambda")
	}
	if m.TumblingWindow > 0 && m.EventFormat == idem.EventFormatS3 {
		bad("tumblingWindow: not available with S3Event (eventFormat s3): an S3Event has no window")
	}
	if m.ReportBatchItemFailures && m.EventFormat == idem.EventFormatS3 {
		bad("functionResponseTypes: ReportBatchItemFailures is not available with S3Event (eventFormat s3): its records carry no item identifier a function could report; use bisectBatchOnFunctionError to isolate a failing record")
	}
	switch m.EventFormat {
	case "", idem.EventFormatKinesis, idem.EventFormatKafka, idem.EventFormatS3, idem.EventFormatDynamoDB:
		if _, err := compileFilters(m.EventFormat, m.Filters); err != nil {
			bad("%v", err)
		}
	default:
		bad("eventFormat: %q is not kinesis, kafka, s3 or dynamodb", m.EventFormat)
	}
	if m.RetryBaseDelay <= 0 || m.RetryMaxDelay < m.RetryBaseDelay {
		bad("retry: baseDelay %s must be positive and at most maxDelay %s", m.RetryBaseDelay, m.RetryMaxDelay)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("mapping %q: %w", m.Name, errors.Join(errs...))
}
