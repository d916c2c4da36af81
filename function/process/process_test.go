package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// binDir holds the test functions of testdata, built once per test binary
// (see binary).
var (
	binDir   string
	buildErr error
	build    sync.Once
)

var testFunctions = []string{"kinesis", "panic", "exit", "sleep", "overlap", "noop", "raw", "environ", "traceid"}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary returns the path of testdata/<name> built with go build: real
// Lambda functions, built as their authors would build them.
func binary(tb testing.TB, name string) string {
	tb.Helper()
	build.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "idem-process-test-")
		if buildErr != nil {
			return
		}
		args := []string{"build", "-o", binDir + string(os.PathSeparator)}
		for _, fn := range testFunctions {
			args = append(args, "./testdata/"+fn)
		}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// logs collects what a Function logs, for assertions.
type logs struct {
	mu   sync.Mutex
	recs []logRecord
	tb   testing.TB
}

type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type logHandler struct {
	l     *logs
	attrs []slog.Attr
}

func (h logHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h logHandler) WithGroup(string) slog.Handler            { return h }
func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{l: h.l, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	h.l.recs = append(h.l.recs, rec)
	return nil
}

// wait returns the first record that matches, waiting up to 10 seconds.
func (l *logs) wait(tb testing.TB, what string, match func(logRecord) bool) logRecord {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		for _, r := range l.recs {
			if match(r) {
				l.mu.Unlock()
				return r
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			l.dump(tb)
			tb.Fatalf("no log record %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *logs) dump(tb testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		tb.Logf("log %s %q %v", r.level, r.msg, r.attrs)
	}
}

// start runs the test function name with cfg (Name and Command filled in)
// and opts and closes it at the end of the test.
func start(t *testing.T, name string, cfg Config, opts ...Option) (*Function, *logs) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = name
	}
	cfg.Command = binary(t, name)
	return launch(t, cfg, opts...)
}

// launch runs cfg with opts, logging to the returned logs, which are dumped
// if the test fails, and closes it at the end of the test.
func launch(t *testing.T, cfg Config, opts ...Option) (*Function, *logs) {
	t.Helper()
	l := &logs{tb: t}
	f, err := New(cfg, append([]Option{WithLogger(slog.New(logHandler{l: l}))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			l.dump(t)
		}
	})
	return f, l
}

// batch makes a batch whose records carry data.
func batch(data ...string) *idem.Batch {
	recs := make([]idem.Record, len(data))
	for i, d := range data {
		seq := idem.SequenceOf(uint64(i + 1))
		recs[i] = idem.Record{Stream: "orders", ShardID: "shardId-000000000000", Sequence: seq,
			PartitionKey: "k", Data: []byte(d), ArrivalTime: time.Unix(1700000000, 0),
			IdempotencyKey: "orders/shardId-000000000000/" + string(seq)}
	}
	return idem.NewBatch("m", "f", newUUID(), recs, nil)
}

func invoke(t *testing.T, f *Function, b *idem.Batch) (function.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.Invoke(ctx, b)
}

func succeeds(t *testing.T, f *Function, data ...string) {
	t.Helper()
	res, err := invoke(t, f, batch(data...))
	if err != nil || len(res.Failures) != 0 || res.Invalid != "" {
		t.Fatalf("Invoke = %+v, %v; want success", res, err)
	}
}

