package kafka_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kafka"
	stembedded "github.com/idem-run/idem/store/embedded"
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
	for i := range b.N {
		db, err := pebbledb.Open(filepath.Join(b.TempDir(), "db"))
		if err != nil {
			b.Fatal(err)
		}
		src, err := kafka.New(ctx, topic, kafka.WithBrokers(brokers...))
		if err != nil {
			b.Fatal(err)
		}
		var handled atomic.Int64
		h := idem.HandlerFunc(func(_ context.Context, bt *idem.Batch) (idem.BatchResult, error) {
			handled.Add(int64(len(bt.Records)))
			return idem.BatchResult{}, nil
		})
		e := engine.New(stembedded.New(db), engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err := e.Add(engine.Mapping{Name: "bench", Stream: topic, Source: src, Function: "noop", Invoker: gofunc.New(h),
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
			if n >= benchRecords {
				break
			}
			time.Sleep(time.Millisecond)
		}
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		src.Close()
		db.Close()
		_ = i
	}
	reportRate(b)
}
