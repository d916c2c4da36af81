package engine

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/idem-run/idem"
)

// A batch's retries: Lambda's rules (ESM.md) for a failed invocation, a
// partial failure, bisection, age and retry limits, applied until every
// record of the batch is resolved.

// outcome is what one invocation means under the mapping's rules.
type outcome struct {
	// windowState is the tumbling window's state the function returned;
	// windowEarly, that it was too large, so the window ends early.
	windowState json.RawMessage
	windowEarly bool
	failedAt    int // index of the lowest failed record; -1: none; len: whole batch
	// keepFailedAt is the failed record's index when failedAt was set to
	// 0 so that none of a tumbling window's batch commits.
	keepFailedAt int
	errType      string // the function error's type, for permanentErrorTypes
	errMsg       string
	permanent    bool
	// conflict: the failure is the store transaction's conflict with
	// another one, not the records': run again, they succeed.
	conflict bool
}

// completed returns how many leading records of an invocation of n
// records completed: all on success, those before the failed record on a
// partial failure, none when the whole batch failed.
func (o outcome) completed(n int) int {
	switch {
	case o.failedAt < 0:
		return n
	case o.failedAt < n:
		return o.failedAt
	}
	return 0
}

// runBatch resolves every record of b: invoking, bisecting, retrying from a
// reported failure, and discarding as the mapping says. It returns only when
// all of b is resolved, or with an error when ctx is done or the store fails.
func (s *shard) runBatch(ctx, work context.Context, b []idem.Record) error {
	cfg := &s.m.cfg
	b, err := s.dropUnsendable(work, b)
	if err != nil || len(b) == 0 {
		return err
	}
	queue := [][]idem.Record{b}
	attempts := 0                // invocations of the head of the queue that failed
	var failingSeq idem.Sequence // the record a partial failure named last
	failingIsRecord := true      // whether attempts count a record's failures
	conflicts := 0               // consecutive conflicts of the store's transactions
	for len(queue) > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sub := queue[0]
		if aged := s.agedPrefix(sub); aged > 0 {
			c := commit{}
			c.discard(s, sub[:aged], conditionRecordAge, attempts, "", "")
			if err := s.commit(work, &c); err != nil {
				return err
			}
			if sub = sub[aged:]; len(sub) == 0 {
				queue = queue[1:]
				attempts = 0
				continue
			}
			queue[0] = sub
		}

		if err := s.renewClaims(work, sub); err != nil {
			return err
		}
		bs, out, err := s.invoke(work, sub)
		if err != nil {
			return err
		}
		if cfg.TumblingWindow > 0 && out.failedAt > 0 && out.failedAt < len(sub) {
			// The state the function returned counts the records after
			// the failed one too: committing it with only those before
			// would count them twice once they run again. Nothing of the
			// batch commits; it runs again with the state from before.
			out.windowState, out.windowEarly = nil, false
			out.keepFailedAt = out.failedAt
			out.failedAt = 0
		}
		// The records the invocation completed commit first, with their
		// state and, in its transaction, their SQL; an invocation that
		// completed none has its transaction undone.
		if n := out.completed(len(sub)); n > 0 {
			done, discarded, err := s.commitCompleted(work, sub, n, bs, out)
			if err != nil {
				return err
			}
			if done < n {
				// The store took the writes of fewer records than
				// completed: the rest run again, which is no failure of
				// theirs.
				sub = sub[done:]
				queue[0] = sub
				continue
			}
			if out.windowEarly && !discarded {
				if err := s.closeWindow(ctx, work, true); err != nil {
					return err
				}
			}
		} else {
			bs.rollback()
		}
		if out.conflict && out.failedAt >= 0 {
			// Neither a retry nor a reason to bisect: the records did
			// not fail, their transaction lost a race.
			if out.failedAt > 0 && out.failedAt < len(sub) {
				sub = sub[out.failedAt:]
				queue[0] = sub
			}
			conflicts++
			if err := s.conflictWait(ctx, conflicts, string(sub[0].Sequence), out); err != nil {
				return err
			}
			continue
		}
		conflicts = 0
		switch {
		case out.failedAt < 0: // success
			queue = queue[1:]
			attempts = 0

		case out.failedAt < len(sub): // a partial failure names a record
			if out.failedAt > 0 {
				sub = sub[out.failedAt:]
				queue[0] = sub
			}
			at := out.keepFailedAt // in a tumbling window, the batch ran again whole
			if !failingIsRecord || sub[at].Sequence != failingSeq {
				failingSeq, failingIsRecord, attempts = sub[at].Sequence, true, 0
			}
			attempts++
			if out.permanent || exhausted(cfg.MaximumRetryAttempts, attempts) {
				// Only the failed record is discarded: the records after it
				// never failed themselves.
				c := commit{}
				c.discard(s, sub[at:at+1], conditionRetriesExhausted, attempts, out.errType, out.errMsg)
				if err := s.commit(work, &c); err != nil {
					return err
				}
				if at > 0 {
					sub = slices.Delete(slices.Clone(sub), at, at+1)
				} else {
					sub = sub[1:]
				}
				if len(sub) == 0 {
					queue = queue[1:]
				} else {
					queue[0] = sub
				}
				attempts = 0
				continue
			}
			if err := s.retryAfter(ctx, attempts); err != nil {
				return err
			}

		default: // the whole batch failed
			failingIsRecord = false
			if out.permanent {
				c := commit{}
				c.discard(s, sub, conditionRetriesExhausted, attempts+1, out.errType, out.errMsg)
				if err := s.commit(work, &c); err != nil {
					return err
				}
				queue = queue[1:]
				attempts = 0
				continue
			}
			if cfg.BisectBatchOnFunctionError && len(sub) > 1 {
				half := len(sub) / 2
				rest := queue[1:]
				queue = append([][]idem.Record{sub[:half], sub[half:]}, rest...)
				attempts = 0
				continue
			}
			attempts++
			if exhausted(cfg.MaximumRetryAttempts, attempts) {
				c := commit{}
				c.discard(s, sub, conditionRetriesExhausted, attempts, out.errType, out.errMsg)
				if err := s.commit(work, &c); err != nil {
					return err
				}
				queue = queue[1:]
				attempts = 0
				continue
			}
			if err := s.retryAfter(ctx, attempts); err != nil {
				return err
			}
		}
	}
	return nil
}

// exhausted reports whether a batch that failed attempts times has used up
// its retries: the first invocation is not a retry.
func exhausted(maxRetries, attempts int) bool {
	return maxRetries >= 0 && attempts > maxRetries
}

// backoff is exponential with full jitter, capped.
func (s *shard) backoff(attempt int) time.Duration {
	return jittered(s.m.cfg.RetryBaseDelay, s.m.cfg.RetryMaxDelay, attempt)
}

// jittered is the delay before retry attempt (1-based): base doubling up
// to limit, then a random point in its upper half, so that shards failing
// together do not retry together.
func jittered(base, limit time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// agedPrefix counts the leading records older than maximumRecordAge.
func (s *shard) agedPrefix(b []idem.Record) int {
	maxAge := s.m.cfg.MaximumRecordAge
	if maxAge <= 0 {
		return 0
	}
	cutoff := s.e.now().Add(-maxAge)
	n := 0
	for n < len(b) && b[n].ArrivalTime.Before(cutoff) {
		n++
	}
	return n
}
