package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// A mapping can be paused and resumed while it runs, as Lambda's
// UpdateEventSourceMapping Enabled false and true do: a paused mapping's
// shards finish the window in flight and commit it, and read nothing more
// until it is resumed; a batch that failed waits, paused, before its next
// attempt. Its records stay in the source, held back, and its checkpoint
// where it was.
//
// The paused state lives in the store, as state of the reserved namespace
// pausedNamespace (written in a Write of its own, as the first shards of a
// mapping are): it survives a restart, and every process sharing a store
// sees it, each reading it again every pauseRefresh.

// pausedNamespace is the state namespace of the mappings' paused states,
// keyed by mapping name.
const pausedNamespace = "\x00paused"

// pausedShard names the checkpoint a paused state's write carries (a
// store.Write always moves one).
const pausedShard = "\x00paused"

// pauseRefresh is how often a process whose store other processes share
// reads the mappings' paused states again, to follow a pause or resume
// made by another process.
const pauseRefresh = 5 * time.Second

// statePaused is the state Status shows for a shard of a paused mapping
// that reads nothing.
const statePaused = "paused"

// ErrUnknownMapping is returned for a mapping name the engine does not run.
var ErrUnknownMapping = errors.New("engine: no such mapping")

// MappingStatus is the state of one mapping as a whole, for the control
// plane's answers (Lambda's State, LastModified and LastProcessingResult)
// and `idem status`.
type MappingStatus struct {
	Name     string `json:"name"`
	Function string `json:"function"`
	Stream   string `json:"stream"`
	// Paused is set while the mapping is paused (SetPaused).
	Paused bool `json:"paused"`
	// Modified is when the mapping was last paused or resumed; zero if it
	// never was.
	Modified time.Time `json:"modified,omitzero"`
	// LastResult is the outcome of the mapping's last invocation since
	// this process started: "" (none yet), "success", "partial" (some
	// records reported failed) or "error" (the function failed).
	LastResult string `json:"lastResult,omitempty"`
}

// pausedRecord is a paused state as the store keeps it.
type pausedRecord struct {
	Paused   bool      `json:"paused"`
	Modified time.Time `json:"modified"`
}

// pauseState is one mapping's paused state in this process, and the outcome
// of its last invocation.
type pauseState struct {
	// paused is read without mu by the shards, before every window.
	paused atomic.Bool
	// result is the last invocation's outcome: its index in results, plus
	// one; 0 for none.
	result atomic.Int32

	// mu serialises changes: the store's read or write and this state's,
	// so that a state read from the store never overwrites a newer one.
	mu       sync.Mutex
	loaded   bool      // read from the store at least once
	modified time.Time // guarded by mu
	// changed is closed, and replaced, at every change; guarded by mu.
	changed chan struct{}
}

// pauseOf returns the paused state of the mapping name.
func (e *Engine) pauseOf(name string) *pauseState {
	if p, ok := e.pauses.Load(name); ok {
		return p.(*pauseState)
	}
	p, _ := e.pauses.LoadOrStore(name, &pauseState{changed: make(chan struct{})})
	return p.(*pauseState)
}

// watch returns whether the mapping is paused, and a channel closed at its
// next change.
func (p *pauseState) watch() (bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused.Load(), p.changed
}

// set records a state; the caller holds mu.
func (p *pauseState) set(paused bool, modified time.Time) {
	p.loaded, p.modified = true, modified
	if p.paused.Load() == paused {
		return
	}
	p.paused.Store(paused)
	close(p.changed)
	p.changed = make(chan struct{})
}

// load reads the mapping's paused state from the store (when force is set,
// or when it was never read).
func (p *pauseState) load(ctx context.Context, st store.Driver, name string, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded && !force {
		return nil
	}
	v, err := st.State(ctx, pausedNamespace, name)
	if errors.Is(err, idem.ErrNotFound) {
		p.set(false, p.modified)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading whether mapping %q is paused: %w", name, err)
	}
	var rec pausedRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return fmt.Errorf("reading whether mapping %q is paused: %w", name, err)
	}
	p.set(rec.Paused, rec.Modified)
	return nil
}

// mappingNamed returns the mapping name, or nil.
func (e *Engine) mappingNamed(name string) *mapping {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.mappings {
		if m.cfg.Name == name {
			return m
		}
	}
	return nil
}

// SetPaused pauses the mapping name (paused true) or resumes it, durably:
// the state is committed to the store before it takes effect, so that it
// survives a restart and every process sharing the store follows it. A
// paused mapping's shards finish and commit the window in flight, then read
// nothing more until it is resumed. Setting the state it has already is
// not an error (it is written again, with a new modification time).
func (e *Engine) SetPaused(ctx context.Context, name string, paused bool) error {
	m := e.mappingNamed(name)
	if m == nil {
		return fmt.Errorf("%w: %q", ErrUnknownMapping, name)
	}
	p := e.pauseOf(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	rec := pausedRecord{Paused: paused, Modified: e.now().UTC().Truncate(time.Millisecond)}
	v, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding the paused state of mapping %q: %w", name, err)
	}
	w := &store.Write{
		Checkpoint:    store.CheckpointKey{Mapping: name, Stream: m.cfg.Stream, Shard: pausedShard},
		NewCheckpoint: store.Checkpoint{Sequence: "0"},
		State:         []store.StateOp{{Namespace: pausedNamespace, Key: name, Value: v}},
	}
	if err := e.store.Commit(ctx, w); err != nil {
		return fmt.Errorf("recording that mapping %q is paused=%v: %w", name, paused, err)
	}
	p.set(paused, rec.Modified)
	verb := "resumed"
	if paused {
		verb = "paused: its shards finish the batch in flight and read nothing more"
	}
	e.log.Info("mapping "+verb, "mapping", name)
	return nil
}

