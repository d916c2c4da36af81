package shards

import (
	"context"
	"math/rand/v2"
	"time"
)

// ThrottleRetries is how many times a throttled call is tried again, after
// the SDK's own retries, before a Read gives up until the next poll.
const ThrottleRetries = 3

// Retry calls f until it succeeds, fails other than by throttling (as
// throttled decides), or was throttled ThrottleRetries+1 times, backing off
// with jitter between tries (from 100ms, doubling) through sleep, which
// returns early when ctx is done or the source closes. retrying, when not
// nil, is told of each throttled attempt, for a log line. It returns f's
// last error. Both services' per-shard limits make throttling routine, not
// a failure: a source retries a few times, then reads nothing this time.
func Retry(ctx context.Context, throttled func(error) bool, sleep func(context.Context, time.Duration) error, retrying func(attempt int, err error), f func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil || !throttled(err) || attempt >= ThrottleRetries {
			return err
		}
		if retrying != nil {
			retrying(attempt+1, err)
		}
		d := backoff/2 + rand.N(backoff)
		if err := sleep(ctx, d); err != nil {
			return err
		}
		backoff *= 2
	}
}
