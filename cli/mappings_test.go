package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// TestMappingsPauseResume: `idem mappings pause` and `resume` change a
// running idem's mapping, with the token of IDEM_TOKEN, and `idem status`
// shows the mapping paused and its shards paused.
func TestMappingsPauseResume(t *testing.T) {
	addr := serveMapping(t, server.WithHandler("count", idem.HandlerFunc(func(context.Context, *idem.Batch) (idem.BatchResult, error) {
		return idem.BatchResult{}, nil
	})))
	idemCmd := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if c := Run(context.Background(), append(args, "--addr", addr), strings.NewReader(""), &out, &errOut); c != exitOK {
			t.Fatalf("idem %s: exit %d: %s", strings.Join(args, " "), c, errOut.String())
		}
		return out.String()
	}
	// pausedTimes waits until `idem status` says paused n times.
	pausedTimes := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out := idemCmd("status")
			if strings.Count(out, "paused") == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status never said paused %d times:\n%s", n, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if out := idemCmd("mappings", "pause", "m"); !strings.Contains(out, "paused") {
		t.Fatalf("pause: %q", out)
	}
	pausedTimes(2) // the shard's line, and the mapping's
	if out := idemCmd("mappings", "resume", "m"); !strings.Contains(out, "resumed") {
		t.Fatalf("resume: %q", out)
	}
	pausedTimes(0)

	var errOut bytes.Buffer
	if c := Run(context.Background(), []string{"mappings", "pause", "nope", "--addr", addr}, strings.NewReader(""), io.Discard, &errOut); c != exitError ||
		!strings.Contains(errOut.String(), "not found") {
		t.Fatalf("pausing an unknown mapping: exit %d: %s", c, errOut.String())
	}
}

// serveMapping runs `idem serve` with auth on (IDEM_TOKEN set to its
// token), a stream events and a mapping m of it to function count, handled
// by h, until the test ends. It returns the API's address.
func serveMapping(t *testing.T, h server.Option) string {
	t.Helper()
	const tok = "0123456789abcdef0123456789abcdef"
	t.Setenv("IDEM_TOKEN", tok)
	addr := freeAddr(t)
	var stderr syncBuffer
	yaml := fmt.Sprintf(`dataDir: %s
listen: %s
auth: {tokens: [%s]}
streams: [{name: events}]
functions: [{name: count}]
mappings: [{name: m, source: {stream: events}, function: count, startingPosition: TRIM_HORIZON}]
`, t.TempDir(), addr, tok)
	cancel, exit := startServe(t, addr, yaml, nil, &stderr, h)
	t.Cleanup(func() {
		cancel()
		<-exit
	})
	return addr
}
