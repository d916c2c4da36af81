// Package dynamodb is the source driver over an Amazon DynamoDB table's
// stream (DynamoDB Streams), so that idem runs functions over a table's
// changes with the event source mapping semantics AWS Lambda has, and
// exactly-once effects Lambda lacks.
//
// # Records
//
// Each stream record (an item's INSERT, MODIFY or REMOVE) is one
// idem.Record: Sequence is its SequenceNumber, verbatim (the same decimal
// string on every read, so the default idempotency key, stream/shard/
// sequence, names the change itself, and a renamed mapping replays
// nothing); PartitionKey is the item's partition key value (a string or
// number as written, a binary in base64), so records of one item keep
// their order with a parallelizationFactor above 1; ArrivalTime is its
// ApproximateCreationDateTime; Data is the record as a record of Lambda's
// DynamoDBEvent holds it, in JSON: eventID, eventName, eventVersion,
// eventSource, awsRegion, dynamodb (ApproximateCreationDateTime, Keys,
// NewImage, OldImage with DynamoDB's typed attribute values,
// SequenceNumber, SizeBytes, StreamViewType) and eventSourceARN, the
// stream's ARN.
//
// # Shards and order
//
// A DynamoDB stream's shards roll over: DynamoDB closes each open shard
// every few hours (with an EndingSequenceNumber) and opens a child naming it
// as its ParentShardId, and a partition split gives a shard two children.
// The records of one item go to one shard at a time, so reading them in
// order needs a child read only once its parent is read to its end: the
// Source implements source.Lineage with the Kinesis source's shard logic
// (package source/internal/shards), and the engine orders children after
// their parents. Shards lists every shard DescribeStream returns, open and
// closed, parents first.
//
// # Reading
//
// Reads go through shard iterators, which expire after 15 minutes. Read
// keeps, per shard, a few cursors, each the iterator that follows the last
// record it returned and the records fetched beyond (GetRecords asks for
// 1000, its maximum, as Lambda does). An iterator that expired or is older
// than 14 minutes is made again from the reader's position, the engine's
// checkpoint (AFTER_SEQUENCE_NUMBER): nothing is skipped, nothing read
// twice. DynamoDB Streams throttles more than two readers of a shard: a
// Source spaces its calls on a shard by the poll interval
// (WithPollInterval, default 250ms, four calls a second as Lambda polls),
// and Wait sleeps until the next call is allowed. Throttling
// (LimitExceededException) is retried a few times, then Read returns no
// records and no error: the engine reads again.
//
// # Starting positions
//
// TRIM_HORIZON and LATEST, as Lambda allows for DynamoDB. Start refuses
// AT_TIMESTAMP (ErrAtTimestamp): DynamoDB Streams has no such iterator.
// TRIM_HORIZON is one below the shard's StartingSequenceNumber: the
// position before its first record, which DynamoDB can still report as
// trimmed (a shard read late, a child read after a slow parent). LATEST is
// the sequence number of the shard's newest record: DynamoDB has no call
// that returns it, so Start reads an open shard from TRIM_HORIZON until an
// answer is empty (at most 100 answers), and settles for the newest record
// it found; a LATEST mapping so skips the records that were in the shard
// when it started, and when DynamoDB answers empty before the tip, or the
// shard holds more than 100,000 records, reads a few too many, never too
// few. LATEST on a closed shard is its EndingSequenceNumber: nothing left.
//
// # Loss to retention
//
// DynamoDB Streams keeps records 24 hours. When a reader's position is
// older than that, GetShardIterator or GetRecords answers
// TrimmedDataAccessException: Read then reads from TRIM_HORIZON and reports
// Lost = 1 ("records were lost"; DynamoDB does not say how many) with
// Trimmed one below the first record kept, so the engine counts and logs the
// loss and moves on. A closed shard that DynamoDB dropped (24 hours after it
// closed) with records its reader had not read is a loss too, reported the
// same way with Trimmed at the shard's end. The report can be a false alarm
// when only the checkpointed record itself was trimmed.
package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/awsconfig"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/internal/shards"
)

