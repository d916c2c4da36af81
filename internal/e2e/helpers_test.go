package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/server"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// binDir is the temporary directory the binaries are built into; TestMain
// creates it and removes it after the tests.
var binDir string

// TestMain creates the directory the binaries are built into, runs the
// tests and removes the directory.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "idem-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// built holds the result of building the binaries, once per test binary.
var built struct {
	once          sync.Once
	idem, counter string
	err           error
}

// binaries returns the paths of the idem and counter binaries, building them
// on first use with `go build` from the module root.
func binaries(t *testing.T) (idemBin, counterBin string) {
	t.Helper()
	built.once.Do(func() {
		built.err = buildBinaries(binDir)
		built.idem = filepath.Join(binDir, "idem")
		built.counter = filepath.Join(binDir, "counter")
	})
	if built.err != nil {
		t.Fatalf("building the binaries: %v", built.err)
	}
	return built.idem, built.counter
}

// buildBinaries builds ./cmd/idem and ./examples/counter into dir, as
// dir/idem and dir/counter, in one `go build`; ./examples/transfer too, as
// dir/transfer (TestChaosPostgresTransfers).
func buildBinaries(dir string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", dir+string(filepath.Separator), "./cmd/idem", "./examples/counter", "./examples/transfer")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build in %s: %v\n%s", root, err, out)
	}
	return nil
}

// moduleRoot returns the module's root: two levels above the package
// directory, which is the test's working directory.
func moduleRoot() (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	if !bytes.Contains(mod, []byte("module github.com/idem-run/idem\n")) {
		return "", fmt.Errorf("module root %s: go.mod is not github.com/idem-run/idem's", root)
	}
	return root, nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago: it listens on port 0, takes the port and closes the listener.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writeFile writes content to path, failing the test on error.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// serveProc is one running `serve` child process.
type serveProc struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	done    chan struct{} // closed when the process has exited and been waited for
}

// startServe runs `bin serve -c cfg` plus extra arguments, with its output
// in a log file, and waits until its HTTP API at addr answers. A cleanup
// kills the process if the test left it running and, when the test failed,
// logs the end of its output.
func startServe(t *testing.T, bin, cfg, addr string, extra ...string) *serveProc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, append([]string{"serve", "-c", cfg}, extra...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &serveProc{cmd: cmd, addr: addr, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("end of the output of serve (pid %d):\n%s", cmd.Process.Pid, p.tail(20))
		}
	})
	if err := p.waitHealthy(60 * time.Second); err != nil {
		t.Fatalf("serve (pid %d) did not come up: %v\n%s", cmd.Process.Pid, err, p.tail(40))
	}
	return p
}

// waitHealthy polls GET /healthz until it answers 200, the process exits or
// the timeout passes.
func (p *serveProc) waitHealthy(timeout time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited with %v", p.cmd.ProcessState)
		default:
		}
		resp, err := c.Get("http://" + p.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET /healthz did not answer 200 within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL, unless the process has exited, and waits for it.
func (p *serveProc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code once the process has exited;
// it fails the test if that takes more than a minute.
func (p *serveProc) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("serve did not exit within a minute of SIGTERM\n%s", p.tail(40))
	}
	return p.cmd.ProcessState.ExitCode()
}

