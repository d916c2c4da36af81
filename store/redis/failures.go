package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Each store.Failure a Commit carries becomes consecutive entries of the
// Redis stream "{prefix}:f:<destination>": first a metadata entry, then one
// entry per discarded record, in order. Entries are never trimmed by idem:
// redrive them, then XTRIM or DEL the stream.
//
//	metadata entry: type=metadata shard=<the records' shard ID> data=<metadata JSON> records=<count>
//	record entry:   type=record stream shard sequence partitionKey data arrival=<RFC 3339, UTC> idempotencyKey
const (
	fieldType           = "type"
	fieldShard          = "shard"
	fieldData           = "data"
	fieldRecords        = "records"
	fieldStream         = "stream"
	fieldSequence       = "sequence"
	fieldPartitionKey   = "partitionKey"
	fieldArrival        = "arrival"
	fieldIdempotencyKey = "idempotencyKey"

	typeMetadata = "metadata"
	typeRecord   = "record"
)

// appendFailure appends f's arguments to the commit script's: the number
// of entries, then per entry its number of field and value arguments and
// them.
func appendFailure(args []any, f *store.Failure) []any {
	shard := ""
	if len(f.Records) > 0 {
		shard = f.Records[0].ShardID
	}
	args = append(args, 1+len(f.Records),
		8, fieldType, typeMetadata, fieldShard, shard, fieldData, f.Metadata, fieldRecords, len(f.Records))
	for i := range f.Records {
		r := &f.Records[i]
		arrival := ""
		if !r.ArrivalTime.IsZero() {
			arrival = r.ArrivalTime.UTC().Format(time.RFC3339Nano)
		}
		args = append(args, 16, fieldType, typeRecord,
			fieldStream, r.Stream, fieldShard, r.ShardID, fieldSequence, string(r.Sequence),
			fieldPartitionKey, r.PartitionKey, fieldData, r.Data,
			fieldArrival, arrival, fieldIdempotencyKey, r.IdempotencyKey)
	}
	return args
}

// FailureKind says what a FailureEntry holds.
type FailureKind uint8

const (
	// FailureMetadata is the first entry of a discarded batch: Lambda's
	// on-failure record.
	FailureMetadata FailureKind = iota + 1
	// FailureRecord is one discarded record; they follow their batch's
	// metadata entry in order.
	FailureRecord
)

// String returns the kind as the entry's type field spells it.
func (k FailureKind) String() string {
	switch k {
	case FailureMetadata:
		return "metadata"
	case FailureRecord:
		return "record"
	}
	return "unknown"
}

// FailureEntry is one entry of an on-failure stream.
type FailureEntry struct {
	// ID is the Redis stream entry ID; pass the last one read as afterID
	// to read on.
	ID string
	// Kind says which of the fields below are set.
	Kind FailureKind
	// Metadata is, on a FailureMetadata entry, the JSON on-failure record.
	Metadata []byte
	// Records is, on a FailureMetadata entry, how many FailureRecord
	// entries follow it.
	Records int
	// Shard is the discarded records' shard ID (on either kind).
	Shard string
	// Record is, on a FailureRecord entry, the discarded record as its
	// source delivered it: stream, shard, sequence, partition key, data,
	// arrival time (UTC) and idempotency key.
	Record idem.Record
}

// DefaultFailuresLimit is how many entries Failures returns for a limit of
// 0 or less.
const DefaultFailuresLimit = 100

// Failures reads the on-failure entries Commit appended for destination,
// oldest first: those after afterID ("" to start at the first), at most
// limit of them. Entries of one Commit are consecutive, so a metadata
// entry is followed by its records unless the limit cuts them off (read
// on from the last ID). It returns no entries at the end of the stream or
// for a destination never written to.
func (s *Store) Failures(ctx context.Context, destination, afterID string, limit int) ([]FailureEntry, error) {
	if err := s.enter("failures"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultFailuresLimit
	}
	start := "-"
	if afterID != "" {
		start = "(" + afterID
	}
	wrap := func(err error) error {
		return fmt.Errorf("redis store: failures of destination %q after %q: %w", destination, afterID, err)
	}
	msgs, err := s.client.XRangeN(ctx, s.failureKey(destination), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]FailureEntry, 0, len(msgs))
	for _, m := range msgs {
		get := func(f string) string { v, _ := m.Values[f].(string); return v }
		e := FailureEntry{ID: m.ID, Shard: get(fieldShard)}
		switch get(fieldType) {
		case typeMetadata:
			e.Kind = FailureMetadata
			e.Metadata = []byte(get(fieldData))
			if e.Records, err = strconv.Atoi(get(fieldRecords)); err != nil {
				return nil, wrap(fmt.Errorf("entry %s: corrupt record count: %w", m.ID, err))
			}
		case typeRecord:
			e.Kind = FailureRecord
			e.Record = idem.Record{
				Stream:         get(fieldStream),
				ShardID:        e.Shard,
				Sequence:       idem.Sequence(get(fieldSequence)),
				PartitionKey:   get(fieldPartitionKey),
				Data:           []byte(get(fieldData)),
				IdempotencyKey: get(fieldIdempotencyKey),
			}
			if a := get(fieldArrival); a != "" {
				if e.Record.ArrivalTime, err = time.Parse(time.RFC3339Nano, a); err != nil {
					return nil, wrap(fmt.Errorf("entry %s: corrupt arrival time: %w", m.ID, err))
				}
			}
		default:
			return nil, wrap(fmt.Errorf("entry %s: unknown type %q", m.ID, get(fieldType)))
		}
		out = append(out, e)
	}
	return out, nil
}