const (
	// DefaultPollInterval is the spacing of GetRecords calls on one shard,
	// and so how long Wait sleeps on a shard with nothing new: four calls a
	// second, as Lambda polls a DynamoDB stream's shards.
	DefaultPollInterval = 250 * time.Millisecond
	// Retention is what Retention reports: DynamoDB Streams keeps records
	// 24 hours, and trims them later than that, not at once ("subject to
	// removal"); an hour's margin covers the lag.
	Retention = 25 * time.Hour
)

// ErrClosed is returned by the methods of a Source after Close.
var ErrClosed = errors.New("dynamodb: source closed")

// ErrAtTimestamp is returned by Start for AT_TIMESTAMP, which DynamoDB
// Streams has no iterator for and Lambda refuses for DynamoDB.
var ErrAtTimestamp = errors.New("startingPosition AT_TIMESTAMP is not supported by DynamoDB Streams (as on Lambda): use TRIM_HORIZON or LATEST")

// streamsAPI is the part of *dynamodbstreams.Client a Source calls; tests
// replace it.
type streamsAPI interface {
	DescribeStream(ctx context.Context, in *dynamodbstreams.DescribeStreamInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error)
	GetShardIterator(ctx context.Context, in *dynamodbstreams.GetShardIteratorInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *dynamodbstreams.GetRecordsInput, opts ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error)
}

// tablesAPI is the part of *dynamodb.Client New calls, to find a table's
// stream.
type tablesAPI interface {
	DescribeTable(ctx context.Context, in *awsddb.DescribeTableInput, opts ...func(*awsddb.Options)) (*awsddb.DescribeTableOutput, error)
}

var (
	_ streamsAPI = (*dynamodbstreams.Client)(nil)
	_ tablesAPI  = (*awsddb.Client)(nil)
)

// Option configures New.
type Option func(*options)

type options struct {
	table, arn string
	streams    streamsAPI
	tables     tablesAPI
	endpoint   string
	region     string
	poll       time.Duration
	log        *slog.Logger
}

// WithTable reads the latest stream of the named table, which DescribeTable
// finds (its LatestStreamArn): the table must have a stream enabled. Set
// WithTable or WithStreamARN.
func WithTable(name string) Option { return func(o *options) { o.table = name } }

// WithStreamARN reads the stream with this ARN
// (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL), which need not
// be the table's latest: a disabled stream is still read for the 24 hours
// its records are kept. Set WithTable or WithStreamARN.
func WithStreamARN(arn string) Option { return func(o *options) { o.arn = arn } }

// WithClients makes the Source use clients the caller configured
// (credentials, region, endpoint, retries); tables may be nil with
// WithStreamARN. WithEndpoint and WithRegion are then ignored.
func WithClients(streams *dynamodbstreams.Client, tables *awsddb.Client) Option {
	return func(o *options) {
		o.streams = streams
		if tables != nil {
			o.tables = tables
		}
	}
}

// WithEndpoint sends requests (DynamoDB's and DynamoDB Streams') to url
// instead of AWS' endpoints for the region: a local emulator or a VPC
// endpoint. Without configured credentials, placeholder ones are used (see
// internal/awsconfig).
func WithEndpoint(url string) Option { return func(o *options) { o.endpoint = url } }

// WithRegion sets the AWS region; otherwise the SDK's default chain
// (AWS_REGION, the shared config file) decides.
func WithRegion(region string) Option { return func(o *options) { o.region = region } }

// WithPollInterval sets the minimum spacing of GetRecords calls on one
// shard, which is also how long Wait sleeps when nothing is known to be
// new. Faster polling, or more than two readers of a shard, meets
// DynamoDB's throttling (retried, then the poll waits). Values of 0 or
// below keep DefaultPollInterval.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithLogger sets where the Source logs throttling, expired iterators and
// loss, at debug and warn levels. Default: nothing is logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Source is one DynamoDB stream as a source.Driver and source.Lineage. It
// is safe for concurrent use; it starts no goroutines.
type Source struct {
	api     streamsAPI
	arn     string
	table   string
	hashKey string
	log     *slog.Logger
	poll    time.Duration

	done      chan struct{}
	closeOnce sync.Once

	listMu sync.Mutex // one DescribeStream walk at a time
	shards shards.Set[idem.Record]
}

