package kafka

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
)

// TestTopicRetention: a record can be read for retention.ms, plus the time
// its segment stays active (segment.ms), plus the retention check interval.
func TestTopicRetention(t *testing.T) {
	const day, week = 24 * time.Hour, 7 * 24 * time.Hour
	check := DefaultRetentionCheckInterval
	for _, tc := range []struct {
		policy, ms, segment string
		want                time.Duration
		err                 bool
	}{
		{"delete", "86400000", "", day + week + check, false},
		{"delete", "86400000", "3600000", day + time.Hour + check, false},
		{"delete", "-1", "3600000", InfiniteRetention, false},
		{"compact", "86400000", "", InfiniteRetention, false},
		{"compact, delete", "3600000", "60000", time.Hour + time.Minute + check, false},
		{"delete", "9223372036854775807", "", InfiniteRetention, false},
		{"delete", "86400000", "9223372036854775807", InfiniteRetention, false},
		{"delete", "3153599999999", "3600000", InfiniteRetention, false}, // adds up to more
		{"delete", "", "", 0, true},
		{"delete", "soon", "", 0, true},
		{"delete", "0", "", 0, true},
		{"delete", "86400000", "-5", 0, true},
	} {
		tcfg := topicConfig{policy: tc.policy, retentionMs: tc.ms, segmentMs: tc.segment, check: check}
		got, err := tcfg.retention()
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("retention of %+v = %s, %v; want %s, error %v", tcfg, got, err, tc.want, tc.err)
		}
	}
}

func TestFetchBytes(t *testing.T) {
	for _, tc := range []struct{ avg, limit, maxBytes, want int }{
		{512, 1, 50, minFetchBytes},               // at least the minimum
		{512, 1000, 1 << 30, 512 * 1000},          // limit records of the average size
		{512, 1000, 10_000, 10_000 + 1000*128},    // no more than maxBytes plus framing
		{100_000, 10_000, 1 << 30, maxFetchBytes}, // at most the maximum
		{0, 10_000, 1 << 30, firstFetchBytes},     // a first fetch, smaller
		{0, 1000, 1 << 30, 1000 * 512},            // a first fetch, of the initial guess
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
	ctx := context.Background()
	// Records on t-0, so that its first Read leaves fetches ahead running.
	produceN(t, fc.ListenAddrs(), "t", 0, 5000)
	before := runtime.NumGoroutine()
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

func TestIncrement(t *testing.T) {
	for _, n := range []uint64{0, 8, 9, 19, 99, 1099, 999_999, 1<<63 - 1, 1<<64 - 2} {
		b := idem.AppendSequence(nil, n)
		increment(b)
		if want := string(idem.AppendSequence(nil, n+1)); string(b) != want {
			t.Errorf("increment(%d) = %s, want %s", n, b, want)
		}
	}
}

// produceN produces n records of about 100 bytes to partition p of topic,
// in batches of 100.
func produceN(t *testing.T, brokers []string, topic string, p int32, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for i := 0; i < n; i += 100 {
		var recs []*kgo.Record
		for j := i; j < min(i+100, n); j++ {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "%0100d", j)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFetchAhead: between Reads of a partition with more records, the next
// ones are fetched, up to two Reads' worth, and the records come out all
// the same, in order, once each.
func TestFetchAhead(t *testing.T) {
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	const n, limit = 5000, 100
	produceN(t, fc.ListenAddrs(), "t", 0, n) // 5000 × 100 B: the first fetch (64 KiB) holds a few hundred
	ctx := context.Background()
	s, err := New(ctx, "t", WithBrokers(fc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ps := s.part(0)
	after, next := idem.Sequence(""), 0
	for next < n {
		res, err := s.Read(ctx, "t-0", after, limit, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Records {
			if want := fmt.Sprintf("%0100d", next); string(r.Data) != want {
				t.Fatalf("record %d: got %.20q…, want %.20q…", next, r.Data, want)
			}
			next++
			after = r.Sequence
		}
		// Only fetching ahead grows the cache between Reads.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ps.mu.Lock()
			cached, end := len(ps.recs), ps.next
			ps.mu.Unlock()
			if cached >= 2*limit || end == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after reading %d records, the cache holds %d up to offset %d: nothing fetched ahead", next, cached, end)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestSlabPool: a slab comes back by its power of two, and a request gets
// at least its capacity.
func TestSlabPool(t *testing.T) {
	var sp slabPool
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 1 << 16, 1<<16 + 1} {
		s := sp.GetRecords(n)
		if len(s) != 0 || cap(s) < n {
			t.Fatalf("GetRecords(%d): len %d cap %d", n, len(s), cap(s))
		}
		sp.PutRecords(s)
	}
	s := sp.GetRecords(1000)
	s = append(s, kgo.Record{Offset: 7})
	sp.PutRecords(s[:0])
	if got := sp.GetRecords(600); cap(got) != 1024 {
		t.Fatalf("GetRecords(600) after a slab of 1024 came back: cap %d", cap(got))
	}
}
