package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/source"
)

// failingFunction fails every invocation and keeps the request bodies.
type failingFunction struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (f *failingFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, b)
	f.mu.Unlock()
	w.Header().Set("X-Amz-Function-Error", "Unhandled")
	w.Write([]byte(`{"errorType":"OrderError","errorMessage":"cannot ship"}`))
}

// TestKafkaOnFailureRecord (issue 19, item 6): a Kafka mapping's
// on-failure record is Lambda's for a Kafka event source: KafkaBatchInfo
// with the cluster's eventSourceArn, the payload's size and each
// "<topic>-<partition>"'s first and last offsets and timestamps (to the
// millisecond), not a KinesisBatchInfo with a Kinesis streamArn.
func TestKafkaOnFailureRecord(t *testing.T) {
	for _, kind := range []string{"http", "process"} {
		t.Run(kind, func(t *testing.T) {
			var fn function.Driver
			var httpFn *failingFunction
			if kind == "http" {
				httpFn = &failingFunction{}
				fn = httpFunction(t, httpFn)
			} else {
				fn = lambdaProcess(t, "kafka", nil)
			}
			testKafkaOnFailureRecord(t, fn, httpFn)
		})
	}
}

// testKafkaOnFailureRecord checks the on-failure record of three records
// that fn fails; http, when fn is one, gives the payload it received.
func testKafkaOnFailureRecord(t *testing.T, fn function.Driver, http *failingFunction) {
	ctx := context.Background()
	v := newEnv(t)
	v.stream("kafka-failed", 1)
	brokers, topic, cl := newKafkaTopic(t, 1)
	ts := time.Date(2026, 1, 2, 3, 4, 5, 835_000_000, time.UTC)
	var recs []*kgo.Record
	for i := range 3 {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("k"), Value: []byte(fmt.Sprintf(`{"n":%d,"fail":true}`, i)),
			Timestamp: ts.Add(time.Duration(i) * time.Second)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	m := engine.Mapping{Name: "kafka-fail", Stream: topic, Source: openKafka(t, brokers, topic), Function: "fn", Invoker: fn,
		BatchSize: 10, StartingPosition: source.TrimHorizon, EventFormat: idem.EventFormatKafka, OnFailure: "kafka-failed",
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond}
	m.RetryAttempts(0)
	e, _ := v.run(m)
	waitFor(t, "3 discarded", func() bool { return totals(e).Discarded == 3 })
	failed := v.records("kafka-failed")
	if len(failed) != 4 {
		t.Fatalf("on-failure stream holds %d records, want the metadata record and 3", len(failed))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(failed[0].Data, &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["KinesisBatchInfo"]; ok {
		t.Errorf("a Kafka mapping's on-failure record has KinesisBatchInfo: %s", failed[0].Data)
	}
	var meta struct {
		RequestContext struct {
			Condition              string `json:"condition"`
			ApproximateInvokeCount int    `json:"approximateInvokeCount"`
		} `json:"requestContext"`
		ResponseContext struct {
			FunctionError string `json:"functionError"`
		} `json:"responseContext"`
		Version        string `json:"version"`
		KafkaBatchInfo *struct {
			BatchSize        int     `json:"batchSize"`
			EventSourceArn   string  `json:"eventSourceArn"`
			BootstrapServers *string `json:"bootstrapServers"`
			PayloadSize      int     `json:"payloadSize"`
			RecordsInfo      map[string]struct {
				FirstRecordOffset    string `json:"firstRecordOffset"`
				LastRecordOffset     string `json:"lastRecordOffset"`
				FirstRecordTimestamp string `json:"firstRecordTimestamp"`
				LastRecordTimestamp  string `json:"lastRecordTimestamp"`
			} `json:"recordsInfo"`
		} `json:"KafkaBatchInfo"`
		IdemErrorType string `json:"idemErrorType"`
	}
	if err := json.Unmarshal(failed[0].Data, &meta); err != nil {
		t.Fatal(err)
	}
	bi := meta.KafkaBatchInfo
	if bi == nil {
		t.Fatalf("no KafkaBatchInfo in %s", failed[0].Data)
	}
	if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.RequestContext.ApproximateInvokeCount != 1 ||
		meta.ResponseContext.FunctionError != "Unhandled" || meta.Version != "1.0" || meta.IdemErrorType == "" ||
		(http != nil && meta.IdemErrorType != "OrderError") {
		t.Errorf("metadata record %s", failed[0].Data)
	}
	if bi.BatchSize != 3 || bi.EventSourceArn != "arn:aws:kafka:us-east-1:000000000000:cluster/idem/"+topic || bi.BootstrapServers == nil {
		t.Errorf("KafkaBatchInfo %s", raw["KafkaBatchInfo"])
	}
	if http != nil {
		http.mu.Lock()
		body := http.bodies[0]
		http.mu.Unlock()
		if bi.PayloadSize != len(body) {
			t.Errorf("payloadSize %d, want the invocation's %d bytes", bi.PayloadSize, len(body))
		}
	} else if bi.PayloadSize < 100 {
		t.Errorf("payloadSize %d, want the invocation's size", bi.PayloadSize)
	}
	p, ok := bi.RecordsInfo[topic+"-0"]
	if len(bi.RecordsInfo) != 1 || !ok {
		t.Fatalf("recordsInfo %s, want %s-0 only", raw["KafkaBatchInfo"], topic)
	}
	if p.FirstRecordOffset != "0" || p.LastRecordOffset != "2" ||
		p.FirstRecordTimestamp != "2026-01-02T03:04:05.835Z" || p.LastRecordTimestamp != "2026-01-02T03:04:07.835Z" {
		t.Errorf("recordsInfo[%s-0] = %+v", topic, p)
	}
	for i, r := range failed[1:] {
		if want := fmt.Sprintf(`{"n":%d,"fail":true}`, i); string(r.Data) != want {
			t.Errorf("discarded record %d = %s, want %s", i, r.Data, want)
		}
	}
}
