package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/internal/testsvc"
)

// TestWorkedExampleNodeFunction runs ESM.md's worked example through a
// Node.js function run by the official runtime interface client
// (aws-lambda-ric), as TestWorkedExampleProcessFunction does with
// aws-lambda-go: ReportBatchItemFailures sends 10, 7, 4, 1.
func TestWorkedExampleNodeFunction(t *testing.T) {
	sizes := filepath.Join(t.TempDir(), "sizes")
	fn := startProcess(t, process.Config{Name: "fourth", Command: "node_modules/.bin/aws-lambda-ric", Args: []string{"fourth.handler"},
		Dir: testsvc.NodeDir(t), Env: map[string]string{"IDEM_TEST_SIZES": sizes}})

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
