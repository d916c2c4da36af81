package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/store"
)

// MaxTumblingWindow is the longest tumbling window Lambda allows.
const MaxTumblingWindow = 900 * time.Second

// stateSuspended is a shard's state while the final invocation of a
// tumbling window keeps failing: its processing waits for it (closeWindow).
const stateSuspended = "suspended: the final invocation of a tumbling window is failing"

// maxLoggedState bounds how much of a window's state a log line repeats.
const maxLoggedState = 1000

// MaxWindowState is the largest window state, in bytes of its JSON, that a
// function may return, as Lambda's 1 MB.
const MaxWindowState = 1 << 20

// tumbling is a shard's open tumbling window, as committed: its state is
// stored in the mapping's scope under windowKey, in the same write as the
// checkpoint of the records that built it.
type tumbling struct {
	open  bool
	start time.Time
	// state is the JSON object the function returned, exactly; nil for
	// the empty state.
	state json.RawMessage
}

// storedWindow is a window as the store keeps it: {"start": <Unix
// nanoseconds>, "state": <the state's JSON, exactly, or null>}. Windows
// stored before states could hold any JSON have an object of strings
// there, which reads the same way.
type storedWindow struct {
	Start int64           `json:"start"`
	State json.RawMessage `json:"state"`
}

// encodeStoredWindow writes w by hand: encoding/json would compact the
// state and escape its HTML characters, and it must come back exactly.
func encodeStoredWindow(w storedWindow) []byte {
	b := make([]byte, 0, len(w.State)+48)
	b = append(b, `{"start":`...)
	b = strconv.AppendInt(b, w.Start, 10)
	b = append(b, `,"state":`...)
	if w.State == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, w.State...)
	}
	return append(b, '}')
}

// decodeStoredWindow reads what encodeStoredWindow wrote, or a window
// stored by an earlier version (a state of strings).
func decodeStoredWindow(v []byte) (storedWindow, error) {
	var w storedWindow
	if err := json.Unmarshal(v, &w); err != nil {
		return w, err
	}
	st, err := function.ParseState(w.State)
	if err != nil {
		return w, err
	}
	w.State = st
	return w, nil
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
	w, err := decodeStoredWindow(v)
	if err != nil {
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
	return &idem.Window{Start: s.tw.start, End: s.tw.start.Add(s.m.cfg.TumblingWindow),
		StateJSON: slices.Clone(s.tw.state), State: stateStrings(s.tw.state),
		Final: final, TerminatedEarly: early, Stream: s.m.cfg.Stream, ShardID: s.id}
}

// stateStrings is Window.State for a state's JSON: string values as they
// are, any other value as its JSON text. nil for nil.
func stateStrings(state json.RawMessage) map[string]string {
	if state == nil {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(state, &raw); err != nil {
		return nil // cannot happen: ParseState checked it is an object
	}
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		if len(v) > 0 && v[0] == '"' {
			var str string
			if json.Unmarshal(v, &str) == nil {
				m[k] = str
				continue
			}
		}
		m[k] = string(v)
	}
	return m
}

// Why an invocation of a tumbling window failed, for its error type.
const (
	// typeMissingState: a response without "state". Lambda treats it as a
	// failed invocation: a function written without windows in mind
	// would otherwise reset the aggregate at each batch.
	typeMissingState = "Function.MissingState"
	// typeInvalidState: a "state" that is not a JSON object or null.
	typeInvalidState = "Function.InvalidState"
)

// judgeWindow reads the state a window's (non-final) invocation returned,
// for the commit of the records it completed: out.windowState, or the
// whole batch failed for a response without a state or with one that is
// not an object. A state above MaxWindowState sets out.windowEarly: the
// records complete with the state from before, and the window is then
// terminated early. A batch that failed as a whole is left as it is.
func (s *shard) judgeWindow(b []idem.Record, res function.Result, out *outcome) {
	if out.failedAt == len(b) {
		return
	}
	cfg := &s.m.cfg
	switch {
	case res.State == nil:
		*out = outcome{failedAt: len(b), errType: typeMissingState,
			errMsg: `the response has no "state": with a tumbling window, the response must carry the window's state ({"state": {...}}; {"state": {}} for an empty one), as on Lambda`}
	case len(res.State) > MaxWindowState:
		s.e.log.Warn("tumbling window state above the limit: terminating the window early", "mapping", cfg.Name, "shard", s.id,
			"window", s.tw.start, "bytes", len(res.State), "limit", MaxWindowState)
		out.windowState, out.windowEarly = s.tw.state, true
	default:
		st, err := function.ParseState(res.State)
		if err != nil {
			*out = outcome{failedAt: len(b), errType: typeInvalidState, errMsg: err.Error()}
			return
		}
		out.windowState = st
	}
}

// appendWindow adds the open window with state to w; s.tw takes it once w
// commits (commitWindow).
func (s *shard) appendWindow(w *store.Write, state json.RawMessage) error {
	v := encodeStoredWindow(storedWindow{Start: s.tw.start.UnixNano(), State: state})
	w.State = append(w.State, store.StateOp{Namespace: s.m.cfg.Scope, Key: s.windowKey(), Value: v})
	return nil
}

// closeWindow invokes the function once more for the open window, with
// no records and isFinalInvokeForWindow, and then drops the window's
// state in a commit of its own. As on Lambda, a failed final invocation
// suspends the shard's processing until it succeeds: it is retried with
// backoff for as long as it takes, whatever maximumRetryAttempts says
// (there are no records to discard, and dropping the state would lose
// the aggregate); once the retries maximumRetryAttempts allows are spent,
// the shard's status says it is suspended, and why. early terminates the
// window early (its state outgrew MaxWindowState): the final invocation
// says so, and the window stays open with an empty state.
func (s *shard) closeWindow(ctx, work context.Context, early bool) error {
	cfg := &s.m.cfg
	for attempts := 0; ; {
		b := idem.NewBatch(cfg.Name, cfg.Function, newInvocationID(), nil, nil)
		b.Window = s.window(true, early)
		b.Format = cfg.EventFormat
		ictx, cancel := context.WithTimeout(work, cfg.FunctionTimeout)
		s.invocations.Add(1)
		res, err := s.invokeTraced(ictx, b)
		cancel()
		if work.Err() != nil {
			return work.Err()
		}
		// The final invocation has no records: only a function error
		// fails it; batchItemFailures and state are ignored (Lambda's own
		// examples return no state from it).
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err == nil {
			s.e.metrics.invocations.WithLabelValues(cfg.Name, "success").Inc()
			if attempts > 0 {
				s.state.Store("running")
				s.lastError.Store("")
			}
			break
		}
		s.e.metrics.invocations.WithLabelValues(cfg.Name, "error").Inc()
		attempts++
		if exhausted(cfg.MaximumRetryAttempts, attempts) {
			if !exhausted(cfg.MaximumRetryAttempts, attempts-1) {
				st := string(s.tw.state)
				if len(st) > maxLoggedState {
					st = st[:maxLoggedState] + "…"
				}
				s.e.log.Error("the final invocation of a tumbling window failed and its retries ran out: the shard is suspended until it succeeds, as on Lambda",
					"mapping", cfg.Name, "shard", s.id, "window", s.tw.start, "state", st, "err", err)
			}
			s.state.Store(stateSuspended)
			s.lastError.Store(fmt.Sprintf("final invocation of the tumbling window %s failed %d times: %v", s.tw.start.Format(time.RFC3339), attempts, err))
		} else {
			s.e.log.Warn("the final invocation of a tumbling window failed; retrying", "mapping", cfg.Name, "shard", s.id, "window", s.tw.start, "err", err)
		}
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
