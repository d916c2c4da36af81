package shards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aws/smithy-go"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// Sleep waits d, or until ctx is done (its error) or done is closed (closed,
// the source's ErrClosed). A d of 0 or less returns ctx's error at once.
func Sleep(ctx context.Context, d time.Duration, done <-chan struct{}, closed error) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return closed
	}
}

// Delay is how long a source's Wait for a record above after in shard id
// sleeps: 0 when one is known already (fetched, or buffered for a Read from
// after), else until the shard's next call is allowed, or poll when that
// is now or the shard is not known yet. Neither Kinesis nor DynamoDB
// Streams can notify a poller.
func (s *Set[R]) Delay(id string, after idem.Sequence, poll time.Duration) time.Duration {
	sh := s.Get(id)
	if sh == nil {
		return poll
	}
	if sh.Latest().Compare(after) > 0 || sh.Buffered(after) {
		return 0
	}
	if d := time.Until(sh.NextCall()); d > 0 {
		return d
	}
	return poll
}

// Wait is a polling source's Wait over s: it returns at once when a
// record above after is known in shard id, and otherwise sleeps for
// Delay, until ctx is done (its error), or done is closed (closed, the
// source's error for use after Close).
func (s *Set[R]) Wait(ctx context.Context, id string, after idem.Sequence, poll time.Duration, done <-chan struct{}, closed error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-done:
		return closed
	default:
	}
	if d := s.Delay(id, after, poll); d > 0 {
		return Sleep(ctx, d, done, closed)
	}
	return nil
}

// Find returns shard id, calling relist (a source's listing of its shards,
// which updates s) once when it is not known yet: a shard created since the
// last listing. When the stream has no such shard even then, the error
// names the source (name, the prefix of its errors) and its stream (where),
// and wraps source.ErrShardNotFound.
func (s *Set[R]) Find(ctx context.Context, id string, relist func(context.Context) error, name, where string) (*Shard[R], error) {
	if sh := s.Get(id); sh != nil {
		return sh, nil
	}
	if err := relist(ctx); err != nil {
		return nil, err
	}
	if sh := s.Get(id); sh != nil {
		return sh, nil
	}
	return nil, fmt.Errorf("%s: %s has no shard %q: %w", name, where, id, source.ErrShardNotFound)
}

// RetryLogged is Retry for a source named name (the prefix of its log
// lines): each throttled attempt at call what on shard is logged at Debug,
// and so is giving up until the next poll.
func RetryLogged(ctx context.Context, log *slog.Logger, name, shard, what string, throttled func(error) bool, sleep func(context.Context, time.Duration) error, f func() error) error {
	err := Retry(ctx, throttled, sleep, func(attempt int, err error) {
		log.Debug(name+": throttled, backing off", "shard", shard, "call", what, "attempt", attempt, "err", err)
	}, f)
	if err != nil && throttled(err) {
		log.Debug(name+": still throttled, giving up until the next poll", "shard", shard, "call", what, "err", err)
	}
	return err
}

// HasCode reports whether err is an AWS service error with one of codes.
// The SDK's typed exceptions (types.ExpiredIteratorException and the like)
// report their own name as their code, so one check covers them and the
// errors of services or fakes that answer with a code the SDK has no type
// for.
func HasCode(err error, codes ...string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && slices.Contains(codes, ae.ErrorCode())
}

// Wrap adds to err, a call's failure, the source's name, its stream
// (where), the shard (when not "") and what it was doing, and, for a
// ResourceNotFoundException, source.ErrShardNotFound if the service's
// message names a shard, source.ErrStreamNotFound otherwise: both services
// answer a missing shard and a missing stream with the one exception type.
func Wrap(err error, name, where, shard, doing string) error {
	if shard != "" {
		where += " shard " + shard
	}
	if HasCode(err, "ResourceNotFoundException") {
		var ae smithy.APIError
		if shard != "" && errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.ErrorMessage()), "shard") {
			return fmt.Errorf("%s: %s: %s: %w: %w", name, where, doing, source.ErrShardNotFound, err)
		}
		return fmt.Errorf("%s: %s: %s: %w: %w", name, where, doing, source.ErrStreamNotFound, err)
	}
	return fmt.Errorf("%s: %s: %s: %w", name, where, doing, err)
}
