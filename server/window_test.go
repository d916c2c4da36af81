package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTumblingWindowHTTPFunction: a mapping configured with tumblingWindow
// sends an HTTP function KinesisTimeWindowEvents, carries the state it
// returns from one invocation to the next, and closes each window with a
// final invocation holding the window's whole aggregate.
func TestTumblingWindowHTTPFunction(t *testing.T) {
	ctx := context.Background()
	broker, topic, cl := newKafka(t, 1)
	// Two windows of a minute, long past: the second closes by the clock.
	w0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := 1; i <= 9; i++ {
		ts := w0.Add(time.Duration(i) * time.Second)
		if i > 5 {
			ts = ts.Add(time.Minute)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i)), Timestamp: ts})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	finals := map[string]string{} // window start → final sum
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev events.KinesisTimeWindowEvent
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("decoding: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum, _ := strconv.Atoi(ev.State["sum"])
		for _, rec := range ev.Records {
			n, _ := strconv.Atoi(string(rec.Kinesis.Data))
			sum += n
		}
		if ev.IsFinalInvokeForWindow {
			mu.Lock()
			finals[ev.Window.Start.UTC().Format(time.RFC3339)] = ev.State["sum"]
			mu.Unlock()
		}
		json.NewEncoder(w).Encode(events.KinesisTimeWindowEventResponse{
			TimeWindowEventResponseProperties: events.TimeWindowEventResponseProperties{State: map[string]string{"sum": strconv.Itoa(sum)}},
			BatchItemFailures:                 []events.KinesisBatchItemFailure{}})
	}))
	t.Cleanup(fn.Close)

	serve(t, fmt.Sprintf(`
functions: [{name: agg, http: {url: %q}}]
mappings:
  - name: m
    function: agg
    startingPosition: TRIM_HORIZON
    batchSize: 2
    tumblingWindow: 60s
    eventFormat: kinesis
    source: {kafka: {brokers: [%q], topic: %s, pollInterval: 20ms}}
`, fn.URL, broker, topic), nil)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(finals)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("final invocations %v, want two windows", finals)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{"2026-01-01T10:00:00Z": "15", "2026-01-01T10:01:00Z": "30"}
	for k, v := range want {
		if finals[k] != v {
			t.Errorf("window %s: final sum %q, want %s (all: %v)", k, finals[k], v, finals)
		}
	}
}

// TestTumblingWindowHTTPFunctionNumericState (issue 19, items 2 and 3): an
// HTTP function answering AWS's own example shape, a state of numbers,
// gets it back exactly; while it answers without "state" (a function
// written without windows in mind) its batch fails and runs again, rather
// than resetting the aggregate.
func TestTumblingWindowHTTPFunctionNumericState(t *testing.T) {
	ctx := context.Background()
	broker, topic, cl := newKafka(t, 1)
	w0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	for i := 1; i <= 4; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i)), Timestamp: w0.Add(time.Duration(i) * time.Second)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string // the state each invocation received, as raw JSON
	missing := 2     // answers without state before the function is fixed
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Records []events.KinesisEventRecord `json:"Records"`
			State   json.RawMessage             `json:"state"`
			Final   bool                        `json:"isFinalInvokeForWindow"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		kind := "batch "
		if ev.Final {
			kind = "final "
		}
		got = append(got, kind+string(ev.State))
		if missing > 0 {
			missing--
			w.Write([]byte(`{"batchItemFailures": []}`))
			return
		}
		var st map[string]int
		json.Unmarshal(ev.State, &st)
		sum := st["1"]
		for _, rec := range ev.Records {
			n, _ := strconv.Atoi(string(rec.Kinesis.Data))
			sum += n
		}
		fmt.Fprintf(w, `{"state": {"1": %d, "2": 715}, "batchItemFailures": []}`, sum)
	}))
	t.Cleanup(fn.Close)

	serve(t, fmt.Sprintf(`
functions: [{name: agg, http: {url: %q}}]
mappings:
  - name: m
    function: agg
    startingPosition: TRIM_HORIZON
    batchSize: 2
    tumblingWindow: 60s
    eventFormat: kinesis
    retry: {baseDelay: 1ms, maxDelay: 1ms}
    source: {kafka: {brokers: [%q], topic: %s, pollInterval: 20ms}}
`, fn.URL, broker, topic), nil)

	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := len(got) > 0 && got[len(got)-1][:5] == "final"
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no final invocation; invocations %q", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"batch null", "batch null", "batch null", `batch {"1": 3, "2": 715}`, `final {"1": 10, "2": 715}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the function received the states\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
