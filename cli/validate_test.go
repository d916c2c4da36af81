package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// handlerOpts registers the in-process Go function "fn" that the test
// configs use, as a program embedding idem would.
func handlerOpts() []server.Option {
	return []server.Option{server.WithHandler("fn", idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))}
}

// validateRun runs `idem validate` with args and returns its exit code,
// stdout and stderr.
func validateRun(t *testing.T, args []string, opts ...server.Option) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), append([]string{"validate"}, args...), strings.NewReader(""), &out, &errOut, opts...)
	return code, out.String(), errOut.String()
}

// serveRefusal runs `idem serve -c file` in-process, for a config it must
// refuse before it opens anything, and returns the lines it printed. Its
// context is done from the start, so that a serve that accepted the config
// would stop at once (exiting 0) rather than run.
func serveRefusal(t *testing.T, file string, opts ...server.Option) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr bytes.Buffer
	if code := Run(ctx, []string{"serve", "-c", file}, strings.NewReader(""), io.Discard, &stderr, opts...); code != exitError {
		t.Fatalf("serve exited with %d, want %d:\n%s", code, exitError, stderr.String())
	}
	lines := nonEmptyLines(stderr.String())
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "idem: ") {
		t.Fatalf("serve printed %q, want its error after \"idem: \"", stderr.String())
	}
	lines[0] = strings.TrimPrefix(lines[0], "idem: ")
	return lines
}

func nonEmptyLines(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// assertFree fails unless addr can be listened on: nothing, validate
// included, holds it.
func assertFree(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s after validate: %v", addr, err)
	}
	ln.Close()
}

// assertAbsent fails if path exists.
func assertAbsent(t *testing.T, path, after string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists after %s (stat: %v)", path, after, err)
	}
}

// brokenConfig is a broken config's format: dataDir and listen, then
// lines.
func brokenConfig(lines ...string) string {
	s := "\ndataDir: %[1]s\nlisten: %[2]s\n"
	for _, l := range lines {
		s += l + "\n"
	}
	return s
}

// mappingConfig is a broken config's format with a stream events, a
// function fn and a mapping m of one to the other, whose further fields
// are the lines fields.
func mappingConfig(fields ...string) string {
	lines := []string{"streams: [{name: events}]", "functions: [{name: fn}]", "mappings:", "  - name: m", "    source: {stream: events}", "    function: fn"}
	for _, f := range fields {
		lines = append(lines, "    "+f)
	}
	return brokenConfig(lines...)
}

