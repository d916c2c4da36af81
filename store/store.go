// Package store defines where the engine keeps what must survive a crash:
// checkpoints, completion marks, state and on-failure records.
//
// # Atomicity
//
// Everything one batch changes travels in one Write, and Driver.Commit
// applies a Write atomically and durably: after a crash either all of it is
// visible or none of it. That single rule is what makes idem's effects
// exactly-once; a driver that cannot keep it must not exist.
//
// A driver whose Commit is a database transaction may also offer that
// transaction to in-process handlers (TxDriver): their own writes then
// commit in the same atomic write as the records they belong to.
//
// # Encodings
//
// Mark keys are 128-bit hashes of (scope, idempotency key) (MarkKeyOf), so a
// lookup costs the same whatever the key's length. Sequences are the source's, compared
// as numbers (idem.Sequence.Compare).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"slices"
	"sync"
	"time"

	"github.com/idem-run/idem"
)

// ErrClosed is returned by Driver methods called after Close.
var ErrClosed = errors.New("store: closed")

// ErrNoSpace is wrapped by the errors of writes refused because the disk
// holding the store is full (or below its reserve): nothing of such a write
// landed, and it may be retried once space is freed. Servers answer it with
// 507 Insufficient Storage rather than blaming the request.
var ErrNoSpace = errors.New("store: no space left on device")

// ErrWriteTooLarge is wrapped by the errors of Writes that a store whose
// atomic write is bounded (TxLimiter) refuses whole for their size: nothing
// of such a Write was sent, and the same Write will never fit. The engine
// commits fewer of a batch's records instead, down to one record, and
// sends a record whose own writes (its state) cannot fit to the on-failure
// destination, so that it never blocks its shard.
var ErrWriteTooLarge = errors.New("too large for one atomic write of the store")

// ErrCheckpointBackwards is returned by Commit for a Write whose checkpoint
// is below the stored one: a stale owner of the shard (one that lost it, or
// a bug) must never rewind it. DeleteCheckpoint is the explicit reset.
var ErrCheckpointBackwards = errors.New("store: checkpoint would move backwards")

// CheckpointKey names one mapping's position in one shard.
type CheckpointKey struct {
	Mapping string
	Stream  string
	Shard   string
}

// Checkpoint is a mapping's durable position in a shard, with counters that
// commit with it so that they survive restarts.
type Checkpoint struct {
	// Sequence: every record at or below it has left the shard for this
	// mapping (succeeded, skipped as completed, or discarded).
	Sequence idem.Sequence
	// Processed counts records whose function succeeded.
	Processed uint64
	// Skipped counts records not delivered because their idempotency key
	// was already COMPLETED in the scope.
	Skipped uint64
	// Discarded counts records sent to the on-failure destination.
	Discarded uint64
	// Lost counts records retention removed before they were read.
	Lost uint64
}

// ProgressKey names the completion progress of one mapping of an
// idempotency scope over one shard. Each mapping writes only its own
// progress, so writers in several processes never overwrite each other;
// a record is resolved in the scope when any mapping's progress says so
// (ScopeProgress reads them all). Mapping "" names the scope-wide progress
// earlier versions wrote, still read, and the progress of work that is not
// a mapping's (the Invoke API's queues).
type ProgressKey struct {
	Scope   string
	Stream  string
	Shard   string
	Mapping string
}

// Progress is how the default idempotency key (stream/shard/sequence) is
// recorded: not one mark per record but a high-water mark plus the few
// sequences above it completed out of order (under parallelization). It is
// one small value per batch, and a replay in the same scope is skipped by
// comparing numbers.
type Progress struct {
	// HighWater: every sequence at or below it that Filter selects is
	// resolved in the scope: completed, or discarded to the on-failure
	// destination.
	HighWater idem.Sequence
	// Above lists, sorted ascending, sequences above HighWater that are
	// completed.
	Above []idem.Sequence
	// Filter describes which records the mapping runs at all (its
	// filterCriteria), in the engine's own encoding; empty: every record.
	// The mapping's checkpoint, and so its HighWater, moves over the
	// records it filtered out, which it never ran: they are resolved for
	// the mapping, not for the scope, and another mapping of the scope
	// reads the Filter to tell them apart. Stores keep it verbatim.
	Filter string
}

// MappingProgress is one mapping's progress, as ScopeProgress returns it.
type MappingProgress struct {
	Mapping string
	Progress
}

// Done reports whether seq is resolved in p.
func (p *Progress) Done(seq idem.Sequence) bool {
	if seq.Compare(p.HighWater) <= 0 {
		return true
	}
	_, found := slices.BinarySearchFunc(p.Above, seq, idem.Sequence.Compare)
	return found
}

// MarkKey is the 128-bit hash of (scope, idempotency key).
type MarkKey [16]byte

