// Package kinesis is the source driver over an Amazon Kinesis data stream,
// so that idem runs functions over Kinesis with the event source mapping
// semantics AWS Lambda has, and exactly-once effects Lambda lacks.
//
// # Delivery semantics
//
// Records are read in shard order, each at least once; the engine keeps the
// checkpoint in its own store, never in Kinesis (no DynamoDB lease table, no
// KCL). A record's Sequence is its Kinesis SequenceNumber, verbatim: the
// same 56-digit string on every read, so the default idempotency key
// (stream/shardId/sequence) and batchItemFailures match Lambda's.
//
// # Reading
//
// Kinesis reads through shard iterators. Read keeps, per shard, a few
// cursors: the iterator that follows the last record it returned and the
// records GetRecords returned that the caller has not taken yet (a
// GetRecords call asks for up to 10,000 records, as Lambda does, and Read
// hands out at most limit records and maxBytes of data). The next Read from
// that record continues without another GetShardIterator; a Read from any
// other position gets a new iterator. Records are never dropped: what a Read
// does not return stays buffered for the next. A cursor holds at most one
// GetRecords answer (10 MiB at most), and a shard keeps four cursors: one per
// mapping reading it, and a spare.
//
// Kinesis allows five GetRecords calls a second per shard, shared by every
// consumer: a Source spaces its calls on a shard by the poll interval
// (WithPollInterval, default 250ms), and Wait sleeps until the next call is
// allowed. When Kinesis throttles anyway (ProvisionedThroughputExceeded,
// LimitExceeded), Read backs off and retries a few times, then returns no
// records and no error: the engine waits and reads again. Unlike the
// source.Driver default of one attempt, this driver sleeps and retries,
// because Kinesis' per-shard limits make throttling routine, not a failure.
//
// # Positions
//
// Start positions are real sequence numbers where Kinesis has one, and
// otherwise one below a real sequence number:
//   - TRIM_HORIZON is "", the position before the shard's first record;
//   - LATEST is the sequence number of the shard's newest record ("" for a
//     shard that holds none). Kinesis has no call that returns it: Start reads
//     the shard's tail, from TRIM_HORIZON when the whole shard fits in one
//     GetRecords answer, or else from AT_TIMESTAMP iterators a few seconds,
//     minutes or hours back until one finds records. A LATEST mapping so skips
//     every record that was in the shard when it started and sees every later
//     one;
//   - AT_TIMESTAMP is one below the sequence number of the first record that
//     arrived at or after the time, or the LATEST position when none did.
//
// A position one below a record (AT_TIMESTAMP, and Trimmed below) may not
// be a sequence number Kinesis accepts: Read then asks for an iterator at the
// next number, which is the record's own.
//
// # Latest and lag
//
// ReadResult.Latest is an approximation: Kinesis does not report a shard's
// newest sequence number. It is the newest record any GetRecords call of the
// Source returned, which is the shard's newest record whenever that call's
// MillisBehindLatest was 0 (the reader was at the tip). A reader far behind
// sees Latest grow as it reads; use the iterator age (MillisBehindLatest) for
// how far behind it is.
//
// # Loss to retention
//
// Kinesis numbers records with gaps, and does not say how many records
// retention removed. When Read starts from a position whose record is no
// longer in the shard (the iterator at that sequence number starts at a later
// record, Kinesis refuses the sequence number and the shard's oldest record is
// above it, or the iterator reads nothing while more than the retention period
// behind), it reports Lost = 1, meaning "records may have been lost", and
// Trimmed one below the first record kept. The exception is a first record
// exactly one above the position: then nothing can be missing. The report can
// be a false alarm when only the checkpointed record itself expired (a stream
// idle for longer than its retention); it is never silent when records after
// the position were removed while the shard still holds later records. A read
// from "" (TRIM_HORIZON) never reports a loss: there is no earlier position to
// compare with.
//
// # Resharding
//
// Shards lists every shard ListShards returns: the open shards and the closed
// ones (parents of a split or merge) that still hold records within the
// retention period. A closed shard ends: once Read has returned its last
// record, Read returns no records and Finished reports true. Records of a key
// move to the children at a reshard, so reading them in order needs the
// engine to start a child only after its parents are finished, and to list
// shards again to discover children: ShardInfos and Parents give it the
// ParentShardId and AdjacentParentShardId it needs. Until it does, a reshard
// needs the mappings restarted, and order across the parent and child is not
// kept.
package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/awsconfig"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/internal/shards"
)

