package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/idem-run/idem/server"
)

// TestProcessFunction runs an unmodified aws-lambda-go Kinesis handler (the
// process driver's testdata, which reports records whose data is "fail" in
// batchItemFailures) behind `idem serve`: ESM.md's partial-failure rules
// apply to it as to any function, the record that keeps failing goes to the
// on-failure stream alone, and `idem status` shows the function's process.
func TestProcessFunction(t *testing.T) {
	idemBin, _ := binaries(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	handler := filepath.Join(dir, "bootstrap")
	build := exec.Command("go", "build", "-o", handler, "./function/process/testdata/kinesis")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Lambda function: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
streams:
  - {name: orders}
  - {name: orders-failed}
functions:
  - {name: ship-order, process: {command: %s}, timeout: 10s}
mappings:
  - name: orders-to-ship
    source: {stream: orders}
    function: ship-order
    startingPosition: TRIM_HORIZON
    batchSize: 10
    maximumBatchingWindow: 1s
    maximumRetryAttempts: 1
    retry: {baseDelay: 10ms, maxDelay: 100ms}
    functionResponseTypes: [ReportBatchItemFailures]
    destinationConfig: {onFailure: {stream: orders-failed}}
`, filepath.Join(dir, "idem-data"), addr, handler))
	a := newAPI(addr)
	srv := startServe(t, idemBin, cfg, addr)

	recs := make([]server.PutRecord, 10)
	for i := range recs {
		recs[i] = server.PutRecord{PartitionKey: "customer-1", Data: fmt.Sprintf("order-%d", i+1)}
	}
	recs[7].Data = "fail"
	if _, err := a.put(context.Background(), "orders", recs); err != nil {
		t.Fatal(err)
	}
	sts := waitCaughtUp(t, a, "orders-to-ship", "orders", time.Minute)
	var processed, discarded uint64
	for _, s := range sts {
		processed += s.Processed
		discarded += s.Discarded
	}
	if processed != 9 || discarded != 1 {
		t.Fatalf("processed %d, discarded %d; want 9 and 1 (only the failing record leaves for the destination)", processed, discarded)
	}
	failed, err := a.allRecords(context.Background(), "orders-failed")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rs := range failed {
		for _, r := range rs {
			got = append(got, r.Data)
		}
	}
	if len(got) != 2 || got[1] != "fail" {
		t.Fatalf("orders-failed holds %q; want the metadata record and the failing record", got)
	}
	var st server.StatusResponse
	if err := a.do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Functions) != 1 || st.Functions[0].Name != "ship-order" || st.Functions[0].Running != 1 || st.Functions[0].CrashLoop {
		t.Fatalf("status functions = %+v; want ship-order with 1 process running", st.Functions)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
}
