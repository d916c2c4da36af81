package server_test

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/idem-run/idem/internal/buildinfo"
)

// collector is an OTLP/HTTP endpoint that keeps the spans it receives.
type collector struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				c.services = append(c.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			c.spans = append(c.spans, ss.GetSpans()...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// named returns the spans named name.
func (c *collector) named(name string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

// attr returns span's attribute key, rendered as text.
func attr(span *tracepb.Span, key string) string {
	for _, kv := range span.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			if s := v.GetStringValue(); s != "" {
				return s
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

// TestTraces (issue 16, item 4): with OTEL_EXPORTER_OTLP_ENDPOINT set, a
// batch through an HTTP function is one trace at the OTLP endpoint: the
// poll that read it is the root, the invocation and the commit its
// children, and the function receives the invocation's span as its
// traceparent, so that the function's own spans join the trace.
func TestTraces(t *testing.T) {
	col := &collector{}
	otlp := httptest.NewServer(col)
	t.Cleanup(otlp.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_SERVICE_NAME", "idem-test")

	var mu sync.Mutex
	var parents []string
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		parents = append(parents, r.Header.Get("traceparent"))
		mu.Unlock()
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(fn.Close)

	addr, stop := start(t, t.TempDir(), "127.0.0.1:0", fmt.Sprintf(`
streams: [{name: orders}]
functions:
  - {name: ship, http: {url: %q}}
mappings:
  - name: m
    source: {stream: orders}
    function: ship
    startingPosition: TRIM_HORIZON
`, fn.URL), nil)
	if code, body := call(t, "POST", "http://"+addr+"/v1/streams/orders/records", "", `{"records":[{"partitionKey":"k","data":"ZA=="}]}`); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(parents)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the function was never invoked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Stopping the server exports the spans it still holds.
	stop()

	mu.Lock()
	tp := parents[0]
	mu.Unlock()
	m := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`).FindStringSubmatch(tp)
	if m == nil {
		t.Fatalf("the function's traceparent: %q, want a sampled W3C traceparent", tp)
	}
	traceID, parentID := m[1], m[2]
	id := func(b []byte) string { return hex.EncodeToString(b) }

	invokes := col.named("idem.invoke")
	if len(invokes) != 1 {
		t.Fatalf("%d idem.invoke spans, want 1", len(invokes))
	}
	inv := invokes[0]
	if id(inv.GetTraceId()) != traceID || id(inv.GetSpanId()) != parentID {
		t.Errorf("idem.invoke is span %s of trace %s; the function's traceparent names span %s of trace %s",
			id(inv.GetSpanId()), id(inv.GetTraceId()), parentID, traceID)
	}
	for k, want := range map[string]string{"idem.mapping": "m", "idem.function": "ship", "idem.stream": "orders", "idem.shard": "shardId-000000000000", "idem.records": "1"} {
		if got := attr(inv, k); got != want {
			t.Errorf("idem.invoke's %s: %q, want %q", k, got, want)
		}
	}
	if inv.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("idem.invoke's kind: %v, want client", inv.GetKind())
	}

	var poll *tracepb.Span
	for _, p := range col.named("idem.poll") {
		if id(p.GetTraceId()) == traceID {
			poll = p
		}
	}
	if poll == nil {
		t.Fatalf("no idem.poll span in the invocation's trace %s", traceID)
	}
	if len(poll.GetParentSpanId()) != 0 {
		t.Errorf("idem.poll has parent %s, want none: it is the trace's root", id(poll.GetParentSpanId()))
	}
	if got := attr(poll, "idem.records"); got != "1" {
		t.Errorf("idem.poll's idem.records: %q, want 1", got)
	}
	if id(inv.GetParentSpanId()) != id(poll.GetSpanId()) {
		t.Errorf("idem.invoke's parent: %s, want the poll %s", id(inv.GetParentSpanId()), id(poll.GetSpanId()))
	}

	var commits []*tracepb.Span
	for _, c := range col.named("idem.commit") {
		if id(c.GetTraceId()) == traceID {
			commits = append(commits, c)
		}
	}
	if len(commits) != 1 {
		t.Fatalf("%d idem.commit spans in the trace, want 1", len(commits))
	}
	if c := commits[0]; id(c.GetParentSpanId()) != id(poll.GetSpanId()) || attr(c, "idem.completed") != "1" {
		t.Errorf("idem.commit: parent %s, idem.completed %s; want the poll %s, 1", id(c.GetParentSpanId()), attr(c, "idem.completed"), id(poll.GetSpanId()))
	}
	col.mu.Lock()
	services := col.services
	col.mu.Unlock()
	for _, s := range services {
		if s != "idem-test" {
			t.Errorf("service.name %q, want OTEL_SERVICE_NAME's idem-test", s)
		}
	}
}

// TestBuildInfoMetric (issue 16, item 5): /metrics has idem_build_info,
// 1, labelled with the build's version, revision and Go version.
func TestBuildInfoMetric(t *testing.T) {
	addr := serve(t, "streams: [{name: events}]\n", nil)
	code, body := call(t, "GET", "http://"+addr+"/metrics", "", "")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	bi := buildinfo.Read()
	want := fmt.Sprintf(`idem_build_info{goversion=%q,revision=%q,version=%q} 1`, runtime.Version(), bi.Revision, bi.Version)
	for _, line := range strings.Split(body, "\n") {
		if line == want {
			return
		}
	}
	t.Errorf("/metrics has no line %s:\n%s", want, grepLines(body, "idem_build_info"))
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
