// Package jetstream is the source driver over a NATS JetStream stream: it
// reads a stream's messages in stream-sequence order, as shards that are
// subject partitions of the stream, with AWS Lambda event source mapping
// semantics (batches, checkpoints, starting positions) kept by idem's
// engine.
//
// # Delivery semantics
//
// Each shard delivers its messages at least once, in stream-sequence order,
// from any position the engine checkpointed: a record's Sequence is its
// stream sequence, spelled by idem.SequenceOf, the same on every read, so
// default idempotency keys and batchItemFailures name records stably. The
// driver acknowledges nothing and keeps no durable state in NATS:
// checkpoints live in idem's store, and the driver reads through ephemeral,
// in-memory consumers (AckNone, so a read never removes a message) that it
// deletes in Close and that the server deletes after InactiveThreshold if
// the process dies.
//
// Messages that the stream's limits (MaxAge, MaxMsgs, MaxBytes) or a purge
// removed from the head of the stream before a shard read them are never
// lost silently: Read reports them in source.ReadResult.Lost. The count is
// exact for the whole-stream shard (the default); for a partitioned shard
// JetStream cannot tell how many of the removed messages were the shard's,
// so Lost is 1, meaning "some may be lost": see Source.Read. Messages removed
// from inside the retained range (DeleteMsg, a purge filtered by subject,
// MaxMsgsPerSubject) are not reported.
//
// # Shards
//
// By default a stream is one shard, "all". WithPartitions makes one shard
// per subject filter, read with a server-side filter; WithSubjectTokenPartitioning
// hashes one subject token into n partitions exactly as NATS' partition()
// subject mapping does, filtered on the client. A message's PartitionKey is
// its Idem-Partition-Key header when present, else its subject; records with
// one subject are always in one shard, in order.
//
// # Requirements
//
// The stream must use the limits retention policy (the default): under the
// interest and work-queue policies a reading consumer would remove messages.
// Servers from NATS 2.9 on work.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem/source"
)

// PartitionKeyHeader is the message header that, when present, is a record's
// PartitionKey instead of its subject: producers that publish a Kinesis-style
// partition key set it. Shard assignment always follows the subject.
const PartitionKeyHeader = "Idem-Partition-Key"

// AllShard is the ID of the only shard of a Source without partitions: the
// whole stream.
const AllShard = "all"

// UnlimitedRetention is what Retention returns for a stream without MaxAge:
// a hundred years, so that completion marks outlive every retained message
// (the engine keeps marks at least as long as Retention) and an expiry time
// computed from it still fits a Unix time in nanoseconds.
const UnlimitedRetention = 100 * 365 * 24 * time.Hour

// ErrClosed is returned by the methods of a Source after Close.
var ErrClosed = errors.New("jetstream: source closed")

const (
	defaultPollInterval   = time.Second
	defaultRequestTimeout = 5 * time.Second
	// consumerInactive is how long the server keeps a reader's consumer that
	// nobody pulls from: a crashed process leaves none behind for longer.
	consumerInactive = 5 * time.Minute
)

// Source is one JetStream stream as a source.Driver. It is safe for
// concurrent use: calls for one shard are serialized, calls for different
// shards run in parallel.
//
// A Source keeps, per shard, one ephemeral consumer positioned where the
// last read ended, so that the engine's next read (after the records it
// just processed) costs one pull request; a read from any other position
// recreates the consumer there. It starts no goroutine of its own.
type Source struct {
	js     natsjs.JetStream
	nc     *nats.Conn
	stream natsjs.Stream
	name   string
	api    string // JetStream API prefix, ending in "."
	owned  bool   // Close closes nc
	opt    options

	kind   partitioning
	shards []*shard
	byID   map[string]*shard
	ids    []string
	wake   []string // subjects Wait listens on, for the all and token kinds
	tail   *tail    // for partitioned shards: their latest sequences

	retention atomic.Int64  // nanoseconds
	lastSeq   atomic.Uint64 // the stream's last sequence at the latest Info

	staleMu sync.Mutex
	stale   []string // consumers abandoned mid-request, for Close

	closed    atomic.Bool
	done      context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
}

var _ source.Driver = (*Source)(nil)

type partitioning int

const (
	byNothing partitioning = iota // one shard: the whole stream
	byFilter                      // WithPartitions: a server-side filter per shard
	byToken                       // WithSubjectTokenPartitioning: a hash on the client
)

