package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kafka"
	"github.com/idem-run/idem/source/redisstream"
)

// putFunc appends records with partition key key, in order, to the shard
// that key maps to, and returns once a reader can see them. It fails the
// test on error, so call it from the test's goroutine.
type putFunc func(key string, data ...string)

// sourceKind makes fresh streams of one source kind for the engine tests
// that must hold on every source.
type sourceKind struct {
	name string
	// open creates a fresh stream (topic, key set…) with shards shards, and
	// returns its driver, the stream's name and a putFunc. It skips the test
	// with testsvc.Absent when the service is missing. The stream and the
	// driver go away when t ends.
	open func(t *testing.T, v *env, shards int) (source.Driver, string, putFunc)
	// replayRecords is how many records the replay test runs through: fewer
	// for a slow source.
	replayRecords int
}

// sourceKinds are the sources the engine's source-dependent tests run over.
// Kinesis' opener lives in sources_kinesis_test.go, with the kinesalite it
// starts; sources_jetstream_test.go appends JetStream from its init, so
// that the file alone can be left out of a build without source/jetstream.
var sourceKinds = []sourceKind{
	{name: "embedded", open: openEmbeddedSource, replayRecords: 10000},
	{name: "kafka", open: openKafkaSource, replayRecords: 10000},
	{name: "kinesis", open: openKinesisSource, replayRecords: 10000},
	{name: "redis", open: openRedisSource, replayRecords: 10000},
}

// uniqueStreamName is a stream name no other test, or test process sharing
// a server, uses. It is valid for every source: letters, digits, '-' and
// '_'.
func uniqueStreamName(kind string) string {
	return "idem-engine-" + kind + "-" + randomHex(6)
}

func openEmbeddedSource(t *testing.T, v *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	name := uniqueStreamName("embedded")
	v.stream(name, shards)
	return v.source(name), name, func(key string, data ...string) {
		t.Helper()
		v.put(name, key, data...)
	}
}

// newKafkaTopic makes a topic of partitions partitions on an in-process
// kfake cluster of its own, and returns the brokers, the topic and an
// admin client, all gone when t ends.
func newKafkaTopic(t *testing.T, partitions int) ([]string, string, *kgo.Client) {
	t.Helper()
	fc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	brokers := fc.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	topic := uniqueStreamName("kafka")
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), int32(partitions), 1, nil, topic); err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
	return brokers, topic, cl
}

