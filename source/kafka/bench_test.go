package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source/kafka"
)

// benchRecords records of about 100 bytes each fill the benchmark topic,
// one partition of an in-process kfake cluster, produced once per process.
// The values are JSON objects that differ record to record, compressing
// about as real events do: values of zeros compressed fifty-fold, so that
// one fetch held the whole topic and a reader's steady state went
// unmeasured.
const benchRecords = 500_000

// benchValue is the value of the record at index i.
func benchValue(i int) []byte {
	return fmt.Appendf(nil, `{"id":%d,"account":"acct-%05d","amount":%d.%02d,"currency":"EUR","at":"2026-11-23T14:%02d:%02d.%03dZ"}`,
		i, (i*7919)%100_000, (i*31)%10_000, i%100, (i/60_000)%60, (i/1000)%60, i%1000)
}

var bench struct {
	once    sync.Once
	brokers []string
	topic   string
	err     error
}

// benchTopic returns the brokers and the filled topic. The cluster lives
// until the process exits: benchmark functions run several times.
func benchTopic(b testing.TB) ([]string, string) {
	b.Helper()
	bench.once.Do(func() {
		fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "bench"))
		if err != nil {
			bench.err = err
			return
		}
		bench.brokers, bench.topic = fc.ListenAddrs(), "bench"
		prod, err := kgo.NewClient(kgo.SeedBrokers(bench.brokers...), kgo.DefaultProduceTopic(bench.topic), kgo.ProducerLinger(5*time.Millisecond))
		if err != nil {
			bench.err = err
			return
		}
		defer prod.Close()
		ctx := context.Background()
		var firstErr error
		var mu sync.Mutex
		for i := range benchRecords {
			prod.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%100), Value: benchValue(i)}, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			})
		}
		if err := prod.Flush(ctx); err != nil {
			bench.err = err
			return
		}
		bench.err = firstErr
	})
	if bench.err != nil {
		b.Fatal(bench.err)
	}
	return bench.brokers, bench.topic
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(benchRecords)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op") // one op is the whole topic: records/s says it
}

// BenchmarkRawRead is the baseline: a plain kgo consumer over the topic,
// from the start to the last record, per iteration.
func BenchmarkRawRead(b *testing.B) {
	brokers, topic := benchTopic(b)
	b.ResetTimer()
	for range b.N {
		if err := rawRead(context.Background(), brokers, topic); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// rawRead reads the whole topic with a new kgo consumer.
func rawRead(ctx context.Context, brokers []string, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer cl.Close()
	n := 0
	for n < benchRecords {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			return err
		}
		n += fs.NumRecords()
	}
	return nil
}

// BenchmarkSourceRead reads the same topic through the driver, one Read
// after another from where the last stopped, as the engine's poller does,
// with batch sizes of 100 and 1000 records.
func BenchmarkSourceRead(b *testing.B) {
	brokers, topic := benchTopic(b)
	ctx := context.Background()
	for _, limit := range []int{100, 1000} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			src, err := kafka.New(ctx, topic, kafka.WithBrokers(brokers...))
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			shard := kafka.ShardID(topic, 0)
			b.ResetTimer()
			for range b.N {
				after, n := idem.Sequence(""), 0
				for n < benchRecords {
					res, err := src.Read(ctx, shard, after, limit, 6<<20)
					if err != nil {
						b.Fatal(err)
					}
					if len(res.Records) == 0 {
						b.Fatalf("empty read after %d of %d records", n, benchRecords)
					}
					n += len(res.Records)
					after = res.Records[len(res.Records)-1].Sequence
				}
			}
			reportRate(b)
		})
	}
}
