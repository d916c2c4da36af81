package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// TestReplayCommand: `idem replay --dry-run` prints what a paused mapping
// would run and skip, as text and as JSON (with the names wouldRun and
// wouldSkip), and runs nothing; without --dry-run it moves the
// checkpoints, and the resumed mapping runs just the records it had not.
func TestReplayCommand(t *testing.T) {
	var mu sync.Mutex
	runs := map[string]int{}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, v := range runs {
			n += v
		}
		return n
	}
	h := server.WithHandler("count", idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b.Records {
			runs[string(r.Data)]++
		}
		return idem.BatchResult{}, nil
	}))
	addr := serveMapping(t, h)
	idemCmd := func(want int, args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if c := Run(context.Background(), append(args, "--addr", addr), strings.NewReader(""), &out, &errOut); c != want {
			t.Fatalf("idem %s: exit %d, want %d: %s%s", strings.Join(args, " "), c, want, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}
	put := func(from, to int) {
		t.Helper()
		var lines []string
		for i := from; i < to; i++ {
			lines = append(lines, fmt.Sprint("r", i))
		}
		var out, errOut bytes.Buffer
		args := []string{"put", "--stream", "events", "--partition-key", "k", "--addr", addr}
		if c := Run(context.Background(), args, strings.NewReader(strings.Join(lines, "\n")+"\n"), &out, &errOut); c != exitOK {
			t.Fatalf("put: exit %d: %s", c, errOut.String())
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	put(0, 300)
	waitFor("300 records", func() bool { return total() == 300 })

	// A running mapping's checkpoints are not moved.
	if _, errOut := idemCmd(exitError, "replay", "--mapping", "m", "--from", "TRIM_HORIZON"); !strings.Contains(errOut, "pause it first") {
		t.Fatalf("moving a running mapping: %s", errOut)
	}
	idemCmd(exitOK, "mappings", "pause", "m")
	waitFor("the shard paused", func() bool {
		out, _ := idemCmd(exitOK, "status", "--json")
		var st server.StatusResponse
		return json.Unmarshal([]byte(out), &st) == nil && len(st.Shards) == 1 && st.Shards[0].State == "paused"
	})
	put(300, 500)

	out, errOut := idemCmd(exitOK, "replay", "--mapping", "m", "--from", "TRIM_HORIZON", "--dry-run", "--json")
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	if rep["wouldRun"] != 200.0 || rep["wouldSkip"] != 300.0 || rep["filtered"] != 0.0 {
		t.Fatalf("--json: wouldRun %v, wouldSkip %v, filtered %v; want 200, 300, 0", rep["wouldRun"], rep["wouldSkip"], rep["filtered"])
	}
	if first, _ := rep["first"].([]any); len(first) != 10 {
		t.Fatalf("--json first: %v", rep["first"])
	}
	if errOut != "" {
		t.Fatalf("no progress bar off a terminal, got %q", errOut)
	}
	out, _ = idemCmd(exitOK, "replay", "--mapping", "m", "--from", "TRIM_HORIZON", "--dry-run", "--scope", "elsewhere")
	for _, want := range []string{"500 records in retention", "would run   500", "would skip  0", "IDEMPOTENCY KEY", "events/shardId-000000000000/", "dry run: nothing ran"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	idemCmd(exitUsage, "replay", "--mapping", "m", "--from", "AT_TIMESTAMP", "--dry-run")
	if n := total(); n != 300 {
		t.Fatalf("%d records ran during dry runs, want 300", n)
	}

	out, _ = idemCmd(exitOK, "replay", "--mapping", "m", "--from", "TRIM_HORIZON")
	if !strings.Contains(out, "checkpoints of 1 shards moved") {
		t.Fatalf("move: %s", out)
	}
	idemCmd(exitOK, "mappings", "resume", "m")
	waitFor("the replay read to the end", func() bool {
		out, _ := idemCmd(exitOK, "status", "--json")
		var st server.StatusResponse
		return json.Unmarshal([]byte(out), &st) == nil && len(st.Shards) == 1 && st.Shards[0].Processed == 500 && st.Shards[0].Skipped == 300
	})
	mu.Lock()
	defer mu.Unlock()
	for i := range 500 {
		if n := runs[fmt.Sprint("r", i)]; n != 1 {
			t.Fatalf("record r%d ran %d times, want once", i, n)
		}
	}
}

// TestReadReplayStream: a streamed answer's progress lines are read
// through to the report, and an error line ends it with that error.
func TestReadReplayStream(t *testing.T) {
	var bar bytes.Buffer
	rep, err := readReplayStream(strings.NewReader(`{"progress":0,"total":10}
{"progress":12,"total":10}
{"mapping":"m","wouldRun":3,"wouldSkip":9,"first":[]}
`), &bar)
	if err != nil || rep.WouldRun != 3 || rep.WouldSkip != 9 {
		t.Fatalf("report %+v, %v", rep, err)
	}
	if _, err := readReplayStream(strings.NewReader("{\"progress\":0,\"total\":0}\n{\"error\":\"store closed\"}\n"), &bar); err == nil || err.Error() != "store closed" {
		t.Fatalf("error line: %v", err)
	}
	if _, err := readReplayStream(strings.NewReader("{\"progress\":0,\"total\":5}\n"), &bar); err == nil {
		t.Fatal("an answer cut before its report was taken for one")
	}
}
