package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/source"
)

// bodySizes is an HTTP function that succeeds and records each request
// body's size and record count.
type bodySizes struct {
	mu     sync.Mutex
	bodies []int
	counts []int
	keys   []string // partition keys, in order of invocation
}

func (f *bodySizes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var ev events.KinesisEvent
	_ = json.Unmarshal(b, &ev)
	f.mu.Lock()
	f.bodies = append(f.bodies, len(b))
	f.counts = append(f.counts, len(ev.Records))
	for _, rec := range ev.Records {
		f.keys = append(f.keys, rec.Kinesis.PartitionKey)
	}
	f.mu.Unlock()
	w.Write([]byte(`{}`))
}

func (f *bodySizes) get() (bodies, counts []int, keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slicesClone(f.bodies), slicesClone(f.counts), append([]string(nil), f.keys...)
}

func slicesClone(s []int) []int { return append([]int(nil), s...) }

// sixMiB puts six 1 MiB records (the most a record holds) in stream.
func sixMiB(v *env, stream string) {
	v.stream(stream, 1)
	for i := range 6 {
		v.put(stream, fmt.Sprint("k", i), strings.Repeat(string(rune('a'+i)), 1<<20))
	}
}

// TestBatchCutAtPayloadSize (issue 19, item 4): six 1 MiB records are an
// 8 MB event; Lambda sends at most the records whose whole invocation
// payload fits in 6 MB, so idem sends 4 (5.6 MB), then 2.
func TestBatchCutAtPayloadSize(t *testing.T) {
	v := newEnv(t)
	sixMiB(v, "big")
	f := &bodySizes{}
	m := engine.Mapping{Name: "big", Stream: "big", Source: v.source("big"), Function: "fn", Invoker: httpFunction(t, f),
		BatchSize: 10, StartingPosition: source.TrimHorizon}
	e, _ := v.run(m)
	waitFor(t, "all 6 processed", func() bool { return totals(e).Processed == 6 })
	bodies, counts, _ := f.get()
	for _, n := range bodies {
		if n > engine.MaxBatchBytes {
			t.Errorf("a request body of %d bytes, above the %d-byte payload limit (bodies %v)", n, engine.MaxBatchBytes, bodies)
		}
	}
	if got := fmt.Sprint(counts); got != "[4 2]" {
		t.Fatalf("batch sizes %s, want [4 2] (bodies %v)", got, bodies)
	}
}

// TestBatchCutAtPayloadSizeWithBatchingWindow: a batching window gathers
// records until their events, not their data, fill the payload.
func TestBatchCutAtPayloadSizeWithBatchingWindow(t *testing.T) {
	v := newEnv(t)
	sixMiB(v, "big")
	f := &bodySizes{}
	m := engine.Mapping{Name: "big", Stream: "big", Source: v.source("big"), Function: "fn", Invoker: httpFunction(t, f),
		BatchSize: 10, StartingPosition: source.TrimHorizon, MaximumBatchingWindow: 200 * time.Millisecond}
	e, _ := v.run(m)
	waitFor(t, "all 6 processed", func() bool { return totals(e).Processed == 6 })
	bodies, counts, _ := f.get()
	if got := fmt.Sprint(counts); got != "[4 2]" {
		t.Fatalf("batch sizes %s, want [4 2] (bodies %v)", got, bodies)
	}
}

// TestBatchCutAtPayloadSizeProcessFunction: the same six records through
// an unmodified aws-lambda-go function run as a process.
func TestBatchCutAtPayloadSizeProcessFunction(t *testing.T) {
	sizes := filepath.Join(t.TempDir(), "sizes")
	fn := lambdaProcess(t, "fourth", map[string]string{"IDEM_TEST_SIZES": sizes})
	v := newEnv(t)
	sixMiB(v, "big")
	m := engine.Mapping{Name: "big", Stream: "big", Source: v.source("big"), Function: "fn", Invoker: fn,
		BatchSize: 10, StartingPosition: source.TrimHorizon}
	e, _ := v.run(m)
	waitFor(t, "all 6 processed", func() bool { return totals(e).Processed == 6 })
	b, err := os.ReadFile(sizes)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(string(b)), " "); got != "4 2" {
		t.Fatalf("batch sizes %s, want 4 2", got)
	}
}

// bigSource serves a record whose data is "BIG" as 5 MiB of data, as a
// source whose records may be larger than Kinesis' (Kafka's can be) does.
type bigSource struct{ source.Driver }

func (s bigSource) Read(ctx context.Context, shard string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	res, err := s.Driver.Read(ctx, shard, after, limit, maxBytes)
	for i := range res.Records {
		if string(res.Records[i].Data) == "BIG" {
			res.Records[i].Data = bytes.Repeat([]byte{'x'}, 5<<20)
		}
	}
	return res, err
}

// TestTooLargeRecordGoesToOnFailure (issue 19, item 4): a record whose
// event alone is above the payload limit is never invoked: it goes to the
// on-failure destination, with Lambda's MaximumPayloadSizeExceeded
// condition and no responseContext, and the shard goes on.
func TestTooLargeRecordGoesToOnFailure(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	v.stream("s-failed", 1)
	v.put("s", "small-1", "one")
	v.put("s", "big", "BIG")
	v.put("s", "small-2", "two")
	f := &bodySizes{}
	m := engine.Mapping{Name: "m", Stream: "s", Source: bigSource{v.source("s")}, Function: "fn", Invoker: httpFunction(t, f),
		BatchSize: 10, StartingPosition: source.TrimHorizon, OnFailure: "s-failed"}
	e, _ := v.run(m)
	waitFor(t, "2 processed, 1 discarded", func() bool { st := totals(e); return st.Processed == 2 && st.Discarded == 1 })
	_, _, keys := f.get()
	if got := fmt.Sprint(keys); got != "[small-1 small-2]" {
		t.Fatalf("the function got records %s, want [small-1 small-2]", got)
	}
	failed := v.records("s-failed")
	if len(failed) != 2 {
		t.Fatalf("on-failure stream holds %d records, want the metadata record and the big one", len(failed))
	}
	var meta map[string]any
	if err := json.Unmarshal(failed[0].Data, &meta); err != nil {
		t.Fatal(err)
	}
	rc, _ := meta["requestContext"].(map[string]any)
	if rc["condition"] != "MaximumPayloadSizeExceeded" || rc["approximateInvokeCount"] != 0.0 {
		t.Errorf("requestContext %v, want condition MaximumPayloadSizeExceeded after 0 invocations", rc)
	}
	if rctx, ok := meta["responseContext"]; !ok || rctx != nil {
		t.Errorf("responseContext %v, want null: the function never ran", rctx)
	}
	if bi, _ := meta["KinesisBatchInfo"].(map[string]any); bi["batchSize"] != 1.0 {
		t.Errorf("KinesisBatchInfo %v, want the one record", meta["KinesisBatchInfo"])
	}
	if meta["idemErrorType"] != "PayloadTooLarge" || !strings.Contains(fmt.Sprint(meta["idemErrorMessage"]), "6291456") {
		t.Errorf("idemErrorType %v, idemErrorMessage %v", meta["idemErrorType"], meta["idemErrorMessage"])
	}
	if failed[1].PartitionKey != "big" {
		t.Errorf("discarded record has key %q, want big", failed[1].PartitionKey)
	}
}
