// Package redis is the store driver over Redis, for deployments that
// already run Redis and want several idem processes (or a restart on
// another machine) to share checkpoints, completion marks, state,
// on-failure records and idempotency claims without a shared disk.
//
// # Atomicity
//
// Commit sends the whole store.Write to the server as one Lua script:
// Redis runs a script without interleaving any other command, and the
// script validates everything (the checkpoint never moving backwards,
// the types of the keys it writes) before its first write, so a Write is
// applied whole or, with an error, not at all. Claims are scripts too, so
// one key has exactly one winner however many processes claim it.
//
// # Durability
//
// A Write is as durable as the server makes it. Only `appendonly yes` with
// `appendfsync always` has Redis fsync a script's writes before it
// answers; with the default (no AOF, or `appendfsync everysec`) a Redis
// crash can lose acknowledged commits: completion marks disappear and
// records run again, so exactly-once becomes at-least-once. New reads both
// settings, logs a warning when they fall short, and reports the finding
// with Store.Durable. A replica does not help: replication is asynchronous.
//
// # Keys
//
// Every key of a deployment starts with "{prefix}:" (WithPrefix, default
// "idem"). The braces are a Redis Cluster hash tag: all keys of a
// deployment live in one slot, so each script's keys are in one slot as
// Redis Cluster requires; a deployment is therefore served by one primary,
// and deployments with other prefixes spread over the cluster.
//
//	{p}:cp:<len>:<mapping><len>:<stream><shard>  hash: seq processed skipped discarded lost
//	{p}:pm:<len>:<scope><len>:<stream><shard>    hash: per mapping, high water, then ",seq" per sequence above it, then "|filter"
//	{p}:pg:<len>:<scope><len>:<stream><shard>    string: the scope-wide progress earlier versions wrote (read as mapping "")
//	{p}:m:<32 hex digits>                        string: mark expiry, Unix nanoseconds
//	{p}:rc:<32 hex digits>                       string: record claim, owner (hex) ":" lease end (Unix ns)
//	{p}:rg:<len>:<scope><len>:<stream><shard>    hash: range claim per mapping, first ":" last sequence ":" lease end (Unix ns)
//	{p}:s:<len>:<namespace><key>                 string: state value
//	{p}:f:<destination>                          stream: on-failure entries (Store.Failures)
//	{p}:c:<32 hex digits>                        hash: idempotency claim
//	{p}:ctoken                                   counter: last fencing token handed out
//
// Sequences are stored as the source spelled them, byte for byte; the
// scripts compare them as numbers of any length.
//
// # Expiry
//
// Whether a mark or a claim is still live is decided from its stored
// timestamp and the now the caller passes, never from a Redis TTL. Keys
// also get a PEXPIREAT one grace period (WithExpiryGrace, default one
// hour) after their logical expiry, as garbage collection only; the grace
// must exceed the clock skew between idem's hosts and the Redis server.
// Fencing tokens come from one counter per deployment, so a claim record
// removed by that collection never lets a token go back.
//
// # Eviction
//
// An evicted key is a lost commit: a mark, a checkpoint, progress or the
// fencing-token counter (fencing tokens would start again). New therefore
// refuses a server whose maxmemory-policy is not noeviction, and warns
// when it cannot read the setting.
//
// Redis 6.2 or later is required (SET PXAT, exclusive XRANGE).
package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem/internal/redisclient"
	"github.com/idem-run/idem/store"
)

// DefaultAddr is the server New connects to without WithAddr or WithClient.
const DefaultAddr = "127.0.0.1:6379"

// DefaultPrefix is the key namespace without WithPrefix.
const DefaultPrefix = "idem"

// DefaultExpiryGrace is how long after their logical expiry Redis keeps
// marks and claims without WithExpiryGrace.
const DefaultExpiryGrace = time.Hour

// Store is the Redis store.Driver and store.Claims. It is safe for
// concurrent use; concurrent Commits travel on separate pooled connections
// and share the server's fsyncs. After Close its methods return errors
// wrapping store.ErrClosed.
type Store struct {
	client  goredis.UniversalClient
	own     bool // the client was made by New, so Close closes it
	prefix  string
	grace   time.Duration
	durable bool
	closed  atomic.Bool
}

var (
	_ store.Driver = (*Store)(nil)
	_ store.Claims = (*Store)(nil)
)

// Option configures New.
type Option func(*config)

type config struct {
	addr   string
	db     int
	prefix string
	client goredis.UniversalClient
	logger *slog.Logger
	grace  time.Duration
}

