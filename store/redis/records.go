package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem/store"
)

var _ store.Clock = (*Store)(nil)

// ScopeProgress returns the progress of every mapping of key.Scope over
// key.Stream and key.Shard, in one atomic round trip (MULTI): the hash's
// fields, and the string key earlier versions wrote as Mapping "" unless
// the hash has its own. key.Mapping is ignored.
func (s *Store) ScopeProgress(ctx context.Context, key store.ProgressKey) ([]store.MappingProgress, error) {
	if err := s.enter("scope progress"); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("redis store: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	var all *goredis.MapStringStringCmd
	var legacy *goredis.StringCmd
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		all = p.HGetAll(ctx, s.mappingProgressKey(key))
		legacy = p.Get(ctx, s.progressKey(key))
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, wrap(err)
	}
	fields, err := all.Result()
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]store.MappingProgress, 0, len(fields)+1)
	for m, v := range fields {
		p, err := decodeProgress(v)
		if err != nil {
			return nil, wrap(fmt.Errorf("mapping %q: %w", m, err))
		}
		out = append(out, store.MappingProgress{Mapping: m, Progress: p})
	}
	if _, ok := fields[""]; !ok {
		v, err := legacy.Result()
		switch {
		case errors.Is(err, goredis.Nil):
		case err != nil:
			return nil, wrap(err)
		default:
			p, err := decodeProgress(v)
			if err != nil {
				return nil, wrap(fmt.Errorf("scope-wide progress: %w", err))
			}
			out = append(out, store.MappingProgress{Progress: p})
		}
	}
	return out, nil
}

// ClaimRecords claims c.Keys for c.Owner in one script, which walks the
// keys in window order and stops at the first one another owner holds; see
// store.RecordClaims. Redis runs the script alone, so the walk needs no
// lock order. A fence that no longer holds makes an error wrapping
// store.ErrFenced, and nothing is claimed. Leases are decided from c.Now,
// never from the keys' TTLs (a grace past the lease, for collection only).
func (s *Store) ClaimRecords(ctx context.Context, c *store.RecordClaims) error {
	c.Reset()
	if err := s.enter("claim records"); err != nil {
		return err
	}
	wrap := func(err error) error {
		return fmt.Errorf("redis store: claim records of owner %x (%d keys): %w", c.Owner[:], len(c.Keys), err)
	}
	if len(c.Keys) == 0 && c.Fence == nil {
		return nil
	}
	n := len(c.Keys)
	nkeys := n
	if c.Marks {
		nkeys += n
	}
	keys := make([]string, 0, nkeys+1)
	for _, k := range c.Keys {
		keys = append(keys, s.recordClaimKey(k))
	}
	marks := "0"
	if c.Marks {
		marks = "1"
		for _, k := range c.Keys {
			keys = append(keys, s.markKey(k))
		}
	}
	if c.Fence != nil {
		keys = append(keys, s.claimKey(c.Fence.Key))
	}
	res, err := claimRecordsScript.Run(ctx, s.client, keys,
		hex.EncodeToString(c.Owner[:]), unixNano(c.Now), unixNano(c.LeaseUntil), s.gcAt(c.LeaseUntil),
		marks, fenceToken(c.Fence), n).Result()
	if err != nil {
		return wrap(err)
	}
	code, rest, err := scriptResult(res)
	if err != nil {
		return wrap(err)
	}
	switch code {
	case "ok", "held":
	case "fenced":
		held, _ := str(rest, 0)
		return wrap(fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, c.Fence.Key[:], c.Fence.Token, held))
	default:
		return wrap(fmt.Errorf("unexpected script reply %q", code))
	}
	st, err := str(rest, 0)
	if err != nil {
		return wrap(err)
	}
	if len(st) > n || (code == "ok" && len(st) != n) || (code == "held" && (st == "" || st[len(st)-1] != '2')) {
		return wrap(fmt.Errorf("script walked %q over %d keys", st, n))
	}
	for i := range len(st) {
		switch st[i] {
		case '1':
			c.Status[i] = store.Acquired
		case '2':
			c.Status[i] = store.InProgress
		case '3':
			c.Status[i] = store.Completed
		default:
			return wrap(fmt.Errorf("script status %q for key %x", st[i], c.Keys[i][:]))
		}
	}
	if code == "held" {
		lease, err := str(rest, 1)
		if err != nil {
			return wrap(err)
		}
		ns, err := strconv.ParseInt(lease, 10, 64)
		if err != nil {
			return wrap(fmt.Errorf("record claim %x: corrupt lease %q", c.Keys[len(st)-1][:], lease))
		}
		c.HeldUntil = fromUnixNano(ns)
	}
	return nil
}

