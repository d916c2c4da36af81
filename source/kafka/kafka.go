// Package kafka is the source driver over an Apache Kafka topic, or any
// broker that speaks Kafka's protocol (Redpanda, Amazon MSK, WarpStream…),
// read with franz-go.
//
// # Mapping
//
//   - The stream is a topic; its shards are the topic's partitions. A shard
//     ID is "<topic>-<partition>" ("orders-0"), the "topic-partition" key
//     under which Lambda's KafkaEvent groups records; ShardID builds one.
//   - A record's Sequence is its offset plus one, spelled by idem.SequenceOf
//     (20 digits): the record at offset 0 is "00000000000000000001". The
//     plus one is what makes the zero Sequence, the position before a
//     shard's first record, name the position before offset 0. A position
//     is then simply the next offset to read: reading after Sequence s
//     starts at offset s. RecordSequence and Offset convert; a function
//     driver that builds Lambda's KafkaEvent must report Offset(seq), not
//     the sequence.
//   - PartitionKey is the record's key as a string of its raw bytes, ""
//     for a record without a key: the keyless records of a partition form
//     one ordering group under parallelizationFactor, in offset order.
//   - Data is the value (nil for a tombstone); ArrivalTime is the record's
//     timestamp, CreateTime or LogAppendTime as the topic says.
//   - Headers are the record's headers, in order (nil when it has none).
//
// # Guarantees
//
// Reads are read_committed: records of aborted transactions are never
// delivered, records of open transactions only once they commit, and
// transaction markers are skipped (they take offsets, so sequences have
// gaps; Latest may name a marker). Read is exact and stateless from the
// caller's view: it returns the records at offsets at or above its
// position, in offset order, and never waits for records. The Source keeps,
// per partition, the records of its last fetch that it did not return yet,
// to save round trips for a reader that continues where it stopped; the
// only difference it can make is that a record trimmed after it was
// fetched is delivered rather than reported lost. A recreated topic (a new
// topic ID) drops the cache.
//
// Records that retention (or DeleteRecords) removed before they were read
// are reported, never skipped silently: when a partition's log start offset
// is above the position read, ReadResult.Lost is log start − position and
// ReadResult.Trimmed is the sequence of the record just below the log start.
// Lost counts offsets, so it also counts the transaction markers and
// compacted-away records of the lost range.
//
// A position beyond the end of a partition (the topic was deleted and
// recreated, or an unclean leader election truncated it) is an error
// wrapping ErrPositionAhead, not an empty read: records appended later at
// offsets below the position would otherwise be skipped without a trace.
//
// Retention is the longest a record can still be served after it was
// appended, which is longer than retention.ms: Kafka deletes whole segments,
// a segment only once its newest record is older than retention.ms, and
// checks every log.retention.check.interval.ms. The active segment rolls
// only after segment.ms (7 days by default), so a record appended just
// after a roll can be read for segment.ms + retention.ms + the check
// interval. A topic that never deletes by time (retention.ms -1, or a
// compacted topic without "delete") reports InfiniteRetention, so
// completion marks are kept as long as the records can be replayed.
// Shards reads the configuration again, so a changed retention.ms or
// segment.ms is seen within a discovery interval.
//
// # Requests
//
// Read issues one Fetch request (at most a few when the position was
// trimmed or only transaction markers follow it) straight to the
// partition's leader, with no fetch session and no wait. A reader behind
// the partition's end has its next records fetched, and decoded, ahead of
// it while it processes the last batch, as a kgo consumer's are: one
// goroutine per partition being read fetches until the cache holds two
// Reads' worth of records (so a partition's cache takes about three
// batches of memory at most) and ends there, at the partition's end, on an
// error (the Read that needs the records fetches again and reports it),
// after a fetch that moved nothing on, or at Close. A Read whose records are in flight waits for them, and one
// whose batch would come up short waits for the rest. The first fetch of a
// partition asks for at most 1 MiB, to learn how large its records are on
// the wire before asking for a batch's worth. Wait does not hold
// a long-polling fetch, which would queue every other fetch to that broker
// behind it: one goroutine per Source lists the last stable offsets of the
// topic's partitions every poll interval while anyone waits, and wakes the
// waiters whose partition moved. That goroutine is started by the first
// Wait and ends with Close.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// DefaultPollInterval is how often, by default, a Source lists end offsets
// while a Wait is pending: a new record wakes a waiter within about this
// long.
const DefaultPollInterval = 100 * time.Millisecond

