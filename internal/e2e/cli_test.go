package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/server"
)

// delivered is one record as an HTTP function received it.
type delivered struct {
	events.KinesisEventRecord
	IdempotencyKey string `json:"idempotencyKey"`
}

// fnServer is an HTTP function: it decodes every invocation as Lambda's
// KinesisEvent (plus the idempotencyKey idem adds to each record), keeps the
// records, and answers every invocation with the same status and body.
type fnServer struct {
	*httptest.Server
	code int
	body string

	mu          sync.Mutex
	invocations [][]delivered
	errs        []string // invocations that were not a KinesisEvent
}

// newFnServer starts an HTTP function answering code and body; a cleanup
// stops it.
func newFnServer(t *testing.T, code int, body string) *fnServer {
	t.Helper()
	f := &fnServer{code: code, body: body}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	t.Cleanup(f.Close)
	return f
}

// serveHTTP handles one invocation: it keeps the records of a valid
// KinesisEvent, notes anything else, and answers f.code and f.body.
func (f *fnServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	var ev struct {
		Records []delivered `json:"Records"`
	}
	if err == nil {
		err = json.Unmarshal(b, &ev)
	}
	// The same body must decode as the real events.KinesisEvent too.
	var kev events.KinesisEvent
	if err == nil {
		err = json.Unmarshal(b, &kev)
	}
	f.mu.Lock()
	switch {
	case err != nil:
		f.errs = append(f.errs, fmt.Sprintf("%s %s: %v: %.200s", r.Method, r.URL, err, b))
	case len(kev.Records) != len(ev.Records) || len(ev.Records) == 0:
		f.errs = append(f.errs, fmt.Sprintf("an invocation with %d records: %.200s", len(kev.Records), b))
	default:
		f.invocations = append(f.invocations, ev.Records)
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.code)
	io.WriteString(w, f.body)
}

// received returns each record the function received, by eventID, with the
// number of invocations it was in, and the decoding problems so far.
func (f *fnServer) received() (recs map[string]delivered, times map[string]int, errs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	recs, times = make(map[string]delivered), make(map[string]int)
	for _, inv := range f.invocations {
		for _, r := range inv {
			recs[r.EventID] = r
			times[r.EventID]++
		}
	}
	return recs, times, append([]string(nil), f.errs...)
}

// putLine is one line `idem put` prints: where a record landed.
var putLine = regexp.MustCompile(`^(shardId-\d{12}) (\d{20})$`)

// put is a record put with the CLI, and where it landed.
type put struct {
	pk, data, shard, seq string
}

// cliPut runs `idem put` for the partition key pk, with --data when data has
// one element and otherwise with data as stdin lines, and returns where each
// record landed, as printed.
func cliPut(t *testing.T, idemBin, addr, stream, pk string, data ...string) []put {
	t.Helper()
	args := []string{"put", "--addr", addr, "--stream", stream, "--partition-key", pk}
	var stdin io.Reader
	if len(data) == 1 {
		args = append(args, "--data", data[0])
	} else {
		stdin = strings.NewReader(strings.Join(data, "\n") + "\n")
	}
	out, errOut, code := runCLI(t, idemBin, stdin, args...)
	if code != 0 {
		t.Fatalf("idem %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(data) {
		t.Fatalf("idem put of %d records printed %d lines:\n%s", len(data), len(lines), out)
	}
	puts := make([]put, len(data))
	for i, l := range lines {
		m := putLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("idem put printed %q, want \"shardId-NNNNNNNNNNNN <20-digit sequence>\"", l)
		}
		puts[i] = put{pk: pk, data: data[i], shard: m[1], seq: m[2]}
	}
	return puts
}

