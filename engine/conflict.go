package engine

import (
	"context"
	"time"

	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// conflictClassifier is implemented by a store whose transactions can fail
// because they conflicted with other transactions (PostgreSQL's deadlocks,
// serialization failures and lock timeouts): the same work, run again once
// the other transaction ended, succeeds. The PostgreSQL store implements
// it; a store that does not has no such conflicts.
type conflictClassifier interface {
	IsConflict(err error) bool
}

// isConflict reports whether the store classifies err as a conflict.
func isConflict(st store.Driver, err error) bool {
	c, ok := st.(conflictClassifier)
	return ok && err != nil && c.IsConflict(err)
}

// resultConflict reports whether an invocation failed with a conflict of
// the store's transactions: err, or the error of the record that failed.
func resultConflict(st store.Driver, res function.Result, err error) bool {
	if err != nil {
		return isConflict(st, err)
	}
	// res.Err is a *function.Error: checked for nil before it becomes an
	// error interface, which would never be nil.
	return res.Err != nil && isConflict(st, res.Err)
}

// Conflicts are retried with waits from conflictBaseDelay, doubling with
// each consecutive conflict of a batch up to conflictMaxDelay (or the
// mapping's RetryMaxDelay if lower), with jitter: long enough for the
// transaction that won to commit, short enough not to idle the shard.
const (
	conflictBaseDelay = 10 * time.Millisecond
	conflictMaxDelay  = time.Second
)

// conflictWait logs and counts the n-th consecutive conflict of a batch and
// sleeps before it runs again. A conflict does not count against the
// mapping's MaximumRetryAttempts: it is no failure of the records.
func (s *shard) conflictWait(ctx context.Context, n int, first string, out outcome) error {
	cfg := &s.m.cfg
	s.e.metrics.conflicts.WithLabelValues(cfg.Name).Inc()
	limit := conflictMaxDelay
	if cfg.RetryMaxDelay > 0 {
		limit = min(limit, cfg.RetryMaxDelay)
	}
	d := jittered(conflictBaseDelay, limit, n)
	s.e.log.Warn("a store transaction conflicted with another (deadlock, serialization failure or lock timeout); running the batch again",
		"mapping", cfg.Name, "shard", s.id, "first", first, "conflicts", n, "wait", d, "err", out.errMsg)
	return sleep(ctx, d)
}