// waitPolls is how many poll intervals a Wait blocks at most.
const waitPolls = 10

// InfiniteRetention is the Retention of a topic that never deletes records
// by age (retention.ms -1, or compaction without "delete"): about a hundred
// years, so that completion marks outlive any replay. It is not larger so
// that an expiry computed from it (now plus InfiniteRetention) still fits a
// time.Duration and a Unix time in nanoseconds, as every store encodes one.
// A retention that adds up to more is reported as InfiniteRetention.
const InfiniteRetention = 100 * 365 * 24 * time.Hour

// DefaultRetentionCheckInterval is Kafka's default
// log.retention.check.interval.ms, which Retention adds when the brokers'
// own value cannot be read (a principal not allowed to describe broker
// configs).
const DefaultRetentionCheckInterval = 5 * time.Minute

// ErrClosed is returned by the methods of a Source after Close.
var ErrClosed = errors.New("kafka: source closed")

// ErrPositionAhead is wrapped by the error of a Read from a position beyond
// the end of its partition.
var ErrPositionAhead = errors.New("kafka: position is beyond the end of the partition")

// Option configures New.
type Option func(*options)

type options struct {
	brokers    []string
	client     *kgo.Client
	clientOpts []kgo.Opt
	poll       time.Duration
	retention  time.Duration

	group         string
	groupOpts     []kgo.Opt
	revokeTimeout time.Duration
	log           *slog.Logger
}

// WithBrokers sets the seed brokers ("host:port") of the client the Source
// creates and closes. Exactly one of WithBrokers and WithClient is required.
func WithBrokers(addrs ...string) Option {
	return func(o *options) { o.brokers = append(o.brokers, addrs...) }
}

// WithClientOptions adds options (TLS, SASL, timeouts…) to the client that
// WithBrokers makes. Consumer options are useless: the Source issues its
// own fetch requests.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}

// WithClient makes the Source use cl, which it does not close: the caller
// closes cl after the Source. The Source only issues requests on cl
// (metadata, fetch, list offsets, describe configs); it never consumes
// through it, so cl may be a producer or have a consumer of its own.
func WithClient(cl *kgo.Client) Option {
	return func(o *options) { o.client = cl }
}

// WithPollInterval sets how often the Source lists the end offsets of its
// topic while a Wait is pending. A Wait returns within about d of a record
// being committed, and after 10 intervals at the latest. Default:
// DefaultPollInterval.
func WithPollInterval(d time.Duration) Option {
	return func(o *options) { o.poll = d }
}

// WithRetention sets the topic's retention instead of reading it from the
// topic's configuration, for a principal not allowed DescribeConfigs. It
// must be at least the longest a record can be read after it was appended
// (retention.ms + segment.ms + log.retention.check.interval.ms, see
// Retention), or a replay could run a record twice. Shards does not read
// the configuration then.
func WithRetention(d time.Duration) Option {
	return func(o *options) { o.retention = d }
}

// Source is one Kafka topic as a source.Driver. It is safe for concurrent
// use. Close it to stop its goroutine and, unless it came from WithClient,
// its client.
type Source struct {
	topic     string
	cl        *kgo.Client
	adm       *kadm.Client
	own       bool
	poll      time.Duration
	retention atomic.Int64 // a time.Duration: Retention is called on every commit
	declared  bool         // WithRetention: never read from the topic
	dec       kgo.Decompressor

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	metaMu  sync.Mutex
	meta    *topicMeta // nil until loaded, or after an error made it stale
	topicID [16]byte   // the ID of the topic last loaded

	partsMu sync.Mutex
	parts   map[int32]*partState

	w     watcher
	bg    sync.WaitGroup // fetches ahead in flight
	slabs slabPool       // kgo's record slabs, recycled

	member *member // nil without WithConsumerGroup
}

