package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestInvokeEventSurvivesKill9 accepts an asynchronous invocation (202)
// on `idem serve`, kills idem with SIGKILL while the function runs it (the
// function blocks until it is released, and does nothing for an attempt
// that was cut off), and restarts idem: the event runs after the restart,
// once, and not again after a further restart.
func TestInvokeEventSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and restarts idem")
	}
	idemBin, _ := binaries(t)

	// The function: an HTTP endpoint of this test. Until released, a call
	// waits for its caller to go away and has no effect; after, it counts
	// the payload once per call.
	var (
		mu       sync.Mutex
		released bool
		arrived  = make(chan struct{}, 16)
		effects  = make(map[string]int)
	)
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		rel := released
		mu.Unlock()
		if !rel {
			arrived <- struct{}{}
			<-r.Context().Done() // idem was killed: the attempt is cut off
			return
		}
		mu.Lock()
		effects[string(body)]++
		mu.Unlock()
		fmt.Fprint(w, `{"ok":true}`)
	}))
	defer fn.Close()
	count := func(payload string) int {
		mu.Lock()
		defer mu.Unlock()
		return effects[payload]
	}

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
functions:
  - name: ship
    http: {url: %q}
    timeout: 60s
    async: {retry: {baseDelay: 100ms}}
`, filepath.Join(dir, "data"), addr, fn.URL))

	srv := startServe(t, idemBin, cfg, addr)
	invokeURL := "http://" + addr + "/2015-03-31/functions/ship/invocations"
	const payload = `{"order":42}`
	req, _ := http.NewRequest(http.MethodPost, invokeURL, strings.NewReader(payload))
	req.Header.Set("X-Amz-Invocation-Type", "Event")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("Event: %d, want 202", resp.StatusCode)
	}
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatalf("the event did not reach the function\n%s", srv.tail(30))
	}
	srv.kill() // SIGKILL, while the function runs the event

	mu.Lock()
	released = true
	mu.Unlock()
	srv = startServe(t, idemBin, cfg, addr)
	deadline := time.Now().Add(30 * time.Second)
	for count(payload) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the event did not run after the restart\n%s", srv.tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate run would come now
	if code := srv.stop(t); code != 0 {
		t.Fatalf("idem serve exited %d", code)
	}

	srv = startServe(t, idemBin, cfg, addr)
	time.Sleep(time.Second)
	if n := count(payload); n != 1 {
		t.Errorf("the event ran %d times after the restarts, want exactly 1", n)
	}
	_, stderr, code := runCLI(t, idemBin, nil, "records", "--addr", addr, "--stream", "idem:invoke:ship")
	if code != 0 {
		t.Fatalf("idem records: exit %d: %s", code, stderr)
	}
	srv.stop(t)
}
