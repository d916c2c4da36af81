package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// BenchmarkAsyncIntake measures, side by side on one server, what the S3
// webhook costs against plain asynchronous invocations: each sub-benchmark
// POSTs b.N requests from 16 clients to a no-op in-process function
// (an S3 notification of one new object each, an Event invocation with
// a distinct payload each, or one with an Idempotency-Key each), reports
// requests accepted per second (each answered 2xx only once durable) as
// accepted/s, and the rate from the first request until the queue has run
// every event as e2e/s.
//
//	go test -run '^$' -bench AsyncIntake -benchtime 5000x -count 3 ./server/
func BenchmarkAsyncIntake(b *testing.B) {
	var runs atomic.Int64
	noop := idem.InvokeFunc(func(context.Context, []byte) ([]byte, error) { runs.Add(1); return []byte(`{}`), nil })
	addr := serve(b, `
functions:
  - name: F
    timeout: 10s
`, nil, server.WithInvokeHandler("F", noop))
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var seq atomic.Int64
	post := func(path, body string, header ...string) error {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	kinds := []struct {
		name string
		send func(n int64) error
	}{
		{"S3Webhook", func(n int64) error {
			return post("/v1/functions/F/s3-events", notification(s3Record(fmt.Sprintf("bench/%d.jpg", n), "2026-12-06T03:00:00.000Z", fmt.Sprint(n), "R")))
		}},
		{"Event", func(n int64) error {
			return post("/2015-03-31/functions/F/invocations", fmt.Sprintf(`{"n":%d}`, n), "X-Amz-Invocation-Type", "Event")
		}},
		{"EventKeyed", func(n int64) error {
			return post("/2015-03-31/functions/F/invocations", fmt.Sprintf(`{"n":%d}`, n), "X-Amz-Invocation-Type", "Event", "Idempotency-Key", fmt.Sprintf("k-%d", n))
		}},
	}
	for _, k := range kinds {
		b.Run(k.name, func(b *testing.B) {
			waitRuns(b, addr, &runs) // the previous sub-benchmark's events
			before := runs.Load()
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0))) // 16 clients on any machine
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := k.send(seq.Add(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			accepted := time.Since(start)
			for runs.Load()-before < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			all := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
			b.ReportMetric(float64(b.N)/all.Seconds(), "e2e/s")
		})
	}
}

// waitRuns waits until the queue of F holds nothing.
func waitRuns(b *testing.B, addr string, runs *atomic.Int64) {
	b.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v1/status")
		if err != nil {
			b.Fatal(err)
		}
		var st server.StatusResponse
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(st.Queues) == 1 && st.Queues[0].Queued == 0 {
			return
		}
	}
	b.Fatal("the queue did not drain in a minute")
}
