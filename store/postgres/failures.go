package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idem-run/idem"
)

// DefaultFailuresLimit is how many on-failure batches Failures returns when
// asked for a limit of zero or less.
const DefaultFailuresLimit = 100

// FailureRow is one on-failure batch as Commit stored it: the store keeps
// on-failure records in its own tables (an on-failure destination names a
// table key here, not a stream), and Failures reads them back so that an
// operator or a redrive tool can inspect and replay them.
type FailureRow struct {
	// ID orders the batches of all destinations; pass the last one read as
	// Failures' afterID to read on.
	ID int64
	// Destination is the on-failure destination the mapping named.
	Destination string
	// Metadata is the JSON on-failure record.
	Metadata []byte
	// Records are the discarded records in their batch order, with their
	// stream, shard, sequence (as the source spelled it), partition key,
	// data and arrival time (to the microsecond; zero if it had none).
	// IdempotencyKey is not kept.
	Records []idem.Record
	// CreatedAt is when the batch was committed, by the database's clock.
	CreatedAt time.Time
}

// Failures returns up to limit on-failure batches of destination whose ID
// is above afterID, in ID order (DefaultFailuresLimit if limit is zero or
// less). Start with afterID 0, then pass the last row's ID to page on.
func (s *Store) Failures(ctx context.Context, destination string, afterID int64, limit int) ([]FailureRow, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: on-failure records of %q after %d: %w", destination, afterID, err)
	}
	if err := s.enter(); err != nil {
		return nil, wrap(err)
	}
	if limit <= 0 {
		limit = DefaultFailuresLimit
	}
	rows, err := s.pool.Query(ctx, s.q.failures, destination, afterID, limit)
	if err != nil {
		return nil, wrap(s.dbErr(err))
	}
	defer rows.Close()
	var out []FailureRow
	for rows.Next() {
		var (
			id                      int64
			meta, data              []byte
			created                 time.Time
			stream, shard, seq, key pgtype.Text
			arrival                 pgtype.Timestamptz
		)
		if err := rows.Scan(&id, &meta, &created, &stream, &shard, &seq, &key, &data, &arrival); err != nil {
			return nil, wrap(err)
		}
		if len(out) == 0 || out[len(out)-1].ID != id {
			out = append(out, FailureRow{ID: id, Destination: destination, Metadata: meta, CreatedAt: created})
		}
		if !stream.Valid { // a batch without records
			continue
		}
		var r idem.Record
		var errs [4]error
		r.Stream, errs[0] = unescape(stream.String)
		r.ShardID, errs[1] = unescape(shard.String)
		var sq string
		sq, errs[2] = unescape(seq.String)
		r.Sequence = idem.Sequence(sq)
		r.PartitionKey, errs[3] = unescape(key.String)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, wrap(fmt.Errorf("batch %d: %w", id, err))
		}
		r.Data = data
		if r.Data == nil {
			r.Data = []byte{}
		}
		if arrival.Valid {
			r.ArrivalTime = arrival.Time
		}
		last := &out[len(out)-1]
		last.Records = append(last.Records, r)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(s.dbErr(err))
	}
	return out, nil
}
