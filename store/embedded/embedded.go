// Package embedded is the store driver over idem's embedded Pebble
// database, the one that also holds the embedded streams: a batch's
// checkpoint, marks, state and on-failure records commit in one synced
// Pebble batch.
//
// # Atomicity and durability
//
// Commit writes everything with pebble.Sync: once it returns nil, nothing
// of the Write is lost to a crash; if it fails, none of it is applied.
// Concurrent Commits share fsyncs through Pebble's group commit.
//
// # A full disk
//
// Writes are refused with an error wrapping store.ErrNoSpace while the disk
// is below the DB's reserve, and resume once space is freed; Health reports
// it. See pebbledb's package documentation for what happens when Pebble
// itself meets a full disk.
package embedded

import (
	"context"
	"time"

	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/store"
)

// Store is the embedded store.Driver. Closing the DB closes it: its methods
// then return store.ErrClosed.
type Store struct {
	db *pebbledb.DB
}

var (
	_ store.Driver      = (*Store)(nil)
	_ store.LegacyKeyed = (*Store)(nil)
)

// New returns the store over db.
func New(db *pebbledb.DB) *Store { return &Store{db: db} }

// Checkpoint returns the checkpoint of key, and false if there is none.
func (s *Store) Checkpoint(ctx context.Context, key store.CheckpointKey) (store.Checkpoint, bool, error) {
	return s.db.Checkpoint(ctx, key)
}

// Progress returns a mapping's completion progress over a shard.
func (s *Store) Progress(ctx context.Context, key store.ProgressKey) (store.Progress, error) {
	return s.db.Progress(ctx, key)
}

// ScopeProgress returns every mapping's progress of a scope over a shard.
func (s *Store) ScopeProgress(ctx context.Context, key store.ProgressKey) ([]store.MappingProgress, error) {
	return s.db.ScopeProgress(ctx, key)
}

// ClaimRange claims a range of a shard for a mapping; the claims live in
// memory, since one process owns the data directory.
func (s *Store) ClaimRange(ctx context.Context, c *store.RangeClaim) error {
	return s.db.ClaimRange(ctx, c)
}

// LegacyKeysUntil returns when the last mark or claims record keyed by the
// FNV-1a hash of earlier versions stops counting (store.LegacyKeyed).
func (s *Store) LegacyKeysUntil(ctx context.Context) (time.Time, error) {
	return s.db.LegacyKeysUntil(ctx)
}

// Health reports whether the store can take writes: nil, or an error
// wrapping store.ErrNoSpace (the disk is below its reserve; writes resume
// once space is freed), pebbledb.ErrFatal (Pebble could not go on; the
// process must restart) or store.ErrClosed. It is cheap enough for every
// readiness probe.
func (s *Store) Health() error { return s.db.Health() }

// ProcessLocal reports true: one process owns the data directory.
func (s *Store) ProcessLocal() bool { return true }

// ClaimRecords claims records' idempotency keys before they run; the
// claims live in memory, since one process owns the data directory.
func (s *Store) ClaimRecords(ctx context.Context, c *store.RecordClaims) error {
	return s.db.ClaimRecords(ctx, c)
}

// Completed reports which keys hold a mark unexpired at now.
func (s *Store) Completed(ctx context.Context, keys []store.MarkKey, now time.Time, done []bool) error {
	return s.db.Completed(ctx, keys, now, done)
}

// State returns the committed value of key in namespace, or an error
// wrapping idem.ErrNotFound.
func (s *Store) State(ctx context.Context, namespace, key string) ([]byte, error) {
	return s.db.State(ctx, namespace, key)
}

// Commit applies w atomically and durably; on-failure destinations must be
// embedded streams of the same DB (otherwise the error wraps
// source.ErrStreamNotFound and nothing is written). With a w.MarkOwner, it
// lands only if MarkOwner still holds the record claims its marks replace
// (otherwise the error wraps store.ErrRecordClaimLost and nothing is
// written), and those claims cannot be taken over until it has.
func (s *Store) Commit(ctx context.Context, w *store.Write) error {
	return s.db.Commit(ctx, w)
}

// CommitPipelined applies w and returns before it is durable
// (store.Pipeliner); synced waits for Pebble's write-ahead log to sync it.
func (s *Store) CommitPipelined(ctx context.Context, w *store.Write) (synced func() error, err error) {
	return s.db.CommitPipelined(ctx, w)
}

var _ store.Pipeliner = (*Store)(nil)

// DeleteCheckpoint removes a mapping's checkpoint.
func (s *Store) DeleteCheckpoint(ctx context.Context, key store.CheckpointKey) error {
	return s.db.DeleteCheckpoint(ctx, key)
}

var _ store.Claims = (*Store)(nil)

// Claim takes an idempotency record; see store.Claims.
func (s *Store) Claim(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.db.Claim(ctx, key, payload, lease, now)
}

// Complete stores a claim's result; see store.Claims.
func (s *Store) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	return s.db.Complete(ctx, c, result, expires)
}

// Release ends a claim's lease early; see store.Claims.
func (s *Store) Release(ctx context.Context, c store.Claim) error { return s.db.Release(ctx, c) }

// Extend moves a claim's lease on; see store.Claims.
func (s *Store) Extend(ctx context.Context, c store.Claim, until time.Time) error {
	return s.db.Extend(ctx, c, until)
}

// Lookup returns an idempotency record; see store.Claims.
func (s *Store) Lookup(ctx context.Context, key store.MarkKey, now time.Time) (store.Claim, bool, error) {
	return s.db.Lookup(ctx, key, now)
}

var _ store.ClaimTaker = (*Store)(nil)

// Takeover takes an idempotency record over; see store.ClaimTaker.
func (s *Store) Takeover(ctx context.Context, key store.MarkKey, payload store.PayloadHash, lease time.Duration, now time.Time) (store.Claim, error) {
	return s.db.Takeover(ctx, key, payload, lease, now)
}