// cliRecords runs `idem records --json` with extra arguments and decodes
// its JSON lines.
func cliRecords(t *testing.T, idemBin, addr string, extra ...string) []server.RecordJSON {
	t.Helper()
	args := append([]string{"records", "--addr", addr, "--json"}, extra...)
	out, errOut, code := runCLI(t, idemBin, nil, args...)
	if code != 0 {
		t.Fatalf("idem %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	var recs []server.RecordJSON
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r server.RecordJSON
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("idem %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		recs = append(recs, r)
	}
	return recs
}

// cliStatus runs `idem status --json` and returns its shards of mapping.
func cliStatus(t *testing.T, idemBin, addr, mapping string) []engine.ShardStatus {
	t.Helper()
	out, errOut, code := runCLI(t, idemBin, nil, "status", "--addr", addr, "--json")
	if code != 0 {
		t.Fatalf("idem status --json: exit %d: %s", code, errOut)
	}
	var st server.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("idem status --json: %v\n%s", err, out)
	}
	var shards []engine.ShardStatus
	for _, s := range st.Shards {
		if s.Mapping == mapping {
			shards = append(shards, s)
		}
	}
	return shards
}

// ordersConfig is the configuration of the issue, with its data directory,
// listen address and function URL replaced, and mappingExtra (YAML lines of
// the mapping, indented by four spaces) added to its mapping.
func ordersConfig(dataDir, addr, fnURL, mappingExtra string) string {
	return fmt.Sprintf(`dataDir: %q
listen: %s
streams:
  - {name: orders, shards: 4, retention: 24h}
  - {name: orders-failed}
functions:
  - {name: ship-order, http: {url: %q}, timeout: 3s}
mappings:
  - name: orders-to-ship
    source: {stream: orders}
    function: ship-order
    startingPosition: TRIM_HORIZON
    batchSize: 100
    functionResponseTypes: [ReportBatchItemFailures]
    destinationConfig: {onFailure: {stream: orders-failed}}
    idempotency: {scope: ship-order}
%s`, dataDir, addr, fnURL, mappingExtra)
}

// TestCLISmoke runs `idem serve` with the configuration and an HTTP
// function that accepts every batch, and drives it with the CLI: `idem put`
// with --data and with stdin lines prints where each record landed and the
// function receives each (its base64 data decoding to what was put, its
// idempotency key stream/shard/sequence); `idem records --json` lists them
// with their data as text; `idem status` and `idem status --json` show the
// mapping's processed counts; a record over 1 MiB is refused with a clear
// error and writes nothing; SIGTERM exits 0. Then `idem serve` with a
// malformed file, a batchSize above the maximum and an unknown key each exits
// non-zero naming the file and the setting.
func TestCLISmoke(t *testing.T) {
	idemBin, _ := binaries(t)
	fn := newFnServer(t, http.StatusOK, `{"batchItemFailures":[]}`)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	good := ordersConfig(filepath.Join(dir, "idem-data"), addr, fn.URL+"/", "")
	writeFile(t, cfg, good)
	a := newAPI(addr)
	ctx := context.Background()

	srv := startServe(t, idemBin, cfg, addr)
	puts := cliPut(t, idemBin, addr, "orders", "order-1", `{"id": 1, "item": "book"}`)
	puts = append(puts, cliPut(t, idemBin, addr, "orders", "order-2", "first line", "second line", "third line")...)
	for i := 2; i < len(puts); i++ {
		if puts[i].shard != puts[1].shard || puts[i].seq <= puts[i-1].seq {
			t.Errorf("stdin records of one partition key landed at %s %s after %s %s: want one shard, in order", puts[i].shard, puts[i].seq, puts[i-1].shard, puts[i-1].seq)
		}
	}

	// The function receives every record as put.
	var got map[string]delivered
	eventually(t, time.Minute, "the function receiving the records", func() (bool, string) {
		var errs []string
		got, _, errs = fn.received()
		if len(errs) > 0 {
			t.Fatalf("the function received invocations that are not KinesisEvents: %q", errs)
		}
		return len(got) >= len(puts), fmt.Sprintf("received %d records of %d", len(got), len(puts))
	})
	for _, p := range puts {
		r, ok := got[p.shard+":"+p.seq]
		switch {
		case !ok:
			t.Errorf("the function did not receive %s:%s; it received %v", p.shard, p.seq, got)
		case string(r.Kinesis.Data) != p.data || r.Kinesis.PartitionKey != p.pk || r.Kinesis.SequenceNumber != p.seq:
			t.Errorf("the function received %s:%s as partition key %q, sequence %q, data %q; want %q, %q, %q",
				p.shard, p.seq, r.Kinesis.PartitionKey, r.Kinesis.SequenceNumber, r.Kinesis.Data, p.pk, p.seq, p.data)
		case r.IdempotencyKey != "orders/"+p.shard+"/"+p.seq:
			t.Errorf("record %s:%s has idempotencyKey %q, want %q", p.shard, p.seq, r.IdempotencyKey, "orders/"+p.shard+"/"+p.seq)
		case r.EventSource != "aws:kinesis" || !strings.HasSuffix(r.EventSourceArn, ":stream/orders"):
			t.Errorf("record %s:%s has eventSource %q, eventSourceARN %q", p.shard, p.seq, r.EventSource, r.EventSourceArn)
		}
	}

	// `idem records --json` lists them, data as text.
	recs := cliRecords(t, idemBin, addr, "--stream", "orders")
	if len(recs) != len(puts) {
		t.Fatalf("idem records --stream orders --json printed %d records, want %d: %+v", len(recs), len(puts), recs)
	}
	byPlace := make(map[string]server.RecordJSON)
	for _, r := range recs {
		byPlace[r.ShardID+"/"+r.SequenceNumber] = r
	}
	onShard := 0
	for _, p := range puts {
		r, ok := byPlace[p.shard+"/"+p.seq]
		if !ok || r.Stream != "orders" || r.PartitionKey != p.pk || r.Data != p.data || r.DataBase64 != nil {
			t.Errorf("idem records: %s/%s is %+v, want stream orders, partition key %q, data %q as text", p.shard, p.seq, r, p.pk, p.data)
		}
		if p.shard == puts[1].shard {
			onShard++
		}
	}
	if recs := cliRecords(t, idemBin, addr, "--stream", "orders", "--shard", puts[1].shard); len(recs) != onShard {
		t.Errorf("idem records --shard %s printed %d records, want %d", puts[1].shard, len(recs), onShard)
	}
	out, errOut, code := runCLI(t, idemBin, nil, "records", "--addr", addr, "--stream", "orders", "--shard", puts[1].shard)
	if want := puts[1].shard + " " + puts[1].seq + " order-2 first line\n"; code != 0 || !strings.Contains(out, want) {
		t.Errorf("idem records (text): exit %d, stdout %q, stderr %q; want a line %q", code, out, errOut, want)
	}

	// `idem status` and `idem status --json` count them processed.
	waitCaughtUp(t, a, "orders-to-ship", "orders", time.Minute)
	shards := cliStatus(t, idemBin, addr, "orders-to-ship")
	var processed uint64
	for _, s := range shards {
		processed += s.Processed
		if s.Discarded != 0 || s.Function != "ship-order" || s.Stream != "orders" || s.Scope != "ship-order" {
			t.Errorf("idem status --json: shard %+v", s)
		}
	}
	if len(shards) != 4 || processed != uint64(len(puts)) {
		t.Errorf("idem status --json: %d shards of orders-to-ship, processed %d; want 4 shards, processed %d", len(shards), processed, len(puts))
	}
	out, errOut, code = runCLI(t, idemBin, nil, "status", "--addr", addr)
	if code != 0 {
		t.Fatalf("idem status: exit %d: %s", code, errOut)
	}
	processed, rows := 0, 0
	// The shards' table, then, after a blank line, the mappings' (state
	// and last processing result).
	shardTable, mappingTable, _ := strings.Cut(strings.TrimRight(out, "\n"), "\n\n")
	if m := strings.Split(mappingTable, "\n"); len(m) != 2 || !strings.HasPrefix(m[0], "MAPPING") || !strings.HasPrefix(m[1], "orders-to-ship  enabled") {
		t.Errorf("idem status: the mappings' table is %q, want orders-to-ship enabled", mappingTable)
	}
	lines := strings.Split(shardTable, "\n")
	if !strings.HasPrefix(lines[0], "MAPPING") || !strings.Contains(lines[0], "PROCESSED") {
		t.Errorf("idem status: the first line is %q, want the column names", lines[0])
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 13 || f[0] != "orders-to-ship" {
			t.Errorf("idem status: unexpected line %q", l)
			continue
		}
		rows++
		n, err := strconv.ParseUint(f[9], 10, 64) // MAPPING SHARD STATE CHECKPOINT LAG AGE IN-FLIGHT INVOCATIONS RETRIES PROCESSED
		if err != nil {
			t.Errorf("idem status: PROCESSED of %q: %v", l, err)
		}
		processed += n
	}
	if rows != 4 || processed != uint64(len(puts)) {
		t.Errorf("idem status: %d rows processing %d records, want 4 rows and %d:\n%s", rows, processed, len(puts), out)
	}

	// A record over 1 MiB is refused, and the records of its request with it.
	countRecords := func() uint64 {
		latest, err := a.latest(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, l := range latest {
			n += l
		}
		return n
	}
	before := countRecords()
	big := strings.Repeat("x", 1<<20+1)
	out, errOut, code = runCLI(t, idemBin, strings.NewReader("small\n"+big+"\n"),
		"put", "--addr", addr, "--stream", "orders", "--partition-key", "order-3")
	if code == 0 || out != "" || !strings.Contains(errOut, "too large") || !strings.Contains(errOut, "1048577") {
		t.Errorf("idem put of a %d-byte record: exit %d, stdout %q, stderr %q; want a non-zero exit and an error naming the size", len(big), code, out, errOut)
	}
	if after := countRecords(); after != before {
		t.Errorf("the refused put changed the stream's record count from %d to %d", before, after)
	}
	if recs := cliRecords(t, idemBin, addr, "--stream", "orders"); len(recs) != len(puts) {
		t.Errorf("after the refused put, idem records prints %d records, want %d", len(recs), len(puts))
	}

	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}

	// Bad configurations: `idem serve` exits non-zero naming the problem.
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"malformed YAML", strings.Replace(good, "shards: 4, retention: 24h}", "shards: 4, retention: 24h", 1),
			[]string{"invalid YAML", "line "}},
		{"batchSize above the maximum", strings.Replace(good, "batchSize: 100", "batchSize: 20000", 1),
			[]string{"mappings[0].batchSize", "20000", "10000"}},
		{"unknown key", strings.Replace(good, "batchSize: 100", "batchSize: 100\n    batchSise: 100", 1),
			[]string{"mappings[0].batchSise", "unknown"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.yaml")
			writeFile(t, bad, tc.config)
			out, errOut, code := runCLI(t, idemBin, nil, "serve", "-c", bad)
			if code == 0 {
				t.Fatalf("idem serve exited 0; stdout %q, stderr %q", out, errOut)
			}
			for _, w := range append(tc.want, bad) {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not name %q", errOut, w)
				}
			}
		})
	}
}

