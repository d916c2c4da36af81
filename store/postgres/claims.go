package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idem-run/idem/store"
)

// Claim stored statuses.
const (
	statusAcquired  = "ACQUIRED"
	statusCompleted = "COMPLETED"
)

// claimRow is a claims row as the queries return it.
type claimRow struct {
	status     string
	token      int64
	hash       []byte
	leaseUntil time.Time
	expires    pgtype.Timestamptz
	result     []byte
}

// claim converts r; Status is Acquired or Completed as stored.
func (r *claimRow) claim(key store.MarkKey) (store.Claim, error) {
	c := store.Claim{Key: key, Token: uint64(r.token), LeaseUntil: r.leaseUntil, Result: r.result}
	switch r.status {
	case statusAcquired:
		c.Status = store.Acquired
	case statusCompleted:
		c.Status = store.Completed
	default:
		return store.Claim{}, fmt.Errorf("stored status %q", r.status)
	}
	if len(r.hash) != len(c.PayloadHash) {
		return store.Claim{}, fmt.Errorf("stored payload hash of %d bytes, want %d", len(r.hash), len(c.PayloadHash))
	}
	copy(c.PayloadHash[:], r.hash)
	if r.expires.Valid {
		c.Expires = r.expires.Time
	}
	return c, nil
}

// Claim takes key for now+lease; see store.Claims. One statement decides
// it: an upsert that replaces the record only if it no longer counts at now
// (completed and expired, or in progress with its lease ended), and
// otherwise returns the record in the way. Fencing tokens come from one
// sequence of the schema, so a new owner's token is above every earlier
// one for the key, even once the purge deleted the key's old record.
func (s *Store) Claim(ctx context.Context, key store.MarkKey, payloadHash store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: claim %x: %w", key[:], err) }
	if err := s.enter(); err != nil {
		return store.Claim{}, wrap(err)
	}
	var acquired bool
	var r claimRow
	err := s.pool.QueryRow(ctx, s.q.claim, key[:], payloadHash[:], now.Add(lease), now).
		Scan(&acquired, &r.status, &r.token, &r.hash, &r.leaseUntil, &r.expires, &r.result)
	if err != nil {
		return store.Claim{}, wrap(s.dbErr(err))
	}
	c, err := r.claim(key)
	if err != nil {
		return store.Claim{}, wrap(err)
	}
	switch {
	case acquired:
		return c, nil
	case c.PayloadHash != payloadHash:
		return store.Claim{}, wrap(store.ErrPayloadMismatch)
	case c.Status == store.Completed:
		return c, nil
	}
	return store.Claim{}, wrap(fmt.Errorf("until %s: %w", c.LeaseUntil.Format(time.RFC3339Nano), store.ErrClaimHeld))
}

// takeoverQuery is Takeover's statement, with "{s}" for the schema. Its
// upsert replaces the record unless it is completed and unexpired at $4,
// or in progress under a running lease for another payload; the record in
// the way, if any, is read from the statement's snapshot. Tokens come
// from the sequence Claim uses; an update draws its own, once it holds
// the row, so that of two takeovers racing on a key the later one holds
// the higher token (EXCLUDED.token, drawn before the wait, could be the
// lower one).
const takeoverQuery = `WITH up AS (
	INSERT INTO {s}.claims AS c (key, status, token, payload_hash, lease_until, expires, result)
	VALUES ($1, 'ACQUIRED', nextval('{s}.claim_tokens'), $2, $3, NULL, NULL)
	ON CONFLICT (key) DO UPDATE SET
		status = 'ACQUIRED', token = nextval('{s}.claim_tokens'), payload_hash = EXCLUDED.payload_hash,
		lease_until = EXCLUDED.lease_until, expires = NULL, result = NULL
	WHERE NOT ((c.status = 'COMPLETED' AND (c.expires IS NULL OR $4 < c.expires))
		OR (c.status = 'ACQUIRED' AND $4 < c.lease_until AND c.payload_hash <> $2))
	RETURNING c.status, c.token, c.payload_hash, c.lease_until, c.expires, c.result)
SELECT true, status, token, payload_hash, lease_until, expires, result FROM up
UNION ALL
SELECT false, c.status, c.token, c.payload_hash, c.lease_until, c.expires, c.result
FROM {s}.claims c WHERE c.key = $1 AND NOT EXISTS (SELECT 1 FROM up)`

// takeoverTries bounds Takeover's statements: one more runs only when a
// concurrent writer changed the key between the statement's snapshot and
// its upsert, so the record in the way could not be read.
const takeoverTries = 10

