package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem/store"
)

// Claim implements store.Claims in one script: a live record (a completed
// one until it expires, an acquired one while its lease runs) is returned
// or refused; otherwise the record is replaced by an acquired one whose
// token is the deployment's token counter incremented, so it is higher
// than any token the key ever had, even if Redis collected the old record.
func (s *Store) Claim(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.claim(ctx, "claim", claimScript, key, payload, lease, now)
}

// takeoverScript is claimScript, except that a live acquired record with
// the same payload hash is replaced too: only a completed one is returned,
// and only a live one for another payload refused.
//
// KEYS: claim, token counter. ARGV: payload hash, now (Unix ns), lease
// until (Unix ns), PEXPIREAT of the new record (Unix ms).
//
// Reply: {'acquired', token}, {'completed', token, hash, lease, expires,
// result}, or {'mismatch'}.
var takeoverScript = goredis.NewScript(luaCompare + `
local h = redis.call('HMGET', KEYS[1], 'status', 'token', 'hash', 'lease', 'expires', 'result')
if h[1] then
  local live
  if h[1] == 'C' then
    live = h[5] == '0' or cmpdec(ARGV[2], h[5]) < 0
  else
    live = cmpdec(ARGV[2], h[4]) < 0
  end
  if live then
    if h[3] ~= ARGV[1] then
      return {'mismatch'}
    end
    if h[1] == 'C' then
      return {'completed', h[2], h[3], h[4], h[5], h[6] or ''}
    end
  end
end
local token = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'A', 'token', token, 'hash', ARGV[1], 'lease', ARGV[3], 'expires', '0')
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return {'acquired', token}
`)

// Takeover implements store.ClaimTaker in one script, takeoverScript: as
// Claim, with the token counter's next token, but an in-progress record
// for the same payload is taken over whatever its lease.
func (s *Store) Takeover(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.claim(ctx, "take over claim", takeoverScript, key, payload, lease, now)
}

// claim runs script, claimScript or takeoverScript, which share their
// keys, arguments and replies, and reads its reply.
func (s *Store) claim(ctx context.Context, op string, script *goredis.Script, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	if err := s.enter(op); err != nil {
		return store.Claim{}, err
	}
	wrap := func(err error) error { return fmt.Errorf("redis store: %s %x: %w", op, key, err) }
	until := now.Add(lease)
	res, err := script.Run(ctx, s.client, []string{s.claimKey(key), s.tokenKey()},
		payload[:], unixNano(now), unixNano(until), s.gcAt(until)).Result()
	if err != nil {
		return store.Claim{}, wrap(err)
	}
	code, rest, err := scriptResult(res)
	if err != nil {
		return store.Claim{}, wrap(err)
	}
	switch code {
	case "acquired":
		tok, err := str(rest, 0)
		if err != nil {
			return store.Claim{}, wrap(err)
		}
		c := store.Claim{Key: key, Status: store.Acquired, PayloadHash: payload, LeaseUntil: until}
		if c.Token, err = strconv.ParseUint(tok, 10, 64); err != nil {
			return store.Claim{}, wrap(fmt.Errorf("corrupt token %q", tok))
		}
		return c, nil
	case "completed":
		c, err := decodeClaim(key, "C", rest)
		if err != nil {
			return store.Claim{}, wrap(err)
		}
		return c, nil
	case "held":
		lease, _ := str(rest, 0)
		n, _ := strconv.ParseInt(lease, 10, 64)
		return store.Claim{}, wrap(fmt.Errorf("until %s: %w", fromUnixNano(n).Format(time.RFC3339Nano), store.ErrClaimHeld))
	case "mismatch":
		return store.Claim{}, wrap(store.ErrPayloadMismatch)
	}
	return store.Claim{}, wrap(fmt.Errorf("unexpected script reply %q", code))
}

