package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem/internal/s3event"
	"github.com/idem-run/idem/internal/testsvc"
)

// The S3 event tests run a real S3-compatible store, versitygw, whose
// notifications reach idem's webhook (POST /v1/functions/{name}/s3-events)
// through a relay of the test, or a JetStream stream read by a mapping with
// eventFormat: s3. The function is an unmodified aws-lambda-go program
// decoding events.S3Event (testdata/s3fn) whose own store, a directory,
// records one effect per notification record, keyed by the invocation's
// request id.

// s3fnBin builds testdata/s3fn once per test binary.
var s3fnBin struct {
	once sync.Once
	path string
	err  error
}

func buildS3Fn(t *testing.T) string {
	t.Helper()
	s3fnBin.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			s3fnBin.err = err
			return
		}
		s3fnBin.path = filepath.Join(binDir, "s3fn")
		cmd := exec.Command("go", "build", "-o", s3fnBin.path, "./internal/e2e/testdata/s3fn")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			s3fnBin.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if s3fnBin.err != nil {
		t.Fatalf("building testdata/s3fn: %v", s3fnBin.err)
	}
	return s3fnBin.path
}

// fnStore is the function's own store: effects/<requestId>-<i> holds the
// object of each record applied, attempts.log a line per record run.
type fnStore string

func newFnStore(t *testing.T) fnStore {
	dir := filepath.Join(t.TempDir(), "fn")
	if err := os.MkdirAll(filepath.Join(dir, "effects"), 0o755); err != nil {
		t.Fatal(err)
	}
	return fnStore(dir)
}

// effects returns how many times each object's effect was applied.
func (s fnStore) effects(t *testing.T) map[string]int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(string(s), "effects"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(string(s), "effects", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSpace(string(b))]++
	}
	return out
}

// attempts returns, per object, the request ids of the runs that got it
// (one entry per run).
func (s fnStore) attempts(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(string(s), "attempts.log"))
	if os.IsNotExist(err) {
		return map[string][]string{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 4)
		if len(fields) == 4 {
			out[fields[3]] = append(out[fields[3]], fields[0])
		}
	}
	return out
}

// relay stands between versitygw and idem as a store with a durable queue
// does (MinIO's queue_dir): it takes each notification at once (versitygw
// gives up after 3 s and never retries), then delivers it to idem until
// idem answers 2xx, retrying through idem's restarts. It records every
// notification and the answer that ended its delivery.
type relay struct {
	target string // idem's webhook URL
	hc     *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan int
	wg     sync.WaitGroup

	mu   sync.Mutex
	got  []relayed
	busy int
}

type relayed struct {
	body   []byte
	auth   string
	status int // idem's answer that ended the delivery; 0 while in flight
	tries  int
}

func newRelay(target string, workers int) (*relay, *httptest.Server) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{target: target, ctx: ctx, cancel: cancel, queue: make(chan int, 1<<16),
		hc: &http.Client{Timeout: 10 * time.Second}}
	for range workers {
		r.wg.Add(1)
		go r.work()
	}
	return r, httptest.NewServer(r)
}

func (r *relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.enqueue(body, req.Header.Get("Authorization"))
	w.WriteHeader(http.StatusOK)
}

// enqueue queues a delivery of body: a notification, or a store's retry
// of one.
func (r *relay) enqueue(body []byte, auth string) {
	r.mu.Lock()
	r.got = append(r.got, relayed{body: body, auth: auth})
	i := len(r.got) - 1
	r.busy++
	r.mu.Unlock()
	r.queue <- i
}

func (r *relay) work() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case i := <-r.queue:
			r.deliver(i)
		}
	}
}

