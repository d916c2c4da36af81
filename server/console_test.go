package server_test

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// TestConsolePage: the console's page is served at /ui/ without a token
// (a browser cannot send one with a navigation; the files hold no data),
// / redirects there, and the page's writes are refused; its data route,
// GET /v1/console, is behind the tokens as every API route is.
func TestConsolePage(t *testing.T) {
	addr := serve(t, `
auth: {tokens: [`+token+`], readTokens: [`+readToken+`]}
streams: [{name: events, shards: 2}, {name: failed}]
functions: [{name: count}, {name: web, http: {url: "http://127.0.0.1:1/"}, async: {onFailure: {stream: failed}}}]
mappings:
  - name: m
    source: {stream: events}
    function: count
    startingPosition: TRIM_HORIZON
    destinationConfig: {onFailure: {stream: failed}}
  - {name: off, source: {stream: events}, function: count, startingPosition: LATEST, enabled: false}
`, nil, server.WithHandler("count", idem.RecordFunc(func(_ context.Context, _ *idem.Record) error { return nil })))
	base := "http://" + addr

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/ui"} {
		resp, err := noFollow.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET %s: %d to %q, want 302 to /ui/", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	for path, want := range map[string]struct{ typ, has string }{
		"/ui/":          {"text/html", `<script src="app.js"`},
		"/ui/app.js":    {"javascript", "/v1/status"},
		"/ui/style.css": {"text/css", "table.grid"},
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), want.typ) || !strings.Contains(string(b), want.has) {
			t.Errorf("GET %s without a token: %d %s, %d bytes; want 200 %s holding %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b), want.typ, want.has)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q, want the page confined to its origin and unframeable", path, csp)
		}
	}
	if code, body := call(t, "GET", base+"/ui/nothing.js", "", ""); code != 404 {
		t.Errorf("GET a file the console lacks: %d %s, want 404", code, body)
	}
	if code, body := call(t, "POST", base+"/ui/", "", "x"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d %s, want 405", code, body)
	}
	// The page does not open the API: /v1 beside it still needs a token.
	if code, body := call(t, "GET", base+"/v1/console", "", ""); code != 403 {
		t.Errorf("GET /v1/console without a token: %d %s, want 403", code, body)
	}

	code, body := call(t, "GET", base+"/v1/console", "Bearer "+readToken, "")
	if code != 200 {
		t.Fatalf("GET /v1/console with a read token: %d %s", code, body)
	}
	var info server.ConsoleInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	want := []server.ConsoleMapping{
		{Name: "m", UUID: server.MappingUUID("m"), Function: "count", Source: "embedded", Stream: "events", OnFailure: "failed", Enabled: true, BatchSize: 100},
		{Name: "off", UUID: server.MappingUUID("off"), Function: "count", Source: "embedded", Stream: "events", Enabled: false, BatchSize: 100},
	}
	if len(info.Mappings) != len(want) {
		t.Fatalf("console mappings: %+v, want %+v", info.Mappings, want)
	}
	for i := range want {
		if info.Mappings[i] != want[i] {
			t.Errorf("console mapping %d: %+v, want %+v", i, info.Mappings[i], want[i])
		}
	}
	wantFns := []server.ConsoleFunction{{Name: "count", Kind: "go"}, {Name: "web", Kind: "http", OnFailure: "failed"}}
	if len(info.Functions) != 2 || info.Functions[0] != wantFns[0] || info.Functions[1] != wantFns[1] {
		t.Errorf("console functions: %+v, want %+v", info.Functions, wantFns)
	}
}

// TestConsoleSelfContained: the console's files load nothing from another
// origin, so that it works where there is no internet, and write no
// server data into the page as HTML.
func TestConsoleSelfContained(t *testing.T) {
	err := filepath.WalkDir("ui", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		for _, bad := range []string{"://", "//cdn", "@import", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
			if strings.Contains(s, bad) {
				t.Errorf("%s holds %q", path, bad)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
