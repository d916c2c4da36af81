package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"time"
)

// # Legacy keys
//
// Versions of idem before issue 15 keyed marks and claims records by the
// FNV-1a 128 of scope, NUL, key (LegacyMarkKeyOf), which is not collision
// resistant. A store keeps only a key's hash, so the records they wrote
// cannot be re-keyed; nor do they need to be: each expires (a mark after
// the mapping's retention, a claims record after its own expiry, a lease
// at its end). Until the last of them has, callers look the legacy key up
// too (Legacy), so that no record completed before the upgrade runs again
// after it. A store created by this version holds none, and the lookup is
// never made.
//
// The legacy records are frozen: this version never writes under a legacy
// key, so once every process of an earlier version has stopped, a legacy
// record can only expire. That is why a legacy lookup need not be atomic
// with the claim that follows it, and why one answer per store (read when
// an engine or a service starts) is enough. An upgrade therefore stops
// every process of the earlier version before the first of this one
// starts; processes of both versions sharing a store would key the same
// records apart.

// LegacyKeyed is implemented by stores that may hold marks and claims
// records under legacy keys (written before MarkKeyOf was SHA-256).
type LegacyKeyed interface {
	// LegacyKeysUntil returns when the last record the store may hold
	// under a legacy key stops counting: the latest expiry of its marks
	// and completed claims records, or end of an in-progress one's lease;
	// the far future if one never expires; the zero time if the store
	// holds none (it was created by this version). Stores fix the answer
	// once, from what they held when first asked (or migrated): records
	// of this version counted with them only make the answer later, which
	// costs lookups but never correctness.
	LegacyKeysUntil(ctx context.Context) (time.Time, error)
}

// Legacy looks records up under their legacy keys while a store may hold
// some (LegacyKeyed). The zero Legacy looks up nothing.
type Legacy struct {
	until time.Time
}

// LegacyOf returns the Legacy of s: none unless s implements LegacyKeyed.
func LegacyOf(ctx context.Context, s any) (Legacy, error) {
	lk, ok := s.(LegacyKeyed)
	if !ok {
		return Legacy{}, nil
	}
	until, err := lk.LegacyKeysUntil(ctx)
	if err != nil {
		return Legacy{}, fmt.Errorf("store: reading when legacy keys expire: %w", err)
	}
	return Legacy{until: until}, nil
}

// Active reports whether a record under a legacy key may still count at
// now.
func (l Legacy) Active(now time.Time) bool { return now.Before(l.until) }

// ClaimRecords is d.ClaimRecords(ctx, c) for keys that are MarkKeyOf(scope,
// keyOf(i)), that first looks up, when c.Marks asks for marks, each key's
// legacy mark: a key that holds one live at c.Now is Completed, and is not
// claimed. The statuses keep ClaimRecords' order rule: a key after the
// first InProgress one has status 0, whatever its legacy mark.
func (l Legacy) ClaimRecords(ctx context.Context, d Driver, c *RecordClaims, scope string, keyOf func(i int) string) error {
	if !c.Marks || !l.Active(c.Now) || len(c.Keys) == 0 {
		return d.ClaimRecords(ctx, c)
	}
	legacy := make([]MarkKey, len(c.Keys))
	for i := range legacy {
		legacy[i] = LegacyMarkKeyOf(scope, keyOf(i))
	}
	done := make([]bool, len(legacy))
	if err := d.Completed(ctx, legacy, c.Now, done); err != nil {
		return fmt.Errorf("store: looking up %d legacy marks: %w", len(legacy), err)
	}
	all := c.Keys
	rest := make([]MarkKey, 0, len(all))
	for i, k := range all {
		if !done[i] {
			rest = append(rest, k)
		}
	}
	if len(rest) == len(all) {
		return d.ClaimRecords(ctx, c)
	}
	var st []ClaimStatus
	if len(rest) > 0 {
		c.Keys = rest
		err := d.ClaimRecords(ctx, c)
		c.Keys = all
		if err != nil {
			return err
		}
		st = append([]ClaimStatus(nil), c.Status...)
	}
	c.Status = append(c.Status[:0], make([]ClaimStatus, len(all))...)
	j, held := 0, false
	for i := range all {
		switch {
		case held:
		case done[i]:
			c.Status[i] = Completed
		default:
			c.Status[i] = st[j]
			held = st[j] == InProgress
			j++
		}
	}
	return nil
}

// Claim is c.Claim for key, MarkKeyOf(scope, k), that first looks up the
// legacy key of (scope, k): a record live there answers as Claim would
// (its Key the legacy one), completed or, until its lease ends, with an
// error wrapping ErrClaimHeld; so does one whose payload hash differs,
// with ErrPayloadMismatch.
func (l Legacy) Claim(ctx context.Context, c Claims, key MarkKey, scope, k string, payloadHash PayloadHash, lease time.Duration, now time.Time) (Claim, error) {
	if old, ok, err := l.answer(ctx, c, scope, k, payloadHash, now, true); ok {
		return old, err
	}
	return c.Claim(ctx, key, payloadHash, lease, now)
}

