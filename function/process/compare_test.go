package process_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/function/process"
)

// TestProcessVsInProcess measures what running a Lambda function as a
// process costs over running the same handler in-process: invocations per
// second and latency percentiles of a no-op handler, at concurrency 1 and
// 2 (processes for the process function, callers for both), for a direct
// invocation (InvokePayload: the Invoke API's path, an aws-lambda-go
// handler of json.RawMessage that returns its event) and for a one-record
// batch (Invoke: a mapping's path, an aws-lambda-go KinesisEvent handler
// that returns an empty KinesisEventResponse). The in-process handlers do
// the same JSON work. It prints a table; run it with
//
//	IDEM_BENCH=1 go test -run TestProcessVsInProcess -v ./function/process
func TestProcessVsInProcess(t *testing.T) {
	if os.Getenv("IDEM_BENCH") == "" {
		t.Skip("a benchmark: set IDEM_BENCH=1")
	}
	n := 5000
	if testing.Short() {
		n = 500
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./testdata/echo", "./testdata/noop")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	quiet := process.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	payload := []byte(`{"order":{"id":"A-1","amount":3}}`)
	rec := idem.Record{Stream: "orders", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(1),
		PartitionKey: "k", Data: payload, ArrivalTime: time.Now(), IdempotencyKey: "orders/shardId-000000000000/1"}

	echoInProcess := gofunc.NewInvoke(idem.InvokeFunc(func(_ context.Context, p []byte) ([]byte, error) {
		var ev json.RawMessage
		if err := json.Unmarshal(p, &ev); err != nil {
			return nil, err
		}
		return json.Marshal(ev)
	}))
	noopInProcess := gofunc.NewInvoke(idem.InvokeFunc(func(_ context.Context, p []byte) ([]byte, error) {
		var ev events.KinesisEvent
		if err := json.Unmarshal(p, &ev); err != nil {
			return nil, err
		}
		return json.Marshal(events.KinesisEventResponse{})
	}))

	type row struct {
		path, kind string
		conc       int
		stats      stats
	}
	var rows []row
	for _, conc := range []int{1, 2} {
		for _, path := range []string{"direct invoke", "batch of 1"} {
			bin := "echo"
			inproc := echoInProcess
			if path == "batch of 1" {
				bin, inproc = "noop", noopInProcess
			}
			p, err := process.New(process.Config{Name: bin, Command: filepath.Join(dir, bin), Concurrency: conc, Timeout: 10 * time.Second}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			call := func(f interface {
				function.Driver
				function.PayloadInvoker
			}) func(int) error {
				return func(i int) error {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if path == "direct invoke" {
						_, err := f.InvokePayload(ctx, payload, function.InvokeMeta{RequestID: fmt.Sprintf("req-%d", i), Function: bin})
						return err
					}
					_, err := f.Invoke(ctx, idem.NewBatch("m", bin, fmt.Sprintf("req-%d", i), []idem.Record{rec}, nil))
					return err
				}
			}
			// Warm up: the processes start and the code paths get hot.
			if _, err := measure(200, conc, call(p)); err != nil {
				t.Fatal(err)
			}
			_, _ = measure(200, conc, call(inproc))
			ps, err := measure(n, conc, call(p))
			if err != nil {
				t.Fatal(err)
			}
			is, err := measure(n, conc, call(inproc))
			if err != nil {
				t.Fatal(err)
			}
			p.Close()
			rows = append(rows, row{path, "in-process", conc, is}, row{path, "process", conc, ps})
		}
	}
	t.Logf("%d invocations per cell, GOMAXPROCS=%d", n, runtimeProcs())
	t.Logf("%-14s %-11s %4s %12s %9s %9s %14s %14s", "path", "kind", "conc", "invocations/s", "p50", "p99", "added p50", "added p99")
	for i, r := range rows {
		added50, added99 := "", ""
		if r.kind == "process" {
			base := rows[i-1].stats
			added50, added99 = (r.stats.p50 - base.p50).String(), (r.stats.p99 - base.p99).String()
		}
		t.Logf("%-14s %-11s %4d %12.0f %9s %9s %14s %14s", r.path, r.kind, r.conc, r.stats.rate, r.stats.p50, r.stats.p99, added50, added99)
	}
}

type stats struct {
	rate     float64
	p50, p99 time.Duration
}

// measure makes n calls from conc goroutines and returns the throughput
// and the latency percentiles.
func measure(n, conc int, call func(int) error) (stats, error) {
	lat := make([]time.Duration, n)
	errs := make(chan error, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += conc {
				t0 := time.Now()
				if err := call(i); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errs:
		return stats{}, err
	default:
	}
	slices.Sort(lat)
	return stats{rate: float64(n) / elapsed.Seconds(), p50: lat[n/2].Round(time.Microsecond), p99: lat[n*99/100].Round(time.Microsecond)}, nil
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
