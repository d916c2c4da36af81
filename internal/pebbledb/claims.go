package pebbledb

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem/store"
)

// claimKey is 'i' | MarkKey.
func claimKey(k store.MarkKey) []byte {
	return append([]byte{prefixClaim}, k[:]...)
}

// A claim value: version | status | uvarint token | 32-byte payload hash |
// varint lease-until | varint expires | result.
func appendClaim(b []byte, c *store.Claim) []byte {
	b = append(b, valueVersion, byte(c.Status))
	b = binary.AppendUvarint(b, c.Token)
	b = append(b, c.PayloadHash[:]...)
	b = binary.AppendVarint(b, unixNano(c.LeaseUntil))
	b = binary.AppendVarint(b, unixNano(c.Expires))
	return append(b, c.Result...)
}

func decodeClaim(k store.MarkKey, v []byte) (store.Claim, error) {
	r := reader{b: v}
	r.version("claim")
	st := r.bytes(1, "claim: status")
	c := store.Claim{Key: k}
	c.Token = r.uvarint("claim: token")
	copy(c.PayloadHash[:], r.bytes(32, "claim: payload hash"))
	lease := r.varint("claim: lease")
	exp := r.varint("claim: expires")
	if r.err != nil {
		return store.Claim{}, r.err
	}
	c.Status = store.ClaimStatus(st[0])
	if c.Status != store.Acquired && c.Status != store.Completed {
		return store.Claim{}, fmt.Errorf("%w: claim: status %d", errCorrupt, st[0])
	}
	c.LeaseUntil, c.Expires = fromUnixNano(lease), fromUnixNano(exp)
	if len(r.b) > 0 {
		c.Result = append([]byte(nil), r.b...)
	}
	return c, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
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

// loadClaim reads key's record; ok is false if there is none.
func (db *DB) loadClaim(k store.MarkKey) (c store.Claim, ok bool, err error) {
	ok, err = db.get(claimKey(k), func(v []byte) (err error) {
		c, err = decodeClaim(k, v)
		return err
	})
	return c, ok, err
}

// live reports whether a stored record still counts at now: a completed one
// until it expires, an acquired one while its lease runs.
func live(c *store.Claim, now time.Time) bool {
	if c.Status == store.Completed {
		return c.Expires.IsZero() || now.Before(c.Expires)
	}
	return now.Before(c.LeaseUntil)
}

// Claim implements store.Claims. Expired records are replaced in place;
// the fencing token carries on from the replaced one.
func (db *DB) Claim(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return db.claim(ctx, key, payload, lease, now, false)
}

// Takeover implements store.ClaimTaker: Claim, except that a live
// in-progress record with the same payload is replaced too, with the next
// fencing token.
func (db *DB) Takeover(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return db.claim(ctx, key, payload, lease, now, true)
}

// claim is Claim, or Takeover when takeover is set.
func (db *DB) claim(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time, takeover bool) (store.Claim, error) {
	if err := ctx.Err(); err != nil {
		return store.Claim{}, err
	}
	release, err := db.enter()
	if err != nil {
		return store.Claim{}, err
	}
	defer release()
	var c store.Claim
	synced, err := db.setClaim(key, func() ([]byte, error) {
		old, found, err := db.loadClaim(key)
		if err != nil {
			return nil, err
		}
		if found && live(&old, now) {
			switch {
			case old.PayloadHash != payload:
				return nil, store.ErrPayloadMismatch
			case old.Status == store.Completed:
				c = old
				return nil, nil
			case !takeover:
				return nil, fmt.Errorf("until %s: %w", old.LeaseUntil.Format(time.RFC3339Nano), store.ErrClaimHeld)
			}
		}
		c = store.Claim{Key: key, Status: store.Acquired, Token: old.Token + 1, PayloadHash: payload, LeaseUntil: now.Add(lease)}
		return appendClaim(nil, &c), nil
	})
	if err == nil {
		err = synced()
	}
	if err != nil {
		return store.Claim{}, fmt.Errorf("pebbledb: claim %x: %w", key, err)
	}
	return c, nil
}

// setClaim writes the claim record of key that update returns (nothing
// when it returns nil), as one read-modify-write: update reads and the
// write is applied under claimMu, so no other claim of the key comes
// between them. The write-ahead log's sync is waited for by synced,
// outside claimMu, so that claims of other keys apply meanwhile and share
// the sync rather than queue behind it. A reader may see the record
// before it is durable; its writer reports success only once it is, and
// a crash before that forgets both (with every other effect of that
// run, which had not been reported either).
func (db *DB) setClaim(key store.MarkKey, update func() ([]byte, error)) (synced func() error, err error) {
	db.claimMu.Lock()
	defer db.claimMu.Unlock()
	v, err := update()
	if err != nil || v == nil {
		return func() error { return nil }, err
	}
	if err := db.admit(len(v) + 32); err != nil {
		return nil, err
	}
	b := db.pdb.NewBatch()
	if err := b.Set(claimKey(key), v, nil); err != nil {
		b.Close()
		return nil, err
	}
	if err := db.pdb.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		b.Close()
		return nil, noSpace(err)
	}
	return func() error {
		defer b.Close()
		if err := b.SyncWait(); err != nil {
			err = fmt.Errorf("syncing the write-ahead log: %w; the claim was applied and may or may not survive a restart", noSpace(err))
			db.fail(err)
			return err
		}
		return nil
	}, nil
}

