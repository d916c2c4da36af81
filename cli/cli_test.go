package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// syncBuffer is a bytes.Buffer that a running server may log to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startServe runs `idem serve` with args (a config file holding yaml is
// added) until the returned cancel; exit receives its exit code. It
// returns once addr answers /healthz.
func startServe(t *testing.T, addr, yaml string, args []string, stderr io.Writer, opts ...server.Option) (cancel func(), exit <-chan int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "idem.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, append([]string{"serve", "-c", file}, args...), strings.NewReader(""), io.Discard, stderr, opts...)
	}()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return cancel, code
		}
		select {
		case c := <-code:
			t.Fatalf("serve exited with %d before serving:\n%s", c, stderr)
		default:
		}
		if i == 1000 {
			cancel()
			t.Fatalf("serve did not answer on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeListenFlag: --listen overrides the config's listen, as --data
// overrides dataDir.
func TestServeListenFlag(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := freeAddr(t)
	var stderr syncBuffer
	yaml := fmt.Sprintf("dataDir: %s\nlisten: %s\n", t.TempDir(), busy.Addr())
	cancel, exit := startServe(t, addr, yaml, []string{"--listen", addr}, &stderr)
	cancel()
	if c := <-exit; c != exitOK {
		t.Fatalf("exit %d:\n%s", c, stderr.String())
	}
}

// TestServeShutdownBounded: a shutdown that cannot finish (a function that
// ignores its context) still exits within --shutdown-timeout, saying so.
func TestServeShutdownBounded(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	t.Cleanup(func() { close(release) })
	stuck := server.WithInvokeHandler("stuck", idem.InvokeFunc(func(context.Context, []byte) ([]byte, error) {
		entered <- struct{}{}
		<-release
		return nil, nil
	}))
	addr := freeAddr(t)
	var stderr syncBuffer
	yaml := fmt.Sprintf("dataDir: %s\nlisten: %s\nfunctions: [{name: stuck, timeout: 1s}]\n", t.TempDir(), addr)
	cancel, exit := startServe(t, addr, yaml, []string{"--shutdown-timeout", "1s"}, &stderr, stuck)
	req, _ := http.NewRequest("POST", "http://"+addr+"/2015-03-31/functions/stuck/invocations", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Invocation-Type", "Event")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("Event invocation: %s", resp.Status)
	}
	<-entered
	cancel()
	select {
	case c := <-exit:
		if c != exitError || !strings.Contains(stderr.String(), "shutdown-timeout") {
			t.Errorf("exit %d, want %d with a message naming --shutdown-timeout:\n%s", c, exitError, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not exit a minute after its context was done, with --shutdown-timeout 1s")
	}
}
