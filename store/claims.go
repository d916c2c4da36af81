package store

import (
	"context"
	"errors"
	"time"
)

// Claims keeps the idempotency records of work that is not a shard's
// record: Invoke API calls that carry an Idempotency-Key, and journaled
// steps. Shard records do not need them: one shard is processed by one
// owner at a time, and their completion commits with the checkpoint.
//
// A record goes through two states. Claim takes it IN_PROGRESS under a
// lease; Complete makes it COMPLETED with the work's result. A lease that
// expired may be taken over by another claimer, which gets a higher
// fencing token: the old owner's Complete is then refused with ErrFenced,
// so a stalled owner that wakes up can never overwrite the new owner's
// result (the pattern Powertools and DynamoDB conditional writes use).
//
// Expiry, of leases and of completed records, is decided from the
// timestamps passed in, never by waiting for a background delete: a store
// whose purge runs late still answers correctly.
type Claims interface {
	// Claim tries to take key for now+lease. It returns the claim with
	// Status Acquired and a fencing token higher than any before it for
	// the key, or the existing record: Status Completed (with its Result),
	// or an error wrapping ErrClaimHeld while another owner's lease runs.
	// A record whose PayloadHash differs from payloadHash makes an error
	// wrapping ErrPayloadMismatch, whatever its status: the same key with
	// another payload is a caller's bug, not a repeat.
	Claim(ctx context.Context, key MarkKey, payloadHash PayloadHash, lease time.Duration, now time.Time) (Claim, error)

	// Complete stores result for c and keeps it until expires, if c's token
	// is still the key's latest; otherwise it returns an error wrapping
	// ErrFenced and changes nothing.
	Complete(ctx context.Context, c Claim, result []byte, expires time.Time) error

	// Release ends c's lease early, when its work failed and may be tried
	// again at once; a fenced or completed claim is left as it is (and
	// ErrFenced returned for a fenced one).
	Release(ctx context.Context, c Claim) error

	// Extend moves c's lease to end at until, if c's token is still the
	// key's (whatever its lease time: an owner whose lease ran out but was
	// not taken over keeps it); otherwise it returns an error wrapping
	// ErrFenced and changes nothing. A completed record is left as it is.
	// A shard's owner under a lease extends it periodically.
	Extend(ctx context.Context, c Claim, until time.Time) error

	// Lookup returns key's record as of now: a completed record until it
	// expires, an in-progress one while its lease runs; ok is false
	// otherwise.
	Lookup(ctx context.Context, key MarkKey, now time.Time) (c Claim, ok bool, err error)
}

// ClaimTaker is implemented by Claims that let a caller take a key over
// from another owner whose lease still runs. It exists for work whose
// ownership is proved by something else than the claim: a journaled step
// runs inside a shard's record, which one owner at a time processes (the
// shard's lease and fence), so an in-progress step record left by an
// earlier attempt of the same record belongs to an attempt that is over
// (it panicked, failed to journal, or its process died). Waiting for its
// lease would fail every retry in the meantime.
type ClaimTaker interface {
	// Takeover is Claim, except for an in-progress record with the same
	// payload hash: whatever its lease, it is taken over, and the caller
	// gets Status Acquired with a fencing token higher than the old
	// owner's, whose Complete, Release and Extend are then refused with
	// ErrFenced. A completed record is returned as Completed (with its
	// Result) until it expires; a live record whose PayloadHash differs
	// makes an error wrapping ErrPayloadMismatch. Takeover never returns
	// ErrClaimHeld.
	Takeover(ctx context.Context, key MarkKey, payloadHash PayloadHash, lease time.Duration, now time.Time) (Claim, error)
}

// PayloadHash is a SHA-256 of the work's input, kept with its record so a
// repeat with another payload under one key is detected.
type PayloadHash [32]byte

// ClaimStatus says where an idempotency record is.
type ClaimStatus uint8

const (
	// Acquired: the caller holds the lease and must do the work.
	Acquired ClaimStatus = iota + 1
	// InProgress: another owner holds an unexpired lease (Lookup only).
	InProgress
	// Completed: the work is done; Result holds its outcome.
	Completed
)

func (s ClaimStatus) String() string {
	switch s {
	case Acquired:
		return "ACQUIRED"
	case InProgress:
		return "IN_PROGRESS"
	case Completed:
		return "COMPLETED"
	}
	return "UNKNOWN"
}

// Claim is an idempotency record as a claimer sees it.
type Claim struct {
	Key         MarkKey
	Status      ClaimStatus
	Token       uint64 // fencing token: increases with every Claim that acquires
	PayloadHash PayloadHash
	// LeaseUntil is when an in-progress claim may be taken over.
	LeaseUntil time.Time
	// Result and Expires are set once Completed.
	Result  []byte
	Expires time.Time
}

// Errors Claims return; callers branch on them with errors.Is.
var (
	// ErrClaimHeld: another owner's lease on the key has not expired.
	ErrClaimHeld = errors.New("store: idempotency key is in progress elsewhere")
	// ErrFenced: the claim's lease was taken over; its work must not commit.
	ErrFenced = errors.New("store: claim was fenced by a newer owner")
	// ErrPayloadMismatch: the key's record was made for another payload.
	ErrPayloadMismatch = errors.New("store: idempotency key was used with another payload")
)
