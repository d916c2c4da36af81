package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/internal/testsvc"
)

// TestDynamoDBBench runs `idem bench`'s scenarios on the DynamoDB store at
// batch sizes 10 and 95 (the largest one transaction holds for records
// keyed by their payload) and prints their reports, when IDEM_BENCH=1:
// against the tests' emulator (minidyn, in this process), or against
// IDEM_TEST_DYNAMODB_ENDPOINT (DynamoDB Local, or AWS). Emulator figures
// are not DynamoDB's: they show what the transaction limit costs in round
// trips, not what DynamoDB's latency would make of them.
//
//	IDEM_BENCH=1 go test -count=1 -run TestDynamoDBBench -v ./internal/bench/
func TestDynamoDBBench(t *testing.T) {
	if os.Getenv("IDEM_BENCH") != "1" {
		t.Skip("a measurement: set IDEM_BENCH=1")
	}
	records := 5000
	if n, err := strconv.Atoi(os.Getenv("IDEM_BENCH_RECORDS")); err == nil && n > 0 {
		records = n
	}
	spec := "dynamodb://" + strings.TrimPrefix(testsvc.DynamoDBEndpoint(t), "http://") + "/idem-bench?region=us-east-1"
	for _, batch := range []int{10, 95} {
		rep, err := Run(context.Background(), Config{Records: records, BaselineRecords: records / 2, BatchSize: batch, Dir: t.TempDir(), Store: spec,
			LatencyDuration: time.Second, LatencyRate: 200})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := rep.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		t.Logf("batch size %d:\n%s", batch, b.String())
	}
}