// brokenConfigs are configs serve refuses, across the kinds of problem.
// Each is a format taking the dataDir (%[1]s), the listen address (%[2]s)
// and a scratch directory (%[3]s); want are substrings of the problems
// validate must print, one per line, in order.
var brokenConfigs = []struct {
	name string
	yaml string
	want []string
}{
	{"unknown key", mappingConfig(`startingPosition: TRIM_HORIZON`, `batchSiz: 10`), []string{":11: mappings[0].batchSiz: "}},
	{"batchSize out of range", mappingConfig(`startingPosition: TRIM_HORIZON`, `batchSize: 20000`), []string{":11: mappings[0].batchSize: 20000 is above the maximum 10000"}},
	{"unknown function", brokenConfig(
		`streams: [{name: events}]`,
		`functions: [{name: fn}]`,
		`mappings:`,
		`  - {name: m, source: {stream: events}, function: nope, startingPosition: LATEST}`,
	), []string{`mappings[0].function: unknown function "nope" (configured: fn)`}},
	{"unknown on-failure stream", mappingConfig(`startingPosition: LATEST`, `destinationConfig: {onFailure: {stream: lost}}`), []string{`mappings[0].destinationConfig.onFailure.stream: unknown stream "lost"`}},
	{"on-failure stream is the source", mappingConfig(`startingPosition: LATEST`, `destinationConfig: {onFailure: {stream: events}}`), []string{`mappings[0].destinationConfig.onFailure.stream: "events" is also mappings[0].source.stream`}},
	{"lease with the embedded store", brokenConfig(`lease: {ttl: 10s}`), []string{"lease: needs a shared store"}},
	{"kafka group with the embedded store", brokenConfig(
		`functions: [{name: fn}]`,
		`mappings:`,
		`  - name: m`,
		`    source: {kafka: {brokers: ["127.0.0.1:1"], topic: orders, group: g}}`,
		`    function: fn`,
		`    startingPosition: TRIM_HORIZON`,
	), []string{"mappings[0].source.kafka.group: a consumer group needs a shared store"}},
	{"bad filter pattern", mappingConfig(`startingPosition: LATEST`, `filterCriteria: {filters: [{pattern: '{"data": {"type": "order"}}'}]}`), []string{"mappings[0].filterCriteria.filters[0].pattern: "}},
	{"tumbling window with parallelizationFactor 2", mappingConfig(`startingPosition: LATEST`, `tumblingWindow: 30s`, `parallelizationFactor: 2`), []string{"mappings[0].tumblingWindow: needs parallelizationFactor 1"}},
	{"bad duration", brokenConfig(`streams: [{name: events, retention: 10 parsecs}]`), []string{":4: streams[0].retention: "}},
	{"duplicate names", brokenConfig(`streams: [{name: events}, {name: events}]`), []string{`streams[1].name: "events" is already the name of streams[0]`}},
	{"missing required", brokenConfig(
		`streams: [{name: events}]`,
		`functions: [{name: fn}]`,
		`mappings:`,
		`  - {name: m, source: {stream: events}, function: fn}`,
	), []string{"mappings[0].startingPosition: required"}},
	{"invalid listen address", `
dataDir: %[1]s
listen: localhost
`, []string{`listen: "localhost" is not a host:port address`}},
	{"malformed YAML", brokenConfig(`streams: [{name: events}`), []string{"invalid YAML"}},
	{"wrong type", brokenConfig(`streams: [{name: events, shards: many}]`), []string{":4: streams[0].shards: "}},
	{"bad idempotency key", mappingConfig(`startingPosition: LATEST`, `idempotency: {key: "order.[id"}`), []string{"mappings[0].idempotency.key: "}},
	{"several problems at once", brokenConfig(
		`streams: [{name: events, shards: 0}]`,
		`functions: [{name: fn, timeout: 20m}]`,
		`mappings:`,
		`  - {name: m, source: {stream: events}, function: fn, startingPosition: LATEST, batchSize: 0}`,
	), []string{"streams[0].shards: 0 is below the minimum 1", "functions[0].timeout: 20m is above the maximum 15m", "mappings[0].batchSize: 0 is below the minimum 1"}},
	// The problems only the wiring shows (server.Check).
	{"Go function without a handler", brokenConfig(`functions: [{name: fn}, {name: unregistered}, {name: also, go: {}}]`), []string{`: functions[1]: "unregistered" has no http or process kind and no Go handler is registered`,
		`: functions[2]: "also" has no http or process kind`}},
	{"process command that does not exist", brokenConfig(`functions: [{name: p, process: {command: ./bootstrap, dir: %[3]s}}]`), []string{": functions[0].process: process: command: "}},
	{"process dir that does not exist and a reserved env", brokenConfig(`functions: [{name: p, process: {command: sh, dir: "%[3]s/nowhere", env: {AWS_LAMBDA_FUNCTION_NAME: x}}}]`), []string{": functions[0].process: process: dir: ", ": functions[0].process: process: env AWS_LAMBDA_FUNCTION_NAME: set by idem"}},
	{"dataDir is a file", `
dataDir: %[3]s/file
listen: %[2]s
`, []string{`: dataDir: "` + "%[3]s" + `/file" is not a directory`}},
	{"kafka topic named like the on-failure stream", brokenConfig(
		`streams: [{name: orders}]`,
		`functions: [{name: fn}]`,
		`mappings:`,
		`  - name: m`,
		`    source: {kafka: {brokers: ["127.0.0.1:1"], topic: orders}}`,
		`    function: fn`,
		`    startingPosition: TRIM_HORIZON`,
		`    destinationConfig: {onFailure: {stream: orders}}`,
	), []string{`: mappings[0]: mapping "m": destinationConfig.onFailure: "orders" is the mapping's own source stream`}},
}