var _ source.Driver = (*Source)(nil)

// topicMeta is what a fetch needs to know of the topic.
type topicMeta struct {
	id      [16]byte
	leaders map[int32]int32 // partition → leader broker, -1 for none
}

// New returns the Source over topic, after checking that the topic exists
// (otherwise the error wraps source.ErrStreamNotFound) and reading its
// retention. ctx bounds only these first requests.
func New(ctx context.Context, topic string, opts ...Option) (*Source, error) {
	o := options{poll: DefaultPollInterval, revokeTimeout: DefaultRevokeTimeout, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case topic == "":
		return nil, errors.New("kafka: empty topic name")
	case o.client == nil && len(o.brokers) == 0:
		return nil, errors.New("kafka: no brokers: use WithBrokers or WithClient")
	case o.client != nil && (len(o.brokers) > 0 || len(o.clientOpts) > 0):
		return nil, errors.New("kafka: WithClient excludes WithBrokers and WithClientOptions")
	case o.poll <= 0:
		return nil, fmt.Errorf("kafka: poll interval %s must be positive", o.poll)
	case o.retention < 0:
		return nil, fmt.Errorf("kafka: retention %s must not be negative", o.retention)
	case o.group != "" && o.client != nil:
		return nil, errors.New("kafka: WithConsumerGroup needs WithBrokers: the group member is a client of its own")
	case o.group == "" && (len(o.groupOpts) > 0):
		return nil, errors.New("kafka: WithGroupOptions without WithConsumerGroup")
	case o.revokeTimeout <= 0:
		return nil, fmt.Errorf("kafka: revoke timeout %s must be positive", o.revokeTimeout)
	}
	s := &Source{
		topic: topic,
		cl:    o.client,
		poll:  o.poll,
		dec:   kgo.DefaultDecompressor(),
		parts: make(map[int32]*partState),
	}
	if s.cl == nil {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(o.brokers...)}, o.clientOpts...)...)
		if err != nil {
			return nil, fmt.Errorf("kafka: creating client: %w", err)
		}
		s.cl, s.own = cl, true
	}
	s.adm = kadm.NewClient(s.cl)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.w.changed = make(chan struct{})
	s.w.wake = make(chan struct{}, 1)
	s.w.done = make(chan struct{})

	fail := func(err error) (*Source, error) {
		s.cancel()
		if s.own {
			s.cl.Close()
		}
		return nil, err
	}
	if _, err := s.loadMeta(ctx); err != nil {
		return fail(err)
	}
	s.retention.Store(int64(o.retention))
	s.declared = o.retention != 0
	if err := s.refreshRetention(ctx); err != nil {
		return fail(err)
	}
	if o.group != "" {
		if err := s.joinGroup(&o); err != nil {
			return fail(err)
		}
	}
	return s, nil
}

// Close stops the Source's goroutine, waiting for it, and closes the client
// it created (not one given by WithClient). Methods called after Close
// return ErrClosed. Close is idempotent and always returns nil.
func (s *Source) Close() error {
	s.w.mu.Lock()
	if s.w.closed {
		s.w.mu.Unlock()
		return nil
	}
	s.w.closed = true
	started := s.w.started
	s.w.mu.Unlock()
	s.cancel()
	if started {
		<-s.w.done
	}
	s.bg.Wait()
	if s.member != nil {
		s.member.leave()
	}
	if s.own {
		s.cl.Close()
	}
	return nil
}

// Topic is the name of the topic s reads.
func (s *Source) Topic() string { return s.topic }

// Retention is the longest a record of the topic can still be read after
// it was appended, as New or the last Shards read it (or as WithRetention
// declared it): retention.ms + segment.ms + log.retention.check.interval.ms
// (see the package documentation), or InfiniteRetention for a topic that
// does not delete records by age. It is a load, cheap enough for every
// commit.
//
// With CreateTime timestamps, a record stamped ahead of the broker's clock
// keeps its segment that much longer: Kafka bounds how far ahead with
// message.timestamp.after.max.ms (1 hour by default since Kafka 4.0);
// declare a longer retention with WithRetention if producers' clocks can be
// further ahead.
func (s *Source) Retention() time.Duration { return time.Duration(s.retention.Load()) }

