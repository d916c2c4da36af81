package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// Drain runs a whole exactly-once mapping (completion committed with each
// checkpoint in an embedded store under dir, a no-op in-process handler)
// over src's stream from TRIM_HORIZON until it has processed records, for
// the source drivers' benchmarks against their raw clients.
func Drain(ctx context.Context, dir string, src source.Driver, stream string, batch int, records uint64) error {
	db, err := pebbledb.Open(filepath.Join(dir, "db"))
	if err != nil {
		return err
	}
	defer db.Close()
	h := idem.HandlerFunc(func(context.Context, *idem.Batch) (idem.BatchResult, error) { return idem.BatchResult{}, nil })
	e := engine.New(stembedded.New(db), engine.WithLogger(discardLogger()))
	if err := e.Add(engine.Mapping{Name: "bench", Stream: stream, Source: src, Function: "noop", Invoker: gofunc.New(h),
		BatchSize: batch, StartingPosition: source.TrimHorizon, FunctionTimeout: time.Minute}); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	for ctx.Err() == nil {
		var n uint64
		for _, s := range e.Status() {
			n += s.Processed
		}
		if n >= records {
			break
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return ctx.Err()
}