func TestBatchItemFailures(t *testing.T) {
	t.Setenv("_LAMBDA_SERVER_PORT", "9001") // must not reach the function
	t.Setenv("IDEM_TEST_VAR", "inherited")
	f, l := start(t, "kinesis", Config{Name: "ship-order", MemorySize: 512, Region: "eu-west-1",
		Env: map[string]string{"IDEM_TEST_VAR": "configured"}})

	data := []string{"1", "2", "3", "4", "5", "6", "7", "fail", "9", "10"}
	b := batch(data...)
	res, err := invoke(t, f, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{b.Records[7].EventID()}; !slices.Equal(res.Failures, want) || res.Invalid != "" || res.Native {
		t.Fatalf("result %+v, want failures %q", res, want)
	}

	// Each line the handler prints is logged with the function's name
	// and the request it was printed for.
	third := b.Records[2]
	rec := l.wait(t, "for the third record", func(r logRecord) bool {
		return r.msg == "processing "+third.EventID()+" key "+third.IdempotencyKey
	})
	if rec.attrs["requestId"] != b.InvocationID || rec.attrs["function"] != "ship-order" || rec.attrs["stream"] != "stdout" {
		t.Fatalf("log attributes %v, want requestId %s, function ship-order, stream stdout", rec.attrs, b.InvocationID)
	}

	rec = l.wait(t, "with the environment", func(r logRecord) bool { return strings.HasPrefix(r.msg, "env ") })
	var env map[string]string
	if err := json.Unmarshal([]byte(strings.TrimPrefix(rec.msg, "env ")), &env); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	want := map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        "ship-order",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
		"AWS_REGION":                      "eu-west-1",
		"AWS_DEFAULT_REGION":              "eu-west-1",
		"_HANDLER":                        "kinesis",
		"LAMBDA_TASK_ROOT":                wd,
		"AWS_LAMBDA_RUNTIME_API":          runtimeAPI(t, f, "1"),
		"IDEM_TEST_VAR":                   "configured",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if v, ok := env["_LAMBDA_SERVER_PORT"]; ok {
		t.Errorf("_LAMBDA_SERVER_PORT = %q reached the process", v)
	}
}

func TestFunctionErrors(t *testing.T) {
	cases := []struct {
		name    string
		fn      string
		data    string
		timeout time.Duration
		typ     string
		msg     string
	}{
		// aws-lambda-go posts the panic's value type and message, then
		// exits.
		{name: "panic", fn: "panic", data: "panic", typ: "boundsError", msg: "runtime error: index out of range [3] with length 1"},
		{name: "os.Exit mid-batch", fn: "exit", data: "exit", typ: TypeExitError, msg: "Runtime exited with error: exit status 1"},
		{name: "timeout", fn: "sleep", data: "sleep", timeout: time.Second, typ: function.TypeTimeout, msg: "Task timed out after 1.00 seconds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, _ := start(t, c.fn, Config{Timeout: c.timeout})
			succeeds(t, f, "ok")
			res, err := invoke(t, f, batch("ok", c.data, "ok"))
			var fe *function.Error
			if !errors.As(err, &fe) {
				t.Fatalf("Invoke = %+v, %v; want a *function.Error", res, err)
			}
			if fe.Type != c.typ || fe.Message != c.msg {
				t.Fatalf("error %q %q, want %q %q", fe.Type, fe.Message, c.typ, c.msg)
			}
			if c.fn == "panic" {
				var re *RuntimeError
				if !errors.As(err, &re) || !slices.ContainsFunc(re.StackTrace, func(s string) bool { return strings.Contains(s, "handler") }) {
					t.Fatalf("no stack trace naming the handler in %#v", err)
				}
			}
			// The process is replaced, and the next batch succeeds.
			succeeds(t, f, "ok")
			st := f.Status()
			if st.Restarts != 1 || st.Running != 1 || st.LastExit == "" || st.CrashLoop {
				t.Fatalf("status %+v, want 1 restart and the exit described", st)
			}
			if c.fn == "sleep" && !strings.Contains(st.LastExit, "timed out") {
				t.Fatalf("LastExit %q does not say the process timed out", st.LastExit)
			}
		})
	}
}

func TestConcurrency(t *testing.T) {
	const n = 3
	dir := t.TempDir()
	f, _ := start(t, "overlap", Config{Concurrency: n, Timeout: 20 * time.Second,
		Env: map[string]string{"OVERLAP_DIR": dir, "OVERLAP_N": strconv.Itoa(n)}})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = invoke(t, f, batch("x"))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	read := func(pattern string) []int64 {
		paths, _ := filepath.Glob(filepath.Join(dir, pattern))
		var ts []int64
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			v, err := strconv.ParseInt(string(b), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, v)
		}
		return ts
	}
	starts, ends := read("*.start"), read("*.end")
	if len(starts) != n || len(ends) != n {
		t.Fatalf("%d starts and %d ends, want %d each", len(starts), len(ends), n)
	}
	// Every invocation started before any ended: all n ran at once.
	if slices.Max(starts) >= slices.Min(ends) {
		t.Fatalf("starts %v, ends %v: the invocations did not overlap", starts, ends)
	}
}

