package kafka

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func TestRetentionOf(t *testing.T) {
	for _, tc := range []struct {
		policy, ms string
		want       time.Duration
		err        bool
	}{
		{"delete", "86400000", 24 * time.Hour, false},
		{"delete", "-1", InfiniteRetention, false},
		{"compact", "86400000", InfiniteRetention, false},
		{"compact, delete", "3600000", time.Hour, false},
		{"delete", "9223372036854775807", InfiniteRetention, false},
		{"delete", "", 0, true},
		{"delete", "soon", 0, true},
		{"delete", "0", 0, true},
	} {
		got, err := retentionOf(tc.policy, tc.ms)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("retentionOf(%q, %q) = %s, %v; want %s, error %v", tc.policy, tc.ms, got, err, tc.want, tc.err)
		}
	}
}

func TestFetchBytes(t *testing.T) {
	for _, tc := range []struct{ avg, limit, maxBytes, want int }{
		{512, 1, 50, minFetchBytes},               // at least the minimum
		{512, 1000, 1 << 30, 512 * 1000},          // limit records of the average size
		{512, 1000, 10_000, 10_000 + 1000*128},    // no more than maxBytes plus framing
		{100_000, 10_000, 1 << 30, maxFetchBytes}, // at most the maximum
	} {
		if got := int(fetchBytes(tc.avg, tc.limit, tc.maxBytes)); got != tc.want {
			t.Errorf("fetchBytes(%d, %d, %d) = %d, want %d", tc.avg, tc.limit, tc.maxBytes, got, tc.want)
		}
	}
}

// TestCloseEndsWatcher: the goroutine a Wait starts ends with Close, even
// with a waiter blocked.
func TestCloseEndsWatcher(t *testing.T) {
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	ctx := context.Background()
	s, err := New(ctx, "t", WithBrokers(fc.ListenAddrs()...), WithPollInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Wait(ctx, "t-0", "") }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.w.mu.Lock()
		started := s.w.started
		s.w.mu.Unlock()
		if started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not start")
		}
		time.Sleep(time.Millisecond)
	}
	s.Close()
	select {
	case <-s.w.done:
	default:
		t.Fatal("Close returned before the watcher ended")
	}
	if err := <-errc; err != ErrClosed {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
}

// TestNoGoroutineOutlivesClose: after Close, the goroutines of the Source
// and of the client it made are gone (the cluster's are counted before).
func TestNoGoroutineOutlivesClose(t *testing.T) {
	t.Run("no group", func(t *testing.T) { testNoGoroutineOutlivesClose(t) })
	t.Run("consumer group", func(t *testing.T) { testNoGoroutineOutlivesClose(t, WithConsumerGroup("g")) })
}

func testNoGoroutineOutlivesClose(t *testing.T, opts ...Option) {
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	before := runtime.NumGoroutine()
	ctx := context.Background()
	s, err := New(ctx, "t", append([]Option{WithBrokers(fc.ListenAddrs()...), WithPollInterval(5 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, shard := range []string{"t-0", "t-1"} {
		if _, err := s.Read(ctx, shard, "", 10, 1<<20); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		s.Wait(wctx, shard, "")
		cancel()
	}
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