// TestValidateBroken: validate refuses each broken config with exit 1 and
// the lines serve prints for it, and neither creates the data directory
// nor opens the listen address.
func TestValidateBroken(t *testing.T) {
	if len(brokenConfigs) < 20 {
		t.Fatalf("%d broken configs, want at least 20", len(brokenConfigs))
	}
	for _, tc := range brokenConfigs {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			scratch := filepath.Join(dir, "scratch")
			if err := os.Mkdir(scratch, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(scratch, "file"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			dataDir, listen := filepath.Join(dir, "data"), freeAddr(t)
			file := filepath.Join(dir, "idem.yaml")
			if err := os.WriteFile(file, []byte(fmt.Sprintf(tc.yaml, dataDir, listen, scratch)), 0o600); err != nil {
				t.Fatal(err)
			}

			code, stdout, stderr := validateRun(t, []string{"-c", file}, handlerOpts()...)
			if code != exitError || stdout != "" {
				t.Fatalf("exit %d, stdout %q, want %d and nothing; stderr:\n%s", code, stdout, exitError, stderr)
			}
			lines := nonEmptyLines(stderr)
			if len(lines) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(lines), len(tc.want), stderr)
			}
			for i, w := range tc.want {
				if w = strings.ReplaceAll(w, "%[3]s", scratch); !strings.Contains(lines[i], w) {
					t.Errorf("problem %d is %q, want it to contain %q", i, lines[i], w)
				}
				if !strings.HasPrefix(lines[i], file+":") {
					t.Errorf("problem %d is %q, want it to start with %q", i, lines[i], file+":")
				}
			}
			assertAbsent(t, dataDir, "validate")
			assertFree(t, listen)

			if got := serveRefusal(t, file, handlerOpts()...); !slices.Equal(got, lines) {
				t.Errorf("serve printed\n%s\nvalidate printed\n%s", strings.Join(got, "\n"), strings.Join(lines, "\n"))
			}
			// serve refuses before it opens anything too.
			assertAbsent(t, dataDir, "serve")
		})
	}
}

// TestValidateJSON: --json reports every problem with its path, line and
// message, and a valid file as valid with no problems.
func TestValidateJSON(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "idem.yaml")
	yaml := fmt.Sprintf(`dataDir: %s
listen: 127.0.0.1:0
streams: [{name: events}]
functions: [{name: fn}]
mappings:
  - name: m
    source: {stream: events}
    function: fn
    startingPosition: LATEST
    batchSize: 20000
`, filepath.Join(dir, "data"))
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	decode := func(out string) validateReport {
		t.Helper()
		var rep validateReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v in %q", err, out)
		}
		return rep
	}

	code, stdout, stderr := validateRun(t, []string{"-c", file, "--json"}, handlerOpts()...)
	want := validateReport{File: file, Problems: []configProblem{{
		Path: "mappings[0].batchSize", Line: 10, Message: "20000 is above the maximum 10000",
		Text: file + ":10: mappings[0].batchSize: 20000 is above the maximum 10000",
	}}}
	if rep := decode(stdout); code != exitError || stderr != "" || !equalReports(rep, want) {
		t.Errorf("exit %d, stderr %q, report %+v; want %d, nothing, %+v", code, stderr, rep, exitError, want)
	}

	if err := os.WriteFile(file, []byte(strings.Replace(yaml, "20000", "10", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	// A problem of the wiring (checked once the file itself is valid, as
	// serve does) has a path and no line.
	code, stdout, _ = validateRun(t, []string{"-c", file, "--json"})
	rep := decode(stdout)
	if code != exitError || len(rep.Problems) != 1 || rep.Problems[0].Path != "functions[0]" || rep.Problems[0].Line != 0 ||
		!strings.HasPrefix(rep.Problems[0].Message, `"fn" has no http or process kind`) {
		t.Errorf("without fn's handler: exit %d, report %+v", code, rep)
	}

	code, stdout, _ = validateRun(t, []string{"-c", file, "--json"}, handlerOpts()...)
	if rep := decode(stdout); code != exitOK || !rep.Valid || rep.Problems == nil || len(rep.Problems) != 0 {
		t.Errorf("valid file: exit %d, report %s", code, stdout)
	}
	if !strings.Contains(stdout, `"problems": []`) {
		t.Errorf("valid file: report %s, want an empty problems list, not null", stdout)
	}
}

func equalReports(a, b validateReport) bool {
	return a.File == b.File && a.Valid == b.Valid && slices.Equal(a.Problems, b.Problems)
}

// TestValidateExamples: the examples' configs validate with their
// programs' handlers, and their dataDir (./idem-data) is not created;
// without the handlers, validate reports what serve would.
func TestValidateExamples(t *testing.T) {
	// Each example's functions, the first named after it.
	examples := map[string][]string{"counter": {"counter"}, "transfer": {"transfer", "ledger"}}
	for ex, functions := range examples {
		file := filepath.Join("..", "examples", ex, "idem.yaml")
		var hs []server.Option
		for _, f := range functions {
			hs = append(hs, server.WithHandler(f, idem.RecordFunc(func(context.Context, *idem.Record) error { return nil })))
		}
		assertAbsent(t, "idem-data", "nothing")
		code, stdout, stderr := validateRun(t, []string{"-c", file}, hs...)
		if code != exitOK || stdout != file+": ok\n" || stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d and %q", ex, code, stdout, stderr, exitOK, file+": ok\n")
		}
		assertAbsent(t, "idem-data", "validate")

		code, _, stderr = validateRun(t, []string{"-c", file})
		want := fmt.Sprintf("%s: functions[0]: %q has no http or process kind", file, ex)
		if code != exitError || !strings.HasPrefix(stderr, want) {
			t.Errorf("%s without its handler: exit %d, stderr %q; want %d and %q", ex, code, stderr, exitError, want)
		}
	}
}

// TestValidateConnectsToNothing: a valid config whose store, sources and
// HTTP function all point at a listener the test holds, and whose process
// function would leave a mark if it ran, validates without a connection to
// the listener, a process started, a data directory made, or listen bound.
func TestValidateConnectsToNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := ln.Addr().String()
	dir := t.TempDir()
	mark := filepath.Join(dir, "started")
	script := filepath.Join(dir, "bootstrap")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ntouch "+mark+"\nsleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir, listen := filepath.Join(dir, "data"), freeAddr(t)
	file := filepath.Join(dir, "idem.yaml")
	yaml := fmt.Sprintf(`dataDir: %[1]s
listen: %[2]s
store: {postgres: {dsn: "postgres://idem@%[3]s/idem?connect_timeout=1"}}
lease: {ttl: 10s}
streams: [{name: events}, {name: failed}]
functions:
  - {name: fn}
  - {name: web, http: {url: "http://%[3]s/fn"}}
  - {name: proc, process: {command: %[4]s}}
mappings:
  - {name: from-kafka, source: {kafka: {brokers: ["%[3]s"], topic: orders, group: g}}, function: fn, startingPosition: TRIM_HORIZON, eventFormat: kafka}
  - {name: from-redis, source: {redis: {addr: "%[3]s", keys: [k0, k1]}}, function: web, startingPosition: TRIM_HORIZON}
  - {name: from-nats, source: {jetstream: {url: "nats://%[3]s", stream: S}}, function: proc, startingPosition: TRIM_HORIZON}
  - {name: from-kinesis, source: {kinesis: {stream: K, endpoint: "http://%[3]s", region: us-east-1}}, function: fn, startingPosition: LATEST}
  - {name: from-events, source: {stream: events}, function: proc, startingPosition: LATEST, destinationConfig: {onFailure: {stream: failed}}}
`, dataDir, listen, peer, script)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := validateRun(t, []string{"-c", file}, handlerOpts()...)
	if code != exitOK || stdout != file+": ok\n" {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	assertAbsent(t, dataDir, "validate")
	assertAbsent(t, mark, "validate (the process function ran)")
	assertFree(t, listen)

	// A connection validate made would be queued before this one.
	c, err := net.Dial("tcp", peer)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("validate connected to %s (from %s)", peer, got.RemoteAddr())
	}
}