// Option configures New and Connect.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	partitions     []string
	partitionsSet  bool
	tokenIndex     int
	tokenN         int
	tokenSet       bool
	pollInterval   time.Duration
	requestTimeout time.Duration
	natsOptions    []nats.Option
}

// WithPartitions makes one shard per subject filter, with the filter as
// the shard's ID (for example "orders.eu.>"): a shard reads the stream's
// messages whose subject matches its filter, filtered by the server. The
// filters must be valid NATS subject filters, must not overlap (no subject
// may match two), and should lie within the stream's subjects (the server
// refuses a consumer whose filter lies outside them). Messages that match no
// filter are read by no shard. Conflicts with WithSubjectTokenPartitioning.
// Default: one shard, AllShard.
func WithPartitions(subjects ...string) Option {
	return optionFunc(func(o *options) {
		o.partitions = append([]string(nil), subjects...)
		o.partitionsSet = true
	})
}

// WithSubjectTokenPartitioning makes n shards, "partition-0-of-N" to
// "partition-(N-1)-of-N": a message belongs to shard Partition(subject,
// tokenIndex, n), the FNV-1a hash of its subject's token at tokenIndex
// (1-based; 0 hashes the whole subject) modulo n, which is what NATS'
// {{partition(n,k)}} subject mapping computes, so producers and NATS
// mappings agree with idem on where a key goes.
//
// Every shard reads the whole stream and keeps its own messages, so reading
// costs n times a single shard's traffic; when the partition is already a
// subject token (a stream subject transform with partition()), prefer
// WithPartitions, which filters on the server. Changing n moves subjects
// between shards with new IDs: their checkpoints start afresh from the
// mapping's starting position, and default idempotency keys (which name the
// shard) change. tokenIndex must be 0 or more, n 1 to 1024. Conflicts with
// WithPartitions. Default: one shard, AllShard.
func WithSubjectTokenPartitioning(tokenIndex, n int) Option {
	return optionFunc(func(o *options) {
		o.tokenIndex, o.tokenN, o.tokenSet = tokenIndex, n, true
	})
}

// WithPollInterval bounds how long Wait blocks without news. Wait wakes at
// once for messages published on the shard's subjects; the poll interval
// catches the rest (messages entering the stream through sources, mirrors
// or subject transforms). 10ms to 1m. Default: 1s.
func WithPollInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.pollInterval = d })
}

// WithRequestTimeout bounds each request to the server (a pull, an info, a
// consumer creation) made under a context without a deadline. 100ms to 5m.
// Default: 5s.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.requestTimeout = d })
}

// WithNATSOptions passes options (credentials, TLS, names, reconnect
// policy) to nats.Connect. Only Connect uses them; New ignores them.
func WithNATSOptions(opts ...nats.Option) Option {
	return optionFunc(func(o *options) { o.natsOptions = append(o.natsOptions, opts...) })
}

// shard is one shard's identity and read state.
type shard struct {
	id     string
	idx    int
	filter string        // server-side filter subject; "" for byNothing and byToken
	sem    chan struct{} // held by the one call at a time that uses cur
	cur    cursor
}