// Complete implements store.Claims.
func (db *DB) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	return db.finish(ctx, c, func(cur *store.Claim) []byte {
		cur.Status, cur.Result, cur.Expires = store.Completed, result, expires
		return appendClaim(nil, cur)
	})
}

// Release implements store.Claims: the record stays, with its lease ended,
// so the next claimer's token is still higher.
func (db *DB) Release(ctx context.Context, c store.Claim) error {
	return db.finish(ctx, c, func(cur *store.Claim) []byte {
		if cur.Status == store.Completed {
			return nil
		}
		cur.LeaseUntil = time.Unix(0, 1)
		return appendClaim(nil, cur)
	})
}

// Extend implements store.Claims: c's lease now ends at until, if c still
// holds the key; a completed record is left as it is.
func (db *DB) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	return db.finish(ctx, c, func(cur *store.Claim) []byte {
		if cur.Status == store.Completed {
			return nil
		}
		cur.LeaseUntil = until
		return appendClaim(nil, cur)
	})
}

// checkFence returns an error wrapping store.ErrFenced unless f's key
// holds f's token. The caller holds claimMu, so that no Claim can take the
// key over between the check and the write it guards.
func (db *DB) checkFence(f *store.Fence) error {
	cur, found, err := db.loadClaim(f.Key)
	if err != nil {
		return fmt.Errorf("fence %x: %w", f.Key, err)
	}
	if !found || cur.Token != f.Token {
		return fmt.Errorf("fence %x token %d (held: %d): %w", f.Key, f.Token, cur.Token, store.ErrFenced)
	}
	return nil
}

// finish rewrites c's record with update if c still holds it.
func (db *DB) finish(ctx context.Context, c store.Claim, update func(*store.Claim) []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	synced, err := db.setClaim(c.Key, func() ([]byte, error) {
		cur, found, err := db.loadClaim(c.Key)
		if err != nil {
			return nil, err
		}
		if !found || cur.Token != c.Token {
			return nil, fmt.Errorf("token %d: %w", c.Token, store.ErrFenced)
		}
		return update(&cur), nil
	})
	if err == nil {
		err = synced()
	}
	if err != nil {
		return fmt.Errorf("pebbledb: claim %x: %w", c.Key, err)
	}
	return nil
}

