// Package redisstream is the source driver over Redis Streams, for
// deployments whose producers already write to Redis: each stream key is a
// shard that idem reads in entry-ID order, with AWS Lambda's event source
// mapping semantics and exactly-once effects, like any other source.
//
// # Reading
//
// The source reads with XRANGE from a position and waits with XREAD BLOCK.
// It uses no consumer group and writes nothing to Redis: checkpoints live in
// idem's store, where they commit atomically with completion marks and
// state. Any number of mappings, processes and replicas may read the same
// keys independently; a read runs as a read-only script (EVALSHA), so it
// also runs on replicas.
//
// # Shards and keys
//
// Every stream key is one shard, and the shard ID is the key itself
// (WithKeys, or WithKeyPrefix for prefix-0 … prefix-(n-1)). The keys are
// fixed when New runs; Shards lists them in that order. A key that does
// not exist is an empty shard, not an error: Redis creates a stream with
// its first XADD, so a shard nobody has written to yet is simply empty. A
// misspelt key therefore looks like an idle shard; a key holding another
// type is an error. A shard ID that is not one of the keys is
// source.ErrShardNotFound.
//
// # Entries
//
// Producers write one record per entry, with these fields:
//
//	XADD <key> * data <payload> pk <partition key>
//
// "data" becomes Record.Data (empty when absent); "pk" becomes
// Record.PartitionKey, the shard's key when absent or empty. When a field
// appears twice, its first value counts; other fields are ignored.
// Record.ArrivalTime is the ID's millisecond part: the server's clock when
// the entry was added with an automatic ID ("*"), so AT_TIMESTAMP assumes
// the Redis server's clock is close to idem's.
//
// # Sequences
//
// A record's Sequence is its entry ID "ms-seq" as the number ms*2^64+seq,
// written in SequenceWidth (40) decimal digits: it orders as the IDs do, is
// spelt identically on every read, and maps back exactly (SequenceOfID,
// IDOfSequence). The zero Sequence is the position before every entry.
//
// # Starting positions
//
// TRIM_HORIZON is the zero Sequence when nothing was ever removed from the
// stream, else the position just before its first retained entry (or its
// last-generated-id when it is empty): starting there reports no loss for
// entries removed before the mapping started. LATEST is the stream's
// last-generated-id (the zero Sequence for a new stream). AT_TIMESTAMP is
// the position just before ID <ts in ms>-0, but never below TRIM_HORIZON.
//
// # Retention and loss
//
// Redis keeps stream entries until something removes them: XTRIM, XADD
// with MAXLEN or MINID, or XDEL. It has no time-based retention of its
// own, so WithRetention declares how long entries stay: completion marks
// are kept at least that long, and an entry that stays longer could run
// again if it is replayed after its mark expired. Keep entries no longer
// than the retention, e.g. with XADD … MINID = <now-retention in ms>-0 (an
// approximate MINID ~ keeps some entries longer: declare a retention with
// room for it).
//
// Entries trimmed before a mapping read them are reported in
// source.ReadResult.Lost, never skipped silently; Trimmed is the position
// just before the first entry that remains (or the last-generated-id when
// none remains above the reader). Redis 7 counts every entry ever added
// (XINFO STREAM entries-added) but does not say which IDs trimming removed,
// so the source counts as follows:
//
//   - Lost is exact when reading from the zero Sequence, and when the
//     source itself saw how many entries lay at or below the reader's
//     position (it remembers that, in memory, for positions it returned
//     recently: the last record of a read, the newest and the trim
//     horizon). A reader that was caught up when trimming passed its
//     position therefore learns that nothing was lost.
//   - Otherwise (after a restart, say) a reader whose position trimming has
//     passed is told Lost = 1, meaning "possibly one or more": without the
//     count, the source cannot tell whether entries lay between the
//     position and the first retained entry, and it will not stay silent.
//   - XDEL is not retention. An XDEL'd entry is reported (as 1) when it is
//     the newest one XDEL removed (max-deleted-entry-id) and lies between
//     the reader and the next entry, or when every entry above the reader
//     is gone; an older XDEL'd entry in the middle of the stream goes
//     unnoticed. Trim, do not XDEL, records that should expire.
//   - Deleting the key (DEL, UNLINK, expiry) or XSETID resets what Redis
//     knows: the loss of the entries it held goes unnoticed.
//
// # Waiting
//
// Wait is one XREAD BLOCK of at most the poll interval (WithPollInterval),
// shortened to the context's deadline; it returns at once when an entry
// above the position exists. The server ends the block, so a Wait returns
// about a round trip after its deadline, and a blocked command is not
// interrupted when its context is cancelled (go-redis cannot): such a Wait
// returns when its block ends, at most one poll interval later; Close ends
// it at once when New made the client. Each waiting shard holds one pooled
// connection while it blocks.
//
// # Requirements
//
// Redis 7.0 or later (XINFO STREAM's entries-added and
// max-deleted-entry-id, script flags); New refuses an older server. Redis
// Cluster works: every command names one key.
package redisstream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/redisclient"
	"github.com/idem-run/idem/source"
)