// TestValidateOverrides: --data and --listen override the file as serve's
// do, and are checked as serve checks them.
func TestValidateOverrides(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "idem.yaml")
	if err := os.WriteFile(file, []byte("dataDir: "+filepath.Join(dir, "data")+"\nlisten: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := validateRun(t, []string{"-c", file, "--listen", "nowhere"})
	if code != exitError || !strings.Contains(stderr, `listen: "nowhere" is not a host:port address`) {
		t.Errorf("--listen nowhere: exit %d, stderr %q", code, stderr)
	}
	notDir := filepath.Join(dir, "idem.yaml")
	code, _, stderr = validateRun(t, []string{"-c", file, "--data", notDir})
	if want := fmt.Sprintf("%s: dataDir: %q is not a directory\n", file, notDir); code != exitError || stderr != want {
		t.Errorf("--data FILE: exit %d, stderr %q, want %q", code, stderr, want)
	}
	code, stdout, _ := validateRun(t, []string{"-c", file, "--data", filepath.Join(dir, "other")})
	if code != exitOK || stdout != file+": ok\n" {
		t.Errorf("--data DIR: exit %d, stdout %q", code, stdout)
	}
	assertAbsent(t, filepath.Join(dir, "other"), "validate")
}

// TestValidateUsage: validate needs -c, like serve, and a missing file is a
// problem, not a usage error.
func TestValidateUsage(t *testing.T) {
	if code, _, _ := validateRun(t, nil); code != exitUsage {
		t.Errorf("without -c: exit %d, want %d", code, exitUsage)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	code, stdout, stderr := validateRun(t, []string{"-c", missing, "--json"})
	var rep validateReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != exitError || rep.Valid || len(rep.Problems) != 1 || stderr != "" {
		t.Errorf("missing file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