// openKafka opens a Source over topic, closed when t ends.
func openKafka(t *testing.T, brokers []string, topic string, opts ...kafka.Option) *kafka.Source {
	t.Helper()
	src, err := kafka.New(context.Background(), topic, append([]kafka.Option{kafka.WithBrokers(brokers...), kafka.WithPollInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("kafka.New(%s): %v", topic, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// openKafkaSource makes a topic of shards partitions on an in-process kfake
// cluster of its own. Records are produced with kgo's default partitioner
// (murmur2 of the key, as the Java client), so one key is one partition.
func openKafkaSource(t *testing.T, _ *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	ctx := context.Background()
	brokers, topic, prod := newKafkaTopic(t, shards)
	src := openKafka(t, brokers, topic)
	return src, topic, func(key string, data ...string) {
		t.Helper()
		for len(data) > 0 {
			n := min(len(data), 1000)
			recs := make([]*kgo.Record, n)
			for i, d := range data[:n] {
				recs[i] = &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(d)}
			}
			if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatalf("producing to %s: %v", topic, err)
			}
			data = data[n:]
		}
	}
}

// openRedisSource makes shards stream keys under a fresh prefix, deleted
// when t ends. A partition key goes to the key its FNV-1a hash names, and
// travels in the entry's "pk" field.
func openRedisSource(t *testing.T, _ *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	ctx := context.Background()
	addr := testsvc.RedisAddr(t)
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	name := uniqueStreamName("redis")
	keys := make([]string, shards)
	for i := range keys {
		keys[i] = name + "-" + strconv.Itoa(i)
	}
	t.Cleanup(func() { admin.Del(context.Background(), keys...) })
	src, err := redisstream.New(ctx, redisstream.WithAddr(addr), redisstream.WithKeys(keys...), redisstream.WithStream(name),
		redisstream.WithPollInterval(50*time.Millisecond))
	if err != nil {
		testsvc.Absent(t, "redis stream source: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src, name, func(pk string, data ...string) {
		t.Helper()
		h := fnv.New32a()
		h.Write([]byte(pk))
		key := keys[int(h.Sum32()%uint32(len(keys)))]
		p := admin.Pipeline()
		cmds := make([]*goredis.StringCmd, len(data))
		for i, d := range data {
			cmds[i] = p.XAdd(ctx, &goredis.XAddArgs{Stream: key, Values: []any{"data", d, "pk", pk}})
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatalf("XADD to %s: %v", key, err)
		}
	}
}

// sourceOrders puts the worked example's 10 records on a one-shard stream
// of kind k, and makes the embedded on-failure stream orders-failed.
func sourceOrders(t *testing.T, v *env, k sourceKind) (source.Driver, string, putFunc) {
	t.Helper()
	v.stream("orders-failed", 1)
	src, name, put := k.open(t, v, 1)
	data := make([]string, 10)
	for i := range data {
		data[i] = fmt.Sprintf(`{"order":%d}`, i+1)
	}
	put("customer-1", data...)
	return src, name, put
}

// sourceWorkedMapping is workedMapping over any source.
func sourceWorkedMapping(src source.Driver, stream string, fn function.Driver) engine.Mapping {
	return engine.Mapping{
		Name: "orders-to-ship", Stream: stream, Source: src, Function: "ship-order", Invoker: fn,
		BatchSize: 10, StartingPosition: source.TrimHorizon,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond,
	}
}

// TestSourcesWorkedExample is TestWorkedExample on every source: ESM.md's
// worked example through an HTTP function that fails at the 4th record of
// every batch, over 10 records with batchSize 10.
func TestSourcesWorkedExample(t *testing.T) {
	for _, k := range sourceKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Run("default settings redeliver the same 10", func(t *testing.T) {
				v := newEnv(t)
				src, name, _ := sourceOrders(t, v, k)
				f := &failsAtFourth{}
				_, stop := v.run(sourceWorkedMapping(src, name, httpFunction(t, f)))
				waitFor(t, "5 invocations", func() bool { return len(f.calls()) >= 5 })
				stop()
				f.mu.Lock()
				defer f.mu.Unlock()
				for i, n := range f.sizes {
					if n != 10 || f.firsts[i] != f.firsts[0] {
						t.Fatalf("invocation %d: %d records from %s; want the same 10 from %s (calls %v)", i, n, f.firsts[i], f.firsts[0], f.sizes)
					}
				}
			})

			t.Run("bisect sends 10, then 5, then 2 or 3", func(t *testing.T) {
				v := newEnv(t)
				src, name, _ := sourceOrders(t, v, k)
				f := &failsAtFourth{}
				m := sourceWorkedMapping(src, name, httpFunction(t, f))
				m.BisectBatchOnFunctionError = true
				e, _ := v.run(m)
				waitFor(t, "all 10 processed", func() bool { return totals(e).Processed == 10 })
				if got, want := fmt.Sprint(f.calls()), "[10 5 2 3 5 2 3]"; got != want {
					t.Fatalf("batch sizes %s, want %s", got, want)
				}
			})

			t.Run("ReportBatchItemFailures sends 10, 7, 4, 1", func(t *testing.T) {
				v := newEnv(t)
				src, name, _ := sourceOrders(t, v, k)
				f := &failsAtFourth{partial: true}
				m := sourceWorkedMapping(src, name, httpFunction(t, f))
				m.ReportBatchItemFailures = true
				e, _ := v.run(m)
				waitFor(t, "all 10 processed", func() bool { return totals(e).Processed == 10 })
				if got := fmt.Sprint(f.calls()); got != "[10 7 4 1]" {
					t.Fatalf("batch sizes %s, want [10 7 4 1]", got)
				}
			})

			t.Run("maximumRetryAttempts 2 makes 3 invocations, then the on-failure stream holds the batch", func(t *testing.T) {
				v := newEnv(t)
				src, name, put := sourceOrders(t, v, k)
				f := &failsAtFourth{}
				m := sourceWorkedMapping(src, name, httpFunction(t, f))
				m.RetryAttempts(2)
				m.OnFailure = "orders-failed"
				e, _ := v.run(m)
				waitFor(t, "10 discarded", func() bool { return totals(e).Discarded == 10 })
				if got := fmt.Sprint(f.calls()); got != "[10 10 10]" {
					t.Fatalf("batch sizes %s, want 3 invocations of 10", got)
				}
				failed := v.records("orders-failed")
				if len(failed) != 11 {
					t.Fatalf("on-failure stream holds %d records, want the metadata record and 10", len(failed))
				}
				var meta struct {
					RequestContext struct {
						Condition              string `json:"condition"`
						ApproximateInvokeCount int    `json:"approximateInvokeCount"`
					} `json:"requestContext"`
					KinesisBatchInfo struct {
						ShardID             string `json:"shardId"`
						BatchSize           int    `json:"batchSize"`
						StartSequenceNumber string `json:"startSequenceNumber"`
						EndSequenceNumber   string `json:"endSequenceNumber"`
					} `json:"KinesisBatchInfo"`
				}
				if err := json.Unmarshal(failed[0].Data, &meta); err != nil {
					t.Fatalf("metadata record: %v: %s", err, failed[0].Data)
				}
				if meta.RequestContext.Condition != "RetryAttemptsExhausted" || meta.RequestContext.ApproximateInvokeCount != 3 || meta.KinesisBatchInfo.BatchSize != 10 {
					t.Fatalf("metadata record %s", failed[0].Data)
				}
				shards, err := src.Shards(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				f.mu.Lock()
				first := f.firsts[0]
				f.mu.Unlock()
				bi := meta.KinesisBatchInfo
				if bi.ShardID != shards[0] || bi.StartSequenceNumber != first ||
					idem.Sequence(bi.EndSequenceNumber).Compare(idem.Sequence(first)) <= 0 {
					t.Fatalf("metadata batch info %+v; want shard %s from the batch's first sequence %s", bi, shards[0], first)
				}
				for i, r := range failed[1:] {
					if want := fmt.Sprintf(`{"order":%d}`, i+1); string(r.Data) != want || r.PartitionKey != "customer-1" {
						t.Fatalf("discarded record %d = %s (key %s), want %s", i, r.Data, r.PartitionKey, want)
					}
				}
				// The shard moves on: a new record is processed, and the
				// checkpoint is its sequence.
				put("customer-1", `{"order":11}`)
				waitFor(t, "the 11th record", func() bool { return totals(e).Processed == 1 })
				f.mu.Lock()
				sizes, last := fmt.Sprint(f.sizes), f.firsts[len(f.firsts)-1]
				f.mu.Unlock()
				if sizes != "[10 10 10 1]" {
					t.Fatalf("batch sizes %s, want [10 10 10 1]", sizes)
				}
				if idem.Sequence(last).Compare(idem.Sequence(bi.EndSequenceNumber)) <= 0 {
					t.Fatalf("the 11th record's sequence %s is not after the discarded batch's end %s", last, bi.EndSequenceNumber)
				}
				if cp := totals(e).Checkpoint; cp != idem.Sequence(last) {
					t.Fatalf("checkpoint %s, want the 11th record's %s", cp, last)
				}
			})
		})
	}
}

// TestSourcesReplayUnderNewMappingName is TestReplayUnderNewMappingName on
// every source, over 4 shards: a renamed mapping starting at TRIM_HORIZON
// in the same scope runs none of the retained records again.
func TestSourcesReplayUnderNewMappingName(t *testing.T) {
	for _, k := range sourceKinds {
		t.Run(k.name, func(t *testing.T) {
			testSourceReplayUnderNewMappingName(t, newEnv(t), k)
		})
	}
}

func testSourceReplayUnderNewMappingName(t *testing.T, v *env, k sourceKind) {
	src, name, put := k.open(t, v, 4)
	n := k.replayRecords
	chunk := n / 20 // 20 partition keys, spread over the shards
	begin := time.Now()
	for i := 0; i < n; i += chunk {
		data := make([]string, chunk)
		for j := range data {
			data[j] = strconv.Itoa(i + j)
		}
		put("k"+strconv.Itoa(i), data...)
	}
	putTime := time.Since(begin)

	// The first mapping must see every record's data exactly once.
	var mu sync.Mutex
	seen := make([]int, n)
	var problems []string
	var first, second atomic.Int64
	count := func(c *atomic.Int64, note bool) function.Driver {
		return gofunc.New(idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
			c.Add(int64(len(b.Records)))
			if note {
				mu.Lock()
				for _, r := range b.Records {
					i, err := strconv.Atoi(string(r.Data))
					if err != nil || i < 0 || i >= n {
						problems = append(problems, fmt.Sprintf("unexpected data %q", r.Data))
						continue
					}
					seen[i]++
				}
				mu.Unlock()
			}
			return idem.BatchResult{}, nil
		}))
	}
	m := engine.Mapping{Name: "orders-to-ship", Stream: name, Source: src, Function: "ship-order",
		Invoker: count(&first, true), StartingPosition: source.TrimHorizon, Scope: "ship-order"}
	begin = time.Now()
	e, stop := v.run(m)
	waitFor(t, "first mapping", func() bool { return totals(e).Processed == uint64(n) })
	stop()
	firstTime := time.Since(begin)
	busy := 0
	for _, s := range e.Status() {
		if s.Processed > 0 {
			busy++
		}
	}

	m.Name, m.Function, m.Invoker = "orders-to-ship-v2", "ship-order-v2", count(&second, false)
	begin = time.Now()
	e2, _ := v.run(m)
	waitFor(t, "replay skipped", func() bool { return totals(e2).Skipped == uint64(n) })
	replayTime := time.Since(begin)
	t.Logf("%d records over %d busy shards: put %s, first mapping %s, replay %s", n, busy, putTime.Round(time.Millisecond), firstTime.Round(time.Millisecond), replayTime.Round(time.Millisecond))
	if got := second.Load(); got != 0 {
		t.Fatalf("the renamed mapping ran %d records again", got)
	}
	if got := first.Load(); got != int64(n) {
		t.Fatalf("first mapping ran %d records, want %d", got, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("%d problems, first: %v", len(problems), problems[:min(5, len(problems))])
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("record %d ran %d times in the first mapping, want once", i, c)
		}
	}
	if s := totals(e2); s.Processed != 0 || s.Discarded != 0 || s.Lost != 0 {
		t.Fatalf("replay: processed %d discarded %d lost %d, want only skips", s.Processed, s.Discarded, s.Lost)
	}
}
