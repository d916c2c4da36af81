package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/store"
	stembedded "github.com/idem-run/idem/store/embedded"
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
		"atLeastOnce": rep.AtLeastOnce, "exactlyOnce": rep.ExactlyOnce, "exactlyOncePayloadKeys": rep.ExactlyOncePayloadKeys,
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
//
// IDEM_BENCH_STORE selects the store as `idem bench --store` does, and
// IDEM_BENCH_SHARDS the stream's shards as `idem bench --shards` does.
func BenchmarkEngine(b *testing.B) {
	for _, bm := range []struct {
		name string
		mode mode
	}{
		{"AtLeastOnce", modeAtLeastOnce},
		{"ExactlyOnce", modeExactlyOnce},
		{"ExactlyOncePayloadKeys", modeMarks},
		{"ExactlyOnceFiltered", modeFiltered},
		{"ExactlyOnceWindowed", modeWindowed},
		{"ExactlyOnceState", modeState},
		{"ExactlyOnceSharedScope", modeSharedScope},
		{"PerRecordBaseline", modeBaseline},
	} {
		b.Run(bm.name, func(b *testing.B) {
			cfg := Config{Records: max(b.N, 100), Store: os.Getenv("IDEM_BENCH_STORE")}
			if n, err := strconv.Atoi(os.Getenv("IDEM_BENCH_SHARDS")); err == nil {
				cfg.Shards = n
			}
			cfg.defaults()
			b.SetBytes(int64(cfg.RecordSize))
			s, err := throughput(context.Background(), cfg, b.TempDir(), bm.mode)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(s.RecordsPerSec, "records/s")
			b.ReportMetric(s.CPUMicrosPerRecord, "cpu-µs/record")
		})
	}
}

// TestRunOnSharedStores runs the scenarios on DynamoDB (minidyn, in
// process, first: the others skip the test when absent), PostgreSQL and
// Redis, as `idem bench --store --marks` does, on a few records.
func TestRunOnSharedStores(t *testing.T) {
	for _, spec := range []func(t *testing.T) string{
		func(t *testing.T) string {
			return "dynamodb://" + strings.TrimPrefix(testsvc.DynamoDBEndpoint(t), "http://")
		},
		func(t *testing.T) string { return testsvc.PostgresDSN(t) },
		func(t *testing.T) string { return "redis://" + testsvc.RedisAddr(t) },
	} {
		s := spec(t)
		t.Run(storeKind(s), func(t *testing.T) {
			rep, err := Run(context.Background(), Config{Records: 1000, BaselineRecords: 100, Dir: t.TempDir(), Store: s,
				LatencyDuration: 200 * time.Millisecond, LatencyRate: 100, Marks: 1500})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Store != storeKind(s) || rep.ExactlyOnce.RecordsPerSec <= 0 || rep.PerRecordBaseline.RecordsPerSec <= 0 || rep.Marks != 1500 {
				t.Fatalf("report %+v", rep)
			}
		})
	}
}

// TestPrefillMarks: the marks `idem bench --marks` commits before a
// scenario are live in its store, in a scope no scenario's record uses,
// and the store does not take them for an earlier version's.
func TestPrefillMarks(t *testing.T) {
	ctx := context.Background()
	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := stembedded.New(db)
	if err := prefillMarks(ctx, st, 2500, "embedded"); err != nil {
		t.Fatal(err)
	}
	keys := []store.MarkKey{store.MarkKeyOf("bench-prefill", "0"), store.MarkKeyOf("bench-prefill", "2499"), store.MarkKeyOf("bench-prefill", "2500")}
	done := make([]bool, len(keys))
	if err := st.Completed(ctx, keys, time.Now(), done); err != nil {
		t.Fatal(err)
	}
	if !done[0] || !done[1] || done[2] {
		t.Fatalf("completed %v, want the first and last of 2,500 and not the one after", done)
	}
	// The store was asked about legacy keys while empty: the prefill's
	// marks are not taken for an earlier version's.
	if l, err := store.LegacyOf(ctx, st); err != nil || l.Active(time.Now()) {
		t.Fatalf("legacy keys active after the prefill (%v): every claim would look its keys up twice", err)
	}
}