// decodeClaim reads a record from its status and the fields token, hash,
// lease, expires and result.
func decodeClaim(key store.MarkKey, status string, f []any) (store.Claim, error) {
	c := store.Claim{Key: key}
	switch status {
	case "A":
		c.Status = store.Acquired
	case "C":
		c.Status = store.Completed
	default:
		return store.Claim{}, fmt.Errorf("corrupt claim status %q", status)
	}
	var v [5]string
	for i := range v {
		var err error
		if v[i], err = str(f, i); err != nil {
			return store.Claim{}, fmt.Errorf("corrupt claim: %w", err)
		}
	}
	var err error
	if c.Token, err = strconv.ParseUint(v[0], 10, 64); err != nil {
		return store.Claim{}, fmt.Errorf("corrupt claim token %q", v[0])
	}
	if len(v[1]) != len(c.PayloadHash) {
		return store.Claim{}, fmt.Errorf("corrupt claim payload hash of %d bytes", len(v[1]))
	}
	copy(c.PayloadHash[:], v[1])
	lease, err1 := strconv.ParseInt(v[2], 10, 64)
	exp, err2 := strconv.ParseInt(v[3], 10, 64)
	if err1 != nil || err2 != nil {
		return store.Claim{}, fmt.Errorf("corrupt claim times %q %q", v[2], v[3])
	}
	c.LeaseUntil, c.Expires = fromUnixNano(lease), fromUnixNano(exp)
	if v[4] != "" {
		c.Result = []byte(v[4])
	}
	return c, nil
}

// Complete implements store.Claims. The record is kept until expires (the
// zero time: for good), and its key one grace longer.
func (s *Store) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	if err := s.enter("complete"); err != nil {
		return err
	}
	var gc int64
	if !expires.IsZero() {
		gc = s.gcAt(expires)
	}
	res, err := completeScript.Run(ctx, s.client, []string{s.claimKey(c.Key)},
		strconv.FormatUint(c.Token, 10), result, unixNano(expires), gc).Result()
	return finish("complete", c, res, err)
}

// Release implements store.Claims: the record stays, with its lease ended.
func (s *Store) Release(ctx context.Context, c store.Claim) error {
	if err := s.enter("release"); err != nil {
		return err
	}
	res, err := releaseScript.Run(ctx, s.client, []string{s.claimKey(c.Key)}, strconv.FormatUint(c.Token, 10)).Result()
	return finish("release", c, res, err)
}

// Extend implements store.Claims: the lease of c, if it still holds the
// key, now ends at until, and the record's key is kept one grace longer.
func (s *Store) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	if err := s.enter("extend"); err != nil {
		return err
	}
	res, err := extendScript.Run(ctx, s.client, []string{s.claimKey(c.Key)},
		strconv.FormatUint(c.Token, 10), unixNano(until), s.gcAt(until)).Result()
	return finish("extend", c, res, err)
}

// finish reads the reply of Complete's, Release's or Extend's script.
func finish(op string, c store.Claim, res any, err error) error {
	wrap := func(err error) error {
		return fmt.Errorf("redis store: %s claim %x token %d: %w", op, c.Key, c.Token, err)
	}
	if err != nil {
		return wrap(err)
	}
	code, _, err := scriptResult(res)
	if err != nil {
		return wrap(err)
	}
	switch code {
	case "ok":
		return nil
	case "fenced":
		return wrap(store.ErrFenced)
	}
	return wrap(fmt.Errorf("unexpected script reply %q", code))
}

// Lookup implements store.Claims with one HMGET; liveness is decided from
// now and the record's timestamps.
func (s *Store) Lookup(ctx context.Context, key store.MarkKey, now time.Time) (store.Claim, bool, error) {
	if err := s.enter("lookup"); err != nil {
		return store.Claim{}, false, err
	}
	wrap := func(err error) error { return fmt.Errorf("redis store: lookup claim %x: %w", key, err) }
	vals, err := s.client.HMGet(ctx, s.claimKey(key), "status", "token", "hash", "lease", "expires", "result").Result()
	if err != nil {
		return store.Claim{}, false, wrap(err)
	}
	if len(vals) == 0 || vals[0] == nil {
		return store.Claim{}, false, nil
	}
	if vals[5] == nil {
		vals[5] = ""
	}
	status, _ := vals[0].(string)
	c, err := decodeClaim(key, status, vals[1:])
	if err != nil {
		return store.Claim{}, false, wrap(err)
	}
	t := unixNano(now)
	if c.Status == store.Completed {
		if !c.Expires.IsZero() && t >= unixNano(c.Expires) {
			return store.Claim{}, false, nil
		}
		return c, true, nil
	}
	if t >= unixNano(c.LeaseUntil) {
		return store.Claim{}, false, nil
	}
	c.Status = store.InProgress
	return c, true, nil
}