func (r *relay) deliver(i int) {
	r.mu.Lock()
	body, auth := r.got[i].body, r.got[i].auth
	r.mu.Unlock()
	for {
		req, _ := http.NewRequestWithContext(r.ctx, http.MethodPost, r.target, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := r.hc.Do(req)
		status := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
		}
		r.mu.Lock()
		r.got[i].tries++
		if status/100 == 2 || status/100 == 4 { // 4xx: a store gives up too
			r.got[i].status = status
			r.busy--
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *relay) close() {
	r.cancel()
	r.wg.Wait()
}

// snapshot returns the notifications so far and how many are in delivery.
func (r *relay) snapshot() (got []relayed, busy int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayed(nil), r.got...), r.busy
}

// objectOf returns the bucket/key of a notification's first record, or ""
// for a test notification.
func objectOf(t *testing.T, body []byte) string {
	t.Helper()
	n, err := s3event.Parse(body)
	if err != nil {
		t.Fatalf("notification %s: %v", body, err)
	}
	if n.Test {
		return ""
	}
	return n.Records[0].Bucket + "/" + n.Records[0].Object
}

// upload puts n objects named prefix-<i>.jpg into bucket, one at a time:
// before each, between(i) runs (when not nil); after each, notified(i+1)
// waits until the store has sent that object's notification. versitygw
// v1.8.0 builds a notification from strings that alias its request buffer
// (fiber's zero-copy strings) and marshals it on another goroutine, so a
// later request can overwrite the object key of an earlier notification
// before it is sent: a notification naming the wrong object. Waiting for
// each notification before the next upload keeps the tests about idem.
func upload(ctx context.Context, t *testing.T, c *s3.Client, bucket, prefix string, n int, between, notified func(i int)) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%04d.jpg", prefix, i)
		if between != nil {
			between(i)
		}
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(keys[i]),
			Body: strings.NewReader("content of " + keys[i])})
		if err != nil {
			t.Fatalf("PutObject %s: %v", keys[i], err)
		}
		notified(i + 1)
	}
	return keys
}

// received returns a notified func for upload: it waits until the relay
// got n notifications besides the first (versitygw's test notification).
func (r *relay) received(t *testing.T) func(n int) {
	return func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r.mu.Lock()
			got := len(r.got)
			r.mu.Unlock()
			if got >= n+1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("versitygw sent %d notifications in 30s, want %d", got, n+1)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// s3Config is idem's configuration for the webhook tests: the function
// thumbnail, its failures to the stream thumbnail-failed.
func s3Config(dataDir, addr, token, fnBin string, store fnStore) string {
	auth := ""
	if token != "" {
		auth = fmt.Sprintf("auth: {tokens: [%q]}\n", token)
	}
	return fmt.Sprintf(`dataDir: %s
listen: %s
%sstreams:
  - {name: thumbnail-failed}
functions:
  - name: thumbnail
    process: {command: %s, env: {S3FN_DIR: %s}, concurrency: 4}
    timeout: 10s
    async:
      maximumRetryAttempts: 2
      onFailure: {stream: thumbnail-failed}
      permanentErrorTypes: [CorruptImageError]
      retry: {baseDelay: 50ms, maxDelay: 200ms}
`, dataDir, addr, auth, fnBin, store)
}

// waitQueueDone waits until the function's queue has done want events
// (processed, discarded, or skipped: an event queued twice across a crash
// runs once, and its other copy is skipped) and holds none.
func waitQueueDone(t *testing.T, a *api, function string, want uint64, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "the queue of "+function+" is done", func() (bool, string) {
		var st struct {
			Queues []struct {
				Function                      string
				Queued                        uint64
				Processed, Skipped, Discarded uint64
			} `json:"queues"`
		}
		if err := a.do(context.Background(), http.MethodGet, "/v1/status", nil, &st); err != nil {
			return false, err.Error()
		}
		for _, q := range st.Queues {
			if q.Function == function {
				done := q.Processed + q.Discarded + q.Skipped
				return q.Queued == 0 && done >= want, fmt.Sprintf("%+v", q)
			}
		}
		return false, "no queue"
	})
}