// ClaimRange claims [c.From, c.To] of a shard for c.Key.Mapping in one
// script: the fence check, the overlap check against the other mappings'
// live ranges (sequences compared as numbers of any length), and, unless
// another range holds it, the replacement of the mapping's own range and
// the read of every mapping's progress of the scope over the shard, with
// no commit in between; see store.RangeClaim. A fence that no longer holds
// makes an error wrapping store.ErrFenced, and nothing is claimed. Leases
// are decided from c.Now, never from the hash's TTL (a grace past the
// latest lease, for collection only).
func (s *Store) ClaimRange(ctx context.Context, c *store.RangeClaim) error {
	c.Held, c.HeldUntil, c.Progress = false, time.Time{}, nil
	k := c.Key
	wrap := func(err error) error {
		return fmt.Errorf("redis store: claim range [%s, %s] of scope %q mapping %q stream %q shard %s: %w",
			c.From, c.To, k.Scope, k.Mapping, k.Stream, k.Shard, err)
	}
	if err := s.enter("claim range"); err != nil {
		return err
	}
	if !c.From.Valid() || !c.To.Valid() {
		return wrap(errors.New("sequences are not decimal numbers"))
	}
	keys := make([]string, 3, 4)
	keys[0], keys[1], keys[2] = s.rangeKey(k), s.mappingProgressKey(k), s.progressKey(k)
	if c.Fence != nil {
		keys = append(keys, s.claimKey(c.Fence.Key))
	}
	res, err := claimRangeScript.Run(ctx, s.client, keys, k.Mapping, string(c.From), string(c.To),
		unixNano(c.Now), unixNano(c.LeaseUntil), s.grace.Milliseconds(), fenceToken(c.Fence)).Result()
	if err != nil {
		return wrap(err)
	}
	code, rest, err := scriptResult(res)
	if err != nil {
		return wrap(err)
	}
	switch code {
	case "ok":
	case "held":
		lease, err := str(rest, 0)
		if err != nil {
			return wrap(err)
		}
		ns, err := strconv.ParseInt(lease, 10, 64)
		if err != nil {
			return wrap(fmt.Errorf("corrupt range claim lease %q", lease))
		}
		c.Held, c.HeldUntil = true, fromUnixNano(ns)
		return nil
	case "fenced":
		held, _ := str(rest, 0)
		return wrap(fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, c.Fence.Key[:], c.Fence.Token, held))
	default:
		return wrap(fmt.Errorf("unexpected script reply %q", code))
	}
	if len(rest) < 2 || len(rest)%2 != 0 {
		return wrap(fmt.Errorf("script replied %d values", len(rest)))
	}
	out := make([]store.MappingProgress, 0, len(rest)/2)
	for i := 2; i < len(rest); i += 2 {
		m, err := str(rest, i)
		if err != nil {
			return wrap(err)
		}
		v, err := str(rest, i+1)
		if err != nil {
			return wrap(err)
		}
		p, err := decodeProgress(v)
		if err != nil {
			return wrap(fmt.Errorf("mapping %q: %w", m, err))
		}
		out = append(out, store.MappingProgress{Mapping: m, Progress: p})
	}
	if has, _ := str(rest, 1); has == "1" {
		v, err := str(rest, 0)
		if err != nil {
			return wrap(err)
		}
		p, err := decodeProgress(v)
		if err != nil {
			return wrap(fmt.Errorf("scope-wide progress: %w", err))
		}
		out = append(out, store.MappingProgress{Progress: p})
	}
	c.Progress = out
	return nil
}

// Time returns the server's current time (TIME): the clock processes
// sharing the store compare theirs with, so that mark expiry and leases
// hold across hosts; see store.Clock.
func (s *Store) Time(ctx context.Context) (time.Time, error) {
	if err := s.enter("time"); err != nil {
		return time.Time{}, err
	}
	t, err := s.client.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("redis store: server time: %w", err)
	}
	return t, nil
}
