package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/internal/testsvc"
)

// TestWorkedExampleNodeFunction runs ESM.md's worked example through a
// Node.js function run by the official runtime interface client
// (aws-lambda-ric), as TestWorkedExampleProcessFunction does with
// aws-lambda-go: ReportBatchItemFailures sends 10, 7, 4, 1.
func TestWorkedExampleNodeFunction(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		testsvc.Absent(t, "node is not installed: the Node.js runtime tests need it")
	}
	dir, err := filepath.Abs(filepath.Join("..", "function", "process", "testdata", "node"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "aws-lambda-ric", "dist", "rapid-client.node")); err != nil {
		testsvc.Absent(t, "aws-lambda-ric is not installed (run npm ci in %s, as .ci/run does): %v", dir, err)
	}
	sizes := filepath.Join(t.TempDir(), "sizes")
	fn, err := process.New(process.Config{Name: "fourth", Command: "node_modules/.bin/aws-lambda-ric", Args: []string{"fourth.handler"},
		Dir: dir, Timeout: 10 * time.Second, Env: map[string]string{"IDEM_TEST_SIZES": sizes}}, process.WithLogger(testLogger(t)))
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