// Shards lists the topic's partitions as shard IDs, by partition number. It
// asks the cluster each time, so partitions added since New appear. (Adding
// partitions moves keys to other partitions: order per key holds only
// within a partition.) It also reads the topic's retention again (unless
// WithRetention declared it), and fails if it cannot: a retention that
// grew must not go unseen while completion marks expire by the old one.
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	m, err := s.loadMeta(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.refreshRetention(ctx); err != nil {
		return nil, err
	}
	n := int32(len(m.leaders))
	ids := make([]string, 0, n)
	for p := range n {
		if _, ok := m.leaders[p]; !ok {
			return nil, fmt.Errorf("kafka: topic %q: metadata lists %d partitions but not partition %d", s.topic, n, p)
		}
		ids = append(ids, ShardID(s.topic, p))
	}
	return ids, nil
}

// Start returns the position a mapping without a checkpoint starts from:
// before the log start offset for TRIM_HORIZON (the zero Sequence while
// nothing was ever trimmed), after the last stable offset's record for
// LATEST, and before the first record whose timestamp is at or after ts
// (Kafka's ListOffsets by time, millisecond precision) for AT_TIMESTAMP,
// or at the end when there is none.
func (s *Source) Start(ctx context.Context, shard string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	if err := s.usable(ctx); err != nil {
		return "", err
	}
	p, err := s.partition(ctx, shard)
	if err != nil {
		return "", err
	}
	var list kadm.ListedOffsets
	switch pos {
	case source.TrimHorizon:
		list, err = s.adm.ListStartOffsets(ctx, s.topic)
	case source.Latest:
		list, err = s.adm.ListCommittedOffsets(ctx, s.topic)
	case source.AtTimestamp:
		list, err = s.adm.ListOffsetsAfterMilli(ctx, ts.UnixMilli(), s.topic)
	default:
		return "", fmt.Errorf("kafka: unknown starting position %q", pos)
	}
	off, err := s.listed(list, err, p, string(pos))
	if err != nil {
		return "", err
	}
	if pos == source.Latest {
		s.part(p).setLSO(off)
	}
	return position(off), nil
}

// listed picks partition p out of a kadm listing.
func (s *Source) listed(list kadm.ListedOffsets, err error, p int32, what string) (int64, error) {
	if err != nil {
		return 0, fmt.Errorf("kafka: listing %s offsets of topic %q: %w", what, s.topic, err)
	}
	if bad, ok := list.Lookup(s.topic, -1); ok && bad.Err != nil {
		return 0, s.topicErr(bad.Err)
	}
	lo, ok := list.Lookup(s.topic, p)
	if !ok {
		s.invalidate()
		return 0, fmt.Errorf("kafka: listing %s offsets: %w: partition %d of topic %q not listed", what, source.ErrShardNotFound, p, s.topic)
	}
	if lo.Err != nil {
		s.invalidate()
		return 0, fmt.Errorf("kafka: listing %s offset of %s: %w", what, ShardID(s.topic, p), lo.Err)
	}
	if lo.Offset < 0 {
		return 0, fmt.Errorf("kafka: listing %s offset of %s: broker returned offset %d", what, ShardID(s.topic, p), lo.Offset)
	}
	return lo.Offset, nil
}