// TestS3EventsWebhook uploads 200 objects to versitygw, whose webhook
// notifications reach idem with versitygw's own credentials (the token in
// the webhook URL's userinfo, sent as HTTP Basic), and re-POSTs 50 of them
// as a retrying store would: the function runs exactly 200 times, once
// per object, and versitygw's startup test notification runs nothing. An
// object that fails with a permanent error type is attempted once and
// lands in the on-failure stream with Lambda's failure record and the
// event; one failing with another error is retried twice first.
func TestS3EventsWebhook(t *testing.T) {
	if testing.Short() {
		t.Skip("runs versitygw and idem")
	}
	idemBin, _ := binaries(t)
	fnBin := buildS3Fn(t)
	store := newFnStore(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	const token = "s3-webhook-token-1"
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, s3Config(filepath.Join(dir, "data"), addr, token, fnBin, store))
	srv := startServe(t, idemBin, cfg, addr)
	a := newAPI(addr)
	a.token = token

	rl, rs := newRelay("http://"+addr+"/v1/functions/thumbnail/s3-events", 4)
	defer rs.Close()
	defer rl.close()
	gw := testsvc.StartVersityGW(t, testsvc.VersityGWOptions{
		WebhookURL: "http://idem:" + token + "@" + strings.TrimPrefix(rs.URL, "http://") + "/v1/functions/thumbnail/s3-events",
	})
	ctx := context.Background()
	if err := gw.CreateBucket(ctx, "photos"); err != nil {
		t.Fatal(err)
	}
	keys := upload(ctx, t, gw.Client(), "photos", "img", 200, nil, rl.received(t))

	// Every notification delivered, with 2xx; the test one among them.
	var got []relayed
	eventually(t, time.Minute, "200 notifications delivered", func() (bool, string) {
		var busy int
		got, busy = rl.snapshot()
		return len(got) == 201 && busy == 0, fmt.Sprintf("%d received, %d in delivery", len(got), busy)
	})
	var notes []relayed
	for _, g := range got {
		if g.status/100 != 2 {
			t.Fatalf("a notification was answered %d: %s", g.status, g.body)
		}
		if !strings.HasPrefix(g.auth, "Basic ") {
			t.Fatalf("versitygw sent Authorization %q, want Basic", g.auth)
		}
		if objectOf(t, g.body) != "" {
			notes = append(notes, g)
		}
	}
	if len(notes) != 200 {
		t.Fatalf("%d object notifications, want 200 (and one test notification)", len(notes))
	}
	for _, g := range notes[:50] {
		rl.enqueue(g.body, g.auth) // a store's retry
	}
	eventually(t, time.Minute, "the repeats delivered", func() (bool, string) {
		got, busy := rl.snapshot()
		return len(got) == 251 && busy == 0, fmt.Sprintf("%d, %d in delivery", len(got), busy)
	})
	waitQueueDone(t, a, "thumbnail", 200, time.Minute)
	time.Sleep(500 * time.Millisecond) // a duplicate run would come now

	effects, attempts := store.effects(t), store.attempts(t)
	for _, k := range keys {
		if n := effects["photos/"+k]; n != 1 {
			t.Errorf("photos/%s applied %d times, want 1", k, n)
		}
		if n := len(attempts["photos/"+k]); n != 1 {
			t.Errorf("photos/%s run %d times, want 1 (no crash, no failure)", k, n)
		}
	}
	if len(effects) != 200 || len(attempts) != 200 {
		t.Errorf("%d objects applied, %d run; want 200: the test notification must not run", len(effects), len(attempts))
	}

	// A data-caused failure of a permanent type, and a transient one.
	for _, k := range []string{"bad/permanent-1.jpg", "bad/transient-1.jpg"} {
		if _, err := gw.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("photos"), Key: aws.String(k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	// Each given-up event lands as Lambda's failure record, then the event.
	var failed []json.RawMessage
	eventually(t, time.Minute, "both failures in thumbnail-failed", func() (bool, string) {
		recs, err := a.allRecords(ctx, "thumbnail-failed")
		if err != nil {
			return false, err.Error()
		}
		failed = failed[:0]
		n := 0
		for _, rs := range recs {
			for _, r := range rs {
				n++
				if strings.Contains(r.Data, `"requestContext"`) {
					failed = append(failed, json.RawMessage(r.Data))
				}
			}
		}
		return len(failed) == 2 && n == 4, fmt.Sprintf("%d records, %d failure records", n, len(failed))
	})
	for _, raw := range failed {
		var fr struct {
			RequestContext struct {
				Condition              string `json:"condition"`
				ApproximateInvokeCount int    `json:"approximateInvokeCount"`
			} `json:"requestContext"`
			ResponsePayload struct {
				ErrorType string `json:"errorType"`
			} `json:"responsePayload"`
			RequestPayload events.S3Event `json:"requestPayload"`
		}
		if err := json.Unmarshal(raw, &fr); err != nil {
			t.Fatalf("failure record %s: %v", raw, err)
		}
		if len(fr.RequestPayload.Records) != 1 {
			t.Fatalf("failure record without its event: %s", raw)
		}
		key := fr.RequestPayload.Records[0].S3.Object.Key
		want := map[string]int{"bad/permanent-1.jpg": 1, "bad/transient-1.jpg": 3}[key]
		if fr.RequestContext.ApproximateInvokeCount != want {
			t.Errorf("%s: approximateInvokeCount %d, want %d: %s", key, fr.RequestContext.ApproximateInvokeCount, want, raw)
		}
		if key == "bad/permanent-1.jpg" && fr.ResponsePayload.ErrorType != "CorruptImageError" {
			t.Errorf("%s: errorType %q, want CorruptImageError", key, fr.ResponsePayload.ErrorType)
		}
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("idem serve exited %d", code)
	}
}

// TestS3EventsKill9 uploads 500 objects while idem is killed with SIGKILL
// ten times; the relay delivers each notification until idem answers 2xx,
// as a store with a durable queue does. Every notification that got a 2xx
// is applied exactly once in the function's own store.
func TestS3EventsKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs versitygw and kills idem")
	}
	idemBin, _ := binaries(t)
	fnBin := buildS3Fn(t)
	store := newFnStore(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, s3Config(filepath.Join(dir, "data"), addr, "", fnBin, store))
	srv := startServe(t, idemBin, cfg, addr)
	a := newAPI(addr)

	rl, rs := newRelay("http://"+addr+"/v1/functions/thumbnail/s3-events", 8)
	defer rs.Close()
	defer rl.close()
	gw := testsvc.StartVersityGW(t, testsvc.VersityGWOptions{WebhookURL: rs.URL + "/v1/functions/thumbnail/s3-events"})
	ctx := context.Background()
	if err := gw.CreateBucket(ctx, "videos"); err != nil {
		t.Fatal(err)
	}
	const objects, kills = 500, 10
	var mu sync.Mutex
	keys := upload(ctx, t, gw.Client(), "videos", "clip", objects, func(i int) {
		if i > 0 && i%(objects/kills) == 0 {
			mu.Lock()
			defer mu.Unlock()
			srv.kill()
			srv = startServe(t, idemBin, cfg, addr)
		}
	}, rl.received(t))
	eventually(t, 2*time.Minute, "every notification delivered", func() (bool, string) {
		got, busy := rl.snapshot()
		return len(got) == objects+1 && busy == 0, fmt.Sprintf("%d received, %d in delivery", len(got), busy)
	})
	got, _ := rl.snapshot()
	acked := map[string]bool{}
	retried := 0
	for _, g := range got {
		if g.status/100 != 2 {
			t.Fatalf("a notification ended with %d: %s", g.status, g.body)
		}
		if g.tries > 1 {
			retried++
		}
		if o := objectOf(t, g.body); o != "" {
			acked[o] = true
		}
	}
	waitQueueDone(t, a, "thumbnail", objects, 2*time.Minute)
	eventually(t, 2*time.Minute, "every acknowledged notification applied", func() (bool, string) {
		return len(store.effects(t)) >= len(acked), fmt.Sprintf("%d of %d", len(store.effects(t)), len(acked))
	})
	time.Sleep(time.Second) // a duplicate would come now
	effects, attempts := store.effects(t), store.attempts(t)
	reruns := 0
	for _, k := range keys {
		o := "videos/" + k
		if !acked[o] {
			t.Errorf("%s: its notification never got a 2xx", o)
			continue
		}
		if effects[o] != 1 {
			t.Errorf("%s applied %d times, want exactly 1", o, effects[o])
		}
		ids := map[string]bool{}
		for _, id := range attempts[o] {
			ids[id] = true
		}
		if len(ids) != 1 {
			t.Errorf("%s ran under %d request ids, want 1: a notification was queued twice", o, len(ids))
		}
		reruns += len(attempts[o]) - 1
	}
	t.Logf("%d notifications, %d delivered only after a retry (idem down), %d runs cut off by a kill and rerun under their request id", len(got), retried, reruns)
	mu.Lock()
	defer mu.Unlock()
	srv.stop(t)
}

