package process

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function/httpfn"
	"github.com/idem-run/idem/internal/testsvc"
)

// TestNodeLatency measures what running a Node.js function under its
// official runtime client (aws-lambda-ric, over idem's Runtime API) adds to
// an invocation, against the same handler behind a plain Node.js HTTP
// server (testdata/node/http.mjs, idem's http kind): one-record Kinesis
// batches, the two interleaved in one run, p50 and p99 of each. It runs
// only with IDEM_BENCH_NODE=1 (IDEM_BENCH_N invocations of each, default
// 5000):
//
//	IDEM_BENCH_NODE=1 go test -run TestNodeLatency -v ./function/process/
func TestNodeLatency(t *testing.T) {
	if os.Getenv("IDEM_BENCH_NODE") == "" {
		t.Skip("a benchmark: set IDEM_BENCH_NODE=1 to run it")
	}
	n := 5000
	if s := os.Getenv("IDEM_BENCH_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("IDEM_BENCH_N=%q: want a number of at least 100", s)
		}
	}
	dir := testsvc.NodeDir(t)
	ric, err := New(Config{Name: "fourth", Command: "node_modules/.bin/aws-lambda-ric", Args: []string{"fourth.handler"}, Dir: dir},
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer ric.Close()

	srv := exec.Command("node", filepath.Join(dir, "http.mjs"))
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("http.mjs said %q (%v)", line, err)
	}
	hf, err := httpfn.New("http://127.0.0.1:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer hf.CloseIdleConnections()

	drivers := []struct {
		name   string
		invoke func(context.Context, *idem.Batch) error
		lat    []time.Duration
	}{
		{name: "aws-lambda-ric (process)", invoke: func(ctx context.Context, b *idem.Batch) error { _, err := ric.Invoke(ctx, b); return err }},
		{name: "node:http (http)", invoke: func(ctx context.Context, b *idem.Batch) error { _, err := hf.Invoke(ctx, b); return err }},
	}
	ctx := context.Background()
	b := batch(`{"order":42}`)
	for i := range n + n/10 {
		for j := range drivers {
			d := &drivers[j]
			start := time.Now()
			if err := d.invoke(ctx, b); err != nil {
				t.Fatalf("%s: %v", d.name, err)
			}
			if i >= n/10 { // the first tenth warms up
				d.lat = append(d.lat, time.Since(start))
			}
		}
	}
	pct := func(l []time.Duration, p float64) time.Duration { return l[int(float64(len(l)-1)*p)] }
	var p50, p99 [2]time.Duration
	for j := range drivers {
		l := drivers[j].lat
		slices.Sort(l)
		p50[j], p99[j] = pct(l, 0.50), pct(l, 0.99)
		fmt.Printf("%-26s n=%d p50=%s p99=%s\n", drivers[j].name, len(l), p50[j].Round(time.Microsecond), p99[j].Round(time.Microsecond))
	}
	fmt.Printf("%-26s p50=%s p99=%s\n", "added by aws-lambda-ric", (p50[0] - p50[1]).Round(time.Microsecond), (p99[0] - p99[1]).Round(time.Microsecond))
}

// BenchmarkPeakMemory is the cost of reading a process's peak memory for
// the REPORT line of a direct invocation: this test binary's own, with its
// threads, stands in for a runtime's.
func BenchmarkPeakMemory(b *testing.B) {
	if peakMemory(os.Getpid()) == 0 && peerChecked {
		b.Fatal("no peak memory read on Linux")
	}
	for b.Loop() {
		peakMemory(os.Getpid())
	}
}