// DefaultPollInterval is the spacing of GetRecords calls on one shard, and
// so how long Wait sleeps on a shard with nothing new: four calls a second,
// under Kinesis' limit of five per shard.
const DefaultPollInterval = 250 * time.Millisecond

// ErrClosed is returned by the methods of a Source after Close.
var ErrClosed = errors.New("kinesis: source closed")

// api is the part of *kinesis.Client a Source calls; tests replace it.
type api interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

var _ api = (*kinesis.Client)(nil)

// Option configures New.
type Option func(*options)

type options struct {
	client   *kinesis.Client
	endpoint string
	region   string
	poll     time.Duration
	log      *slog.Logger
}

// WithClient makes the Source use client, configured by the caller
// (credentials, region, endpoint, retries). WithEndpoint and WithRegion are
// then ignored.
func WithClient(client *kinesis.Client) Option {
	return func(o *options) { o.client = client }
}

// WithEndpoint sends requests to url instead of AWS' endpoint for the
// region: a local Kinesis such as kinesalite, or a VPC endpoint. When no
// credentials are configured (no AWS_ACCESS_KEY_ID, AWS_PROFILE or shared
// credentials file), static dummy credentials are used, as local emulators
// accept any.
func WithEndpoint(url string) Option {
	return func(o *options) { o.endpoint = url }
}

// WithRegion sets the AWS region; otherwise the SDK's default chain
// (AWS_REGION, the shared config file) decides, and us-east-1 is used with
// WithEndpoint when it finds none.
func WithRegion(region string) Option {
	return func(o *options) { o.region = region }
}

// WithPollInterval sets the minimum spacing of GetRecords calls on one
// shard, which is also how long Wait sleeps when nothing is known to be
// new. Kinesis allows five calls a second per shard across all consumers:
// below 200ms, or with several consumers of a stream, expect throttling
// (which Read survives, at the cost of latency). Values of 0 or below keep
// DefaultPollInterval.
func WithPollInterval(d time.Duration) Option {
	return func(o *options) { o.poll = d }
}

// WithLogger sets where the Source logs throttling, expired iterators and
// suspected loss, at debug and warn levels. Default: nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// Source is one Kinesis data stream as a source.Driver. It is safe for
// concurrent use; it starts no goroutines.
type Source struct {
	api    api
	stream string
	log    *slog.Logger
	poll   time.Duration

	retention atomic.Int64 // nanoseconds
	done      chan struct{}
	closeOnce sync.Once

	listMu sync.Mutex // one ListShards walk at a time
	shards shards.Set[types.Record]
}

var _ source.Driver = (*Source)(nil)

// ShardInfo describes one shard as ListShards reports it: its parents,
// and its sequence range, whose end says it was closed by a reshard.
type ShardInfo = shards.Info

// New returns the Source over the Kinesis data stream named stream. It
// checks that the stream exists (an error wrapping source.ErrStreamNotFound
// otherwise) and reads its retention period.
func New(ctx context.Context, stream string, opts ...Option) (*Source, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	client := o.client
	if client == nil {
		c, err := newClient(ctx, o)
		if err != nil {
			return nil, err
		}
		client = c
	}
	return newSource(ctx, client, stream, o)
}

