package jetstream_test

import (
	"context"
	"fmt"
	"testing"

	idembench "github.com/idem-run/idem/internal/bench"
	"github.com/idem-run/idem/source/jetstream"
)

// BenchmarkMappingExactlyOnce drains the benchmark stream through a whole
// idem mapping (exactly-once completion committed with each checkpoint in
// the embedded store, a no-op in-process handler), for comparison with
// BenchmarkRawRead over the same messages:
//
//	go test -run '^$' -bench 'RawRead|MappingExactlyOnce' ./source/jetstream/
func BenchmarkMappingExactlyOnce(b *testing.B) {
	for _, batch := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			js, name := benchStream(b, benchMessages, benchSize)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				src, err := jetstream.New(ctx, js, name)
				if err != nil {
					b.Fatal(err)
				}
				if err := idembench.Drain(ctx, b.TempDir(), src, name, batch, benchMessages); err != nil {
					b.Fatal(err)
				}
				src.Close(ctx)
			}
			b.ReportMetric(float64(b.N*benchMessages)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