// DefaultAddr is the server New connects to without WithAddr or WithClient.
const DefaultAddr = "127.0.0.1:6379"

// DefaultPollInterval is the longest a Wait blocks without WithPollInterval.
const DefaultPollInterval = time.Second

// DefaultRetention is the retention Retention reports without WithRetention,
// the default of idem's embedded streams.
const DefaultRetention = 24 * time.Hour

// ErrClosed is wrapped by the errors of a Source's methods after Close.
var ErrClosed = errors.New("redisstream: source closed")

// errOldServer is wrapped by the errors for a server older than Redis 7.0.
var errOldServer = errors.New("redisstream: Redis 7.0 or later is required")

// Source is a set of Redis stream keys read as one idem stream, one shard
// per key; it implements source.Driver. It is safe for concurrent use. It
// starts no goroutine; after Close its methods return errors wrapping
// ErrClosed.
type Source struct {
	client    goredis.UniversalClient
	own       bool // New made the client, so Close closes it
	name      string
	keys      []string
	shards    map[string]*shard
	poll      time.Duration
	retention time.Duration
	closed    atomic.Bool
}

var _ source.Driver = (*Source)(nil)

// shard is one stream key and what the source remembers about it.
type shard struct {
	key string
	ord ordinals
}

// Option configures New.
type Option func(*config)

type config struct {
	client    goredis.UniversalClient
	addr      string
	db        int
	keys      []string
	keysSet   bool
	prefix    string
	nshards   int
	prefixSet bool
	name      string
	poll      time.Duration
	retention time.Duration
}

// WithClient makes the Source use client (a *redis.Client,
// *redis.ClusterClient, a failover client…) instead of making its own. The
// caller keeps ownership: Close does not close it. Drivers make one attempt
// per call, so give the client MaxRetries -1, and ContextTimeoutEnabled so
// that context deadlines bound commands; its pool needs a connection per
// shard waiting in Wait, plus headroom.
func WithClient(client goredis.UniversalClient) Option {
	return func(c *config) { c.client = client }
}

// WithAddr sets the server's host:port (default DefaultAddr). It is ignored
// with WithClient.
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithDB selects the logical database (default 0). It is ignored with
// WithClient.
func WithDB(db int) Option { return func(c *config) { c.db = db } }

// WithKeys sets the stream keys, one per shard; each key is its shard's ID.
// The order is Shards' order. Use it or WithKeyPrefix, not both.
func WithKeys(keys ...string) Option {
	return func(c *config) { c.keys, c.keysSet = append([]string(nil), keys...), true }
}

// WithKeyPrefix sets shards stream keys named prefix-0 … prefix-(shards-1).
// Use it or WithKeys, not both.
func WithKeyPrefix(prefix string, shards int) Option {
	return func(c *config) { c.prefix, c.nshards, c.prefixSet = prefix, shards, true }
}

// WithStream sets the stream name records carry in Record.Stream, which the
// default idempotency key ("stream/shard/sequence") includes: give it the
// name the configuration gives the stream, and keep it. Default: the
// prefix of WithKeyPrefix, or the first key of WithKeys.
func WithStream(name string) Option { return func(c *config) { c.name = name } }

