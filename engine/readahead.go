package engine

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/idem-run/idem"
)

// nextWindow reads the records after the checkpoint: ahead's, if it read
// from there, else read now (ahead discarded); while the mapping is
// paused, it first waits (holdIfPaused). With tracing on, poll is the
// read's span, the root of the window's trace (tracePoll); nil otherwise.
func (s *shard) nextWindow(ctx context.Context, ahead *readAhead, limit, maxBytes int) (recs []idem.Record, lost uint64, trimmed idem.Sequence, poll trace.Span, err error) {
	ahead, err = s.holdIfPaused(ctx, ahead)
	if err != nil {
		return nil, 0, "", nil, err
	}
	if ahead.from(s.cp.Sequence) {
		recs, lost, trimmed, err = ahead.result()
		return recs, lost, trimmed, s.tracePoll(ctx, ahead.start, recs, err), err
	}
	ahead.discard()
	start := s.pollStart()
	recs, lost, trimmed, err = s.readWindow(ctx, s.cp.Sequence, limit, maxBytes)
	return recs, lost, trimmed, s.tracePoll(ctx, start, recs, err), err
}

// readAhead is a Read of the records after a window, issued while the
// window is processed: a shard's next records are read (a network round
// trip for most sources) while its function runs and its commit syncs,
// rather than after. Its result is used only if the window resolved
// completely, so that the checkpoint is where the read started; a window
// cut short, retried or failed discards it, and its records are read again
// from the checkpoint. A mapping with a batching window does not read
// ahead: its reads wait for records to accumulate.
type readAhead struct {
	after  idem.Sequence
	start  time.Time // when the read started, if traced (pollStart)
	cancel context.CancelFunc
	done   chan struct{}
	recs   []idem.Record
	lost   uint64
	trim   idem.Sequence
	err    error
}

// startReadAhead starts readWindow after the sequence after.
func (s *shard) startReadAhead(ctx context.Context, after idem.Sequence, limit, maxBytes int) *readAhead {
	rctx, cancel := context.WithCancel(ctx)
	a := &readAhead{after: after, start: s.pollStart(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.recs, a.lost, a.trim, a.err = s.readWindow(rctx, after, limit, maxBytes)
	}()
	return a
}

// from reports whether a is a read after position (nil is none).
func (a *readAhead) from(position idem.Sequence) bool {
	return a != nil && a.after == position
}

// result waits for the read and returns what readWindow would have.
func (a *readAhead) result() ([]idem.Record, uint64, idem.Sequence, error) {
	<-a.done
	a.cancel()
	return a.recs, a.lost, a.trim, a.err
}

// discard cancels the read and waits for it to end: no goroutine outlives
// its shard's run, and the next Read of the shard follows this one.
func (a *readAhead) discard() {
	if a == nil {
		return
	}
	a.cancel()
	<-a.done
}
