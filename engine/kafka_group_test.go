package engine_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kafka"
)

// TestKafkaConsumerGroupBalancesAndHandsOver: two engines share a
// PostgreSQL store and one Kafka mapping whose sources are members of one
// consumer group. The group divides the partitions between them; when B
// stops, its partitions move to A, which finishes the topic. Every record
// is counted exactly once, and the group's committed offsets end at the
// topic's end: idem's checkpoints, mirrored for Kafka's tooling.
func TestKafkaConsumerGroupBalancesAndHandsOver(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t)
	pg := storeKinds[1].open(t, v)
	const partitions = 4
	brokers, topic, cl := newKafkaTopic(t, partitions)
	adm := kadm.NewClient(cl)
	produce := func(from, to int) {
		t.Helper()
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("key-" + strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	group := "idem-" + topic

	run := func(owner string) (*engine.Engine, func()) {
		src := openKafka(t, brokers, topic,
			kafka.WithConsumerGroup(group), kafka.WithSessionTimeout(6*time.Second), kafka.WithLogger(testLogger(t)))
		e := engine.New(pg, engine.WithLogger(testLogger(t)), engine.WithDrainTimeout(5*time.Second),
			engine.WithShardLeases(owner, 2*time.Second))
		m := engine.Mapping{Name: "m", Stream: topic, Source: src, Function: "count", Invoker: gofunc.New(countingHandler(nil)),
			StartingPosition: source.TrimHorizon, BatchSize: 5, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 10 * time.Millisecond}
		if err := e.Add(m); err != nil {
			t.Fatal(err)
		}
		stopEngine := startEngine(t, e, owner)
		stop := func() {
			stopEngine()
			src.Close()
		}
		t.Cleanup(stop)
		return e, stop
	}
	states := func(e *engine.Engine, state string) int {
		n := 0
		for _, s := range e.Status() {
			if s.State == state {
				n++
			}
		}
		return n
	}

	produce(0, 200)
	a, _ := run("A")
	waitFor(t, "A to run every partition", func() bool { return states(a, "running") == partitions })
	b, stopB := run("B")
	waitFor(t, "the group to divide the partitions", func() bool {
		ra, rb := states(a, "running"), states(b, "running")
		return ra > 0 && rb > 0 && ra+rb == partitions &&
			states(a, "assigned elsewhere") == rb && states(b, "assigned elsewhere") == ra
	})
	produce(200, 400)
	stopB()
	waitFor(t, "A to take B's partitions back", func() bool { return states(a, "running") == partitions })
	produce(400, 500)
	waitFor(t, "all 500 records processed", func() bool { return totals(a).Processed+totals(b).Processed >= 500 })

	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group's offsets to reach the end of every partition", func() bool {
		committed, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return false
		}
		ok := true
		ends.Each(func(end kadm.ListedOffset) {
			c, found := committed.Lookup(topic, end.Partition)
			ok = ok && found && c.At == end.Offset
		})
		return ok
	})
	wantCounts(t, pg, 500)
}