// Takeover is t.Takeover for key, MarkKeyOf(scope, k), that first looks up
// the legacy key of (scope, k) as Claim does, except that a record in
// progress there does not hold the key: Takeover's callers own the work
// by other means, and that record's attempt is over.
func (l Legacy) Takeover(ctx context.Context, t interface {
	Claims
	ClaimTaker
}, key MarkKey, scope, k string, payloadHash PayloadHash, lease time.Duration, now time.Time) (Claim, error) {
	if old, ok, err := l.answer(ctx, t, scope, k, payloadHash, now, false); ok {
		return old, err
	}
	return t.Takeover(ctx, key, payloadHash, lease, now)
}

// answer looks up the legacy key of (scope, k) for Claim and Takeover and
// reports whether the record there answers for the key, with what: an
// error wrapping ErrPayloadMismatch if its payload hash differs, the
// record if it is completed, and, when inProgressHolds, an error wrapping
// ErrClaimHeld if it is in progress. A failed lookup answers its error.
func (l Legacy) answer(ctx context.Context, c Claims, scope, k string, payloadHash PayloadHash, now time.Time, inProgressHolds bool) (Claim, bool, error) {
	old, ok, err := l.lookup(ctx, c, scope, k, now)
	switch {
	case err != nil:
		return Claim{}, true, err
	case !ok:
		return Claim{}, false, nil
	case old.PayloadHash != payloadHash:
		return Claim{}, true, fmt.Errorf("store: legacy claim %x: %w", old.Key, ErrPayloadMismatch)
	case old.Status == Completed:
		return old, true, nil
	case inProgressHolds:
		return Claim{}, true, fmt.Errorf("store: legacy claim %x until %s: %w", old.Key, old.LeaseUntil.Format(time.RFC3339Nano), ErrClaimHeld)
	}
	return Claim{}, false, nil
}

// Lookup is c.Lookup for key, MarkKeyOf(scope, k), that looks the legacy
// key of (scope, k) up when key has no live record.
func (l Legacy) Lookup(ctx context.Context, c Claims, key MarkKey, scope, k string, now time.Time) (Claim, bool, error) {
	r, ok, err := c.Lookup(ctx, key, now)
	if err != nil || ok {
		return r, ok, err
	}
	return l.lookup(ctx, c, scope, k, now)
}

// lookup returns the live record of the legacy key of (scope, k), if the
// store may still hold one.
func (l Legacy) lookup(ctx context.Context, c Claims, scope, k string, now time.Time) (Claim, bool, error) {
	if !l.Active(now) {
		return Claim{}, false, nil
	}
	r, ok, err := c.Lookup(ctx, LegacyMarkKeyOf(scope, k), now)
	if err != nil {
		return Claim{}, false, fmt.Errorf("store: looking up a legacy claim: %w", err)
	}
	return r, ok, nil
}

// LegacyMarkKeyOf is what MarkKeyOf was before issue 15: FNV-1a 128 of
// scope, NUL, key, computed as hash/fnv's New128a would without its
// allocation. It is exported for the tests of stores and engines that
// build the records an earlier version left; Legacy looks them up.
//
// Deprecated: FNV-1a is not collision resistant: nothing may be stored
// under it. Use MarkKeyOf.
func LegacyMarkKeyOf(scope, key string) MarkKey {
	hi, lo := uint64(fnv128OffsetHi), uint64(fnv128OffsetLo)
	hi, lo = fnv128(hi, lo, scope)
	hi, lo = fnv128Byte(hi, lo, 0)
	hi, lo = fnv128(hi, lo, key)
	var mk MarkKey
	binary.BigEndian.PutUint64(mk[:8], hi)
	binary.BigEndian.PutUint64(mk[8:], lo)
	return mk
}

// FNV-1a's 128-bit offset basis, and its prime 2^88 + 0x13b.
const (
	fnv128OffsetHi = 0x6c62272e07bb0142
	fnv128OffsetLo = 0x62b821756295c58d
	fnv128PrimeLo  = 0x13b
	fnv128PrimeHi  = 24 // the 2^88 part: the low word shifted into the high one by 88-64 bits
)

func fnv128(hi, lo uint64, s string) (uint64, uint64) {
	for i := 0; i < len(s); i++ {
		hi, lo = fnv128Byte(hi, lo, s[i])
	}
	return hi, lo
}

func fnv128Byte(hi, lo uint64, b byte) (uint64, uint64) {
	lo ^= uint64(b)
	// (hi, lo) * (2^88 + 0x13b) mod 2^128
	carry, newLo := bits.Mul64(lo, fnv128PrimeLo)
	newHi := hi*fnv128PrimeLo + carry + lo<<fnv128PrimeHi
	return newHi, newLo
}
