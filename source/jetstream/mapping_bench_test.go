package jetstream_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/jetstream"
	stembedded "github.com/idem-run/idem/store/embedded"
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
				db, err := pebbledb.Open(filepath.Join(b.TempDir(), "db"))
				if err != nil {
					b.Fatal(err)
				}
				src, err := jetstream.New(ctx, js, name)
				if err != nil {
					b.Fatal(err)
				}
				h := idem.HandlerFunc(func(context.Context, *idem.Batch) (idem.BatchResult, error) { return idem.BatchResult{}, nil })
				e := engine.New(stembedded.New(db), engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
				if err := e.Add(engine.Mapping{Name: "bench", Stream: name, Source: src, Function: "noop", Invoker: gofunc.New(h),
					BatchSize: batch, StartingPosition: source.TrimHorizon, FunctionTimeout: time.Minute}); err != nil {
					b.Fatal(err)
				}
				runCtx, stop := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- e.Run(runCtx) }()
				for {
					var n uint64
					for _, s := range e.Status() {
						n += s.Processed
					}
					if n >= benchMessages {
						break
					}
					time.Sleep(time.Millisecond)
				}
				stop()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				src.Close(ctx)
				db.Close()
			}
			b.ReportMetric(float64(b.N*benchMessages)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