// TestOnFailureDestination runs an HTTP function that always answers 500,
// with maximumRetryAttempts 1: after its retry, the record goes to the
// on-failure stream as Lambda's metadata record (condition, KinesisBatchInfo)
// followed by the record itself, as `idem records --stream orders-failed
// --json` shows, and the shard moves on: a record put afterwards is
// delivered, and discarded in turn.
func TestOnFailureDestination(t *testing.T) {
	idemBin, _ := binaries(t)
	fn := newFnServer(t, http.StatusInternalServerError, "boom")
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, ordersConfig(filepath.Join(dir, "idem-data"), addr, fn.URL+"/", `    maximumRetryAttempts: 1
    retry: {baseDelay: 10ms, maxDelay: 100ms}
`))
	a := newAPI(addr)
	srv := startServe(t, idemBin, cfg, addr)

	// waitFailed waits until orders-failed holds n records and returns them
	// as `idem records --json` prints them.
	waitFailed := func(n int) []server.RecordJSON {
		t.Helper()
		eventually(t, time.Minute, "the on-failure stream filling", func() (bool, string) {
			byShard, err := a.allRecords(context.Background(), "orders-failed")
			if err != nil {
				return false, err.Error()
			}
			got := 0
			for _, recs := range byShard {
				got += len(recs)
			}
			return got >= n, fmt.Sprintf("orders-failed holds %d records, want %d", got, n)
		})
		recs := cliRecords(t, idemBin, addr, "--stream", "orders-failed")
		if len(recs) != n {
			t.Fatalf("idem records --stream orders-failed printed %d records, want %d: %+v", len(recs), n, recs)
		}
		return recs
	}
	// checkFailure checks that recs holds the metadata record of p's failed
	// batch, then p itself.
	checkFailure := func(recs []server.RecordJSON, p put) {
		t.Helper()
		var meta struct {
			RequestContext struct {
				Condition              string `json:"condition"`
				FunctionArn            string `json:"functionArn"`
				ApproximateInvokeCount int    `json:"approximateInvokeCount"`
			} `json:"requestContext"`
			ResponseContext struct {
				FunctionError string `json:"functionError"`
			} `json:"responseContext"`
			KinesisBatchInfo struct {
				ShardID             string `json:"shardId"`
				StartSequenceNumber string `json:"startSequenceNumber"`
				EndSequenceNumber   string `json:"endSequenceNumber"`
				BatchSize           int    `json:"batchSize"`
				StreamArn           string `json:"streamArn"`
			} `json:"KinesisBatchInfo"`
			IdemErrorType string `json:"idemErrorType"`
		}
		if err := json.Unmarshal([]byte(recs[0].Data), &meta); err != nil {
			t.Fatalf("the on-failure metadata record is not JSON: %v: %q", err, recs[0].Data)
		}
		bi := meta.KinesisBatchInfo
		if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.RequestContext.ApproximateInvokeCount != 2 ||
			!strings.HasSuffix(meta.RequestContext.FunctionArn, ":function:ship-order") || meta.ResponseContext.FunctionError != "Unhandled" ||
			bi.ShardID != p.shard || bi.StartSequenceNumber != p.seq || bi.EndSequenceNumber != p.seq || bi.BatchSize != 1 ||
			!strings.HasSuffix(bi.StreamArn, ":stream/orders") || meta.IdemErrorType != "HTTP.500" {
			t.Errorf("on-failure metadata of %s/%s: %s", p.shard, p.seq, recs[0].Data)
		}
		if r := recs[1]; r.Data != p.data || r.PartitionKey != p.pk || r.ShardID != recs[0].ShardID || r.SequenceNumber <= recs[0].SequenceNumber {
			t.Errorf("after the metadata record %+v, the on-failure stream holds %+v; want the record %+v", recs[0], r, p)
		}
	}

	first := cliPut(t, idemBin, addr, "orders", "customer-7", `{"order": 1}`)[0]
	recs := waitFailed(2)
	checkFailure(recs, first)
	if _, times, _ := fn.received(); times[first.shard+":"+first.seq] != 2 {
		t.Errorf("the function received %s:%s %d times, want 2 (the invocation and its one retry)", first.shard, first.seq, times[first.shard+":"+first.seq])
	}

	// The shard moved on: the next record is delivered, and discarded in turn.
	second := cliPut(t, idemBin, addr, "orders", "customer-7", `{"order": 2}`)[0]
	if second.shard != first.shard {
		t.Fatalf("records of one partition key landed on %s and %s", first.shard, second.shard)
	}
	recs = waitFailed(4)
	checkFailure(recs[2:], second)
	if _, times, errs := fn.received(); times[second.shard+":"+second.seq] != 2 || len(errs) > 0 {
		t.Errorf("the function received %s:%s %d times, want 2; decoding problems: %q", second.shard, second.seq, times[second.shard+":"+second.seq], errs)
	}
	statuses := waitCaughtUp(t, a, "orders-to-ship", "orders", time.Minute)
	if s := statuses[first.shard]; string(s.Checkpoint) != second.seq || s.Discarded != 2 || s.Processed != 0 || s.Invocations != 4 || s.Retries != 2 {
		t.Errorf("status of %s: %+v; want checkpoint %s, discarded 2, processed 0, 4 invocations, 2 retries", first.shard, s, second.seq)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
}