// WithAddr sets the server's host:port (default DefaultAddr). It is ignored
// with WithClient.
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithDB selects the logical database (default 0). It is ignored with
// WithClient.
func WithDB(db int) Option { return func(c *config) { c.db = db } }

// WithPrefix sets the deployment's key namespace (default DefaultPrefix).
// It must be non-empty and hold no '{' or '}', which would break the hash
// tag that keeps a deployment's keys in one cluster slot.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithClient makes the Store use client (a *redis.Client, *ClusterClient,
// a failover client...) instead of making its own. The caller keeps
// ownership: Close does not close it. The client's own settings then apply;
// store.Driver wants one attempt per call, so give it MaxRetries -1.
func WithClient(client goredis.UniversalClient) Option {
	return func(c *config) { c.client = client }
}

// WithLogger sets the logger New reports the server's durability, and an
// eviction policy it could not read, to (default slog.Default()). The Store logs nothing else; go-redis has a
// process-wide logger of its own (redis.SetLogger), left to the program.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithExpiryGrace sets how long after a mark's or a claim's logical expiry
// Redis keeps its key (default DefaultExpiryGrace; negative counts as 0).
// Expiry is always decided from timestamps; the grace only has to exceed
// the clock skew between idem's hosts and the server.
func WithExpiryGrace(d time.Duration) Option { return func(c *config) { c.grace = max(d, 0) } }

// New connects to Redis, checks that it answers, refuses a server that may
// evict keys (a maxmemory-policy other than noeviction), and reads its
// persistence settings (see Durable). ctx bounds those first calls only.
func New(ctx context.Context, opts ...Option) (*Store, error) {
	cfg := config{addr: DefaultAddr, prefix: DefaultPrefix, grace: DefaultExpiryGrace}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.prefix == "" || strings.ContainsAny(cfg.prefix, "{}") {
		return nil, fmt.Errorf("redis store: prefix %q must be non-empty and hold no '{' or '}'", cfg.prefix)
	}
	if cfg.db < 0 {
		return nil, fmt.Errorf("redis store: database %d is negative", cfg.db)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	s := &Store{client: cfg.client, prefix: "{" + cfg.prefix + "}:", grace: cfg.grace}
	if s.client == nil {
		s.own = true
		s.client = redisclient.New(cfg.addr, cfg.db, 0)
	}
	fail := func(err error) (*Store, error) {
		if s.own {
			_ = s.client.Close()
		}
		return nil, err
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fail(fmt.Errorf("redis store: ping %s: %w", cfg.addr, err))
	}
	if policy, err := s.configGet(ctx, "maxmemory-policy"); err != nil {
		cfg.logger.Warn("redis store: could not read the server's maxmemory-policy; "+
			"unless it is noeviction, Redis may evict completion marks, checkpoints, progress, claims or the fencing-token counter, "+
			"and records then run twice: set maxmemory-policy noeviction",
			"prefix", cfg.prefix, "error", err)
	} else if policy != "noeviction" {
		server := "the server"
		if s.own {
			server += " at " + cfg.addr
		}
		return fail(fmt.Errorf("redis store: %s has maxmemory-policy %q, which may evict completion marks, "+
			"checkpoints, progress, claims or the fencing-token counter, so that records run twice: "+
			"set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)", server, policy))
	}
	durable, appendonly, appendfsync, err := s.checkDurability(ctx)
	if err != nil {
		cfg.logger.Warn("redis store: could not read the server's persistence settings; "+
			"unless it runs with appendonly yes and appendfsync always, a Redis crash can lose completion marks and cause duplicates",
			"prefix", cfg.prefix, "error", err)
	} else if !durable {
		cfg.logger.Warn("redis store: the server does not fsync every write; "+
			"without appendonly yes and appendfsync always, a Redis crash can lose completion marks and cause duplicates",
			"prefix", cfg.prefix, "appendonly", appendonly, "appendfsync", appendfsync)
	}
	s.durable = durable
	return s, nil
}

// configGet reads one server setting.
func (s *Store) configGet(ctx context.Context, param string) (string, error) {
	m, err := s.client.ConfigGet(ctx, param).Result()
	if err != nil {
		return "", fmt.Errorf("CONFIG GET %s: %w", param, err)
	}
	v, ok := m[param]
	if !ok {
		return "", fmt.Errorf("CONFIG GET %s: no such setting", param)
	}
	return v, nil
}

// checkDurability reads appendonly and appendfsync.
func (s *Store) checkDurability(ctx context.Context) (durable bool, appendonly, appendfsync string, err error) {
	if appendonly, err = s.configGet(ctx, "appendonly"); err != nil {
		return false, "", "", err
	}
	if appendfsync, err = s.configGet(ctx, "appendfsync"); err != nil {
		return false, appendonly, "", err
	}
	return appendonly == "yes" && appendfsync == "always", appendonly, appendfsync, nil
}

// Durable reports whether, when New ran, the server had appendonly yes and
// appendfsync always: the only setting under which an acknowledged Commit
// survives a Redis crash. It is false when the settings could not be read
// (managed services often refuse CONFIG).
func (s *Store) Durable() bool { return s.durable }

// Close makes further calls fail with store.ErrClosed and closes the client
// if New made it. It is safe to call more than once.
func (s *Store) Close() error {
	if s.closed.Swap(true) || !s.own {
		return nil
	}
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redis store: close: %w", err)
	}
	return nil
}

