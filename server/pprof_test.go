package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPprof serves net/http/pprof on debug.pprof, apart from the API, and
// stops listening there once the server is closed.
func TestPprof(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := ln.Addr().String()
	ln.Close()
	addr, stop := start(t, t.TempDir(), "127.0.0.1:0", "debug: {pprof: '"+pprofAddr+"'}\n", nil)

	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
		resp, err := http.Get("http://" + pprofAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d %.200s", path, resp.StatusCode, body)
		}
	}
	// The API does not serve the profiles.
	if resp, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), "goroutine") {
			t.Errorf("the API serves pprof: %d %.200s", resp.StatusCode, body)
		}
	}

	stop()
	if c, err := net.DialTimeout("tcp", pprofAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still listens after Close", pprofAddr)
	}
}

// TestPprofListenFails: Run refuses to start when debug.pprof cannot be
// listened on, naming it, and leaves the API's address free.
func TestPprofListenFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s := newServer(t, "dataDir: "+t.TempDir()+"\nlisten: 127.0.0.1:0\ndebug: {pprof: '"+busy.Addr().String()+"'}\n")
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "debug.pprof") {
		t.Errorf("Run = %v, want an error naming debug.pprof", err)
	}
}