func (sh *shard) lock(ctx context.Context) error {
	select {
	case sh.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (sh *shard) unlock() { <-sh.sem }

// New returns the source over stream, read through js (whose domain or API
// prefix it uses). It checks the options and the stream: a missing stream
// wraps source.ErrStreamNotFound. The caller keeps ownership of js's
// connection; Close deletes the Source's consumers but leaves it open.
func New(ctx context.Context, js natsjs.JetStream, stream string, opts ...Option) (*Source, error) {
	if js == nil {
		return nil, errors.New("jetstream: New: nil JetStream")
	}
	return newSource(ctx, js, stream, false, opts)
}

// Connect connects to the NATS server at url (a comma-separated list of
// servers, as nats.Connect takes) and returns the source over stream. The
// Source owns the connection: Close closes it. ctx bounds the connection
// attempt and the stream lookup.
func Connect(ctx context.Context, url, stream string, opts ...Option) (*Source, error) {
	var o options
	for _, op := range opts {
		op.apply(&o)
	}
	nopts := append([]nats.Option{nats.Name("idem " + stream)}, o.natsOptions...)
	if dl, ok := ctx.Deadline(); ok {
		nopts = append(nopts, nats.Timeout(time.Until(dl)))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connecting to %s: %w", url, err)
	}
	js, err := natsjs.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s, err := newSource(ctx, js, stream, true, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

func newSource(ctx context.Context, js natsjs.JetStream, stream string, owned bool, opts []Option) (*Source, error) {
	o := options{pollInterval: defaultPollInterval, requestTimeout: defaultRequestTimeout}
	for _, op := range opts {
		op.apply(&o)
	}
	if err := o.validate(stream); err != nil {
		return nil, err
	}
	s := &Source{js: js, nc: js.Conn(), name: stream, api: apiPrefix(js.Options()), owned: owned, opt: o}
	s.done, s.cancel = context.WithCancel(context.Background())

	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	st, err := js.Stream(rctx, stream)
	if err != nil {
		if errors.Is(err, natsjs.ErrStreamNotFound) {
			return nil, fmt.Errorf("jetstream: stream %q: %w", stream, source.ErrStreamNotFound)
		}
		return nil, fmt.Errorf("jetstream: stream %q: %w", stream, err)
	}
	s.stream = st
	info := st.CachedInfo()
	if info.Config.Retention != natsjs.LimitsPolicy {
		return nil, fmt.Errorf("jetstream: stream %q has %s retention: idem reads only limits-retention streams, since reading would remove messages under the others", stream, info.Config.Retention)
	}
	s.noteInfo(info)

	switch {
	case o.partitionsSet:
		s.kind = byFilter
		for i, f := range o.partitions {
			s.addShard(f, i, f)
		}
	case o.tokenSet:
		s.kind = byToken
		for i := range o.tokenN {
			s.addShard(fmt.Sprintf("partition-%d-of-%d", i, o.tokenN), i, "")
		}
	default:
		s.addShard(AllShard, 0, "")
	}
	if s.kind != byNothing {
		s.tail = &tail{sem: make(chan struct{}, 1), latest: make([]uint64, len(s.shards))}
	}
	if s.kind != byFilter {
		s.wake = slices.Clone(info.Config.Subjects)
	}
	return s, nil
}

func (s *Source) addShard(id string, idx int, filter string) {
	sh := &shard{id: id, idx: idx, filter: filter, sem: make(chan struct{}, 1)}
	if s.byID == nil {
		s.byID = make(map[string]*shard)
	}
	s.shards = append(s.shards, sh)
	s.byID[id] = sh
	s.ids = append(s.ids, id)
}

func (o *options) validate(stream string) error {
	var errs []error
	if stream == "" || strings.ContainsAny(stream, ".*> \t\r\n") {
		errs = append(errs, fmt.Errorf("stream name %q: must be non-empty, without '.', '*', '>' or whitespace", stream))
	}
	if o.partitionsSet && o.tokenSet {
		errs = append(errs, errors.New("WithPartitions and WithSubjectTokenPartitioning conflict: choose one"))
	}
	if o.partitionsSet {
		if len(o.partitions) == 0 {
			errs = append(errs, errors.New("WithPartitions: no subjects"))
		}
		for i, f := range o.partitions {
			if err := validFilter(f); err != nil {
				errs = append(errs, fmt.Errorf("WithPartitions: %w", err))
				continue
			}
			for _, g := range o.partitions[:i] {
				if validFilter(g) == nil && overlap(f, g) {
					errs = append(errs, fmt.Errorf("WithPartitions: %q and %q overlap: a subject must belong to one partition", g, f))
				}
			}
		}
	}
	if o.tokenSet {
		if o.tokenIndex < 0 {
			errs = append(errs, fmt.Errorf("WithSubjectTokenPartitioning: token index %d is below 0", o.tokenIndex))
		}
		if o.tokenN < 1 || o.tokenN > 1024 {
			errs = append(errs, fmt.Errorf("WithSubjectTokenPartitioning: %d partitions, allowed 1 to 1024", o.tokenN))
		}
	}
	if o.pollInterval < 10*time.Millisecond || o.pollInterval > time.Minute {
		errs = append(errs, fmt.Errorf("WithPollInterval: %s, allowed 10ms to 1m", o.pollInterval))
	}
	if o.requestTimeout < 100*time.Millisecond || o.requestTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("WithRequestTimeout: %s, allowed 100ms to 5m", o.requestTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// apiPrefix is the subject prefix of js's API requests.
func apiPrefix(o natsjs.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return natsjs.DefaultAPIPrefix
}

// requestContext bounds ctx by the request timeout when it has no deadline.
func (s *Source) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opt.requestTimeout)
}

// Stream is the name of the JetStream stream s reads.
func (s *Source) Stream() string { return s.name }

// Shards lists the shard IDs in a stable order: AllShard, the
// WithPartitions filters in the order given, or the token partitions by
// number.
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, ErrClosed
	}
	return slices.Clone(s.ids), nil
}

// Retention is the stream's MaxAge as of the latest request that returned
// its configuration, or UnlimitedRetention when it has none (a stream
// limited only by MaxMsgs or MaxBytes can drop messages of any age; Read
// still reports those as lost). The server expires each message by its own
// timer once it is MaxAge old, so MaxAge bounds how long a message is
// served, give or take that timer's delay and the clock skew
// between the server and idem.
func (s *Source) Retention() time.Duration { return time.Duration(s.retention.Load()) }

// noteInfo records what an Info told: the retention and the last sequence.
func (s *Source) noteInfo(info *natsjs.StreamInfo) {
	r := info.Config.MaxAge
	if r <= 0 || r > UnlimitedRetention {
		r = UnlimitedRetention
	}
	s.retention.Store(int64(r))
	for {
		old := s.lastSeq.Load()
		if info.State.LastSeq <= old || s.lastSeq.CompareAndSwap(old, info.State.LastSeq) {
			return
		}
	}
}

// info returns the stream's state, and notes it.
func (s *Source) info(ctx context.Context) (*natsjs.StreamInfo, error) {
	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	info, err := s.stream.Info(rctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, natsjs.ErrStreamNotFound) {
			return nil, fmt.Errorf("jetstream: stream %q: %w", s.name, source.ErrStreamNotFound)
		}
		return nil, fmt.Errorf("jetstream: stream %q info: %w", s.name, err)
	}
	s.noteInfo(info)
	return info, nil
}

func (s *Source) shard(id string) (*shard, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	sh, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("jetstream: stream %q shard %q: %w", s.name, id, source.ErrShardNotFound)
	}
	return sh, nil
}

