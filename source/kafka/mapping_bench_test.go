package kafka_test

import (
	"context"
	"fmt"
	"testing"

	idembench "github.com/idem-run/idem/internal/bench"
	"github.com/idem-run/idem/source/kafka"
)

// BenchmarkMappingExactlyOnce drains the benchmark topic through a whole
// idem mapping (batches of 100, 1000 and 10000, exactly-once completion committed with each
// checkpoint in the embedded store, a no-op in-process handler), for
// comparison with BenchmarkRawRead over the same records:
//
//	go test -run '^$' -bench 'RawRead|MappingExactlyOnce' ./source/kafka/
func BenchmarkMappingExactlyOnce(b *testing.B) {
	for _, batch := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchMapping(b, batch) })
	}
}

func benchMapping(b *testing.B, batch int) {
	brokers, topic := benchTopic(b)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		src, err := kafka.New(ctx, topic, kafka.WithBrokers(brokers...))
		if err != nil {
			b.Fatal(err)
		}
		if err := idembench.Drain(ctx, b.TempDir(), src, topic, batch, benchRecords); err != nil {
			b.Fatal(err)
		}
		src.Close()
	}
	reportRate(b)
}
