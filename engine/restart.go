package engine

import (
	"context"
	"errors"

	"github.com/idem-run/idem/store"
)

// process runs the shard from its durable checkpoint until ctx is done,
// restarting it after errors. It returns early, with fenced true, when a
// commit was refused because the shard's lease was lost.
func (s *shard) process(ctx, work context.Context) (fenced bool) {
	log := s.e.log.With("mapping", s.m.cfg.Name, "shard", s.id)
	failures := 0
	for ctx.Err() == nil {
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
