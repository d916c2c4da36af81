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
	sizes := filepath.Join(t.TempDir(), "sizes")
	fn := lambdaProcess(t, "fourth", map[string]string{"IDEM_TEST_SIZES": sizes})

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

// lambdaProcess builds function/process/testdata/<name>, an unmodified
// aws-lambda-go function, and runs it as a process function called name,
// with env in its environment, until the test ends.
func lambdaProcess(t *testing.T, name string, env map[string]string) *process.Function {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	build := exec.Command("go", "build", "-o", bin, "./function/process/testdata/"+name)
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Lambda function %s: %v\n%s", name, err, out)
	}
	return startProcess(t, process.Config{Name: name, Command: bin, Env: env})
}

// startProcess runs cfg as a process function, with a 10s timeout unless
// cfg sets one, until the test ends.
func startProcess(t *testing.T, cfg process.Config) *process.Function {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	fn, err := process.New(cfg, process.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	return fn
}
