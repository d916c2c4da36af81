package engine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/source"
)

// kafkaEventFunction is an HTTP function that decodes events.KafkaEvent,
// keeps every record it sees, and on its first invocation reports the
// record at offset 2 as failed, by "<topic>-<partition>@<offset>" or by
// the Kinesis-style eventID.
type kafkaEventFunction struct {
	t       *testing.T
	eventID bool // report the failure as "<shardId>:<sequence>"
	mu      sync.Mutex
	calls   [][]events.KafkaRecord
}

func (f *kafkaEventFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev events.KafkaEvent
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		f.t.Errorf("decoding the KafkaEvent: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var recs []events.KafkaRecord
	var group string
	for k, rs := range ev.Records {
		group = k
		recs = append(recs, rs...)
	}
	f.mu.Lock()
	first := len(f.calls) == 0
	f.calls = append(f.calls, recs)
	f.mu.Unlock()
	var failures []idem.BatchItemFailure
	if first {
		id := fmt.Sprintf("%s@%d", group, 2)
		if f.eventID {
			id = fmt.Sprintf("%s:%s", group, idem.SequenceOf(3))
		}
		failures = []idem.BatchItemFailure{{ItemIdentifier: id}}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"batchItemFailures": failures})
}

func TestKafkaEvent(t *testing.T) {
	for _, eventID := range []bool{false, true} {
		t.Run(fmt.Sprintf("eventID=%v", eventID), func(t *testing.T) { testKafkaEvent(t, eventID) })
	}
}

func testKafkaEvent(t *testing.T, eventID bool) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	ts := time.UnixMilli(1700000000000)
	var recs []*kgo.Record
	for i := range 5 {
		r := &kgo.Record{Topic: topic, Partition: 0, Key: []byte(fmt.Sprintf("key-%d", i)), Value: []byte(fmt.Sprintf(`{"n":%d}`, i)),
			Timestamp: ts.Add(time.Duration(i) * time.Millisecond)}
		if i%2 == 0 {
			r.Headers = []kgo.RecordHeader{{Key: "h", Value: []byte{byte(i), 0xff}}, {Key: "trace", Value: []byte("t")}}
		}
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	src := openKafka(t, brokers, topic)

	f := &kafkaEventFunction{t: t, eventID: eventID}
	m := engine.Mapping{
		Name: "kafka-event", Stream: topic, Source: src, Function: "fn", Invoker: httpFunction(t, f),
		BatchSize: 10, StartingPosition: source.TrimHorizon, ReportBatchItemFailures: true,
		EventFormat:    idem.EventFormatKafka,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	}
	e, _ := v.run(m)
	waitFor(t, "all 5 processed", func() bool { return totals(e).Processed == 5 })

	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 2 || len(f.calls[0]) != 5 || len(f.calls[1]) != 3 {
		t.Fatalf("invocations %v, want 5 records, then the 3 from offset 2", f.calls)
	}
	for i, r := range f.calls[0] {
		if r.Topic != topic || r.Partition != 0 || r.Offset != int64(i) {
			t.Errorf("record %d: %s-%d@%d", i, r.Topic, r.Partition, r.Offset)
		}
		if r.Key != base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("key-%d", i))) ||
			r.Value != base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{"n":%d}`, i))) {
			t.Errorf("record %d: key %q value %q", i, r.Key, r.Value)
		}
		if !r.Timestamp.Equal(ts.Add(time.Duration(i)*time.Millisecond)) || r.TimestampType != "CREATE_TIME" {
			t.Errorf("record %d: timestamp %v %q", i, r.Timestamp, r.TimestampType)
		}
		if i%2 == 0 {
			if len(r.Headers) != 2 || fmt.Sprint([]byte(r.Headers[0]["h"])) != fmt.Sprint([]byte{byte(i), 0xff}) || string(r.Headers[1]["trace"]) != "t" {
				t.Errorf("record %d: headers %v", i, r.Headers)
			}
		} else if len(r.Headers) != 0 {
			t.Errorf("record %d: headers %v, want none", i, r.Headers)
		}
	}
	for i, r := range f.calls[1] {
		if r.Offset != int64(i+2) {
			t.Errorf("retry record %d: offset %d, want %d", i, r.Offset, i+2)
		}
	}
}
