package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/function/process"
)

// TestWorkedExampleProcessFunction runs ESM.md's worked example through an
// unmodified aws-lambda-go function run as a process over idem's Runtime
// API: ReportBatchItemFailures sends 10, 7, 4, 1.
func TestWorkedExampleProcessFunction(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bootstrap")
	build := exec.Command("go", "build", "-o", bin, "./function/process/testdata/fourth")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Lambda function: %v\n%s", err, out)
	}
	sizes := filepath.Join(dir, "sizes")
	fn, err := process.New(process.Config{Name: "ship-order", Command: bin, Timeout: 10 * time.Second,
		Env: map[string]string{"IDEM_TEST_SIZES": sizes}}, process.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)

	v := newEnv(t)
	tenRecords(v)
	m := workedMapping(v, fn)
	m.ReportBatchItemFailures = true
	e, _ := v.run(m)
	waitFor(t, "all 10 processed", func() bool { return totals(e).Processed == 10 })
	b, err := os.ReadFile(sizes)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(b)), " "); got != "10 7 4 1" {
		t.Fatalf("batch sizes %s, want 10 7 4 1", got)
	}
}
