package invoke

import (
	"cmp"
	"context"
	"slices"

	"github.com/idem-run/idem"
)

// QueueStatus is one function's queue of asynchronous invocations, for
// `idem status --json` and the metrics: how much is waiting, and what
// became of the rest.
type QueueStatus struct {
	Function string `json:"function"`
	// Queued counts accepted events not done yet: waiting their turn,
	// running, or waiting for a retry.
	Queued uint64 `json:"queued"`
	// Dispatched counts the queued events handed to the function and not
	// done yet (running, or waiting for a retry).
	Dispatched int `json:"dispatched"`
	// OldestAgeMs is how long the oldest queued event has waited; 0 when
	// none is queued.
	OldestAgeMs int64 `json:"oldestAgeMs"`
	// Processed, Skipped (a repeated idempotency key) and Discarded (given
	// up, sent to the on-failure destination) count the events done, as
	// committed: a discarded event's failure record is readable by then.
	Processed uint64 `json:"processed"`
	Skipped   uint64 `json:"skipped"`
	Discarded uint64 `json:"discarded"`
}

// Status reports every function's queue, sorted by function. A queue
// whose stream cannot be read reports its counters without Queued.
func (s *Service) Status(ctx context.Context) []QueueStatus {
	out := make([]QueueStatus, 0, len(s.fns))
	for _, f := range s.fns {
		q := f.q
		q.mu.Lock()
		st := QueueStatus{Function: f.cfg.Name, Processed: q.durable.Processed, Skipped: q.durable.Skipped, Discarded: q.durable.Discarded}
		hw := q.hw // every event at or below it is done
		var doneAbove uint64
		for _, p := range q.pending {
			if p.done {
				doneAbove++
			} else {
				st.Dispatched++
			}
		}
		q.mu.Unlock()
		// The first record above the checkpoint is the oldest not done
		// (or done out of order, which only makes the age an upper bound).
		res, err := s.db.Read(ctx, q.stream, q.shard, idem.SequenceOf(hw), 1, 1<<20)
		if err == nil {
			if latest, _ := res.Latest.Uint64(); latest > hw {
				st.Queued = latest - hw - min(doneAbove, latest-hw)
			}
			if st.Queued > 0 && len(res.Records) > 0 {
				st.OldestAgeMs = max(0, s.now().Sub(res.Records[0].ArrivalTime).Milliseconds())
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b QueueStatus) int { return cmp.Compare(a.Function, b.Function) })
	return out
}