func TestConcurrencyLimit(t *testing.T) {
	// With one process, a second invocation waits for the first: the
	// overlap function, waiting for 2 starts, never sees the second one
	// start while the first runs, and gives up; then the second runs.
	dir := t.TempDir()
	f, _ := start(t, "overlap", Config{Timeout: 10 * time.Second,
		Env: map[string]string{"OVERLAP_DIR": dir, "OVERLAP_N": "2", "OVERLAP_WAIT": "300ms"}})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { _, errs[i] = invoke(t, f, batch("x")) })
	}
	wg.Wait()
	var alone, ok int
	for _, err := range errs {
		var fe *function.Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &fe) && fe.Type == "errorString" && fe.Message == "the other invocations never started":
			alone++
		default:
			t.Fatalf("err = %v, want the function's own errorString", err)
		}
	}
	if alone != 1 || ok != 1 {
		t.Fatalf("errors %v: want the first alone and the second to succeed", errs)
	}
}

// runtimeAPI returns the AWS_LAMBDA_RUNTIME_API of f's process number id,
// which must be running.
func runtimeAPI(t *testing.T, f *Function, id string) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	inst := f.instances[id]
	if inst == nil {
		t.Fatalf("no process %s", id)
	}
	return inst.ln.Addr().String()
}

// get sends a Runtime API request from this test's process, which is not
// the function's, and returns the status, or the error when the
// connection is closed without an answer.
func get(addr, path string) (int, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

func TestRuntimeAPIIsHostPort(t *testing.T) {
	f, _ := start(t, "kinesis", Config{Concurrency: 2})
	succeeds(t, f, "x")
	a, b := runtimeAPI(t, f, "1"), runtimeAPI(t, f, "2")
	for _, addr := range []string{a, b} {
		if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" || strings.Contains(addr, "/") {
			t.Fatalf("AWS_LAMBDA_RUNTIME_API %q, want 127.0.0.1:PORT", addr)
		}
	}
	if a == b {
		t.Fatalf("both processes have %s: each needs a listener of its own", a)
	}
}

func TestRuntimeAPIRefusesOtherProcesses(t *testing.T) {
	if !peerChecked {
		t.Skip("connections are checked against the process on Linux only")
	}
	f, l := start(t, "noop", Config{})
	succeeds(t, f, "x")
	addr := runtimeAPI(t, f, "1")
	// This test's process can reach the port, but it is not the
	// function's process: every request is refused, unanswered, before
	// it can take an invocation or answer one.
	for _, path := range []string{"/2018-06-01/runtime/invocation/next", "/2018-06-01/runtime/invocation/x/response", "/nothing"} {
		if code, err := get(addr, path); err == nil {
			t.Errorf("GET %s from another process = %d, want the connection closed", path, code)
		}
	}
	l.wait(t, "about the refused connection", func(r logRecord) bool {
		return r.level == slog.LevelWarn && strings.HasPrefix(r.msg, "refused a Runtime API connection")
	})
	succeeds(t, f, "x") // the process is unaffected
}

func TestRuntimeAPIClosedWithProcess(t *testing.T) {
	f, _ := start(t, "sleep", Config{Timeout: time.Second})
	succeeds(t, f, "x")
	old := runtimeAPI(t, f, "1")
	f.mu.Lock()
	oldLn := f.instances["1"].ln
	f.mu.Unlock()
	if _, err := invoke(t, f, batch("sleep")); err == nil {
		t.Fatal("the sleeping invocation did not time out")
	}
	succeeds(t, f, "x") // a new process, on a new listener
	if runtimeAPI(t, f, "2") == old {
		t.Fatalf("the new process reuses %s", old)
	}
	// The old process's listener is closed with it.
	if _, err := oldLn.Listener.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on the old listener = %v, want net.ErrClosed", err)
	}
}