// WithPollInterval sets the longest time Wait blocks without news (default
// DefaultPollInterval). New records end a Wait at once; the interval bounds
// how long a cancelled Wait without a deadline takes to return.
func WithPollInterval(d time.Duration) Option { return func(c *config) { c.poll = d } }

// WithRetention declares how long entries stay in the streams (default
// DefaultRetention), which Retention reports: completion marks must outlive
// it. Redis has no time-based retention: trim the streams (MAXLEN, MINID)
// so that entries stay no longer; entries trimmed before they are read are
// reported as lost.
func WithRetention(d time.Duration) Option { return func(c *config) { c.retention = d } }

// New checks the options, connects to Redis (unless WithClient), and checks
// that the server answers and is Redis 7.0 or later. ctx bounds those first
// calls only.
func New(ctx context.Context, opts ...Option) (*Source, error) {
	cfg := config{addr: DefaultAddr, poll: DefaultPollInterval, retention: DefaultRetention}
	for _, o := range opts {
		o(&cfg)
	}
	keys, name, err := cfg.shardKeys()
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.poll <= 0:
		return nil, fmt.Errorf("redisstream: poll interval %s must be positive", cfg.poll)
	case cfg.retention <= 0:
		return nil, fmt.Errorf("redisstream: retention %s must be positive", cfg.retention)
	case cfg.db < 0:
		return nil, fmt.Errorf("redisstream: database %d is negative", cfg.db)
	}
	s := &Source{
		client: cfg.client, name: name, keys: keys, shards: make(map[string]*shard, len(keys)),
		poll: cfg.poll, retention: cfg.retention,
	}
	for _, k := range keys {
		s.shards[k] = &shard{key: k}
	}
	if s.client == nil {
		s.own = true
		// One connection per shard may be blocked in Wait.
		s.client = redisclient.New(cfg.addr, cfg.db, 10*runtime.GOMAXPROCS(0)+2*len(keys))
	}
	fail := func(err error) (*Source, error) {
		if s.own {
			_ = s.client.Close()
		}
		return nil, err
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fail(fmt.Errorf("redisstream: ping: %w", err))
	}
	if err := s.checkVersion(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// shardKeys returns the configured keys and the stream's name.
func (c *config) shardKeys() ([]string, string, error) {
	var keys []string
	name := c.name
	switch {
	case c.keysSet && c.prefixSet:
		return nil, "", errors.New("redisstream: WithKeys and WithKeyPrefix exclude each other")
	case c.keysSet:
		keys = c.keys
		if len(keys) == 0 {
			return nil, "", errors.New("redisstream: WithKeys needs at least one key")
		}
		if name == "" {
			name = keys[0]
		}
	case c.prefixSet:
		if c.prefix == "" {
			return nil, "", errors.New("redisstream: WithKeyPrefix needs a non-empty prefix")
		}
		if c.nshards < 1 {
			return nil, "", fmt.Errorf("redisstream: WithKeyPrefix(%q, %d): shards must be at least 1", c.prefix, c.nshards)
		}
		for i := range c.nshards {
			keys = append(keys, c.prefix+"-"+strconv.Itoa(i))
		}
		if name == "" {
			name = c.prefix
		}
	default:
		return nil, "", errors.New("redisstream: no stream keys: use WithKeys or WithKeyPrefix")
	}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if k == "" {
			return nil, "", errors.New("redisstream: a stream key is empty")
		}
		if seen[k] {
			return nil, "", fmt.Errorf("redisstream: stream key %q appears twice", k)
		}
		seen[k] = true
	}
	return keys, name, nil
}

// checkVersion refuses a server that says it is older than Redis 7.0. A
// server that does not answer INFO is let through: every read checks the
// stream counters it needs anyway.
func (s *Source) checkVersion(ctx context.Context) error {
	info, err := s.client.Info(ctx, "server").Result()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("redisstream: INFO server: %w", err)
		}
		return nil
	}
	for line := range strings.SplitSeq(info, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err == nil && n < 7 {
			return fmt.Errorf("%w: the server is Redis %s", errOldServer, v)
		}
		return nil
	}
	return nil
}

