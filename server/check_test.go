package server_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/server"
)

// TestCheckIsNewsRefusal: for a config whose wiring is wrong, New returns
// Check's problems, each a *config.FieldError with its path, before it
// opens the data directory.
func TestCheckIsNewsRefusal(t *testing.T) {
	fn := server.WithHandler("fn", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	for _, tc := range []struct {
		name, yaml string
		paths      []string
	}{
		{"unregistered Go functions", "functions: [{name: fn}, {name: a}, {name: b, go: {}}]\n", []string{"functions[1]", "functions[2]"}},
		{"process command and env", "functions: [{name: p, process: {command: ./absent, env: {AWS_REGION: x}}}]\n",
			[]string{"functions[0].process", "functions[0].process"}},
		{"mapping the engine refuses", `streams: [{name: orders}]
functions: [{name: fn}]
mappings:
  - name: m
    source: {kafka: {brokers: ["127.0.0.1:1"], topic: orders}}
    function: fn
    startingPosition: LATEST
    destinationConfig: {onFailure: {stream: orders}}
`, []string{"mappings[0]"}},
		{"payload-keyed batches above a DynamoDB transaction", `store: {dynamodb: {table: idem, endpoint: "http://127.0.0.1:1"}}
streams: [{name: orders}]
functions: [{name: fn}]
mappings:
  - {name: a, source: {stream: orders}, function: fn, startingPosition: LATEST, batchSize: 96, idempotency: {key: id}}
  - {name: b, source: {stream: orders}, function: fn, startingPosition: LATEST, batchSize: 95, idempotency: {key: id}}
  - {name: c, source: {stream: orders}, function: fn, startingPosition: LATEST, batchSize: 10000}
  - {name: d, source: {stream: orders}, function: fn, startingPosition: LATEST, batchSize: 100, eventFormat: s3}
`, []string{"mappings[0].batchSize", "mappings[3].batchSize"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			cfg, err := config.Parse([]byte(fmt.Sprintf("dataDir: %s\nlisten: 127.0.0.1:0\n%s", dataDir, tc.yaml)))
			if err != nil {
				t.Fatal(err)
			}
			checked := server.Check(cfg, fn)
			if checked == nil {
				t.Fatal("Check found no problem")
			}
			list := checked.(interface{ Unwrap() []error }).Unwrap()
			if len(list) != len(tc.paths) {
				t.Fatalf("%d problems, want %d:\n%v", len(list), len(tc.paths), checked)
			}
			for i, e := range list {
				var fe *config.FieldError
				if !errors.As(e, &fe) || fe.Path != tc.paths[i] || strings.Contains(e.Error(), "\n") {
					t.Errorf("problem %d: %q, want a one-line *config.FieldError at %s", i, e, tc.paths[i])
				}
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Check made the data directory (stat: %v)", err)
			}
			srv, err := server.New(cfg, fn)
			if err == nil {
				srv.Close()
				t.Fatal("New accepted the config")
			}
			if err.Error() != checked.Error() {
				t.Errorf("New: %v\nCheck: %v", err, checked)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("New made the data directory before refusing the config (stat: %v)", err)
			}
		})
	}
}

// TestCheckValid: Check accepts a valid config, and opens nothing for it.
func TestCheckValid(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg, err := config.Parse([]byte(fmt.Sprintf(`dataDir: %s
listen: 127.0.0.1:0
streams: [{name: events}]
functions: [{name: fn}, {name: web, http: {url: "http://127.0.0.1:1/"}}]
mappings: [{name: m, source: {stream: events}, function: web, startingPosition: LATEST}]
`, dataDir)))
	if err != nil {
		t.Fatal(err)
	}
	fn := server.WithInvokeHandler("fn", idem.InvokeFunc(func(context.Context, []byte) ([]byte, error) { return nil, nil }))
	if err := server.Check(cfg, fn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check made the data directory (stat: %v)", err)
	}
	if err := server.Check(nil); err == nil {
		t.Error("Check(nil) found no problem")
	}
}
