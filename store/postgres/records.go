package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idem-run/idem/store"
)

var _ store.Clock = (*Store)(nil)

// ScopeProgress returns the progress rows of every mapping of key.Scope over
// key.Stream and key.Shard, the scope-wide row of Mapping "" included, in
// one query; key.Mapping is ignored.
func (s *Store) ScopeProgress(ctx context.Context, key store.ProgressKey) ([]store.MappingProgress, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	if err := s.enter(); err != nil {
		return nil, wrap(err)
	}
	rows, err := s.pool.Query(ctx, s.q.scopeProgress, escape(key.Scope), escape(key.Stream), escape(key.Shard))
	if err != nil {
		return nil, wrap(s.dbErr(err))
	}
	var out []store.MappingProgress
	var mapping, hw, filter string
	var above []string
	_, err = pgx.ForEachRow(rows, []any{&mapping, &hw, &above, &filter}, func() error {
		m, err := unescape(mapping)
		if err != nil {
			return fmt.Errorf("stored mapping %q: %w", mapping, err)
		}
		p, err := progressOf(hw, above, filter)
		if err != nil {
			return fmt.Errorf("mapping %q: %w", m, err)
		}
		out = append(out, store.MappingProgress{Mapping: m, Progress: p})
		return nil
	})
	if err != nil {
		return nil, wrap(s.dbErr(err))
	}
	return out, nil
}

// ClaimRecords claims c.Keys for c.Owner in two calls: claim_locks on the
// Store's lock session tries a session-level advisory lock for each key no
// owner of this Store holds (and takes none while a lock session that
// ended has a commit in flight, locks.go); then marks_of, on a connection
// of the pool, checks the fence and reads the marks, after the locks.
// Which owner of this Store holds what, and under which lease, is decided
// in memory. See locks.go for what a claim means across processes, and
// store.RecordClaims. A key another process holds reports HeldUntil as
// c.LeaseUntil: its holder's lease is not known here. A fence that no
// longer holds makes an error wrapping store.ErrFenced, and nothing is
// claimed.
func (s *Store) ClaimRecords(ctx context.Context, c *store.RecordClaims) error {
	c.Reset()
	wrap := func(err error) error {
		return fmt.Errorf("postgres: claim records of owner %x (%d keys): %w", c.Owner[:], len(c.Keys), err)
	}
	if err := s.enter(); err != nil {
		return wrap(err)
	}
	if len(c.Keys) == 0 {
		if f := c.Fence; f != nil {
			if _, err := s.pool.Exec(ctx, s.q.checkFence, f.Key[:], int64(f.Token)); err != nil {
				return wrap(s.claimErr(f, err))
			}
		}
		return nil
	}
	if err := s.locks.claim(ctx, c); err != nil {
		return wrap(err)
	}
	return nil
}

// ReleaseRecordClaims ends every record claim owner holds in this Store,
// and lets their locks go soon after; see store.RecordClaimReleaser.
func (s *Store) ReleaseRecordClaims(ctx context.Context, owner store.MarkKey) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("postgres: release record claims of owner %x: %w", owner[:], err)
	}
	s.locks.releaseOwner(owner)
	return nil
}

// ClaimRange claims [c.From, c.To] of a shard for c.Key.Mapping in one
// statement, the function claim_range: a fence check, a transaction-scoped
// advisory lock on (scope, stream, shard) that serializes claimers of the
// shard, the overlap check against the other mappings' live ranges
// (sequences compared as numeric), then, unless another range holds it,
// the upsert of the mapping's own range row and the read of every
// mapping's progress of the scope over the shard, after the write. See
// store.RangeClaim. A fence that no longer holds makes an error wrapping
// store.ErrFenced, and nothing is claimed.
//
// The claim commits asynchronously into an UNLOGGED table (as record
// claims do): it costs no WAL flush, and a PostgreSQL crash (or failover
// to a replica) may forget the ranges in flight, whose records may then
// run a second time concurrently; what they complete still commits
// through Commit, durably.
func (s *Store) ClaimRange(ctx context.Context, c *store.RangeClaim) error {
	c.Held, c.HeldUntil, c.Progress = false, time.Time{}, nil
	k := &c.Key
	wrap := func(err error) error {
		return fmt.Errorf("postgres: claim range [%s, %s] of scope %q mapping %q stream %q shard %s: %w",
			c.From, c.To, k.Scope, k.Mapping, k.Stream, k.Shard, err)
	}
	if err := s.enter(); err != nil {
		return wrap(err)
	}
	if !c.From.Valid() || !c.To.Valid() {
		return wrap(errors.New("sequences are not decimal numbers"))
	}
	var fenceKey []byte
	var fenceToken pgtype.Int8
	if f := c.Fence; f != nil {
		fenceKey = f.Key[:]
		fenceToken = pgtype.Int8{Int64: int64(f.Token), Valid: true}
	}
	rows, err := s.pool.Query(ctx, s.q.claimRange, escape(k.Scope), escape(k.Stream), escape(k.Shard), escape(k.Mapping),
		string(c.From), string(c.To), c.LeaseUntil, c.Now, fenceKey, fenceToken)
	if err != nil {
		return wrap(s.claimErr(c.Fence, err))
	}
	var heldUntil pgtype.Timestamptz
	var mapping, hw, filter pgtype.Text
	var above []string
	var progress []store.MappingProgress
	_, err = pgx.ForEachRow(rows, []any{&heldUntil, &mapping, &hw, &above, &filter}, func() error {
		if heldUntil.Valid {
			c.Held, c.HeldUntil = true, heldUntil.Time
			return nil
		}
		m, err := unescape(mapping.String)
		if err != nil {
			return fmt.Errorf("stored mapping %q: %w", mapping.String, err)
		}
		p, err := progressOf(hw.String, above, filter.String)
		if err != nil {
			return fmt.Errorf("mapping %q: %w", m, err)
		}
		progress = append(progress, store.MappingProgress{Mapping: m, Progress: p})
		return nil
	})
	if err != nil {
		c.Held, c.HeldUntil = false, time.Time{}
		return wrap(s.claimErr(c.Fence, err))
	}
	if !c.Held {
		c.Progress = progress
	}
	return nil
}

// claimErr turns check_fence's refusal of fence into an error wrapping
// store.ErrFenced.
func (s *Store) claimErr(fence *store.Fence, err error) error {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == codeFenced && fence != nil {
		return fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, fence.Key[:], fence.Token, pe.Detail)
	}
	return s.dbErr(err)
}

// keyArgs returns keys as a bytea array argument, in one buffer.
func keyArgs(keys []store.MarkKey) [][]byte {
	const size = len(store.MarkKey{})
	buf := make([]byte, len(keys)*size)
	out := make([][]byte, len(keys))
	for i := range keys {
		b := buf[i*size : (i+1)*size : (i+1)*size]
		copy(b, keys[i][:])
		out[i] = b
	}
	return out
}

// Time returns the database server's current time (SELECT now()): the
// clock processes sharing the store compare theirs with, so that mark
// expiry and leases hold across hosts; see store.Clock.
func (s *Store) Time(ctx context.Context) (time.Time, error) {
	if err := s.enter(); err != nil {
		return time.Time{}, fmt.Errorf("postgres: server time: %w", err)
	}
	var t time.Time
	if err := s.pool.QueryRow(ctx, s.q.now).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("postgres: server time: %w", s.dbErr(err))
	}
	return t, nil
}

var _ store.RecordClaimReleaser = (*Store)(nil)