// Lookup implements store.Claims.
func (db *DB) Lookup(ctx context.Context, key store.MarkKey, now time.Time) (store.Claim, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Claim{}, false, err
	}
	release, err := db.enter()
	if err != nil {
		return store.Claim{}, false, err
	}
	defer release()
	c, found, err := db.loadClaim(key)
	if err != nil {
		return store.Claim{}, false, fmt.Errorf("pebbledb: claim %x: %w", key, err)
	}
	if !found || !live(&c, now) {
		return store.Claim{}, false, nil
	}
	if c.Status == store.Acquired {
		c.Status = store.InProgress
	}
	return c, true, nil
}

// legacyKey is 'h': when the last mark or claims record under a legacy
// key expires (LegacyKeysUntil), as version | varint Unix nanoseconds, 0
// for none.
var legacyKey = []byte{prefixLegacy}

// LegacyKeysUntil returns when the last mark or claims record keyed by the
// FNV-1a hash of earlier versions stops counting (store.LegacyKeyed). The
// first call on a directory finds out, from the latest expiry entry of its
// marks and a scan of its claims records, and keeps the answer: records
// written later, all under SHA-256 keys, never extend it, and a directory
// this version created holds none when first asked. A record that never
// expires counts as the far future.
//
// Errors: ErrClosed, ctx.Err().
func (db *DB) LegacyKeysUntil(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	release, err := db.enter()
	if err != nil {
		return time.Time{}, err
	}
	defer release()
	wrap := func(err error) error { return fmt.Errorf("pebbledb: legacy keys: %w", err) }
	var until int64
	found, err := db.get(legacyKey, func(v []byte) error {
		r := reader{b: v}
		r.version("legacy keys")
		until = r.varint("legacy keys: until")
		return r.end("legacy keys")
	})
	if err != nil {
		return time.Time{}, wrap(err)
	}
	if !found {
		if until, err = db.scanLegacyKeys(ctx); err != nil {
			return time.Time{}, wrap(err)
		}
		v := binary.AppendVarint([]byte{valueVersion}, until)
		if err := db.admit(len(legacyKey) + len(v) + 32); err != nil {
			return time.Time{}, wrap(err)
		}
		if err := db.pdb.Set(legacyKey, v, pebble.Sync); err != nil {
			return time.Time{}, wrap(noSpace(err))
		}
	}
	if until == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, until), nil
}

// scanLegacyKeys returns the latest time, in Unix nanoseconds, at which a
// mark or claims record of the directory stops counting: 0 for none,
// math.MaxInt64 for one that never expires.
func (db *DB) scanLegacyKeys(ctx context.Context) (int64, error) {
	var latest int64
	// Expiry entries sort by time: the last is the latest mark's (or a
	// later entry of a mark renewed since, which only makes it later).
	it, err := db.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{prefixExpiry}, UpperBound: []byte{prefixExpiry + 1}})
	if err != nil {
		return 0, err
	}
	if it.Last() {
		k := it.Key()
		if len(k) != expiryKeyLen {
			it.Close()
			return 0, fmt.Errorf("%w: expiry key %x", errCorrupt, k)
		}
		latest = int64(binary.BigEndian.Uint64(k[1:9]) ^ (1 << 63))
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	latest = max(latest, db.journal.maxExpires())
	for _, r := range db.listedRuns() {
		latest = max(latest, r.maxExpires)
	}
	it, err = db.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{prefixClaim}, UpperBound: []byte{prefixClaim + 1}})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		var k store.MarkKey
		copy(k[:], it.Key()[1:])
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		c, err := decodeClaim(k, v)
		if err != nil {
			return 0, fmt.Errorf("claim %x: %w", k[:], err)
		}
		switch {
		case c.Status == store.Completed && c.Expires.IsZero():
			return math.MaxInt64, nil
		case c.Status == store.Completed:
			latest = max(latest, c.Expires.UnixNano())
		default:
			latest = max(latest, c.LeaseUntil.UnixNano())
		}
	}
	return latest, it.Error()
}
