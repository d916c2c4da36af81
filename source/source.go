// Package source defines what the engine needs from a stream: shards, ordered
// reads from a position, and a way to wait for new records.
//
// # Delivery semantics
//
// A source delivers each record at least once, in shard order. Checkpoints
// do not live in the source: the engine keeps them in its store, so that the
// checkpoint, the completion marks and the state of a batch commit in one
// atomic write. A record that retention removed before it was read is never
// lost silently: Read reports it in ReadResult.Lost, and the engine counts
// and logs it.
package source

import (
	"context"
	"errors"
	"time"

	"github.com/idem-run/idem"
)

// StartingPosition says where a mapping with no checkpoint starts reading.
type StartingPosition string

// The starting positions of AWS Lambda event source mappings.
const (
	// TrimHorizon starts at the oldest retained record.
	TrimHorizon StartingPosition = "TRIM_HORIZON"
	// Latest starts after the newest record at the time the mapping starts.
	Latest StartingPosition = "LATEST"
	// AtTimestamp starts at the first record that arrived at or after a time.
	AtTimestamp StartingPosition = "AT_TIMESTAMP"
)

// ErrStreamNotFound is returned by Driver methods for a stream that does not
// exist.
var ErrStreamNotFound = errors.New("source: stream not found")

// ErrShardNotFound is returned by Driver methods for a shard that does not
// exist.
var ErrShardNotFound = errors.New("source: shard not found")

// ReadResult is one read of a shard.
type ReadResult struct {
	// Records are in order; their Sequence is above the read's position.
	// A driver spells a record's sequence the same way on every read: the
	// default idempotency key and batchItemFailures name records by the
	// exact string.
	Records []idem.Record
	// Lost counts records between the read's position and the first record
	// returned that retention removed before anyone read them.
	Lost uint64
	// Trimmed, when Lost is not 0, is the sequence of the last lost record:
	// a reader with nothing else to read moves its position there.
	Trimmed idem.Sequence
	// Latest is the sequence of the newest record of the shard when it was
	// read, for lag; the zero Sequence for an empty shard.
	Latest idem.Sequence
}

// Driver is one stream as the engine reads it. Implementations must be safe
// for concurrent use by one goroutine per shard (one Read or Wait at a time
// per shard, not always from the same goroutine). Drivers make one attempt:
// they never retry, sleep or log; the engine does.
type Driver interface {
	// Shards lists the stream's shard IDs, in a stable order.
	Shards(ctx context.Context) ([]string, error)

	// Start returns the position at which a mapping without a checkpoint
	// starts: reading returns records whose Sequence is above it. ts is used
	// only with AtTimestamp.
	Start(ctx context.Context, shard string, pos StartingPosition, ts time.Time) (idem.Sequence, error)

	// Read returns up to limit records of shard whose Sequence is above after,
	// and stops early before exceeding maxBytes of Data (but returns at least
	// one record when there is one). The records and their Data are the
	// caller's: later Reads do not reuse them (the engine reads a shard's
	// next records while it still processes the last).
	Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (ReadResult, error)

	// Wait blocks until shard may hold a record above after, ctx is done, or
	// an implementation-defined poll interval passes. It may return early;
	// callers read again to find out.
	Wait(ctx context.Context, shard string, after idem.Sequence) error

	// Retention is the longest a record can still be served after it was
	// appended: not the nominal retention setting but an upper bound that
	// includes how the source really deletes (Kafka's segment roll time,
	// a sweeper's interval). The engine keeps completion marks at least
	// this long after each commit, so a replay of records still served
	// never runs one twice. The engine calls it on every commit: it must
	// be cheap (a load), and it may change; a driver that reads it from the
	// stream's configuration refreshes it in Shards, which the engine
	// calls every discovery interval. A stream that never deletes by age
	// reports a very long retention (about a hundred years), not 0.
	//
	// A retention that grows also lengthens the life of records appended
	// before: marks committed under the shorter one can expire while such
	// a record is still served.
	Retention() time.Duration
}

// Lineage is implemented by sources whose shards split and merge (Kinesis):
// a child shard holds records of its parents' partition keys, so the
// engine reads a child only once every parent is read to its end, and
// per-key order survives a reshard.
type Lineage interface {
	// Parents returns the shards a shard was split or merged from; none
	// for an original shard. A parent no longer listed by Shards has
	// expired: nothing more can be read from it, and the engine counts a
	// loss for one whose checkpoint shows it was not read to its end.
	Parents(ctx context.Context, shard string) ([]string, error)
	// Finished reports whether a reader at after has read all of a closed
	// shard; false for an open one. A shard that expired with records
	// above after is not finished: Read reports the loss (ReadResult.Lost,
	// with Trimmed at the shard's end) and Finished is true from there.
	Finished(ctx context.Context, shard string, after idem.Sequence) (bool, error)
}

// Assigner is implemented by sources that divide a stream's shards among
// the processes reading it, as a Kafka consumer group does: the engine
// processes a shard only while the source assigns it to this process, and
// hands it back, its last batch committed, before another process may take
// it. Assignment balances shards; it does not fence a process that stalls
// past its session: shard leases (engine.WithShardLeases) do that.
type Assigner interface {
	// Acquire reports whether shard is assigned to this process, and if so
	// holds it for the caller until Release: a revocation of the shard waits
	// for Release (up to a bound the source documents). changed is closed
	// at the next change of this process's assignment.
	Acquire(shard string) (ok bool, changed <-chan struct{})
	// Assigned reports whether a shard acquired earlier is still assigned
	// (false once a revocation waits for its Release), with a channel
	// closed at the next change, as Acquire.
	Assigned(shard string) (ok bool, changed <-chan struct{})
	// Release ends the caller's hold on shard: it stopped processing the
	// shard and committed its checkpoint.
	Release(shard string)
}

// CheckpointMirror is implemented by sources that can show idem's progress
// in their own tooling, as a Kafka consumer group's committed offsets do for
// lag exporters. It is best effort: idem's store keeps the checkpoint that
// counts, and a mirror may lag it.
type CheckpointMirror interface {
	// MirrorCheckpoint records that shard's records up to and including
	// after are done. It must not block.
	MirrorCheckpoint(shard string, after idem.Sequence)
}