// Takeover implements store.ClaimTaker in one statement (an upsert and,
// when it refuses, a read of the record in the way), run again when the
// read raced with another writer of the key.
func (s *Store) Takeover(ctx context.Context, key store.MarkKey, payloadHash store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: take over claim %x: %w", key[:], err) }
	if err := s.enter(); err != nil {
		return store.Claim{}, wrap(err)
	}
	query := strings.ReplaceAll(takeoverQuery, "{s}", pgx.Identifier{s.schema}.Sanitize())
	for range takeoverTries {
		var acquired bool
		var r claimRow
		err := s.pool.QueryRow(ctx, query, key[:], payloadHash[:], now.Add(lease), now).
			Scan(&acquired, &r.status, &r.token, &r.hash, &r.leaseUntil, &r.expires, &r.result)
		if errNoRows(err) {
			// The record in the way was written after the snapshot.
			continue
		}
		if err != nil {
			return store.Claim{}, wrap(s.dbErr(err))
		}
		c, err := r.claim(key)
		if err != nil {
			return store.Claim{}, wrap(err)
		}
		if acquired {
			return c, nil
		}
		// The snapshot's record must explain the refusal; one that does
		// not was changed since, and the statement runs again.
		live := c.LeaseUntil.After(now)
		if c.Status == store.Completed {
			live = !r.expires.Valid || c.Expires.After(now)
		}
		switch {
		case !live:
		case c.PayloadHash != payloadHash:
			return store.Claim{}, wrap(store.ErrPayloadMismatch)
		case c.Status == store.Completed:
			return c, nil
		}
	}
	return store.Claim{}, wrap(fmt.Errorf("the key changed under %d tries", takeoverTries))
}

// Complete stores result for c until expires (never, if expires is zero),
// if c's token is still the key's; see store.Claims.
func (s *Store) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: complete claim %x token %d: %w", c.Key[:], c.Token, err)
	}
	if err := s.enter(); err != nil {
		return wrap(err)
	}
	exp := pgtype.Timestamptz{Time: expires, Valid: !expires.IsZero()}
	tag, err := s.pool.Exec(ctx, s.q.complete, c.Key[:], int64(c.Token), result, exp)
	if err != nil {
		return wrap(s.dbErr(err))
	}
	if tag.RowsAffected() == 0 {
		return wrap(store.ErrFenced)
	}
	return nil
}

// Release ends c's lease at once, keeping the record (and so its token);
// a completed record is left as it is, and a fenced claim makes an error
// wrapping store.ErrFenced. See store.Claims.
func (s *Store) Release(ctx context.Context, c store.Claim) error {
	return s.updateClaim(ctx, "release", c, s.q.release, c.Key[:], int64(c.Token))
}

// Extend moves c's lease to end at until, if c's token is still the key's
// and the record is in progress; a completed record is left as it is, and
// a fenced claim makes an error wrapping store.ErrFenced. See store.Claims.
func (s *Store) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	return s.updateClaim(ctx, "extend", c, s.q.extend, c.Key[:], int64(c.Token), until)
}

// updateClaim runs query, an update of c's record that applies only while
// c holds it in progress. When it updates nothing, the record is either
// completed under c's token (nothing to do) or fenced.
func (s *Store) updateClaim(ctx context.Context, verb string, c store.Claim, query string, args ...any) error {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: %s claim %x token %d: %w", verb, c.Key[:], c.Token, err)
	}
	if err := s.enter(); err != nil {
		return wrap(err)
	}
	tag, err := s.pool.Exec(ctx, query, args...)
	if err != nil {
		return wrap(s.dbErr(err))
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var status string
	err = s.pool.QueryRow(ctx, s.q.claimHeld, c.Key[:], int64(c.Token)).Scan(&status)
	if errNoRows(err) {
		return wrap(store.ErrFenced)
	}
	if err != nil {
		return wrap(s.dbErr(err))
	}
	return nil
}

// Lookup returns key's record as of now: a completed one until it expires,
// an in-progress one (Status InProgress) while its lease runs; see
// store.Claims.
func (s *Store) Lookup(ctx context.Context, key store.MarkKey, now time.Time) (store.Claim, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: lookup claim %x: %w", key[:], err) }
	if err := s.enter(); err != nil {
		return store.Claim{}, false, wrap(err)
	}
	var r claimRow
	err := s.pool.QueryRow(ctx, s.q.lookup, key[:], now).
		Scan(&r.status, &r.token, &r.hash, &r.leaseUntil, &r.expires, &r.result)
	if errNoRows(err) {
		return store.Claim{}, false, nil
	}
	if err != nil {
		return store.Claim{}, false, wrap(s.dbErr(err))
	}
	c, err := r.claim(key)
	if err != nil {
		return store.Claim{}, false, wrap(err)
	}
	if c.Status == store.Acquired {
		c.Status = store.InProgress
	}
	return c, true, nil
}

// LegacyKeysUntil returns when the last mark or claims record keyed by
// the FNV-1a hash of earlier versions expires (store.LegacyKeyed): what
// migration 6 found when it upgraded the schema, or the zero time for a
// schema created by this version.
func (s *Store) LegacyKeysUntil(ctx context.Context) (time.Time, error) {
	wrap := func(err error) error { return fmt.Errorf("postgres: reading legacy_keys: %w", err) }
	if err := s.enter(); err != nil {
		return time.Time{}, wrap(err)
	}
	var until time.Time
	err := s.pool.QueryRow(ctx, "SELECT until FROM "+pgx.Identifier{s.schema}.Sanitize()+".legacy_keys").Scan(&until)
	if errNoRows(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, wrap(s.dbErr(err))
	}
	return until, nil
}

var _ store.LegacyKeyed = (*Store)(nil)
