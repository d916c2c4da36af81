package testsvc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests run against kinesalite (npm install -g kinesalite), which they
// start on a free loopback port, or against IDEM_TEST_KINESIS_ENDPOINT.

// kinesaliteOptions are kinesalite's settings for tests: streams change
// state at once, and many streams may exist.
const kinesaliteOptions = `{createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100}`

// startScript runs kinesalite's server on 127.0.0.1 (its command line
// listens on every interface), prints the port, and exits when its standard
// input closes, so that it never outlives the test binary.
const startScript = `process.on("uncaughtException", (err) => {
  // kinesalite rethrows a client's dropped connection, which an engine
  // stopping mid-GetRecords does legitimately: ignore that one.
  if (err && err.code === "ECONNRESET") return;
  console.error(err); process.exit(1);
});
const k = require(process.argv[1]);
const srv = k(` + kinesaliteOptions + `);
srv.listen(0, "127.0.0.1", () => console.log("LISTENING " + srv.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();`

var kl struct {
	once     sync.Once
	endpoint string
	absent   string
	err      error
	cmd      *exec.Cmd
	stdin    interface{ Close() error }
	stderr   bytes.Buffer
}

// KinesisEndpoint returns the Kinesis endpoint of the tests: the
// IDEM_TEST_KINESIS_ENDPOINT, or kinesalite started on a free loopback port
// the first time (stopped by StopKinesalite, or when the test binary
// exits). Without kinesalite it skips t (fails it under CI=true).
func KinesisEndpoint(t testing.TB) string {
	t.Helper()
	if e := os.Getenv("IDEM_TEST_KINESIS_ENDPOINT"); e != "" {
		return e
	}
	kl.once.Do(startKinesalite)
	if kl.absent != "" {
		Absent(t, "%s", kl.absent)
	}
	if kl.err != nil {
		t.Fatalf("starting kinesalite: %v", kl.err)
	}
	return kl.endpoint
}

// findKinesalite looks for the kinesalite command on PATH, then in the
// module's .ci/node_modules and node_modules.
func findKinesalite() string {
	if p, err := exec.LookPath("kinesalite"); err == nil {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			for _, p := range []string{".ci/node_modules/.bin/kinesalite", "node_modules/.bin/kinesalite"} {
				if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
					return filepath.Join(dir, p)
				}
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func startKinesalite() {
	bin := findKinesalite()
	if bin == "" {
		kl.absent = "kinesalite is not installed (npm install -g kinesalite), and IDEM_TEST_KINESIS_ENDPOINT is not set"
		return
	}
	node, err := exec.LookPath("node")
	if err != nil {
		kl.absent = "node is not installed, so kinesalite cannot run"
		return
	}
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		kl.err = err
		return
	}
	index := filepath.Join(filepath.Dir(real), "index.js")
	if _, err := os.Stat(index); err != nil {
		kl.err = fmt.Errorf("kinesalite's index.js is not beside %s: %w", real, err)
		return
	}
	cmd := exec.Command(node, "-e", startScript, index)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		kl.err = err
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		kl.err = err
		return
	}
	cmd.Stderr = &kl.stderr
	if err := cmd.Start(); err != nil {
		kl.err = err
		return
	}
	kl.cmd, kl.stdin = cmd, stdin
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				port <- p
			}
		}
		close(port)
	}()
	select {
	case p, ok := <-port:
		if !ok {
			err := cmd.Wait()
			kl.cmd = nil
			kl.err = fmt.Errorf("kinesalite exited (%v): %s", err, kl.stderr.String())
			return
		}
		kl.endpoint = "http://127.0.0.1:" + p
	case <-time.After(30 * time.Second):
		kl.err = fmt.Errorf("kinesalite did not listen within 30s")
	}
}

// StopKinesalite stops the kinesalite KinesisEndpoint started, if any; call
// it from TestMain after m.Run.
func StopKinesalite() {
	if kl.cmd == nil {
		return
	}
	kl.stdin.Close()
	done := make(chan struct{})
	go func() { kl.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		kl.cmd.Process.Kill()
		<-done
	}
}
