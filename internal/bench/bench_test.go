package bench

import (
	"context"
	"testing"
	"time"
)

// TestRunSmall runs every scenario on a few records, so that `idem bench`
// stays working; it asserts no timing.
func TestRunSmall(t *testing.T) {
	rep, err := Run(context.Background(), Config{
		Records: 2000, BaselineRecords: 200, Dir: t.TempDir(),
		LatencyDuration: 300 * time.Millisecond, LatencyRate: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Scenario{
		"atLeastOnce": rep.AtLeastOnce, "exactlyOnce": rep.ExactlyOnce,
		"exactlyOnceState": rep.ExactlyOnceState, "perRecordBaseline": rep.PerRecordBaseline,
	} {
		if s.RecordsPerSec <= 0 || s.Records == 0 {
			t.Errorf("%s: %+v", name, s)
		}
	}
	if rep.Latency.P99Ms <= 0 {
		t.Errorf("latency: %+v", rep.Latency)
	}
}

// BenchmarkEngine measures the engine's hot path, a mapping draining a
// 4-shard embedded stream in batches of 100 into a no-op handler, in each
// delivery mode side by side; b.N is the number of records. Run with
//
//	go test -run '^$' -bench Engine -benchtime 200000x ./internal/bench/
func BenchmarkEngine(b *testing.B) {
	for _, bm := range []struct {
		name string
		mode mode
	}{
		{"AtLeastOnce", modeAtLeastOnce},
		{"ExactlyOnce", modeExactlyOnce},
		{"ExactlyOnceState", modeState},
		{"PerRecordBaseline", modeBaseline},
	} {
		b.Run(bm.name, func(b *testing.B) {
			cfg := Config{Records: max(b.N, 100)}
			cfg.defaults()
			b.SetBytes(int64(cfg.RecordSize))
			s, err := throughput(context.Background(), cfg, b.TempDir(), bm.mode)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(s.RecordsPerSec, "records/s")
		})
	}
}