// Read returns up to limit committed records of shard from the offset after
// names, stopping before their Data would exceed maxBytes (but with at least
// one record when there is one). It never waits for records. A read behind
// the log start reports the loss and continues at the log start; a read
// beyond the partition's end fails with ErrPositionAhead. The records and
// their Data are not reused by later Reads.
func (s *Source) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if err := s.usable(ctx); err != nil {
		return source.ReadResult{}, err
	}
	if limit < 1 {
		return source.ReadResult{}, fmt.Errorf("kafka: read %s: limit %d must be at least 1", shard, limit)
	}
	p, err := s.partition(ctx, shard)
	if err != nil {
		return source.ReadResult{}, err
	}
	n, err := nextOffset(after)
	if err != nil {
		return source.ReadResult{}, err
	}
	ps := s.part(p)
	var res source.ReadResult
	ps.mu.Lock()
	for a := ps.ahead; a != nil && ps.short(n, limit); a = ps.ahead {
		// The fetch that holds this Read's records, or the rest of its
		// batch, is in flight: wait for it.
		ps.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return source.ReadResult{}, ctx.Err()
		}
		ps.mu.Lock()
	}
	recs, from := ps.take(n, limit, maxBytes)
	if len(recs) > 0 {
		s.fetchAhead(p, ps, limit, maxBytes)
	}
	lso, avg := ps.lso, ps.avg
	ps.mu.Unlock()
	if len(recs) > 0 {
		return s.result(shard, recs, lso, res), nil
	}
	// from > n: the cache knows [n, from) holds no committed record.
	for fetches := 0; ; fetches++ {
		f, err := s.fetch(ctx, p, from, 0, fetchBytes(avg, limit, maxBytes))
		if errors.Is(err, kerr.OffsetOutOfRange) {
			start, berr := s.outOfRange(ctx, p, from)
			if berr != nil {
				return source.ReadResult{}, berr
			}
			if start <= from || fetches >= maxFetchesPerRead {
				return source.ReadResult{}, err
			}
			res.Lost += uint64(start - from)
			res.Trimmed = position(start)
			n, from = start, start
			continue
		}
		if err != nil {
			return source.ReadResult{}, err
		}
		ps.mu.Lock()
		ps.store(n, from, f)
		recs, from = ps.take(n, limit, maxBytes)
		if len(recs) > 0 {
			s.fetchAhead(p, ps, limit, maxBytes)
		}
		ps.mu.Unlock()
		if len(recs) > 0 || from >= f.lso || fetches >= maxFetchesPerRead {
			return s.result(shard, recs, f.lso, res), nil
		}
		// Only transaction markers or aborted records so far: go on.
	}
}

// fetchAhead starts fetching partition p beyond its cache, for the next
// Reads, when ps wants it (see partState.wantsAhead): fetch after fetch, until
// the cache holds two Reads' worth of records or the partition's end. A
// fetch's result joins the cache if the cache still ends where it started;
// an error ends the fetching (the Read that needs those records fetches
// again, and reports it). The goroutine ends with Close. The caller holds
// ps.mu.
func (s *Source) fetchAhead(p int32, ps *partState, limit, maxBytes int) {
	if !ps.wantsAhead(limit) {
		return
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	if s.w.closed {
		return
	}
	a, bytes := ps.startAhead(limit, maxBytes)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for {
			f, err := s.fetch(s.ctx, p, a.from, 0, bytes)
			ps.mu.Lock()
			if err == nil {
				ps.extend(a.from, f)
			}
			ps.ahead = nil
			close(a.done)
			// A fetch that moved nothing on (the cache went elsewhere, or
			// a broker returned nothing below its stable offset) ends it
			// too: the next Read starts it again if need be.
			if err != nil || ps.next <= a.from || !ps.wantsAhead(limit) {
				ps.mu.Unlock()
				return
			}
			a, bytes = ps.startAhead(limit, maxBytes)
			ps.mu.Unlock()
		}
	}()
}

// maxFetchesPerRead bounds the fetches of one Read: a read behind a trim
// that keeps moving, or past a long run of aborted records, returns what it
// has and lets the caller read again (the cache keeps the progress).
const maxFetchesPerRead = 8

// result makes the ReadResult of recs, with Latest at least its last record.
func (s *Source) result(shard string, recs []*kgo.Record, lso int64, res source.ReadResult) source.ReadResult {
	if len(recs) > 0 {
		lso = max(lso, recs[len(recs)-1].Offset+1)
	}
	res.Latest = position(lso)
	res.Records = s.records(shard, recs)
	for _, r := range recs {
		r.Recycle() // converted: its slab may serve another batch
	}
	return res
}

