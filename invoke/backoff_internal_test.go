package invoke

import (
	"slices"
	"testing"
	"time"
)

// TestAsyncRetryDelays (issue 19, item 8): by default a failed
// asynchronous invocation is retried after 1 s and then 2 s, a deviation
// from Lambda's 1 and 2 minutes that the README lists; baseDelay: 1m gives
// Lambda's timing.
func TestAsyncRetryDelays(t *testing.T) {
	delays := func(c Function) []time.Duration {
		applyDefaults(&c)
		var d []time.Duration
		for n := 1; n <= c.Async.MaximumRetryAttempts; n++ {
			d = append(d, backoff(c.Async.BaseDelay, c.Async.MaxDelay, n))
		}
		return d
	}
	if got, want := delays(Function{}), []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("default delays %v, want %v", got, want)
	}
	var lambda Function
	lambda.Async.BaseDelay = time.Minute
	if got, want := delays(lambda), []time.Duration{time.Minute, 2 * time.Minute}; !slices.Equal(got, want) {
		t.Errorf("baseDelay 1m: delays %v, want Lambda's %v", got, want)
	}
}