var (
	_ source.Driver  = (*Source)(nil)
	_ source.Lineage = (*Source)(nil)
)

// New returns the Source over a table's stream (WithTable, whose
// LatestStreamArn DescribeTable gives) or a stream (WithStreamARN). It
// checks that the stream exists (an error wrapping source.ErrStreamNotFound
// otherwise, also for a table with no stream enabled) and reads its key
// schema.
func New(ctx context.Context, opts ...Option) (*Source, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.table == "" && o.arn == "":
		return nil, errors.New("dynamodb: set a table (WithTable) or a stream ARN (WithStreamARN)")
	case o.table != "" && o.arn != "":
		return nil, errors.New("dynamodb: set a table (WithTable) or a stream ARN (WithStreamARN), not both")
	}
	if o.streams == nil || (o.arn == "" && o.tables == nil) {
		cfg, err := awsconfig.Load(ctx, o.region, o.endpoint)
		if err != nil {
			return nil, fmt.Errorf("dynamodb: %w", err)
		}
		if o.streams == nil {
			o.streams = dynamodbstreams.NewFromConfig(cfg, func(so *dynamodbstreams.Options) {
				if o.endpoint != "" {
					so.BaseEndpoint = aws.String(o.endpoint)
				}
			})
		}
		if o.tables == nil {
			o.tables = awsddb.NewFromConfig(cfg, func(do *awsddb.Options) {
				if o.endpoint != "" {
					do.BaseEndpoint = aws.String(o.endpoint)
				}
			})
		}
	}
	return newSource(ctx, o)
}

func newSource(ctx context.Context, o options) (*Source, error) {
	s := &Source{api: o.streams, arn: o.arn, table: o.table, log: o.log, poll: o.poll, done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.poll <= 0 {
		s.poll = DefaultPollInterval
	}
	if s.arn == "" {
		arn, err := latestStream(ctx, o.tables, s.table)
		if err != nil {
			return nil, err
		}
		s.arn = arn
	}
	out, err := s.api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.arn), Limit: aws.Int32(1)})
	if err != nil {
		return nil, s.wrap(err, "", "describing the stream")
	}
	d := out.StreamDescription
	if d == nil {
		return nil, fmt.Errorf("dynamodb: stream %s: DescribeStream gave no description", s.arn)
	}
	if s.table == "" {
		s.table = aws.ToString(d.TableName)
	}
	for _, k := range d.KeySchema {
		if k.KeyType == types.KeyTypeHash {
			s.hashKey = aws.ToString(k.AttributeName)
		}
	}
	s.log = s.log.With("table", s.table, "streamArn", s.arn)
	if d.StreamStatus == types.StreamStatusDisabled {
		s.log.Warn("dynamodb: the stream is disabled: its records are read until DynamoDB drops them, 24 hours after they were written")
	}
	return s, nil
}

// latestStream returns the ARN of table's enabled stream.
func latestStream(ctx context.Context, api tablesAPI, table string) (string, error) {
	out, err := api.DescribeTable(ctx, &awsddb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		if shards.HasCode(err, "ResourceNotFoundException") {
			return "", fmt.Errorf("dynamodb: table %q: %w: %w", table, source.ErrStreamNotFound, err)
		}
		return "", fmt.Errorf("dynamodb: describing table %q: %w", table, err)
	}
	t := out.Table
	if t == nil || aws.ToString(t.LatestStreamArn) == "" || t.StreamSpecification == nil || !aws.ToBool(t.StreamSpecification.StreamEnabled) {
		return "", fmt.Errorf("dynamodb: table %q has no stream enabled (enable one with a StreamSpecification, view type NEW_AND_OLD_IMAGES for both images): %w", table, source.ErrStreamNotFound)
	}
	return aws.ToString(t.LatestStreamArn), nil
}

// StreamARN is the ARN of the stream s reads, which functions get as their
// records' eventSourceARN.
func (s *Source) StreamARN() string { return s.arn }