// legacyKeysKey holds what LegacyKeysUntil found: the Unix milliseconds
// when the last record under a legacy key expires, 0 for none.
func (s *Store) legacyKeysKey() string { return s.prefix + "legacykeys" }

// LegacyKeysUntil returns when the last mark or claims record keyed by the
// FNV-1a hash of earlier versions expires (store.LegacyKeyed). The first
// call on a deployment finds out, from the time to live of every mark and
// claims record it holds (a scan, once), and keeps the answer, so that
// records written later, all under SHA-256 keys, never extend it; a
// deployment this version started holds none when first asked. The times
// to live include the expiry grace, which only makes the answer later.
func (s *Store) LegacyKeysUntil(ctx context.Context) (time.Time, error) {
	if err := s.enter("legacy keys"); err != nil {
		return time.Time{}, err
	}
	wrap := func(err error) error { return fmt.Errorf("redis store: legacy keys: %w", err) }
	v, err := s.client.Get(ctx, s.legacyKeysKey()).Result()
	if errors.Is(err, goredis.Nil) {
		var ms int64
		if ms, err = s.scanLegacyKeys(ctx); err != nil {
			return time.Time{}, wrap(err)
		}
		// Another process may have kept its answer first: both are
		// safe, and every process reads the one kept.
		if _, err := s.client.SetNX(ctx, s.legacyKeysKey(), ms, 0).Result(); err != nil {
			return time.Time{}, wrap(err)
		}
		v, err = s.client.Get(ctx, s.legacyKeysKey()).Result()
	}
	if err != nil {
		return time.Time{}, wrap(err)
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, wrap(fmt.Errorf("%s holds %q, not Unix milliseconds", s.legacyKeysKey(), v))
	}
	if ms == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}

// legacyForever is LegacyKeysUntil's answer, in Unix milliseconds, when a
// record never expires: the start of the year 9999.
const legacyForever = 253370764800000

// scanLegacyKeys returns the latest expiry, in Unix milliseconds, of the
// marks and claims records the deployment holds: 0 for none,
// legacyForever if one has no expiry.
func (s *Store) scanLegacyKeys(ctx context.Context) (int64, error) {
	now, err := s.client.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	var (
		mu     sync.Mutex
		latest int64
	)
	scan := func(ctx context.Context, c goredis.UniversalClient) error {
		for _, kind := range []string{"m", "c"} {
			it := c.Scan(ctx, 0, globEscape(s.prefix)+kind+":*", 1000).Iterator()
			var keys []string
			flush := func() error {
				if len(keys) == 0 {
					return nil
				}
				cmds := make([]*goredis.DurationCmd, len(keys))
				_, err := c.Pipelined(ctx, func(p goredis.Pipeliner) error {
					for i, k := range keys {
						cmds[i] = p.PTTL(ctx, k)
					}
					return nil
				})
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				for _, cmd := range cmds {
					switch ttl := cmd.Val(); {
					case ttl == -1: // no expiry (go-redis passes -1 and -2 through)
						latest = legacyForever
					case ttl >= 0:
						latest = max(latest, now.Add(ttl).UnixMilli()+1)
					}
				}
				keys = keys[:0]
				return nil
			}
			for it.Next(ctx) {
				if keys = append(keys, it.Val()); len(keys) == 1000 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if err := it.Err(); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
		return nil
	}
	if cc, ok := s.client.(*goredis.ClusterClient); ok {
		// The prefix's hash tag puts every key on one shard; scan them all
		// rather than compute which (ForEachMaster scans them at once,
		// hence mu).
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.client)
	}
	return min(latest, legacyForever), err
}

// globEscape escapes the characters SCAN's MATCH gives a meaning.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}

var _ store.LegacyKeyed = (*Store)(nil)
