package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kinesis"
)

// The Kinesis kind runs against IDEM_TEST_KINESIS_ENDPOINT, or kinesalite
// (npm install -g kinesalite), which it starts once per test binary on a
// loopback port, as source/kinesis' tests do. kinesalite exits when its
// standard input closes, that is when the test binary exits.

// engineKinesalite is the kinesalite of this test binary.
var engineKinesalite struct {
	once     sync.Once
	endpoint string
	absent   string
	err      error
	cmd      *exec.Cmd
	stdin    io.WriteCloser // kept open for kinesalite's lifetime
	stderr   bytes.Buffer

	mu     sync.Mutex
	exited error // why kinesalite exited, with its standard error
}

// kinesaliteExited says why kinesalite exited, or "" while it runs (or
// when the tests use IDEM_TEST_KINESIS_ENDPOINT).
func kinesaliteExited() string {
	kl := &engineKinesalite
	kl.mu.Lock()
	defer kl.mu.Unlock()
	if kl.exited == nil {
		return ""
	}
	return " (" + kl.exited.Error() + ")"
}

// kinesaliteScript runs kinesalite's server on 127.0.0.1, with streams that
// change state at once, prints the port, and exits when its standard input
// closes.
//
// kinesalite 3.3.3 throws from a request's "error" handler, which Node 16
// and later call when a client disconnects before its response is sent
// ("aborted", ECONNRESET): a GetRecords cancelled when an engine stops
// would kill the server for every later test. The script survives those.
const kinesaliteScript = `process.on("uncaughtException", (err) => {
  if (err && err.code === "ECONNRESET") { console.error("ignored: " + err.message); return; }
  console.error(err); process.exit(1);
});
const k = require(process.argv[1]);
const srv = k({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 100});
srv.listen(0, "127.0.0.1", () => console.log("LISTENING " + srv.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();`

// kinesisEndpoint returns the Kinesis endpoint of the tests, starting
// kinesalite the first time; without it, it skips t (fails it under
// CI=true).
func kinesisEndpoint(t testing.TB) string {
	t.Helper()
	if e := os.Getenv("IDEM_TEST_KINESIS_ENDPOINT"); e != "" {
		return e
	}
	kl := &engineKinesalite
	kl.once.Do(startEngineKinesalite)
	if kl.absent != "" {
		testsvc.Absent(t, "%s", kl.absent)
	}
	if kl.err != nil {
		t.Fatalf("starting kinesalite: %v", kl.err)
	}
	return kl.endpoint
}

// findKinesaliteBin looks for the kinesalite command on PATH, then in the
// module's .ci/node_modules and node_modules.
func findKinesaliteBin() string {
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

func startEngineKinesalite() {
	kl := &engineKinesalite
	bin := findKinesaliteBin()
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
	cmd := exec.Command(node, "-e", kinesaliteScript, index)
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
			kl.err = fmt.Errorf("kinesalite exited (%v): %s", err, kl.stderr.String())
			return
		}
		kl.endpoint = "http://127.0.0.1:" + p
		go func() {
			err := cmd.Wait()
			kl.mu.Lock()
			kl.exited = fmt.Errorf("kinesalite exited: %v: %s", err, kl.stderr.String())
			kl.mu.Unlock()
		}()
	case <-time.After(30 * time.Second):
		kl.err = fmt.Errorf("kinesalite did not listen within 30s")
	}
}

// openKinesisSource creates a Kinesis stream of shards shards, deleted when
// t ends. Kinesis routes a partition key to a shard by its MD5 hash.
func openKinesisSource(t *testing.T, _ *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	endpoint := kinesisEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := awskinesis.New(awskinesis.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("idem", "idem", ""),
	})
	name := uniqueStreamName("kinesis")
	if _, err := client.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(int32(shards))}); err != nil {
		t.Fatalf("creating stream %s: %v%s", name, err, kinesaliteExited())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.DeleteStream(ctx, &awskinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil {
			t.Errorf("deleting stream %s: %v%s", name, err, kinesaliteExited())
		}
	})
	for {
		out, err := client.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatalf("describing stream %s: %v", name, err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s is not ACTIVE: %v", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	src, err := kinesis.New(ctx, name, kinesis.WithEndpoint(endpoint), kinesis.WithRegion("us-east-1"),
		kinesis.WithPollInterval(20*time.Millisecond), kinesis.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("kinesis.New(%s): %v", name, err)
	}
	t.Cleanup(func() { src.Close() })
	return src, name, func(key string, data ...string) {
		t.Helper()
		// One PutRecords call of up to 500 records at a time: Kinesis
		// appends a call's records to their shard in the call's order.
		for len(data) > 0 {
			n := min(len(data), 500)
			entries := make([]types.PutRecordsRequestEntry, n)
			for i, d := range data[:n] {
				entries[i] = types.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: []byte(d)}
			}
			out, err := client.PutRecords(context.Background(), &awskinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
			if err != nil {
				t.Fatalf("PutRecords to %s: %v%s", name, err, kinesaliteExited())
			}
			if c := aws.ToInt32(out.FailedRecordCount); c > 0 {
				for _, r := range out.Records {
					if r.ErrorCode != nil {
						t.Fatalf("PutRecords to %s: %d records failed, first: %s %s", name, c, aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
					}
				}
			}
			data = data[n:]
		}
	}
}