// Close deletes the consumers the Source made and, for a Source made by
// Connect, closes its connection. Calls in progress return promptly with an
// error; later calls return ErrClosed. ctx bounds the deletions; consumers
// Close could not delete expire on the server after five minutes unused.
func (s *Source) Close(ctx context.Context) error {
	var errs []error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		del := func(name string) {
			if name == "" {
				return
			}
			if err := s.deleteConsumer(ctx, name); err != nil {
				errs = append(errs, err)
			}
		}
		for _, sh := range s.shards {
			if err := sh.lock(ctx); err != nil {
				errs = append(errs, fmt.Errorf("jetstream: closing shard %q: %w", sh.id, err))
				continue
			}
			del(sh.cur.cons)
			sh.cur = cursor{}
			sh.unlock()
		}
		s.staleMu.Lock()
		for _, name := range s.stale {
			del(name)
		}
		s.stale = nil
		s.staleMu.Unlock()
		if t := s.tail; t != nil {
			if err := t.lock(ctx); err != nil {
				errs = append(errs, fmt.Errorf("jetstream: closing: %w", err))
			} else {
				del(t.cons)
				t.cons = ""
				t.unlock()
			}
		}
		if s.owned {
			s.nc.Close()
		}
	})
	return errors.Join(errs...)
}

// createConsumer makes an ephemeral, in-memory, AckNone consumer and
// returns its name.
func (s *Source) createConsumer(ctx context.Context, cfg natsjs.ConsumerConfig) (string, error) {
	cfg.AckPolicy = natsjs.AckNonePolicy
	cfg.MemoryStorage = true
	cfg.Replicas = 1
	cfg.InactiveThreshold = consumerInactive
	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	c, err := s.js.CreateConsumer(rctx, s.name, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if errors.Is(err, natsjs.ErrStreamNotFound) {
			return "", fmt.Errorf("jetstream: stream %q: %w", s.name, source.ErrStreamNotFound)
		}
		return "", fmt.Errorf("jetstream: stream %q: creating a consumer (filter %q): %w", s.name, cfg.FilterSubject, err)
	}
	return c.CachedInfo().Name, nil
}

// deleteConsumer deletes a consumer; one already gone is not an error.
func (s *Source) deleteConsumer(ctx context.Context, name string) error {
	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	err := s.js.DeleteConsumer(rctx, s.name, name)
	if err == nil || errors.Is(err, natsjs.ErrConsumerNotFound) || errors.Is(err, natsjs.ErrStreamNotFound) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("jetstream: stream %q: deleting consumer %q: %w", s.name, name, err)
}

// abandon remembers a consumer whose position is unknown because a call
// gave up on it (its context ended mid-request), for Close to delete.
func (s *Source) abandon(name string) {
	if name == "" {
		return
	}
	s.staleMu.Lock()
	s.stale = append(s.stale, name)
	s.staleMu.Unlock()
}
