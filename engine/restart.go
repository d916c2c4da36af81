package engine

import (
	"context"
	"errors"

	"github.com/idem-run/idem/store"
)

// process runs the shard from its durable checkpoint until ctx is done,
// restarting it after errors. It returns early, with fenced true, when a
// commit was refused because the shard's lease was lost.
//
// The wait before a restart doubles with each failure in a row, up to the
// mapping's RetryMaxDelay; a run that committed anything before it failed
// starts the count again. Counting every failure since the shard started
// instead made a shard whose store's connections are cut now and then (a
// failover, a proxy's restarts) wait the maximum after each, however long
// it had run well in between.
func (s *shard) process(ctx, work context.Context) (fenced bool) {
	log := s.e.log.With("mapping", s.m.cfg.Name, "shard", s.id)
	failures := 0
	for ctx.Err() == nil {
		commits := s.commits.Load()
		err := s.runOnce(ctx, work)
		if err == nil || ctx.Err() != nil {
			break
		}
		if errors.Is(err, errMoved) {
			log.Info("restarting the shard from the checkpoint a replay moved it to")
			continue
		}
		if errors.Is(err, store.ErrFenced) {
			s.e.metrics.shardError(s.m.cfg.Name, err)
			s.lastError.Store(err.Error())
			log.Error("shard stopped: its lease was taken over, so its commit was refused", "err", err)
			return true
		}
		if s.commits.Load() != commits {
			failures = 0
		}
		failures++
		s.e.metrics.shardError(s.m.cfg.Name, err)
		s.state.Store("error")
		s.lastError.Store(err.Error())
		log.Error("shard stopped; restarting from its last checkpoint", "err", err, "failures", failures)
		if sleep(ctx, s.backoff(failures)) != nil {
			break
		}
	}
	return false
}
