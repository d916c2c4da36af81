package engine

import (
	"context"
	"errors"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// conditionStateSize is the on-failure condition of a record whose own
// writes (its state) do not fit one atomic write of the store.
const conditionStateSize = "StateSizeExceeded"

// commitCompleted commits the first n records of sub, which an invocation
// completed, with their state writes and the tumbling window's state. It
// returns how many records it resolved, and whether they were discarded
// rather than committed.
//
// A store whose atomic write is bounded (store.TxLimiter, DynamoDB's 100
// items and 4 MB) refuses a Write that exceeds it before sending anything
// (store.ErrWriteTooLarge), and would refuse it again at every retry: the
// shard would never move past the batch. So the writes of half as many
// records are committed instead, down to one, and the rest of the batch
// runs again (runBatch). A record whose own writes cannot fit, or a
// tumbling window's batch (whose returned state counts every record, so
// that committing some of them would count the others twice when they run
// again), goes to the on-failure destination: the writes are lost, the
// records kept.
func (s *shard) commitCompleted(work context.Context, sub []idem.Record, n int, bs *batchState, out outcome) (done int, discarded bool, err error) {
	cfg := &s.m.cfg
	for k := n; ; k /= 2 {
		c := commit{completed: sub[:k], state: bs, stateRecords: k, window: cfg.TumblingWindow > 0, windowState: out.windowState}
		err := s.commit(work, &c)
		if err == nil {
			return k, false, nil
		}
		if !errors.Is(err, store.ErrWriteTooLarge) || bs.tx != nil {
			return 0, false, err
		}
		if k > 1 && cfg.TumblingWindow == 0 {
			s.e.log.Warn("the store cannot take the writes of these records in one write; committing half of them, running the rest again",
				"mapping", cfg.Name, "shard", s.id, "records", k, "first", sub[0].Sequence, "err", err)
			continue
		}
		d := commit{}
		d.discard(s, sub[:k], conditionStateSize, 1, "StateTooLarge", err.Error())
		if err := s.commit(work, &d); err != nil {
			return 0, false, err
		}
		return k, true, nil
	}
}