// Close makes further calls fail with ErrClosed and closes the client if
// New made it, which ends a Wait blocked on it. It is safe to call more
// than once.
func (s *Source) Close() error {
	if s.closed.Swap(true) || !s.own {
		return nil
	}
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redisstream: close: %w", err)
	}
	return nil
}

// Stream is the name records carry in Record.Stream (WithStream).
func (s *Source) Stream() string { return s.name }

// Retention is the declared retention (WithRetention). Redis deletes
// nothing by age, so it bounds how long an entry is served only if whatever
// trims the streams keeps entries no longer: approximate trimming (MAXLEN ~
// or MINID ~) keeps entries until a whole node of the stream can go, and a
// trim that runs periodically keeps them up to its period longer; declare
// the retention with those included.
func (s *Source) Retention() time.Duration { return s.retention }

// Shards lists the stream keys, in the order they were configured.
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	if err := s.enter(ctx, "shards"); err != nil {
		return nil, err
	}
	return append([]string(nil), s.keys...), nil
}

// enter checks ctx and Close.
func (s *Source) enter(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redisstream: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// shard returns the shard with ID id, after enter.
func (s *Source) shard(ctx context.Context, op, id string) (*shard, error) {
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	sh, ok := s.shards[id]
	if !ok {
		return nil, fmt.Errorf("redisstream: %s shard %q: %w", op, id, source.ErrShardNotFound)
	}
	return sh, nil
}

// read runs readScript: entries from start on (inclusive), at most limit of
// them and about maxBytes of data, and the stream's counters.
func (s *Source) read(ctx context.Context, sh *shard, start entryID, limit, maxBytes int) (streamInfo, []entry, error) {
	v, err := readScript.Run(ctx, s.client, []string{sh.key}, start.String(), limit, maxBytes).Result()
	if err != nil {
		if ctx.Err() != nil {
			return streamInfo{}, nil, fmt.Errorf("redisstream: read %q: %w", sh.key, ctx.Err())
		}
		if s.closed.Load() {
			return streamInfo{}, nil, fmt.Errorf("redisstream: read %q: %w", sh.key, ErrClosed)
		}
		return streamInfo{}, nil, fmt.Errorf("redisstream: read %q: %w", sh.key, err)
	}
	in, entries, err := parseReply(sh.key, v)
	if err != nil {
		return streamInfo{}, nil, fmt.Errorf("redisstream: read %q: %w", sh.key, err)
	}
	if in.exists {
		sh.ord.noteInfo(&in)
	}
	return in, entries, nil
}

// Start returns the position a mapping without a checkpoint starts from:
// see the package documentation.
func (s *Source) Start(ctx context.Context, shardID string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	sh, err := s.shard(ctx, "start", shardID)
	if err != nil {
		return "", err
	}
	switch pos {
	case source.TrimHorizon, source.Latest, source.AtTimestamp:
	default:
		return "", fmt.Errorf("redisstream: shard %q: unknown starting position %q", shardID, pos)
	}
	in, _, err := s.read(ctx, sh, entryID{}, 0, 0)
	if err != nil {
		return "", err
	}
	switch pos {
	case source.TrimHorizon:
		return in.horizon().position(), nil
	case source.Latest:
		return in.lastGen.position(), nil
	}
	// Just before <ts>-0: entries of ts's millisecond and later.
	var at entryID
	if ms := ts.UnixMilli(); ms > 0 && !ts.IsZero() {
		at = entryID{ms: uint64(ms)}.prev()
	}
	if h := in.horizon(); at.cmp(h) < 0 {
		at = h
	}
	return at.position(), nil
}

// horizon is TRIM_HORIZON: the position below every retained entry above
// which nothing was removed.
func (in *streamInfo) horizon() entryID {
	switch {
	case !in.exists || in.removed() == 0:
		return entryID{}
	case in.length > 0:
		return in.first.prev()
	default:
		return in.lastGen
	}
}

// Read returns up to limit records of shard above after, stopping before
// their Data passes maxBytes (but with at least one record when there is
// one), with the loss, if any, between after and the first record (see the
// package documentation). The records' Data is a fresh copy, never reused.
func (s *Source) Read(ctx context.Context, shardID string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	sh, err := s.shard(ctx, "read", shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	a, err := parseSequence(after)
	if err != nil {
		return source.ReadResult{}, fmt.Errorf("redisstream: read shard %q: %w", shardID, err)
	}
	if limit <= 0 {
		return source.ReadResult{}, nil
	}
	start, ok := a.next()
	if !ok {
		limit = 0 // nothing can follow the largest ID
	}
	in, entries, err := s.read(ctx, sh, start, limit, maxBytes)
	if err != nil {
		return source.ReadResult{}, err
	}
	var res source.ReadResult
	if !in.exists {
		return res, nil
	}
	res.Latest = in.last.position()
	res.Records = s.records(sh, entries)
	oa, known := sh.ord.lookup(a, in.added)
	var lost uint64
	var trimmed entryID
	if len(entries) == 0 {
		lost, trimmed = lossToEnd(a, oa, known, &in)
	} else {
		lost, trimmed = lossBefore(a, entries[0].id, oa, known, &in)
	}
	if lost > 0 {
		res.Lost, res.Trimmed = lost, trimmed.position()
	}
	if len(entries) > 0 {
		sh.ord.noteRead(a, oa, known, lost, entries, &in)
	}
	return res, nil
}

// records turns entries into records sharing one data buffer and one
// string of sequences.
func (s *Source) records(sh *shard, entries []entry) []idem.Record {
	if len(entries) == 0 {
		return nil
	}
	size := 0
	for i := range entries {
		size += len(entries[i].data)
	}
	data := make([]byte, 0, size)
	seqs := make([]byte, 0, len(entries)*SequenceWidth)
	for i := range entries {
		data = append(data, entries[i].data...)
		seqs = entries[i].id.appendSequence(seqs)
	}
	seqStr := string(seqs)
	recs := make([]idem.Record, len(entries))
	off := 0
	for i := range entries {
		e := &entries[i]
		end := off + len(e.data)
		pk := e.pk
		if pk == "" {
			pk = sh.key
		}
		recs[i] = idem.Record{
			Stream:       s.name,
			ShardID:      sh.key,
			Sequence:     idem.Sequence(seqStr[i*SequenceWidth : (i+1)*SequenceWidth]),
			PartitionKey: pk,
			Data:         data[off:end:end],
			ArrivalTime:  arrival(e.id),
		}
		off = end
	}
	return recs
}

// arrival is the time of an entry ID's millisecond part.
func arrival(id entryID) time.Time {
	const maxMs = 1<<63 - 1
	return time.UnixMilli(int64(min(id.ms, maxMs)))
}

// lossToEnd is the loss of a read that found no entry above a: every entry
// ever added above a is gone.
func lossToEnd(a entryID, oa uint64, known bool, in *streamInfo) (uint64, entryID) {
	if in.lastGen.cmp(a) <= 0 {
		return 0, entryID{} // nothing above a was ever added
	}
	if known {
		if in.added <= oa {
			return 0, entryID{} // inconsistent: the key was replaced
		}
		return in.added - oa, in.lastGen
	}
	return 1, in.lastGen
}

// lossBefore is the loss between a and r0, the first entry above a.
func lossBefore(a, r0 entryID, oa uint64, known bool, in *streamInfo) (uint64, entryID) {
	if next, _ := a.next(); next == r0 || in.removed() == 0 {
		return 0, entryID{}
	}
	if r0 == in.first {
		// a is below the first retained entry: trimming may have passed it.
		// Entries below it number removed() when XDEL took none above it.
		removed := in.removed()
		switch {
		case known && removed <= oa:
			return 0, entryID{} // every entry below r0 is at or below a
		case known && !in.xdelFrom(r0):
			return removed - oa, r0.prev()
		}
		return 1, r0.prev() // possibly: see the package documentation
	}
	// Trimming did not pass a; only XDEL can have removed entries between.
	if in.maxDeleted.cmp(a) > 0 && in.maxDeleted.cmp(r0) < 0 {
		return 1, r0.prev()
	}
	return 0, entryID{}
}

// Wait returns when shard has an entry above after, when the poll interval
// or ctx's deadline passes, or (see the package documentation) after ctx is
// cancelled.
func (s *Source) Wait(ctx context.Context, shardID string, after idem.Sequence) error {
	sh, err := s.shard(ctx, "wait", shardID)
	if err != nil {
		return err
	}
	a, err := parseSequence(after)
	if err != nil {
		return fmt.Errorf("redisstream: wait shard %q: %w", shardID, err)
	}
	block := s.poll
	if dl, ok := ctx.Deadline(); ok {
		if block = min(block, time.Until(dl)); block <= 0 {
			<-ctx.Done() // the deadline has passed, or is about to
			return ctx.Err()
		}
	}
	// The server bounds the block; the command runs without ctx's deadline,
	// which would otherwise race the server's answer and cut the connection.
	// BLOCK 0 would block forever: at least 1ms.
	err = s.client.XRead(context.WithoutCancel(ctx), &goredis.XReadArgs{
		Streams: []string{sh.key, a.String()},
		Count:   1,
		Block:   max(block, time.Millisecond),
	}).Err()
	switch {
	case err == nil, errors.Is(err, goredis.Nil):
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case s.closed.Load():
		return fmt.Errorf("redisstream: wait %q: %w", sh.key, ErrClosed)
	}
	return fmt.Errorf("redisstream: wait %q: %w", sh.key, err)
}

// ordinals remembers, for a few positions of one stream, their ordinal: how
// many entries were ever added at or below them. Redis cannot say which IDs
// trimming removed, only how many entries it removed; a position's ordinal
// turns that count into an exact loss. An ordinal never changes once the
// position is at or below the last-generated-id, as later entries have
// higher IDs; it is recorded with entries-added then, and forgotten if
// entries-added goes back (the key was deleted and written again).
type ordinals struct {
	mu   sync.Mutex
	memo [16]ordinal
	next int
}

type ordinal struct {
	pos   entryID
	ord   uint64
	added uint64 // entries-added when recorded
	set   bool
}

// lookup returns pos's ordinal if known; the zero position's is 0.
func (o *ordinals) lookup(pos entryID, added uint64) (uint64, bool) {
	if pos.isZero() {
		return 0, true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, m := range o.memo {
		if m.set && m.pos == pos && m.added <= added {
			return m.ord, true
		}
	}
	return 0, false
}

func (o *ordinals) note(pos entryID, ord, added uint64) {
	if pos.isZero() {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.memo {
		if o.memo[i].set && o.memo[i].pos == pos {
			o.memo[i] = ordinal{pos, ord, added, true}
			return
		}
	}
	o.memo[o.next] = ordinal{pos, ord, added, true}
	o.next = (o.next + 1) % len(o.memo)
}

// noteInfo records the ordinals any read learns: the last-generated-id's
// is entries-added, and when XDEL removed nothing at or above the first
// retained entry, the position just before it has every removed entry
// below it.
func (o *ordinals) noteInfo(in *streamInfo) {
	o.note(in.lastGen, in.added, in.added)
	if in.length > 0 && !in.xdelFrom(in.first) {
		o.note(in.first.prev(), in.removed(), in.added)
	}
}

// noteRead records the ordinal of the last entry a read from a returned,
// when it is known: a reader's next position.
func (o *ordinals) noteRead(a entryID, oa uint64, known bool, lost uint64, entries []entry, in *streamInfo) {
	r0, rk := entries[0].id, entries[len(entries)-1].id
	if in.xdelFrom(r0) {
		return // entries between the ones returned may be missing
	}
	k := uint64(len(entries))
	switch {
	case rk == in.last:
		o.note(rk, in.added, in.added)
	case r0 == in.first:
		o.note(rk, in.removed()+k, in.added)
	case known && lost == 0 && !in.xdelFrom(a) && a.cmp(in.first) >= 0:
		// Nothing was ever removed between a and r0.
		o.note(rk, oa+k, in.added)
	}
}
