package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchShardsBatchSize runs `idem bench` on a few records with 8 shards,
// batches of 50 and 3,000 marks held before each scenario: the report says
// so and counts every record.
func TestBenchShardsBatchSize(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario, the latency one for 3s")
	}
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"bench", "--records", "2000", "--shards", "8", "--batch-size", "50", "--marks", "3000", "--json", "--dir", t.TempDir()},
		strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	var rep struct {
		Shards    int `json:"shards"`
		BatchSize int `json:"batchSize"`
		Marks     int `json:"marks"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, stdout.String())
	}
	if rep.Shards != 8 || rep.BatchSize != 50 || rep.Marks != 3000 {
		t.Errorf("shards %d, batchSize %d, marks %d; want 8, 50 and 3000:\n%s", rep.Shards, rep.BatchSize, rep.Marks, stdout.String())
	}
	var scen map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &scen); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"atLeastOnce", "exactlyOnce", "exactlyOncePayloadKeys", "exactlyOnceState", "perRecordBaseline"} {
		var s struct {
			Records       int     `json:"records"`
			RecordsPerSec float64 `json:"recordsPerSec"`
		}
		if err := json.Unmarshal(scen[name], &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.Records != 2000 || s.RecordsPerSec <= 0 {
			t.Errorf("%s: %+v, want 2000 records", name, s)
		}
	}
}

// TestBenchBadFlags refuses shards, batch sizes and marks out of range,
// naming the flag, before running anything.
func TestBenchBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--shards", "0"}, "--shards"},
		{[]string{"--shards", "257"}, "--shards"},
		{[]string{"--batch-size", "0"}, "--batch-size"},
		{[]string{"--batch-size", "10001"}, "--batch-size"},
		{[]string{"--marks", "-1"}, "--marks"},
		{[]string{"--marks", "100000001"}, "--marks"},
		{[]string{"--shards", "x"}, "--shards"},
	} {
		var stderr bytes.Buffer
		code := Run(context.Background(), append([]string{"bench", "--records", "10", "--dir", t.TempDir()}, tc.args...),
			strings.NewReader(""), io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), tc.flag) {
			t.Errorf("%v: exit %d, stderr %q; want %d naming %s", tc.args, code, stderr.String(), exitUsage, tc.flag)
		}
		if strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("%v: ran scenarios: %s", tc.args, stderr.String())
		}
	}
}

// TestBenchProfiles: --cpuprofile and --mutexprofile write profiles that
// go tool pprof reads; a file that cannot be created is refused before
// any scenario runs, naming its flag.
func TestBenchProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario, the latency one for 3s")
	}
	dir := t.TempDir()
	cpu, mu := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mutex.prof")
	var stderr bytes.Buffer
	code := Run(context.Background(), []string{"bench", "--records", "200", "--dir", t.TempDir(), "--json", "--cpuprofile", cpu, "--mutexprofile", mu},
		strings.NewReader(""), io.Discard, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, f := range []string{cpu, mu} {
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b { // pprof's gzipped protocol buffer
			t.Errorf("%s: %d bytes, %v; want a profile", f, len(b), err)
		}
	}
	for _, flag := range []string{"--cpuprofile", "--mutexprofile"} {
		stderr.Reset()
		code := Run(context.Background(), []string{"bench", "--records", "10", "--dir", t.TempDir(), flag, filepath.Join(dir, "missing", "x.prof")},
			strings.NewReader(""), io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), flag) || strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("%s to a missing directory: exit %d, stderr %q", flag, code, stderr.String())
		}
	}
}

// TestBenchScenarios: --scenarios runs only the scenarios named, leaves the
// others out of the JSON and the table, and gives the ratios between those
// that ran; an unknown name is refused, named, before anything runs.
func TestBenchScenarios(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"bench", "--records", "300", "--scenarios", "atLeastOnce,exactlyOnce", "--json", "--dir", t.TempDir()},
		strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	var scen map[string]json.RawMessage
	if err := json.Unmarshal(stdout.Bytes(), &scen); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"exactlyOncePayloadKeys", "exactlyOnceState", "perRecordBaseline", "latency"} {
		if _, ok := scen[name]; ok {
			t.Errorf("%s reported, though not asked for:\n%s", name, stdout.String())
		}
	}
	var b struct {
		Records       int     `json:"records"`
		VsAtLeastOnce float64 `json:"vsAtLeastOnce"`
	}
	if err := json.Unmarshal(scen["exactlyOnce"], &b); err != nil || b.Records != 300 || b.VsAtLeastOnce <= 0 {
		t.Errorf("exactlyOnce: %+v, %v; want 300 records and a ratio to atLeastOnce:\n%s", b, err, stdout.String())
	}
	if strings.Contains(stderr.String(), "payload keys") || strings.Contains(stderr.String(), "latency") {
		t.Errorf("ran scenarios not asked for:\n%s", stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = Run(context.Background(), []string{"bench", "--records", "300", "--scenarios", "exactlyOncePayloadKeys", "--dir", t.TempDir()},
		strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "(b') exactly-once, payload keys") || strings.Contains(out, "(a) at-least-once") || strings.Contains(out, "ratios:") || strings.Contains(out, "latency") {
		t.Errorf("table of (b') alone:\n%s", out)
	}

	stderr.Reset()
	code = Run(context.Background(), []string{"bench", "--records", "10", "--scenarios", "atLeastOnce,fastest", "--dir", t.TempDir()},
		strings.NewReader(""), io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), `--scenarios: unknown scenario "fastest"`) || strings.Contains(stderr.String(), "bench: ") {
		t.Errorf("unknown scenario: exit %d, stderr %q; want %d naming it, nothing run", code, stderr.String(), exitUsage)
	}
}