func TestInitFailure(t *testing.T) {
	t.Run("exit", func(t *testing.T) {
		f, _ := start(t, "exit", Config{Env: map[string]string{"EXIT_AT_INIT": "1"}})
		_, err := invoke(t, f, batch("x"))
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != TypeExitError || fe.Message != "Runtime exited with error: exit status 3 during initialization" {
			t.Fatalf("err = %#v, want an init exit error", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !f.Status().CrashLoop {
			if time.Now().After(deadline) {
				t.Fatalf("status %+v, want a crash loop", f.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := f.Status(); st.Restarts < 3 || st.LastExit != "exit status 3" {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("reported", func(t *testing.T) {
		f, _ := start(t, "raw", Config{Env: map[string]string{"RAW_MODE": "init-error"}})
		_, err := invoke(t, f, batch("x"))
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != "Runtime.ConfigError" || fe.Message != "missing TABLE_NAME" {
			t.Fatalf("err = %#v, want the reported init error", err)
		}
	})
}

func TestCustomRuntime(t *testing.T) {
	f, l := start(t, "raw", Config{})
	succeeds(t, f, "x")

	_, err := invoke(t, f, batch("big"))
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != function.TypeResponseTooLarge {
		t.Fatalf("err = %v, want %s", err, function.TypeResponseTooLarge)
	}
	_, err = invoke(t, f, batch("typed-header"))
	if !errors.As(err, &fe) || fe.Type != "Custom.HeaderOnly" || !strings.Contains(fe.Message, "something broke") {
		t.Fatalf("err = %v, want the header's type and the body quoted", err)
	}
	succeeds(t, f, "x")
	if st := f.Status(); st.Restarts != 0 {
		t.Fatalf("status %+v: the process should have survived its errors", st)
	}

	// Close sends the extension its SHUTDOWN event.
	f.Close()
	rec := l.wait(t, "with the SHUTDOWN event", func(r logRecord) bool { return strings.HasPrefix(r.msg, "extension event ") })
	var ev struct {
		EventType      string `json:"eventType"`
		DeadlineMs     int64  `json:"deadlineMs"`
		ShutdownReason string `json:"shutdownReason"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(rec.msg, "extension event ")), &ev); err != nil || ev.EventType != "SHUTDOWN" || ev.DeadlineMs == 0 {
		t.Fatalf("extension event %q (%v)", rec.msg, err)
	}
	if _, err := f.Invoke(context.Background(), batch("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Invoke after Close = %v, want ErrClosed", err)
	}
}

func TestClose(t *testing.T) {
	before := runtime.NumGoroutine()
	f, l := start(t, "kinesis", Config{Concurrency: 2})
	succeeds(t, f, "x")
	begin := time.Now()
	f.Close()
	f.Close() // idempotent
	if d := time.Since(begin); d > stopGrace {
		t.Errorf("Close took %s: the processes should have exited on SIGTERM", d)
	}
	// aws-lambda-go's lambda.WithEnableSIGTERM handler ran.
	l.wait(t, "from the SIGTERM handler", func(r logRecord) bool { return r.msg == "sigterm" })
	if st := f.Status(); st.Running != 0 || st.Restarts != 0 {
		t.Fatalf("status after Close %+v", st)
	}
	// No goroutine of the Function outlives Close. (net/http's client
	// connections of this test may take a moment to go.)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before New, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseDuringInvocation(t *testing.T) {
	// An invocation that Close interrupts fails with an error that says
	// so, not with an unexplained exit.
	f, _ := start(t, "sleep", Config{Timeout: time.Minute})
	done := make(chan error, 1)
	go func() {
		_, err := f.Invoke(context.Background(), batch("sleep"))
		done <- err
	}()
	waitBusy(t, f)
	f.Close()
	err := <-done
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != TypeExitError || !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %#v, want an exit error wrapping ErrClosed", err)
	}
}

func TestInvokeContext(t *testing.T) {
	f, _ := start(t, "sleep", Config{Timeout: time.Second})
	succeeds(t, f, "x")

	// A context deadline bounds the wait for a process, not the run: the
	// process that receives the invocation has all of Timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := f.Invoke(ctx, batch("sleep"))
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != function.TypeTimeout || fe.Message != "Task timed out after 1.00 seconds" {
		t.Fatalf("err = %v, want the whole second's timeout", err)
	}

	// Canceled: Invoke returns at once with ctx.Err().
	succeeds(t, f, "x")
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := f.Invoke(ctx, batch("x", "sleep")); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestInvokeContextBoundsWait(t *testing.T) {
	f, _ := start(t, "sleep", Config{Timeout: 5 * time.Second})
	succeeds(t, f, "x")
	// The only process is busy for seconds: a second invocation waits for
	// it until its context's deadline.
	busy := make(chan error, 1)
	go func() { _, err := invoke(t, f, batch("sleep")); busy <- err }()
	waitBusy(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := f.Invoke(ctx, batch("x"))
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != function.TypeTimeout || !strings.Contains(fe.Message, "waiting for an idle process") {
		t.Fatalf("err = %v, want a timeout waiting for an idle process", err)
	}
	<-busy
}

// waitBusy waits until one of f's processes is running an invocation.
func waitBusy(t *testing.T, f *Function) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		busy := false
		for _, inst := range f.instances {
			inst.mu.Lock()
			busy = busy || inst.cur != nil
			inst.mu.Unlock()
		}
		f.mu.Unlock()
		if busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the invocation never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTimeoutIsWholeAfterRestart: an invocation that follows a timeout
// waits for the killed process's successor, and still gets its whole
// timeout, however its caller's deadline was set (as the Invoke API and
// the engine set it: the call's start plus the timeout).
func TestTimeoutIsWholeAfterRestart(t *testing.T) {
	const timeout = time.Second
	f, _ := start(t, "sleep", Config{Timeout: timeout})
	succeeds(t, f, "x")
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, err := f.Invoke(ctx, batch("sleep"))
		cancel()
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != function.TypeTimeout || fe.Message != "Task timed out after 1.00 seconds" {
			t.Fatalf("invocation %d: err = %v, want Task timed out after 1.00 seconds", i+1, err)
		}
	}
	succeeds(t, f, "x") // on the third restart
	if st := f.Status(); st.Restarts != 3 || st.CrashLoop {
		t.Fatalf("status %+v: want 3 restarts, and no crash loop (idem killed them)", st)
	}
}

func TestNewValidates(t *testing.T) {
	noop := binary(t, "noop")
	cases := []struct {
		cfg  Config
		want []string
	}{
		{Config{}, []string{"name \"\"", "command: required"}},
		{Config{Name: "a b", Command: noop, Concurrency: -1, Timeout: 901 * time.Second, MemorySize: 64, Region: "EU"},
			[]string{"name \"a b\"", "concurrency -1", "timeout 15m1s", "memorySize 64", "region \"EU\""}},
		{Config{Name: "f", Command: "./no/such/file"}, []string{"no such file"}},
		{Config{Name: "f", Command: "no-such-command-idem"}, []string{"executable file not found"}},
		{Config{Name: "f", Command: noop, Dir: "/no/such/dir"}, []string{"dir"}},
		{Config{Name: "f", Command: noop, Env: map[string]string{"AWS_REGION": "x", "_LAMBDA_SERVER_PORT": "1", "A=B": "c"}},
			[]string{"env AWS_REGION: set by idem (set region instead)", "env _LAMBDA_SERVER_PORT", "env \"A=B\""}},
	}
	for _, c := range cases {
		f, err := New(c.cfg)
		if err == nil {
			f.Close()
			t.Fatalf("New(%+v) succeeded", c.cfg)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %v; want it to mention %q", c.cfg, err, w)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	for i, w := range want {
		if got := backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := backoff(100); got != maxBackoff {
		t.Errorf("backoff(100) = %s, want %s", got, maxBackoff)
	}
}

func BenchmarkInvoke(b *testing.B) {
	f, err := New(Config{Name: "noop", Command: binary(b, "noop")}, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bt := batch("x")
	ctx := context.Background()
	if _, err := f.Invoke(ctx, bt); err != nil { // wait for the process to start
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Invoke(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(bt.Records))/b.Elapsed().Seconds(), "records/s")
}
