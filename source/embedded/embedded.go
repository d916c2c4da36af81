// Package embedded is the source driver over idem's embedded streams, which
// live in the same Pebble database as the embedded store.
//
// # Delivery semantics
//
// Records are read in shard order, each at least once; a record is visible
// only once it and every record before it in its shard are durably
// committed. Records that retention deleted before they were read are
// reported in source.ReadResult.Lost.
package embedded

import (
	"context"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
)

// Source is one embedded stream as a source.Driver. It holds no state of its
// own: every method goes to the DB, so any number of Sources over one stream
// agree.
type Source struct {
	db     *pebbledb.DB
	stream string
}

var _ source.Driver = (*Source)(nil)

// New returns the source over stream, which must have been created with
// db.CreateStream; otherwise the error wraps source.ErrStreamNotFound.
func New(db *pebbledb.DB, stream string) (*Source, error) {
	if _, err := db.Shards(stream); err != nil {
		return nil, err
	}
	return &Source{db: db, stream: stream}, nil
}

// Shards lists the stream's shard IDs, "shardId-000000000000" first.
func (s *Source) Shards(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.db.Shards(s.stream)
}

// Start returns the position a mapping without a checkpoint starts from.
func (s *Source) Start(ctx context.Context, shard string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	return s.db.Start(ctx, s.stream, shard, pos, ts)
}

// Read returns records of shard above after; their Data is a copy that stays
// valid after later Reads.
func (s *Source) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	return s.db.Read(ctx, s.stream, shard, after, limit, maxBytes)
}

// Wait returns as soon as a record above after is visible, when ctx is done,
// or after the DB's poll interval.
func (s *Source) Wait(ctx context.Context, shard string, after idem.Sequence) error {
	return s.db.Wait(ctx, s.stream, shard, after)
}

// Retention is the longest a record of the stream can still be read after
// it was appended: the stream's current retention plus the DB's sweep
// interval, since the sweeper deletes expired records once per interval
// (pebbledb.WithSweepInterval, a minute by default). A sweep that fails
// leaves records until the next one succeeds, and records are not deleted
// while the DB is closed; the engine's marks in the same DB expire by the
// same sweeps. 0 if the DB is closed.
func (s *Source) Retention() time.Duration {
	d, err := s.db.Retention(s.stream)
	if err != nil {
		return 0
	}
	return d + s.db.SweepInterval()
}

// Stream is the name of the embedded stream s reads.
func (s *Source) Stream() string { return s.stream }