// records converts kgo records to idem records, with one allocation for all
// sequences and keys.
func (s *Source) records(shard string, recs []*kgo.Record) []idem.Record {
	if len(recs) == 0 {
		return nil
	}
	nk := 0
	for _, r := range recs {
		nk += len(r.Key)
	}
	var b strings.Builder
	b.Grow(len(recs)*seqWidth + nk)
	// Offsets mostly follow one another: the next sequence is the last
	// one's digits incremented, not formatted anew.
	var seq [seqWidth]byte
	last := int64(-2)
	for _, r := range recs {
		if r.Offset == last+1 {
			increment(seq[:])
		} else {
			idem.AppendSequence(seq[:0], uint64(r.Offset)+1)
		}
		last = r.Offset
		b.Write(seq[:])
	}
	for _, r := range recs {
		b.Write(r.Key)
	}
	all := b.String()
	out := make([]idem.Record, len(recs))
	k := len(recs) * seqWidth
	for i, r := range recs {
		// Field by field: out is zeroed already, and a composite literal
		// would be built aside and copied, pointers and all.
		o := &out[i]
		o.Stream = s.topic
		o.ShardID = shard
		o.Sequence = idem.Sequence(all[i*seqWidth : (i+1)*seqWidth])
		o.PartitionKey = all[k : k+len(r.Key)]
		o.Data = r.Value
		o.ArrivalTime = r.Timestamp
		if len(r.Headers) > 0 {
			o.Headers = headers(r.Headers)
		}
		k += len(r.Key)
	}
	return out
}

const seqWidth = 20

// increment adds one to the decimal number in digits, which must not be
// all nines.
func increment(digits []byte) {
	for i := len(digits) - 1; i >= 0; i-- {
		if digits[i] != '9' {
			digits[i]++
			return
		}
		digits[i] = '0'
	}
}

// headers converts a record's headers, nil for none.
func headers(hs []kgo.RecordHeader) []idem.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]idem.Header, len(hs))
	for i, h := range hs {
		out[i] = idem.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

// Wait returns nil as soon as shard is known to hold a committed record at
// or above the position after, ctx.Err() when ctx is done, ErrClosed when
// s is closed, and nil after 10 poll intervals otherwise.
func (s *Source) Wait(ctx context.Context, shard string, after idem.Sequence) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	p, err := s.partition(ctx, shard)
	if err != nil {
		return err
	}
	n, err := nextOffset(after)
	if err != nil {
		return err
	}
	ps := s.part(p)
	if ps.ready(n) {
		return nil
	}
	ch, err := s.w.enter(s)
	if err != nil {
		return err
	}
	defer s.w.leave()
	timer := time.NewTimer(waitPolls * s.poll)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrClosed
		case <-timer.C:
			return nil
		case <-ch:
			if ps.ready(n) {
				return nil
			}
			ch = s.w.current()
		}
	}
}

// usable returns ErrClosed after Close, and ctx's error when it is done.
func (s *Source) usable(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	return ctx.Err()
}

// ShardID returns the shard ID of a partition: "<topic>-<partition>".
func ShardID(topic string, partition int32) string {
	return topic + "-" + strconv.FormatInt(int64(partition), 10)
}

// RecordSequence returns the Sequence of the record at offset (which must
// not be negative): offset+1, in 20 digits.
func RecordSequence(offset int64) idem.Sequence {
	return idem.SequenceOf(uint64(offset) + 1)
}

// Offset returns the offset of the record whose Sequence is seq: seq−1. It
// fails for the zero Sequence, which is a position and names no record.
func Offset(seq idem.Sequence) (int64, error) {
	n, err := nextOffset(seq)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("kafka: sequence %q names no record", seq)
	}
	return n - 1, nil
}

// nextOffset returns the offset a read after the position starts at.
func nextOffset(after idem.Sequence) (int64, error) {
	v, ok := after.Uint64()
	if !ok || v > math.MaxInt64 {
		return 0, fmt.Errorf("kafka: %q is not a Kafka position", after)
	}
	return int64(v), nil
}

// position returns the position before offset: the Sequence of the record
// at offset−1, or the zero Sequence before offset 0.
func position(offset int64) idem.Sequence {
	if offset <= 0 {
		return ""
	}
	return idem.SequenceOf(uint64(offset))
}

