package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
)

// recorder is a handler that keeps the data of every record it sees.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) handler() idem.Handler {
	return idem.RecordFunc(func(_ context.Context, rec *idem.Record) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seen = append(r.seen, string(rec.Data))
		return nil
	})
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// TestFilterCriteria: records that match no pattern (including data that
// is not JSON) never reach the function; they are checkpointed and
// counted, never retried, and the patterns are ORed.
func TestFilterCriteria(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	data := []string{
		`{"type": "order", "amount": 250}`,
		`{"type": "refund", "amount": 10}`,
		`not json`,
		`{"type": "order", "amount": 5}`,
		`{"type": "ping"}`,
		`{"type": "order", "amount": 120, "express": true}`,
	}
	v.put("s", "k", data...)
	rec := &recorder{}
	e, _ := v.run(engine.Mapping{
		Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New(rec.handler()),
		StartingPosition: source.TrimHorizon, BatchSize: 10,
		Filters: []string{
			`{"data": {"type": ["order"], "amount": [{"numeric": [">=", 100]}]}}`,
			`{"data": {"type": ["refund"]}}`,
		},
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(6) })
	want := []string{data[0], data[1], data[5]}
	if got := rec.got(); !slices.Equal(got, want) {
		t.Errorf("the function saw %q, want %q", got, want)
	}
	if st := totals(e); st.Processed != 3 || st.Filtered != 3 || st.Discarded != 0 || st.Invocations != 1 {
		t.Errorf("processed %d, filtered %d, discarded %d, invocations %d; want 3, 3, 0, 1", st.Processed, st.Filtered, st.Discarded, st.Invocations)
	}
}

// TestFilterCriteriaKafka: a KafkaEvent mapping filters on the value and
// the record's metadata.
func TestFilterCriteriaKafka(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	brokers, topic, cl := newKafkaTopic(t, 1)
	var recs []*kgo.Record
	for i := range 6 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("user-%d", i%2)), Value: []byte(fmt.Sprintf(`{"n": %d}`, i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	src := openKafka(t, brokers, topic)
	rec := &recorder{}
	e, _ := v.run(engine.Mapping{
		Name: "m", Stream: topic, Source: src, Function: "f", Invoker: gofunc.New(rec.handler()),
		StartingPosition: source.TrimHorizon, BatchSize: 10, EventFormat: idem.EventFormatKafka,
		Filters: []string{
			`{"key": ["user-1"], "value": {"n": [{"numeric": [">", 1]}]}}`,
			`{"offset": [0], "topic": [{"prefix": "idem-"}]}`,
		},
	})
	waitFor(t, "every record resolved", func() bool { return totals(e).Checkpoint == idem.SequenceOf(6) })
	if got, want := strings.Join(rec.got(), " "), `{"n": 0} {"n": 3} {"n": 5}`; got != want {
		t.Errorf("the function saw %s, want %s", got, want)
	}
}

// TestFilterCriteriaRefused: patterns that do not compile, or that name
// fields the mapping's events do not have, are refused by Add.
func TestFilterCriteriaRefused(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	for _, tc := range []struct {
		format  idem.EventFormat
		filters []string
		want    string
	}{
		{"", []string{`{"data": {"a": [1]}}`, `{"partitionKey": ["k"]}`}, "filterCriteria.filters[1].pattern: partitionKey: kinesis events are filtered on data only"},
		{"", []string{`{"data": 1}`}, "filterCriteria.filters[0].pattern: data: a pattern field is an array of values or an object"},
		{idem.EventFormatKafka, []string{`{"data": {"a": [1]}}`}, "data: kafka events are filtered on key, offset, partition, timestamp, timestampType, topic, value only"},
		{"", slices.Repeat([]string{`{"data": {"a": [1]}}`}, 6), "filterCriteria.filters: 6 patterns, above the limit of 5"},
	} {
		m := engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New((&recorder{}).handler()),
			StartingPosition: source.TrimHorizon, EventFormat: tc.format, Filters: tc.filters}
		err := engine.New(nil).Add(m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.filters, err, tc.want)
		}
	}
}