// MarkKeyOf hashes (scope, key) into the MarkKey marks and claims are
// stored under: the first 16 bytes of the SHA-256 of len(scope) (8 bytes,
// big-endian), scope, then key. Every component that keys records by
// idempotency key must spell it alike.
//
// The hash is cryptographic because keys come from payloads and
// Idempotency-Key headers: under a hash that is not collision resistant
// (the FNV-1a of earlier versions, see LegacyKeyed), whoever chooses keys
// can make a new key collide with one already completed, and have its
// record skipped. The length prefix keeps ("a", "bc") and ("ab", "c")
// apart. MarkKeyOf does not allocate (the engine hashes every record of a
// window): a short scope and key are hashed from a buffer on the stack,
// longer ones by a hasher kept in a pool.
func MarkKeyOf(scope, key string) MarkKey {
	n := 8 + len(scope) + len(key)
	if n > markKeyStack {
		return markKeyLong(scope, key)
	}
	var buf [markKeyStack]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(len(scope)))
	copy(buf[8:], scope)
	copy(buf[8+len(scope):], key)
	sum := sha256.Sum256(buf[:n])
	return MarkKey(sum[:len(MarkKey{})])
}

// markKeyStack is the longest input MarkKeyOf hashes from the stack.
const markKeyStack = 256

// markHasher is a SHA-256 with a buffer to feed it strings through
// without converting them (which would allocate).
type markHasher struct {
	h   hash.Hash
	buf [markKeyStack]byte
}

var markHashers = sync.Pool{New: func() any { return &markHasher{h: sha256.New()} }}

// markKeyLong is MarkKeyOf for inputs longer than markKeyStack.
func markKeyLong(scope, key string) MarkKey {
	m := markHashers.Get().(*markHasher)
	defer markHashers.Put(m)
	m.h.Reset()
	binary.BigEndian.PutUint64(m.buf[:8], uint64(len(scope)))
	m.h.Write(m.buf[:8])
	for _, s := range [2]string{scope, key} {
		for len(s) > 0 {
			c := copy(m.buf[:], s)
			m.h.Write(m.buf[:c])
			s = s[c:]
		}
	}
	sum := m.h.Sum(m.buf[:0])
	return MarkKey(sum[:len(MarkKey{})])
}

// Mark records that an idempotency key is COMPLETED until Expires.
type Mark struct {
	Key     MarkKey
	Expires time.Time
}

// StateOp is one state write; Delete removes Key and ignores Value.
type StateOp struct {
	Namespace string
	Key       string
	Value     []byte
	Delete    bool
}

// Failure is one discarded batch bound for an on-failure destination: the
// metadata record Lambda writes, and (idem's addition) the records
// themselves so that they can be redriven.
type Failure struct {
	// Destination is the name of the on-failure stream.
	Destination string
	// Metadata is the JSON on-failure record.
	Metadata []byte
	// Records are the discarded records, in order.
	Records []idem.Record
}

// Write is everything one batch changes. Commit applies it atomically.
type Write struct {
	Checkpoint    CheckpointKey
	NewCheckpoint Checkpoint

	// Progress, when HasProgress, replaces the progress of ProgressKey
	// (one mapping's, never another's).
	HasProgress bool
	ProgressKey ProgressKey
	Progress    Progress

	// Marks are added to MarkScope (idempotency keys from the payload).
	Marks []Mark
	// MarkOwner, when set (not the zero MarkKey), makes the Write
	// conditional on the record claims its Marks replace: each key marked
	// must still be claimed by MarkOwner (whatever the claim's lease), or
	// be neither claimed nor marked (a mark expired but not yet purged
	// counts). Otherwise Commit returns an error wrapping
	// ErrRecordClaimLost and applies nothing: another owner took the claim
	// over once its lease ran out (the run stalled past it), and may have
	// run the record, or committed it already. A key the Write marks twice
	// is judged by what the store held before the Write, not by its own
	// first mark. The engine sets it on every commit that marks records;
	// without it, marks replace claims whoever holds them.
	MarkOwner MarkKey

	State    []StateOp
	Failures []Failure

	// Release ends the record claims (ClaimRecords) of these keys that
	// ReleaseOwner holds; a key another owner claimed since is left alone.
	// A key that also gets a Mark needs no release: the mark replaces the
	// claim.
	Release      []MarkKey
	ReleaseOwner MarkKey

	// EndRange ends the range claim (ClaimRange) of ProgressKey's mapping
	// over its shard.
	EndRange bool

	// Fence, when set, makes the Write conditional on a lease: Commit
	// applies it only if the claims record (store.Claims) of Fence.Key
	// holds exactly Fence.Token at the moment of the write, whatever its
	// lease time; otherwise it returns an error wrapping ErrFenced and
	// applies nothing. A shard's owner under a lease fences every commit
	// with it, so a process that lost the shard can never commit after it.
	Fence *Fence
}

