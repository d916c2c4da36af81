package store

import (
	"context"
	"errors"
	"time"

	"github.com/idem-run/idem"
)

// RecordClaims asks ClaimRecords to claim the idempotency keys of records
// about to run, and carries back what it found.
//
// Marks and progress say that a record ran; a claim says that it is
// running. Without one, two shards that read records with one payload key,
// or two mappings of one scope reading the same record, both find it not
// done and both run it: the duplicate that races, which exactly-once is
// there to prevent. So a record runs only under a claim: taken for all of
// a window's records at once, with a lease as long as an invocation may
// take, fenced like commits, and ended by the commit that resolves the
// record (a Mark replaces it, or Write.Release ends it).
//
// A claim belongs to an Owner, not to a process: the engine names one
// mapping's shard, so that whoever processes that shard next (after a
// retry, a restart or a handover under shard leases) takes its own
// claims again at once instead of waiting for them to expire. A store
// whose claims stay with the process that took them
// (RecordClaimReleaser) gets the same by ending them when the shard goes
// idle or stops, or the process ends.
type RecordClaims struct {
	// Owner names who claims.
	Owner MarkKey
	// Keys are claimed in order.
	Keys []MarkKey
	// Marks, when set, looks each key's completion mark up first: a key
	// with a mark that has not expired at Now is Completed, and not
	// claimed.
	Marks bool
	// LeaseUntil is when the claims may be taken over if the owner has
	// not ended them.
	LeaseUntil time.Time
	// Now decides which marks and leases have expired.
	Now time.Time
	// Fence, when set, makes the claims conditional on a lease, as for a
	// Write: unless the claims record of Fence.Key holds Fence.Token,
	// ClaimRecords returns an error wrapping ErrFenced and claims nothing.
	Fence *Fence

	// Status is set by ClaimRecords, one per key: Acquired (the owner
	// holds the claim now, whether it held it before or not), Completed,
	// or InProgress (another owner's lease runs). Keys after the first
	// InProgress one are neither looked up nor claimed, and have status 0:
	// a caller that must keep its records in order runs only the keys
	// before it, and holds no claim that could make another owner wait on
	// it while it waits itself.
	Status []ClaimStatus
	// HeldUntil is when the lease of the first InProgress key ends.
	HeldUntil time.Time
}

// Held returns the index of the first key held by another owner, or
// len(c.Keys) when there is none.
func (c *RecordClaims) Held() int {
	for i, st := range c.Status {
		if st == InProgress {
			return i
		}
	}
	return len(c.Keys)
}

// Reset sizes Status for Keys and clears the results: drivers call it
// first.
func (c *RecordClaims) Reset() {
	c.Status = append(c.Status[:0], make([]ClaimStatus, len(c.Keys))...)
	c.HeldUntil = time.Time{}
}

// Clock is implemented by stores that have a clock of their own (a
// database server's). Mark expiry and claim leases are decided from the
// times the engine passes in, so processes sharing a store compare their
// clocks with the store's at start: a skew larger than the engine's margin
// would shorten retention or leases.
type Clock interface {
	// Time returns the store's current time.
	Time(ctx context.Context) (time.Time, error)
}

// RecordClaimReleaser is implemented by stores whose record claims stay
// with the process that took them (PostgreSQL's, held as locks of a
// session) rather than passing, under the same Owner, to whichever
// process reads the shard next. The engine calls ReleaseRecordClaims when
// a shard goes idle or stops, so that the claims its last window left
// (records cut short, a batch abandoned) do not hold up the shard's next
// reader, in another process, until their leases end.
type RecordClaimReleaser interface {
	// ReleaseRecordClaims ends every record claim owner holds.
	ReleaseRecordClaims(ctx context.Context, owner MarkKey) error
}

// ProcessLocal is implemented by stores that one process owns alone (the
// embedded store, over its data directory): their record claims can only
// be contended from within that process, so an engine that knows every
// mapping reading a shard for a scope skips the claims nobody else could
// take.
type ProcessLocal interface {
	// ProcessLocal reports whether the store is owned by this process
	// alone.
	ProcessLocal() bool
}

// RangeClaim asks ClaimRange to claim, for one mapping, the sequences of a
// shard it is about to run, and carries back what it found.
//
// Records keyed by identity (stream/shard/sequence) are claimed by range,
// not one by one: only mappings of one scope reading the same shard can
// contend for them, and each reads the shard in order, so one small row
// per mapping and shard says what it is running. A record is held by
// another mapping when it lies in that mapping's live range; the other
// mapping's progress (Progress) then tells, once its range has ended,
// which of the records it ran.
type RangeClaim struct {
	// Key names the claiming mapping (Key.Mapping) and the scope, stream
	// and shard of the range.
	Key ProgressKey
	// From and To bound the range, inclusive.
	From, To idem.Sequence
	// LeaseUntil is when the claim may be ignored if the mapping has not
	// ended it (Write.EndRange) or claimed again.
	LeaseUntil time.Time
	// Now decides which other claims have expired.
	Now time.Time
	// Fence, when set, makes the claim conditional on a lease, as for a
	// Write: unless the claims record of Fence.Key holds Fence.Token,
	// ClaimRange returns an error wrapping ErrFenced and claims nothing.
	Fence *Fence

	// Held is set by ClaimRange when another mapping's live range overlaps
	// [From, To]: nothing was claimed, and HeldUntil is when the first such
	// range's lease ends.
	Held      bool
	HeldUntil time.Time
	// Progress is set by ClaimRange when the range was claimed: every
	// mapping's progress of the scope over the shard (as ScopeProgress
	// returns it), read after the claim was written, so that a record
	// another mapping completed before its range ended shows here.
	Progress []MappingProgress
}

// ErrRecordClaimLost is wrapped by the error of a Commit refused because
// a record claim it would end was lost before it landed: the claim went
// with the process's hold on it (PostgreSQL's lock session ended, or the
// claim was swept after its lease), or another owner took it over once
// its lease ran out (Write.MarkOwner), so another process may have
// claimed the key and run its record meanwhile. Nothing of the Write
// lands. The caller must not retry the same Write: it runs the window
// again under new claims, which find the other run's mark if it
// committed.
var ErrRecordClaimLost = errors.New("store: a record claim was lost before the commit landed")
