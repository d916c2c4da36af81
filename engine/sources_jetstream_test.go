package engine_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/jetstream"
)

func init() {
	sourceKinds = append(sourceKinds, sourceKind{name: "jetstream", open: openJetStreamSource, replayRecords: 10000})
}

// openJetStreamSource creates a limits stream on "<name>.>", deleted when t
// ends. One shard is the whole stream; more are WithPartitions filters
// "<name>.p<i>.>", and a partition key goes to the filter its FNV-1a hash
// names, in the Idem-Partition-Key header.
func openJetStreamSource(t *testing.T, _ *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	url, js := testsvc.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := "idem_engine_" + randomHex(6)
	if _, err := js.CreateStream(ctx, natsjs.StreamConfig{Name: name, Subjects: []string{name + ".>"}, MaxAge: 24 * time.Hour, Storage: natsjs.FileStorage}); err != nil {
		t.Fatalf("creating stream %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, natsjs.ErrStreamNotFound) {
			t.Errorf("deleting stream %s: %v", name, err)
		}
	})
	opts := []jetstream.Option{jetstream.WithPollInterval(200 * time.Millisecond)}
	subject := func(string) string { return name + ".all" }
	if shards > 1 {
		filters := make([]string, shards)
		for i := range filters {
			filters[i] = fmt.Sprintf("%s.p%d.>", name, i)
		}
		opts = append(opts, jetstream.WithPartitions(filters...))
		subject = func(key string) string {
			h := fnv.New32a()
			h.Write([]byte(key))
			return fmt.Sprintf("%s.p%d.x", name, h.Sum32()%uint32(shards))
		}
	}
	src, err := jetstream.Connect(ctx, url, name, opts...)
	if err != nil {
		t.Fatalf("jetstream.Connect(%s): %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Close(ctx); err != nil {
			t.Errorf("closing the source: %v", err)
		}
	})
	return src, name, func(key string, data ...string) {
		t.Helper()
		// Asynchronous publishes on one connection are stored in the order
		// sent; wait for every acknowledgement.
		subj := subject(key)
		futures := make([]natsjs.PubAckFuture, len(data))
		for i, d := range data {
			m := nats.NewMsg(subj)
			m.Header.Set(jetstream.PartitionKeyHeader, key)
			m.Data = []byte(d)
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				t.Fatalf("publishing to %s: %v", subj, err)
			}
			futures[i] = f
		}
		timeout := time.After(30 * time.Second)
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publishing to %s: %v", subj, err)
			case <-timeout:
				t.Fatalf("publishing to %s: no acknowledgement within 30s", subj)
			}
		}
	}
}