func newClient(ctx context.Context, o options) (*kinesis.Client, error) {
	cfg, err := awsconfig.Load(ctx, o.region, o.endpoint)
	if err != nil {
		return nil, fmt.Errorf("kinesis: %w", err)
	}
	return kinesis.NewFromConfig(cfg, func(ko *kinesis.Options) {
		if o.endpoint != "" {
			ko.BaseEndpoint = aws.String(o.endpoint)
		}
	}), nil
}

func newSource(ctx context.Context, client api, stream string, o options) (*Source, error) {
	s := &Source{
		api:    client,
		stream: stream,
		log:    o.log,
		poll:   o.poll,
		done:   make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.poll <= 0 {
		s.poll = DefaultPollInterval
	}
	s.log = s.log.With("stream", stream)
	if err := s.refreshRetention(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Stream is the name of the Kinesis stream s reads.
func (s *Source) Stream() string { return s.stream }

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

// Retention is the stream's retention period (RetentionPeriodHours), as
// DescribeStreamSummary reported it at New or the last Shards call. Kinesis
// defines it as the time from when a record is added to when it is no
// longer accessible, so it bounds how long a record is served with no
// margin added; a closed shard expires with its last records.
func (s *Source) Retention() time.Duration { return time.Duration(s.retention.Load()) }

func (s *Source) refreshRetention(ctx context.Context) error {
	out, err := s.api.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(s.stream)})
	if err != nil {
		return s.wrap(err, "", "describing stream")
	}
	if out.StreamDescriptionSummary == nil {
		return fmt.Errorf("kinesis: describing stream %q: empty answer", s.stream)
	}
	hours := aws.ToInt32(out.StreamDescriptionSummary.RetentionPeriodHours)
	if hours <= 0 {
		hours = 24
	}
	s.retention.Store(int64(time.Duration(hours) * time.Hour))
	return nil
}

// Shards lists the IDs of the stream's shards that ListShards returns, open
// and closed, in reading order: by ID, parents (created first) before their
// children (shards.Sort). It also refreshes Retention.
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	infos, err := s.ShardInfos(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.refreshRetention(ctx); err != nil {
		return nil, err
	}
	ids := make([]string, len(infos))
	for i, in := range infos {
		ids[i] = in.ID
	}
	return ids, nil
}

// ShardInfos lists the stream's shards with their parents and sequence
// ranges, in reading order (by ID, children after their parents).
func (s *Source) ShardInfos(ctx context.Context) ([]ShardInfo, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	var infos []ShardInfo
	in := &kinesis.ListShardsInput{StreamName: aws.String(s.stream)}
	for {
		out, err := s.api.ListShards(ctx, in)
		if err != nil {
			return nil, s.wrap(err, "", "listing shards")
		}
		for _, sh := range out.Shards {
			info := ShardInfo{
				ID:               aws.ToString(sh.ShardId),
				ParentID:         aws.ToString(sh.ParentShardId),
				AdjacentParentID: aws.ToString(sh.AdjacentParentShardId),
			}
			if r := sh.SequenceNumberRange; r != nil {
				info.StartingSequence = idem.Sequence(aws.ToString(r.StartingSequenceNumber))
				info.EndingSequence = idem.Sequence(aws.ToString(r.EndingSequenceNumber))
			}
			infos = append(infos, info)
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		// Kinesis takes NextToken without StreamName.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
	shards.Sort(infos)
	if s.closed() || !s.shards.Update(infos) {
		return nil, ErrClosed
	}
	return slices.Clone(infos), nil
}

// Parents returns the IDs of shard's parents (none for an original shard):
// the engine must finish reading them before it reads shard, to keep the
// order of each partition key across a reshard. A parent may have expired
// and no longer be listed: nothing more can be read from it, and the engine
// counts a loss if its checkpoint shows it was not read to its end.
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
	}, "kinesis", fmt.Sprintf("stream %q", s.stream))
}

// sleep waits d, or until ctx is done or s is closed.
func (s *Source) sleep(ctx context.Context, d time.Duration) error {
	return shards.Sleep(ctx, d, s.done, ErrClosed)
}
