package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// journal implements idem.Journal over a store's Claims: a step is a claim
// under a lease as long as the function's timeout, completed with its
// result. Steps are journaled as they finish, not with the batch: their
// effect is outside, and already happened.
//
// A step's key is idem.StepKey(scope, recordKey, step): scope and step
// escaped ('%' as %25, '/' as %2F), so that no two (record, step) pairs
// share a key, and keys without those characters unchanged.
//
// An attempt takes its steps with Takeover (store.ClaimTaker), not Claim:
// one attempt of a record runs at a time (the shard is processed by one
// owner, under its lease and fence), so a step record still in progress
// was left by an earlier attempt that is over: one that panicked, failed
// to journal, or died with its process. Waiting for that lease would fail
// every retry until it expired. The earlier owner, should it still be
// running, is fenced: its Complete is refused.
type journal struct {
	claims    store.Claims
	legacy    *store.Legacy // the engine's
	scope     string
	lease     time.Duration
	retention time.Duration
	now       func() time.Time
	tracer    trace.Tracer // nil: tracing off
}

var _ idem.Journal = (*journal)(nil)

// stepNamespace keeps step keys apart from completion marks of the scope.
const stepNamespace = "\x00step"

// run is Run without its span.
func (j *journal) run(ctx context.Context, recordKey, step string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error) {
	key := idem.StepKey(j.scope, recordKey, step)
	mk := store.MarkKeyOf(stepNamespace, key)
	// The payload of a step is its identity: one key is one step.
	ph := store.PayloadHash(sha256.Sum256([]byte(key)))
	c, err := j.take(ctx, mk, key, ph)
	switch {
	case errors.Is(err, store.ErrClaimHeld):
		return nil, fmt.Errorf("%w: %w", idem.ErrStepInProgress, err)
	case err != nil:
		return nil, fmt.Errorf("claiming step %s: %w", key, err)
	case c.Status == store.Completed:
		return c.Result, nil
	}
	// Every way out but a journaled result releases the claim, a panic
	// included (the panic goes on, for the invoker to recover), so that
	// the next delivery runs the step at once. A failure to release only
	// delays it until the lease ends, on a store without Takeover.
	journaled := false
	defer func() {
		if !journaled {
			_ = j.claims.Release(context.WithoutCancel(ctx), c)
		}
	}()
	res, err := fn(ctx, key)
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = []byte("null")
	}
	if err := j.claims.Complete(context.WithoutCancel(ctx), c, res, j.now().Add(j.retention)); err != nil {
		return nil, fmt.Errorf("journaling step %s: %w", key, err)
	}
	journaled = true
	return res, nil
}

// take claims a step: with Takeover where the store has it, otherwise with
// Claim, which makes a retry wait for an earlier attempt's lease.
// A step completed under its legacy key (store.Legacy) is answered from
// there.
func (j *journal) take(ctx context.Context, mk store.MarkKey, key string, ph store.PayloadHash) (store.Claim, error) {
	var legacy store.Legacy
	if j.legacy != nil {
		legacy = *j.legacy
	}
	if t, ok := j.claims.(interface {
		store.Claims
		store.ClaimTaker
	}); ok {
		return legacy.Takeover(ctx, t, mk, stepNamespace, key, ph, j.lease, j.now())
	}
	return legacy.Claim(ctx, j.claims, mk, stepNamespace, key, ph, j.lease, j.now())
}