// partition returns the partition shard names, or an error wrapping
// source.ErrShardNotFound.
func (s *Source) partition(ctx context.Context, shard string) (int32, error) {
	rest, ok := strings.CutPrefix(shard, s.topic+"-")
	p, err := strconv.ParseInt(rest, 10, 32)
	if !ok || err != nil || p < 0 || strconv.FormatInt(p, 10) != rest {
		return 0, fmt.Errorf("kafka: %w: %q is not a partition of topic %q", source.ErrShardNotFound, shard, s.topic)
	}
	m, err := s.cachedMeta(ctx)
	if err != nil {
		return 0, err
	}
	if _, ok := m.leaders[int32(p)]; !ok {
		// A partition added since: look again once.
		if m, err = s.loadMeta(ctx); err != nil {
			return 0, err
		}
		if _, ok := m.leaders[int32(p)]; !ok {
			return 0, fmt.Errorf("kafka: %w: topic %q has no partition %d", source.ErrShardNotFound, s.topic, p)
		}
	}
	return int32(p), nil
}

// cachedMeta returns the topic's metadata, loading it if it is stale.
func (s *Source) cachedMeta(ctx context.Context) (*topicMeta, error) {
	s.metaMu.Lock()
	m := s.meta
	s.metaMu.Unlock()
	if m != nil {
		return m, nil
	}
	return s.loadMeta(ctx)
}

// invalidate makes the next request load the metadata again, after an
// error that may mean a new leader or a recreated topic.
func (s *Source) invalidate() {
	s.metaMu.Lock()
	s.meta = nil
	s.metaMu.Unlock()
}

// loadMeta asks the cluster for the topic's metadata (never from kgo's
// cache: it runs when the cache may be wrong).
func (s *Source) loadMeta(ctx context.Context) (*topicMeta, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(s.topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata of topic %q: %w", s.topic, err)
	}
	var t *kmsg.MetadataResponseTopic
	for i := range resp.Topics {
		if rt := &resp.Topics[i]; rt.Topic != nil && *rt.Topic == s.topic {
			t = rt
		}
	}
	if t == nil {
		return nil, fmt.Errorf("kafka: metadata of topic %q: %w: not in the response", s.topic, source.ErrStreamNotFound)
	}
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return nil, s.topicErr(err)
	}
	m := &topicMeta{id: t.TopicID, leaders: make(map[int32]int32, len(t.Partitions))}
	for _, p := range t.Partitions {
		m.leaders[p.Partition] = p.Leader
	}
	s.metaMu.Lock()
	recreated := s.topicID != [16]byte{} && s.topicID != m.id
	s.meta, s.topicID = m, m.id
	s.metaMu.Unlock()
	if recreated {
		// The cached records belong to the deleted topic.
		s.partsMu.Lock()
		s.parts = make(map[int32]*partState)
		s.partsMu.Unlock()
	}
	return m, nil
}

// topicErr wraps a topic-level error, as source.ErrStreamNotFound for a
// topic that does not exist.
func (s *Source) topicErr(err error) error {
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
		return fmt.Errorf("kafka: topic %q: %w: %w", s.topic, source.ErrStreamNotFound, err)
	}
	return fmt.Errorf("kafka: topic %q: %w", s.topic, err)
}

// refreshRetention reads the topic's retention into s.retention, unless
// WithRetention declared it.
func (s *Source) refreshRetention(ctx context.Context) error {
	if s.declared {
		return nil
	}
	d, err := s.describeRetention(ctx)
	if err != nil {
		return err
	}
	s.retention.Store(int64(d))
	return nil
}