// Table is the name of the table whose stream s reads: its records'
// Stream.
func (s *Source) Table() string { return s.table }

// Close releases the buffered records and makes pending Waits return. Calls
// after Close return ErrClosed. It never fails.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		s.shards.Close()
	})
	return nil
}

func (s *Source) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Retention is 25 hours: the 24 hours DynamoDB Streams keeps records, and
// a margin for its trimming, which is not instant.
func (s *Source) Retention() time.Duration { return Retention }

// Shards lists the IDs of the stream's shards that DescribeStream returns,
// open and closed, in reading order (parents before their children).
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	infos, err := s.ShardInfos(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(infos))
	for i, in := range infos {
		ids[i] = in.ID
	}
	return ids, nil
}

// ShardInfo describes one shard as DescribeStream reports it: its parent,
// and its sequence range, whose end says it was closed.
type ShardInfo = shards.Info

// ShardInfos lists the stream's shards with their parents and sequence
// ranges, in reading order.
func (s *Source) ShardInfos(ctx context.Context) ([]ShardInfo, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	var infos []ShardInfo
	in := &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.arn)}
	for {
		out, err := s.api.DescribeStream(ctx, in)
		if err != nil {
			return nil, s.wrap(err, "", "listing shards")
		}
		d := out.StreamDescription
		if d == nil {
			return nil, fmt.Errorf("dynamodb: stream %s: DescribeStream gave no description", s.arn)
		}
		for _, sh := range d.Shards {
			info := ShardInfo{ID: aws.ToString(sh.ShardId), ParentID: aws.ToString(sh.ParentShardId)}
			if r := sh.SequenceNumberRange; r != nil {
				info.StartingSequence = idem.Sequence(aws.ToString(r.StartingSequenceNumber))
				info.EndingSequence = idem.Sequence(aws.ToString(r.EndingSequenceNumber))
			}
			infos = append(infos, info)
		}
		if aws.ToString(d.LastEvaluatedShardId) == "" {
			break
		}
		in = &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.arn), ExclusiveStartShardId: d.LastEvaluatedShardId}
	}
	shards.Sort(infos)
	if s.closed() || !s.shards.Update(infos) {
		return nil, ErrClosed
	}
	return infos, nil
}

// Parents returns the shard a shard rolled over or split from (none for a
// stream's first shards): the engine reads it to its end first. A parent
// no longer listed has expired.
func (s *Source) Parents(ctx context.Context, shardID string) ([]string, error) {
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return nil, err
	}
	return sh.Info().Parents(), nil
}

// shard returns the state of shardID, listing the shards again when it is
// not known yet; the error wraps source.ErrShardNotFound when the stream
// has no such shard.
func (s *Source) shard(ctx context.Context, shardID string) (*shard, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	return s.shards.Find(ctx, shardID, func(ctx context.Context) error {
		_, err := s.ShardInfos(ctx)
		return err
	}, "dynamodb", "stream "+s.arn)
}

// sleep waits d, or until ctx is done or s is closed.
func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	return shards.Sleep(ctx, d, s.done, ErrClosed)
}

// record makes the idem.Record of a stream record.
func (s *Source) record(shardID string, r types.Record) (idem.Record, error) {
	data, err := encodeRecord(r, s.arn)
	if err != nil {
		return idem.Record{}, fmt.Errorf("dynamodb: stream %s shard %s: encoding a record: %w", s.arn, shardID, err)
	}
	rec := idem.Record{Stream: s.table, ShardID: shardID, Data: data}
	if d := r.Dynamodb; d != nil {
		rec.Sequence = idem.Sequence(aws.ToString(d.SequenceNumber))
		rec.ArrivalTime = aws.ToTime(d.ApproximateCreationDateTime)
		if s.hashKey != "" {
			rec.PartitionKey = keyString(d.Keys[s.hashKey])
		}
	}
	if !rec.Sequence.Valid() || rec.Sequence == "" {
		return idem.Record{}, fmt.Errorf("dynamodb: stream %s shard %s: a record's SequenceNumber %q is not a decimal number", s.arn, shardID, rec.Sequence)
	}
	return rec, nil
}
