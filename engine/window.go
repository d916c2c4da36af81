package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// MaxTumblingWindow is the longest tumbling window Lambda allows.
const MaxTumblingWindow = 900 * time.Second

// MaxWindowState is the largest window state, in bytes of its JSON, that a
// function may return, as Lambda's 1 MB.
const MaxWindowState = 1 << 20

// tumbling is a shard's open tumbling window, as committed: its state is
// stored in the mapping's scope under windowKey, in the same write as the
// checkpoint of the records that built it.
type tumbling struct {
	open  bool
	start time.Time
	state map[string]string
}

// storedWindow is a window as the store keeps it.
type storedWindow struct {
	Start int64             `json:"start"` // Unix nanoseconds
	State map[string]string `json:"state"`
}

// windowKey is the state key of the shard's open window.
func (s *shard) windowKey() string {
	cfg := &s.m.cfg
	return "\x00window\x00" + cfg.Name + "\x00" + cfg.Stream + "\x00" + s.id
}

// loadWindow reads the shard's open window, if any.
func (s *shard) loadWindow(ctx context.Context) error {
	s.tw = tumbling{}
	v, err := s.e.store.State(ctx, s.m.cfg.Scope, s.windowKey())
	if errors.Is(err, idem.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("loading the tumbling window: %w", err)
	}
	var w storedWindow
	if err := json.Unmarshal(v, &w); err != nil {
		return fmt.Errorf("loading the tumbling window: %w", err)
	}
	s.tw = tumbling{open: true, start: time.Unix(0, w.Start).UTC(), state: w.State}
	return nil
}

// windowOf is the start of the window record r belongs to: by arrival
// time, except that a record that arrived before the open window began (a
// source whose timestamps are not monotonic) joins the open window.
func (s *shard) windowOf(r *idem.Record) time.Time {
	w := r.ArrivalTime.UTC().Truncate(s.m.cfg.TumblingWindow)
	if s.tw.open && w.Before(s.tw.start) {
		return s.tw.start
	}
	return w
}

// enterWindow makes start the open window, closing an earlier one first.
func (s *shard) enterWindow(ctx, work context.Context, start time.Time) error {
	if s.tw.open && start.After(s.tw.start) {
		if err := s.closeWindow(ctx, work, false); err != nil {
			return err
		}
	}
	if !s.tw.open {
		s.tw = tumbling{open: true, start: start}
	}
	return nil
}

// window is the idem.Window of a batch in the open window.
func (s *shard) window(final, early bool) *idem.Window {
	return &idem.Window{Start: s.tw.start, End: s.tw.start.Add(s.m.cfg.TumblingWindow), State: maps.Clone(s.tw.state),
		Final: final, TerminatedEarly: early, Stream: s.m.cfg.Stream, ShardID: s.id}
}

// windowState reads the state an invocation returned, for the commit of
// the records it completed. oversize reports a state above
// MaxWindowState: the window is then terminated early.
func windowState(res function.Result) (state map[string]string, oversize bool, err error) {
	if len(res.State) > MaxWindowState {
		return nil, true, nil
	}
	state, err = function.ParseState(res.State)
	return state, false, err
}

// appendWindow adds the open window with state to w; s.tw takes it once w
// commits (commitWindow).
func (s *shard) appendWindow(w *store.Write, state map[string]string) error {
	v, err := json.Marshal(storedWindow{Start: s.tw.start.UnixNano(), State: state})
	if err != nil {
		return fmt.Errorf("encoding the tumbling window: %w", err)
	}
	w.State = append(w.State, store.StateOp{Namespace: s.m.cfg.Scope, Key: s.windowKey(), Value: v})
	return nil
}

// closeWindow invokes the function once more for the open window, with
// no records and isFinalInvokeForWindow, and then drops the window's
// state in a commit of its own. A failed final invocation is retried as a
// batch is, up to maximumRetryAttempts; after that the window's state is
// dropped and logged, with an error. early terminates the window early
// (its state outgrew MaxWindowState): the final invocation says so, and
// the window stays open with an empty state.
func (s *shard) closeWindow(ctx, work context.Context, early bool) error {
	cfg := &s.m.cfg
	for attempts := 0; ; {
		b := idem.NewBatch(cfg.Name, cfg.Function, newInvocationID(), nil, nil)
		b.Window = s.window(true, early)
		b.Format = cfg.EventFormat
		ictx, cancel := context.WithTimeout(work, cfg.FunctionTimeout)
		s.invocations.Add(1)
		res, err := invokeSafely(ictx, cfg, b)
		cancel()
		if work.Err() != nil {
			return work.Err()
		}
		// The final invocation has no records: only a function error
		// fails it; batchItemFailures and state are ignored.
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err == nil {
			s.e.metrics.invocations.WithLabelValues(cfg.Name, "success").Inc()
			break
		}
		s.e.metrics.invocations.WithLabelValues(cfg.Name, "error").Inc()
		attempts++
		if exhausted(cfg.MaximumRetryAttempts, attempts) {
			st, _ := json.Marshal(s.tw.state)
			s.e.log.Error("the final invocation of a tumbling window failed and its retries ran out: dropping the window's state",
				"mapping", cfg.Name, "shard", s.id, "window", s.tw.start, "state", string(st), "err", err)
			break
		}
		s.e.log.Warn("the final invocation of a tumbling window failed; retrying", "mapping", cfg.Name, "shard", s.id, "window", s.tw.start, "err", err)
		if err := s.retryAfter(ctx, attempts); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &store.Write{Checkpoint: s.cpKey, NewCheckpoint: s.cp}
	if early {
		if err := s.appendWindow(w, nil); err != nil {
			return err
		}
	} else {
		w.State = []store.StateOp{{Namespace: cfg.Scope, Key: s.windowKey(), Delete: true}}
	}
	s.fenceWrite(w)
	if err := s.e.store.Commit(work, w); err != nil {
		return fmt.Errorf("closing the tumbling window: %w", err)
	}
	if early {
		s.tw.state = nil
	} else {
		s.tw = tumbling{}
	}
	return nil
}

// windowDue reports whether the open window has ended by the clock, for a
// shard with nothing more to read.
func (s *shard) windowDue() bool {
	return s.tw.open && !s.e.now().Before(s.tw.start.Add(s.m.cfg.TumblingWindow))
}