// describeRetention reads the topic's cleanup.policy, retention.ms and
// segment.ms, and the brokers' log.retention.check.interval.ms.
func (s *Source) describeRetention(ctx context.Context) (time.Duration, error) {
	rcs, err := s.adm.DescribeTopicConfigs(ctx, s.topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: describing the configuration of topic %q (or set WithRetention): %w", s.topic, err)
	}
	rc, err := rcs.On(s.topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: describing the configuration of topic %q (or set WithRetention): %w", s.topic, err)
	}
	var tc topicConfig
	tc.policy = "delete"
	for _, c := range rc.Configs {
		switch c.Key {
		case "cleanup.policy":
			tc.policy = c.MaybeValue()
		case "retention.ms":
			tc.retentionMs = c.MaybeValue()
		case "segment.ms":
			tc.segmentMs = c.MaybeValue()
		}
	}
	tc.check = s.retentionCheckInterval(ctx)
	return tc.retention()
}

// retentionCheckInterval returns the largest log.retention.check.interval.ms
// of the brokers that lead the topic's partitions, or
// DefaultRetentionCheckInterval for those whose configuration cannot be read.
// It is a static broker setting: only describing a broker by ID shows it.
func (s *Source) retentionCheckInterval(ctx context.Context) time.Duration {
	m, err := s.cachedMeta(ctx)
	if err != nil {
		return DefaultRetentionCheckInterval
	}
	var ids []int32
	for _, b := range m.leaders {
		if b >= 0 && !slices.Contains(ids, b) {
			ids = append(ids, b)
		}
	}
	if len(ids) == 0 {
		return DefaultRetentionCheckInterval
	}
	rcs, _ := s.adm.DescribeBrokerConfigs(ctx, ids...) // partial answers count
	found := make(map[string]time.Duration, len(ids))
	for _, rc := range rcs {
		if rc.Err != nil {
			continue
		}
		for _, c := range rc.Configs {
			if c.Key != "log.retention.check.interval.ms" {
				continue
			}
			if v, err := strconv.ParseInt(c.MaybeValue(), 10, 64); err == nil && v > 0 && v < int64(InfiniteRetention/time.Millisecond) {
				found[rc.Name] = time.Duration(v) * time.Millisecond
			}
		}
	}
	longest := time.Duration(0)
	for _, id := range ids {
		d, ok := found[strconv.FormatInt(int64(id), 10)]
		if !ok {
			d = DefaultRetentionCheckInterval
		}
		longest = max(longest, d)
	}
	return longest
}

// topicConfig is what a topic's retention depends on, as DescribeConfigs
// spells it.
type topicConfig struct {
	policy      string        // cleanup.policy
	retentionMs string        // retention.ms
	segmentMs   string        // segment.ms; "" is Kafka's default, 7 days
	check       time.Duration // log.retention.check.interval.ms
}

// defaultSegmentMs is Kafka's default segment.ms (log.roll.hours 168).
const defaultSegmentMs = "604800000"

// retention turns a topic's configuration into the longest a record can be
// read after it was appended: InfiniteRetention unless the topic deletes by
// age, retention.ms + segment.ms + the check interval otherwise.
func (tc topicConfig) retention() (time.Duration, error) {
	deletes := false
	for _, p := range strings.Split(tc.policy, ",") {
		if strings.TrimSpace(p) == "delete" {
			deletes = true
		}
	}
	if !deletes {
		return InfiniteRetention, nil
	}
	if tc.retentionMs == "" {
		return 0, errors.New("kafka: the topic's configuration has no retention.ms (set WithRetention)")
	}
	ret, err := strconv.ParseInt(tc.retentionMs, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kafka: retention.ms %q: %w", tc.retentionMs, err)
	}
	if ret == 0 {
		return 0, errors.New("kafka: retention.ms is 0")
	}
	if tc.segmentMs == "" {
		tc.segmentMs = defaultSegmentMs
	}
	seg, err := strconv.ParseInt(tc.segmentMs, 10, 64)
	if err != nil || seg < 0 {
		return 0, fmt.Errorf("kafka: segment.ms %q is not a duration in milliseconds", tc.segmentMs)
	}
	const inf = int64(InfiniteRetention / time.Millisecond)
	check := min(max(tc.check, 0).Milliseconds(), inf)
	if ret < 0 || ret >= inf || seg >= inf || ret+seg+check >= inf {
		return InfiniteRetention, nil
	}
	return time.Duration(ret+seg+check) * time.Millisecond, nil
}
