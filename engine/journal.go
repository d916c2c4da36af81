package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// journal implements idem.Journal over a store's Claims: a step is a claim
// under a lease as long as the function's timeout, completed with its
// result. Steps are journaled as they finish, not with the batch: their
// effect is outside, and already happened.
type journal struct {
	claims    store.Claims
	scope     string
	lease     time.Duration
	retention time.Duration
	now       func() time.Time
}

var _ idem.Journal = (*journal)(nil)

// stepNamespace keeps step keys apart from completion marks of the scope.
const stepNamespace = "\x00step"

func (j *journal) Run(ctx context.Context, recordKey, step string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error) {
	key := j.scope + "/" + recordKey + "/" + step
	mk := store.MarkKeyOf(stepNamespace, key)
	// The payload of a step is its identity: one key is one step.
	ph := store.PayloadHash(sha256.Sum256([]byte(key)))
	c, err := j.claims.Claim(ctx, mk, ph, j.lease, j.now())
	switch {
	case errors.Is(err, store.ErrClaimHeld):
		return nil, fmt.Errorf("%w: %v", idem.ErrStepInProgress, err)
	case err != nil:
		return nil, fmt.Errorf("claiming step %s: %w", key, err)
	case c.Status == store.Completed:
		return c.Result, nil
	}
	res, ferr := fn(ctx, key)
	if ferr != nil {
		// Let the next delivery try at once; a failure to release only
		// delays it until the lease ends.
		_ = j.claims.Release(context.WithoutCancel(ctx), c)
		return nil, ferr
	}
	if res == nil {
		res = []byte("null")
	}
	if err := j.claims.Complete(context.WithoutCancel(ctx), c, res, j.now().Add(j.retention)); err != nil {
		return nil, fmt.Errorf("journaling step %s: %w", key, err)
	}
	return res, nil
}