// TestS3EventsNATS sends versitygw's notifications to NATS, into a
// JetStream stream that a mapping with eventFormat: s3 reads: 200 objects
// and 50 notifications published a second time run 200 times, once per
// object, and the startup test notification runs nothing.
func TestS3EventsNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("runs versitygw and idem")
	}
	const natsURL = "nats://127.0.0.1:4222"
	nc, err := nats.Connect(natsURL, nats.Timeout(2*time.Second))
	if err != nil {
		testsvc.Absent(t, "NATS is not reachable at %s: %v", natsURL, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	name := fmt.Sprintf("S3E2E%d", time.Now().UnixNano())
	subject := "s3e2e." + name
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}}); err != nil {
		t.Fatal(err)
	}
	defer js.DeleteStream(context.Background(), name)

	idemBin, _ := binaries(t)
	fnBin := buildS3Fn(t)
	store := newFnStore(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
functions:
  - name: thumbnail
    process: {command: %s, env: {S3FN_DIR: %s}}
    timeout: 10s
mappings:
  - name: photos-to-thumbnail
    source: {jetstream: {url: %q, stream: %s}}
    function: thumbnail
    eventFormat: s3
    startingPosition: TRIM_HORIZON
    batchSize: 10
`, filepath.Join(dir, "data"), addr, fnBin, store, natsURL, name))
	srv := startServe(t, idemBin, cfg, addr)

	gw := testsvc.StartVersityGW(t, testsvc.VersityGWOptions{NATSURL: natsURL, NATSSubject: subject})
	if err := gw.CreateBucket(ctx, "photos"); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	keys := upload(ctx, t, gw.Client(), "photos", "img", 200, nil, func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs >= uint64(n+1) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d messages in the stream after 30s, want %d", info.State.Msgs, n+1)
			}
			time.Sleep(time.Millisecond)
		}
	})

	// Publish 50 of the stored notifications again, as a store retrying
	// after a lost acknowledgement would.
	var stored [][]byte
	eventually(t, time.Minute, "201 messages in the stream", func() (bool, string) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 201, fmt.Sprintf("%d messages", info.State.Msgs)
	})
	s, _ := js.Stream(ctx, name)
	for seq := uint64(1); len(stored) < 50; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if objectOf(t, m.Data) != "" {
			stored = append(stored, m.Data)
		}
	}
	for _, b := range stored {
		if _, err := js.Publish(ctx, subject, b); err != nil {
			t.Fatal(err)
		}
	}
	a := newAPI(addr)
	eventually(t, time.Minute, "the mapping done with 251 messages", func() (bool, string) {
		sts, err := a.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		var done uint64
		for _, s := range sts {
			if s.Mapping == "photos-to-thumbnail" {
				done += s.Processed + s.Skipped + s.Filtered + s.Discarded
			}
		}
		return done == 251, fmt.Sprintf("%+v", sts)
	})
	time.Sleep(500 * time.Millisecond)
	effects, attempts := store.effects(t), store.attempts(t)
	for _, k := range keys {
		if n := effects["photos/"+k]; n != 1 {
			t.Errorf("photos/%s applied %d times, want 1", k, n)
		}
		if n := len(attempts["photos/"+k]); n != 1 {
			t.Errorf("photos/%s run %d times, want 1", k, n)
		}
	}
	if len(effects) != 200 || len(attempts) != 200 {
		t.Errorf("%d objects applied, %d run; want 200", len(effects), len(attempts))
	}
	srv.stop(t)
}

// TestS3ObjectExample runs examples/s3object with its own configuration
// (its address, data directory and store endpoint replaced) against
// versitygw: the function reads the object the notification names from
// the store and logs its SHA-256; an empty object fails with the permanent
// EmptyObjectError and goes to objects-failed after one attempt.
func TestS3ObjectExample(t *testing.T) {
	if testing.Short() {
		t.Skip("runs versitygw and idem")
	}
	idemBin, _ := binaries(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fn := filepath.Join(dir, "bootstrap")
	build := exec.Command("go", "build", "-o", fn, "./examples/s3object")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/s3object: %v\n%s", err, out)
	}
	example, err := os.ReadFile(filepath.Join(root, "examples", "s3object", "idem.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	const token = "example-token-0123456789"
	rl, rs := newRelay("http://"+addr+"/v1/functions/s3object/s3-events", 2)
	defer rs.Close()
	defer rl.close()
	gw := testsvc.StartVersityGW(t, testsvc.VersityGWOptions{
		WebhookURL: "http://idem:" + token + "@" + strings.TrimPrefix(rs.URL, "http://") + "/v1/functions/s3object/s3-events",
	})
	cfg := strings.NewReplacer(
		"dataDir: ./idem-data", "dataDir: "+filepath.Join(dir, "data"),
		"listen: 127.0.0.1:7070", "listen: "+addr,
		"command: examples/s3object/bootstrap", "command: "+fn,
		"${IDEM_TOKEN:-change-me-to-a-long-random-secret}", token,
		"${S3_ENDPOINT:-http://127.0.0.1:7071}", gw.Endpoint,
		"${S3_ACCESS_KEY:-admin}", testsvc.VersityGWAccessKey,
		"${S3_SECRET_KEY:-adminsecret}", testsvc.VersityGWSecretKey,
	).Replace(string(example))
	cfgPath := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfgPath, cfg)
	srv := startServe(t, idemBin, cfgPath, addr)
	a := newAPI(addr)
	a.token = token

	ctx := context.Background()
	if err := gw.CreateBucket(ctx, "docs"); err != nil {
		t.Fatal(err)
	}
	for k, body := range map[string]string{"notes/hello world.txt": "hello, idem\n", "notes/empty.txt": ""} {
		if _, err := gw.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("docs"), Key: aws.String(k), Body: strings.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// sha256("hello, idem\n")
	const sum = "s3://docs/notes/hello world.txt (s3:ObjectCreated:Put): 12 bytes, sha256 "
	eventually(t, time.Minute, "the function logged the object's hash", func() (bool, string) {
		b, _ := os.ReadFile(srv.logPath)
		return bytes.Contains(b, []byte(sum)), srv.tail(5)
	})
	eventually(t, time.Minute, "the empty object in objects-failed", func() (bool, string) {
		recs, err := a.allRecords(ctx, "objects-failed")
		if err != nil {
			return false, err.Error()
		}
		for _, rs := range recs {
			for _, r := range rs {
				if strings.Contains(r.Data, `"errorType":"EmptyObjectError"`) && strings.Contains(r.Data, `"approximateInvokeCount":1`) {
					return true, ""
				}
				return false, r.Data
			}
		}
		return false, "no record"
	})
	srv.stop(t)
}
