package testsvc

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// NATSURL returns the URL of the test NATS server, which must run
// JetStream: IDEM_TEST_NATS_URL or the local server at 127.0.0.1:4222.
func NATSURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("IDEM_TEST_NATS_URL"); u != "" {
		return u
	}
	reachable(t, "NATS", "127.0.0.1:4222", "IDEM_TEST_NATS_URL")
	return "nats://127.0.0.1:4222"
}

// JetStream connects to the test NATS server and returns its URL and a
// JetStream client, closed when t ends. It applies Absent when the server
// is unreachable or runs without JetStream.
func JetStream(t testing.TB) (string, natsjs.JetStream) {
	t.Helper()
	url := NATSURL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		Absent(t, "connecting to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		Absent(t, "JetStream is not enabled at %s: %v", url, err)
	}
	return url, js
}
