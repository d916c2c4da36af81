package testsvc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 event tests run against versitygw (Versity's S3 gateway, Apache-2.0),
// a real S3-compatible store that sends bucket notifications to a webhook
// or publishes them to NATS, Kafka or RabbitMQ. .ci/run installs it with
// `go install github.com/versity/versitygw/cmd/versitygw@v1.8.0`.
//
// Behaviours of versitygw v1.8.0 the tests rely on, read off its source:
//   - at start it POSTs (or publishes) a test notification
//     {"Service":"S3","Event":"s3:TestEvent",...}, and refuses to start when
//     the webhook's connection is refused;
//   - one notification per object operation, {"Records":[one record]}, sent
//     from a goroutine with a 3 s timeout and no retry: a notification that
//     fails is lost, so the tests put a retrying relay in front of idem;
//   - eventName carries the "s3:" prefix (s3:ObjectCreated:Put), eventTime
//     has whole seconds, versionId is null on an unversioned bucket, eTag is
//     quoted, and the sequencer is a process-wide counter from 1;
//   - URL userinfo in --event-webhook-url is sent as HTTP Basic
//     authorization (Go's net/http does it), and the URL is printed at start.

// VersityGWAccessKey and VersityGWSecretKey are the root credentials the
// tests' versitygw runs with.
const (
	VersityGWAccessKey = "idemtestaccess"
	VersityGWSecretKey = "idemtestsecretkey0123456789"
)

// VersityGW is a versitygw process with a posix backend in a temporary
// directory, listening on a loopback port.
type VersityGW struct {
	// Endpoint is its S3 endpoint, http://127.0.0.1:port.
	Endpoint string
	// Root is the backend's directory: one subdirectory per bucket.
	Root string

	cmd    *exec.Cmd
	mu     sync.Mutex
	output bytes.Buffer
	done   chan struct{}
}

// VersityGWOptions says where a VersityGW sends its notifications: one of
// WebhookURL or NATSURL (with NATSSubject).
type VersityGWOptions struct {
	WebhookURL  string
	NATSURL     string
	NATSSubject string
}

// findVersityGW looks for versitygw on PATH, then in GOBIN and GOPATH/bin,
// where go install puts it.
func findVersityGW() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// StartVersityGW starts versitygw for t (stopped at its cleanup), or skips
// t (fails it under CI=true) when versitygw is not installed.
func StartVersityGW(t testing.TB, o VersityGWOptions) *VersityGW {
	t.Helper()
	bin := findVersityGW()
	if bin == "" {
		Absent(t, "versitygw is not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
		return nil
	}
	root := t.TempDir()
	g := &VersityGW{Root: root}
	var lastErr error
	for range 5 { // a free port can be taken before versitygw binds it
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--port", addr, "--access", VersityGWAccessKey, "--secret", VersityGWSecretKey, "--quiet"}
		switch {
		case o.WebhookURL != "":
			args = append(args, "--event-webhook-url", o.WebhookURL)
		case o.NATSURL != "":
			args = append(args, "--event-nats-url", o.NATSURL, "--event-nats-topic", o.NATSSubject)
		}
		args = append(args, "posix", root)
		if lastErr = g.start(bin, args, addr); lastErr == nil {
			t.Cleanup(g.Stop)
			return g
		}
	}
	t.Fatalf("starting versitygw: %v", lastErr)
	return nil
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (g *VersityGW) start(bin string, args []string, addr string) error {
	g.output.Reset()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = g, g
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			g.cmd, g.done, g.Endpoint = cmd, done, "http://"+addr
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("versitygw exited: %s", g.Output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("versitygw did not listen on %s within 20s: %s", addr, g.Output())
		}
	}
}

// Write collects the process's output, for Output.
func (g *VersityGW) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.output.Write(p)
}

// Output returns what versitygw printed.
func (g *VersityGW) Output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.output.String()
}

// Stop ends the process (and waits for it).
func (g *VersityGW) Stop() {
	if g.cmd == nil {
		return
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(5 * time.Second):
		g.cmd.Process.Kill()
		<-g.done
	}
	g.cmd = nil
}

// Client returns an aws-sdk-go-v2 S3 client for the gateway, path-style.
func (g *VersityGW) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(g.Endpoint),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(VersityGWAccessKey, VersityGWSecretKey, ""),
		UsePathStyle: true,
	})
}

// CreateBucket creates bucket on the gateway.
func (g *VersityGW) CreateBucket(ctx context.Context, bucket string) error {
	_, err := g.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
	return err
}