// tail returns the last n lines of the process's output.
func (p *serveProc) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runCLI runs bin with args and stdin (nil: none) and returns what it wrote
// to stdout and stderr and its exit code. It fails the test if the command
// cannot be run or takes more than two minutes.
func runCLI(t *testing.T, bin string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
	default:
		t.Fatalf("running %s %q: %v\nstderr: %s", filepath.Base(bin), args, err, errOut.String())
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// api is a client of idem's HTTP API.
type api struct {
	base  string
	tr    *http.Transport
	hc    *http.Client
	token string // sent as a Bearer token when set (auth.tokens)
}

// newAPI returns a client of the API at addr (host:port).
func newAPI(addr string) *api {
	tr := &http.Transport{MaxIdleConnsPerHost: 32, MaxConnsPerHost: 32}
	return &api{base: "http://" + addr, tr: tr, hc: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// closeIdle closes the client's idle connections, among them any that its
// transport dialed for a request another connection served: a server counts
// such a connection, which never carried a request, as busy for its first
// five seconds, which delays its shutdown (TestSIGTERMWithFreshConnection).
func (a *api) closeIdle() { a.tr.CloseIdleConnections() }

// httpError is a response with a status other than 2xx.
type httpError struct {
	code int
	body string
}

// Error returns the status code and the body.
func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// do sends a request with body (if not nil) as JSON and decodes a 2xx
// response into out (if not nil; a *[]byte receives the raw body).
func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &httpError{code: resp.StatusCode, body: strings.TrimSpace(string(data))}
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*out = data
		return nil
	default:
		return json.Unmarshal(data, out)
	}
}

// put appends recs to stream with one POST.
func (a *api) put(ctx context.Context, stream string, recs []server.PutRecord) (server.PutResponse, error) {
	var resp server.PutResponse
	err := a.do(ctx, http.MethodPost, "/v1/streams/"+url.PathEscape(stream)+"/records", server.PutRequest{Records: recs}, &resp)
	if err == nil && len(resp.Records) != len(recs) {
		err = fmt.Errorf("put %d records, got %d results", len(recs), len(resp.Records))
	}
	return resp, err
}

// status returns GET /v1/status.
func (a *api) status(ctx context.Context) ([]engine.ShardStatus, error) {
	var st server.StatusResponse
	err := a.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st.Shards, err
}

// streamInfo is the part of GET /v1/streams the tests read.
type streamInfo struct {
	Name   string `json:"name"`
	Shards []struct {
		ID     string `json:"id"`
		Latest uint64 `json:"latest"`
	} `json:"shards"`
}

// latest returns each shard's newest sequence of stream, from GET
// /v1/streams.
func (a *api) latest(ctx context.Context, stream string) (map[string]uint64, error) {
	var infos []streamInfo
	if err := a.do(ctx, http.MethodGet, "/v1/streams", nil, &infos); err != nil {
		return nil, err
	}
	for _, in := range infos {
		if in.Name == stream {
			out := make(map[string]uint64, len(in.Shards))
			for _, sh := range in.Shards {
				out[sh.ID] = sh.Latest
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("stream %q not in GET /v1/streams", stream)
}

// records returns the records of one shard of stream after sequence after
// (0: from the oldest), page by page.
func (a *api) records(ctx context.Context, stream, shard string, after uint64) ([]server.RecordJSON, error) {
	var out []server.RecordJSON
	next := ""
	if after > 0 {
		next = fmt.Sprintf("%020d", after)
	}
	for {
		q := url.Values{"shard": {shard}, "limit": {"10000"}}
		if next != "" {
			q.Set("after", next)
		}
		var page server.RecordsResponse
		if err := a.do(ctx, http.MethodGet, "/v1/streams/"+url.PathEscape(stream)+"/records?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Records...)
		if page.Next == "" {
			return out, nil
		}
		next = page.Next
	}
}

// allRecords returns every record of stream, by shard.
func (a *api) allRecords(ctx context.Context, stream string) (map[string][]server.RecordJSON, error) {
	shards, err := a.latest(ctx, stream)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]server.RecordJSON, len(shards))
	for id := range shards {
		recs, err := a.records(ctx, stream, id, 0)
		if err != nil {
			return nil, err
		}
		out[id] = recs
	}
	return out, nil
}

// state returns a committed state value; ok is false when there is none.
func (a *api) state(ctx context.Context, scope, key string) (value string, ok bool, err error) {
	var b []byte
	err = a.do(ctx, http.MethodGet, "/v1/state/"+url.PathEscape(scope)+"/"+url.PathEscape(key), nil, &b)
	var he *httpError
	if errors.As(err, &he) && he.code == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

// states reads the state values of keys with a few concurrent requests.
// Keys without a value are absent from the result.
func (a *api) states(ctx context.Context, scope string, keys []string) (map[string]string, error) {
	const workers = 8
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		out      = make(map[string]string, len(keys))
		firstErr error
		wg       sync.WaitGroup
	)
	work := make(chan string)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				v, ok, err := a.state(ctx, scope, k)
				mu.Lock()
				switch {
				case err != nil && firstErr == nil:
					firstErr = fmt.Errorf("state %s/%s: %w", scope, k, err)
					cancel()
				case ok:
					out[k] = v
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, k := range keys {
		select {
		case work <- k:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// parseSeq reads a decimal sequence; "" (no checkpoint yet) is 0.
func parseSeq(t *testing.T, s string) uint64 {
	t.Helper()
	if s == "" {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("sequence %q: %v", s, err)
	}
	return n
}

// eventually calls check every 100 ms until it reports done, and fails the
// test with check's last description if timeout passes first.
func eventually(t *testing.T, timeout time.Duration, what string, check func() (done bool, desc string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, desc := check()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %v: %s", what, timeout, desc)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCaughtUp waits until mapping has resolved every record of stream:
// for each of the stream's shards, /v1/status shows the mapping's shard with
// lag 0, nothing in flight, and checkpoint == latest == the shard's newest
// sequence as GET /v1/streams reports it. It returns that status, by shard.
func waitCaughtUp(t *testing.T, a *api, mapping, stream string, timeout time.Duration) map[string]engine.ShardStatus {
	t.Helper()
	ctx := context.Background()
	var out map[string]engine.ShardStatus
	eventually(t, timeout, "mapping "+mapping+" catching up with "+stream, func() (bool, string) {
		latest, err := a.latest(ctx, stream)
		if err != nil {
			return false, err.Error()
		}
		sts, err := a.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		out = make(map[string]engine.ShardStatus)
		for _, s := range sts {
			if s.Mapping == mapping {
				out[s.Shard] = s
			}
		}
		if len(out) != len(latest) {
			return false, fmt.Sprintf("status has %d shards of %s, the stream %d", len(out), mapping, len(latest))
		}
		for id, l := range latest {
			s := out[id]
			cp, ok := s.Checkpoint.Uint64()
			sl, ok2 := s.Latest.Uint64()
			if !ok || !ok2 || cp != l || sl != l || s.LagRecords != 0 || s.InFlight != 0 {
				return false, fmt.Sprintf("shard %s: state %s, checkpoint %q, latest %q, lag %d, in flight %d; the stream's latest is %d (last error %q)",
					id, s.State, s.Checkpoint, s.Latest, s.LagRecords, s.InFlight, l, s.LastError)
			}
		}
		return true, ""
	})
	return out
}

// kafkaTopic starts an in-process Kafka cluster (kfake) with topic of
// partitions, and a client that produces to it; both close when the test
// ends.
func kafkaTopic(t *testing.T, topic string, partitions int32) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(fc.ListenAddrs()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return fc, cl
}