// Fence names the lease a Write is conditional on: the claims record of
// Key, which must hold Token.
type Fence struct {
	Key   MarkKey
	Token uint64
}

// Reset clears a Write for reuse without giving up its buffers.
func (w *Write) Reset() {
	*w = Write{Marks: w.Marks[:0], State: w.State[:0], Failures: w.Failures[:0], Release: w.Release[:0], Progress: Progress{Above: w.Progress.Above[:0]}}
}

// Driver is a store as the engine uses it. Implementations are safe for
// concurrent use; concurrent Commits must share durable syncs (group commit)
// rather than queue behind each other. Drivers make one attempt and never
// retry, sleep or log.
type Driver interface {
	// Checkpoint returns the checkpoint of key, and false if there is none.
	Checkpoint(ctx context.Context, key CheckpointKey) (Checkpoint, bool, error)

	// Progress returns one mapping's completion progress over a shard (or
	// the scope-wide one of Mapping ""); the zero Progress if there is
	// none.
	Progress(ctx context.Context, key ProgressKey) (Progress, error)

	// ScopeProgress returns the progress of every mapping of key.Scope
	// over key.Stream and key.Shard, Mapping "" included, in no particular
	// order; key.Mapping is ignored.
	ScopeProgress(ctx context.Context, key ProgressKey) ([]MappingProgress, error)

	// ClaimRecords takes claims on records' idempotency keys before they
	// run, a window's keys together, in a round trip or two (not one per
	// key); see RecordClaims.
	ClaimRecords(ctx context.Context, c *RecordClaims) error

	// ClaimRange claims a range of a shard's sequences for one mapping of a
	// scope (records keyed by identity), replacing the mapping's earlier
	// range of that shard, and reads the scope's progress, in one round
	// trip; see RangeClaim.
	ClaimRange(ctx context.Context, c *RangeClaim) error

	// Completed reports, for each key, whether it holds a mark that has not
	// expired at now. Expiry is decided here from timestamps, never by
	// waiting for a background delete. done has the length of keys.
	Completed(ctx context.Context, keys []MarkKey, now time.Time, done []bool) error

	// State returns the committed value of key in namespace, or
	// idem.ErrNotFound.
	State(ctx context.Context, namespace, key string) ([]byte, error)

	// Commit applies w atomically and durably. A checkpoint below the
	// stored one makes an error wrapping ErrCheckpointBackwards, and
	// nothing is written; so does a w.Fence whose token the claims record
	// no longer holds, with an error wrapping ErrFenced (drivers that do
	// not implement Claims refuse any Fence), and a w that marks a key
	// whose record claim the driver knows was lost before it could land,
	// with an error wrapping ErrRecordClaimLost (as is a w whose
	// MarkOwner no longer holds a claim it marks).
	Commit(ctx context.Context, w *Write) error

	// DeleteCheckpoint removes a mapping's checkpoint (an explicit reset, the
	// only way a checkpoint moves backwards).
	DeleteCheckpoint(ctx context.Context, key CheckpointKey) error
}

// Pipeliner is implemented by stores that can apply a Write at once and make
// it durable in the background, as Pebble's write-ahead log allows: a shard
// then invokes its function over the next batch while the last commit
// syncs, instead of waiting for the disk after every batch. The engine keeps
// a few commits of a shard unsynced at most, and waits for them before
// anything outside the store may learn of them (a Kafka group's offsets, a
// partition or lease handed over, the engine's end).
//
// Exactly-once holds because a write is atomic and writes become durable in
// the order they were applied: a crash loses a suffix of whole writes
// (checkpoint, progress, marks and state together), whose records are
// delivered again and counted once.
type Pipeliner interface {
	// CommitPipelined applies w atomically, as Commit does, visible at once
	// to the store's readers, and returns before it is durable; synced
	// blocks until it is and reports a failure to make it so. After such a
	// failure the store refuses all further use: what it showed may be
	// lost. A w whose Failures append to a stream is durable before
	// CommitPipelined returns (a stream's readers must never see records
	// that a crash could take back).
	CommitPipelined(ctx context.Context, w *Write) (synced func() error, err error)
}

// TxLimiter is implemented by stores whose atomic write holds a bounded
// number of items (DynamoDB's transactions hold 100): a Write touching more
// than MaxWriteItems items (its checkpoint, progress, fence, each distinct
// mark, release and state key, each on-failure batch) is refused whole by
// Commit, never split. Configurations and engines use it to refuse, at
// start, mappings whose batches could need more: records keyed by their
// payload need a mark each. Stores without the interface have no such
// bound.
type TxLimiter interface {
	// MaxWriteItems returns how many items one Write may touch.
	MaxWriteItems() int
}