// enter returns an error wrapping store.ErrClosed after Close.
func (s *Store) enter(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("redis store: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// Key encodings. Variable parts that another part follows are written as
// <length>:<bytes>, so keys whose parts concatenate alike stay distinct.

func appendPart(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

func (s *Store) key(kind string, parts ...string) string {
	b := make([]byte, 0, 64)
	b = append(b, s.prefix...)
	b = append(b, kind...)
	b = append(b, ':')
	for i, p := range parts {
		if i < len(parts)-1 {
			b = appendPart(b, p)
		} else {
			b = append(b, p...)
		}
	}
	return string(b)
}

func (s *Store) checkpointKey(k store.CheckpointKey) string {
	return s.key("cp", k.Mapping, k.Stream, k.Shard)
}

// progressKey is the scope-wide progress string earlier versions wrote.
func (s *Store) progressKey(k store.ProgressKey) string {
	return s.key("pg", k.Scope, k.Stream, k.Shard)
}

// mappingProgressKey is the hash of a scope's progress over a shard, a
// field per mapping.
func (s *Store) mappingProgressKey(k store.ProgressKey) string {
	return s.key("pm", k.Scope, k.Stream, k.Shard)
}

// rangeKey is the hash of the range claims of a scope over a shard, a
// field per mapping.
func (s *Store) rangeKey(k store.ProgressKey) string {
	return s.key("rg", k.Scope, k.Stream, k.Shard)
}

func (s *Store) stateKey(namespace, key string) string { return s.key("s", namespace, key) }

func (s *Store) failureKey(destination string) string { return s.key("f", destination) }

func (s *Store) hexKey(kind string, k store.MarkKey) string {
	b := make([]byte, 0, len(s.prefix)+len(kind)+1+2*len(k))
	b = append(b, s.prefix...)
	b = append(b, kind...)
	b = append(b, ':')
	b = hex.AppendEncode(b, k[:])
	return string(b)
}

func (s *Store) markKey(k store.MarkKey) string { return s.hexKey("m", k) }

func (s *Store) claimKey(k store.MarkKey) string { return s.hexKey("c", k) }

func (s *Store) recordClaimKey(k store.MarkKey) string { return s.hexKey("rc", k) }

func (s *Store) tokenKey() string { return s.prefix + "ctoken" }

// gcAt is the PEXPIREAT, in Unix milliseconds, of a key that logically
// expires at t: one grace later, and at least 1 (Redis refuses 0).
func (s *Store) gcAt(t time.Time) int64 {
	return max(t.Add(s.grace).UnixMilli(), 1)
}

// unixNano is t in Unix nanoseconds for the scripts' comparisons, which
// know no negative numbers: the zero time and times before 1970 are 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// scriptResult reads a script's reply: a code and its operands.
func scriptResult(v any) (code string, rest []any, err error) {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return "", nil, fmt.Errorf("unexpected script reply %T %v", v, v)
	}
	code, ok = arr[0].(string)
	if !ok {
		return "", nil, fmt.Errorf("unexpected script reply code %T %v", arr[0], arr[0])
	}
	return code, arr[1:], nil
}

// str returns v[i] as a string; scripts answer with strings only.
func str(v []any, i int) (string, error) {
	if i >= len(v) {
		return "", errors.New("short script reply")
	}
	s, ok := v[i].(string)
	if !ok {
		return "", fmt.Errorf("script reply %d is %T, not a string", i, v[i])
	}
	return s, nil
}
