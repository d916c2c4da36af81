package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/server"
)

// TestSeed002ReplayUnderNewName processes 10,000 records with the counter
// example, stops it with SIGTERM (exit code 0), replaces its mapping with one
// under a new name that keeps the idempotency scope and starts at
// TRIM_HORIZON, and restarts it: the new mapping reads every retained record
// again, runs none of them (every count is unchanged), and `idem status
// --json` shows all 10,000 skipped.
func TestSeed002ReplayUnderNewName(t *testing.T) {
	idemBin, counter := binaries(t)
	const (
		total      = 10000
		keys       = 100
		stream     = "events"
		oldMapping = "events-to-counter"
		newMapping = "events-to-counter-v2"
	)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	data := filepath.Join(dir, "data")
	writeFile(t, cfg, counterConfig(addr, `  - name: `+oldMapping+`
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    destinationConfig: {onFailure: {stream: events-failed}}
`))
	a := newAPI(addr)
	ctx := context.Background()

	srv := startServe(t, counter, cfg, addr, "--data", data)
	res := produce(ctx, a, stream, total, keys, 50, 0)
	if res.err != nil {
		t.Fatalf("producer: %v", res.err)
	}
	if res.failedPosts > 0 {
		t.Fatalf("%d POSTs failed against a server that was not killed", res.failedPosts)
	}
	waitCaughtUp(t, a, oldMapping, stream, 3*time.Minute)
	countKeys := make([]string, keys)
	for i := range countKeys {
		countKeys[i] = fmt.Sprintf("count/pk-%02d", i)
	}
	before, err := a.states(ctx, "counter", countKeys)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, k := range countKeys {
		var n int
		if _, err := fmt.Sscan(before[k], &n); err != nil {
			t.Fatalf("%s: %q: %v", k, before[k], err)
		}
		sum += n
	}
	if sum != total {
		t.Fatalf("the counts sum to %d before the replay, want %d", sum, total)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited with %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}

	writeFile(t, cfg, counterConfig(addr, `  - name: `+newMapping+`
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    destinationConfig: {onFailure: {stream: events-failed}}
    idempotency: {scope: counter}
`))
	srv = startServe(t, counter, cfg, addr, "--data", data)
	waitCaughtUp(t, a, newMapping, stream, 3*time.Minute)
	after, err := a.states(ctx, "counter", countKeys)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range countKeys {
		if after[k] != before[k] {
			t.Errorf("%s was %q before the replay and is %q after it: records ran again", k, before[k], after[k])
		}
	}
	// `idem state` prints the same committed value.
	out, errOut, code := runCLI(t, idemBin, nil, "state", "--addr", addr, "--scope", "counter", "--key", countKeys[0])
	if code != 0 || strings.TrimSpace(out) != before[countKeys[0]] {
		t.Errorf("idem state --key %s: exit %d, stdout %q, stderr %q; want %q", countKeys[0], code, out, errOut, before[countKeys[0]])
	}

	out, errOut, code = runCLI(t, idemBin, nil, "status", "--json", "--addr", addr)
	if code != 0 {
		t.Fatalf("idem status --json: exit %d: %s", code, errOut)
	}
	var st server.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("idem status --json: %v\n%s", err, out)
	}
	var skipped, processed, discarded uint64
	shards := 0
	for _, s := range st.Shards {
		switch s.Mapping {
		case newMapping:
			shards++
			skipped += s.Skipped
			processed += s.Processed
			discarded += s.Discarded
			if s.Scope != "counter" {
				t.Errorf("shard %s: scope %q, want counter", s.Shard, s.Scope)
			}
		case oldMapping:
			t.Errorf("the removed mapping %s still has shard %s in the status", oldMapping, s.Shard)
		}
	}
	if shards != 4 || skipped != total || processed != 0 || discarded != 0 {
		t.Errorf("idem status --json for %s: %d shards, skipped %d, processed %d, discarded %d; want 4 shards, skipped %d, processed 0, discarded 0\n%s",
			newMapping, shards, skipped, processed, discarded, total, out)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
}
