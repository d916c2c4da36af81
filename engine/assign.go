package engine

import (
	"context"
	"sync"

	"github.com/idem-run/idem/source"
)

// runAssigned processes the shard while its source assigns it to this
// engine (a Kafka consumer group's member), until ctx is done. When the
// assignment moves the shard elsewhere, reading stops, the batch in flight
// finishes and commits, the shard's lease (if any) is released, and only
// then is the shard handed back, so the next owner starts from its last
// checkpoint without waiting for a lease to run out.
func (s *shard) runAssigned(ctx, work context.Context, a source.Assigner) {
	log := s.e.log.With("mapping", s.m.cfg.Name, "shard", s.id)
	for ctx.Err() == nil {
		ok, changed := a.Acquire(s.id)
		if !ok {
			s.state.Store("assigned elsewhere")
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		log.Info("shard assigned to this process")
		actx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-actx.Done():
					return
				case <-changed:
				}
				var still bool
				if still, changed = a.Assigned(s.id); !still {
					log.Info("shard assigned elsewhere: finishing the batch in flight, then handing it over")
					cancel()
					return
				}
			}
		})
		s.runOwned(actx, work)
		cancel()
		wg.Wait()
		a.Release(s.id)
		if s.finished.Load() {
			return
		}
	}
}