// Mappings reports the state of every mapping, in the order they were
// added. A paused state not read from the store yet (before Run) is read.
func (e *Engine) Mappings(ctx context.Context) ([]MappingStatus, error) {
	e.mu.Lock()
	mappings := e.mappings
	e.mu.Unlock()
	out := make([]MappingStatus, 0, len(mappings))
	for _, m := range mappings {
		p := e.pauseOf(m.cfg.Name)
		if err := p.load(ctx, e.store, m.cfg.Name, false); err != nil {
			return nil, err
		}
		p.mu.Lock()
		st := MappingStatus{Name: m.cfg.Name, Function: m.cfg.Function, Stream: m.cfg.Stream,
			Paused: p.paused.Load(), Modified: p.modified}
		p.mu.Unlock()
		if r := p.result.Load(); r > 0 {
			st.LastResult = results[r-1]
		}
		out = append(out, st)
	}
	return out, nil
}

// startPauses reads the mappings' paused states, before any shard starts,
// and, when other processes may share the store, starts a goroutine (in
// wg) that reads them again every pauseRefresh until ctx is done.
func (e *Engine) startPauses(ctx context.Context, mappings []*mapping, wg *sync.WaitGroup) error {
	for _, m := range mappings {
		if err := e.pauseOf(m.cfg.Name).load(ctx, e.store, m.cfg.Name, true); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
	}
	if pl, ok := e.store.(store.ProcessLocal); ok && pl.ProcessLocal() {
		return nil // no other process changes them
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(pauseRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, m := range mappings {
				if err := e.pauseOf(m.cfg.Name).load(ctx, e.store, m.cfg.Name, true); err != nil && ctx.Err() == nil {
					e.log.Warn("reading the paused state failed; the next refresh retries", "mapping", m.cfg.Name, "err", err)
				}
			}
		}
	}()
	return nil
}

// holdIfPaused is called before the shard reads a window: while the
// mapping is paused it discards ahead (a read-ahead, never processed),
// makes the shard's commits durable, lets its range claim go, as an idle
// shard does, and waits until the mapping is resumed or ctx is done. It
// returns ahead, or nil when it discarded it.
func (s *shard) holdIfPaused(ctx context.Context, ahead *readAhead) (*readAhead, error) {
	p := s.e.pauseOf(s.m.cfg.Name)
	if !p.paused.Load() {
		return ahead, nil
	}
	ahead.discard()
	if err := s.syncAll(); err != nil {
		return nil, err
	}
	if err := s.endClaims(ctx); err != nil {
		return nil, err
	}
	return nil, s.hold(ctx)
}

// hold waits while the mapping is paused, showing the shard as paused; it
// returns ctx's error when ctx is done first.
func (s *shard) hold(ctx context.Context) error {
	p := s.e.pauseOf(s.m.cfg.Name)
	held := false
	for {
		paused, changed := p.watch()
		if !paused {
			if held {
				if err := s.checkMoved(ctx); err != nil {
					return err
				}
				s.state.Store("running")
			}
			return nil
		}
		if !held {
			held = true
			s.state.Store(statePaused)
			s.e.log.Info("shard paused", "mapping", s.m.cfg.Name, "shard", s.id, "checkpoint", s.cp.Sequence)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// waitRecords waits, as the source's Wait does, for records after the
// checkpoint; a pause ends the wait early (with nil), so that the shard
// shows as paused at once.
func (s *shard) waitRecords(ctx context.Context) error {
	paused, changed := s.e.pauseOf(s.m.cfg.Name).watch()
	if paused {
		return nil
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-changed:
			cancel()
		case <-wctx.Done():
		}
	}()
	err := s.m.cfg.Source.Wait(wctx, s.id, s.cp.Sequence)
	cancel()
	<-done
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return nil // ended by a pause or resume
	}
	return err
}

// retryAfter waits before a failed batch's next attempt: the backoff,
// then for as long as the mapping is paused.
func (s *shard) retryAfter(ctx context.Context, attempts int) error {
	s.retries.Add(1)
	s.e.metrics.retries.WithLabelValues(s.m.cfg.Name).Inc()
	if err := sleep(ctx, s.backoff(attempts)); err != nil {
		return err
	}
	return s.hold(ctx)
}

// results are the outcomes of an invocation, as the invocations metric
// labels them.
var results = [...]string{"success", "partial", "error"}

// noteInvocation counts an invocation's outcome (label: one of results)
// and keeps it as the mapping's last.
func (s *shard) noteInvocation(label string) {
	s.e.metrics.invocations.WithLabelValues(s.m.cfg.Name, label).Inc()
	for i, r := range results {
		if r == label {
			s.e.pauseOf(s.m.cfg.Name).result.Store(int32(i + 1))
		}
	}
}
