package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	kinesistypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	natsjs "github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
	"github.com/idem-run/idem/source/jetstream"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testsvc.StopKinesalite()
	os.Exit(code)
}

// seen is one record as a function saw it in its event.
type seen struct {
	shard, key, data string
	offset           int64 // KafkaEvent only
}

// sourceCase configures one kind of source from YAML, as a user would.
type sourceCase struct {
	name string
	// setup creates a fresh stream and returns the mapping's source YAML
	// (the value of `source:`), its extra mapping keys, and a function that
	// appends records with one partition key, in order.
	setup func(t *testing.T) (source, extra string, put func(key string, data ...string))
	// kafkaEvent says the function receives a KafkaEvent, not a KinesisEvent.
	kafkaEvent bool
	// check looks at what the function saw, beyond order and exactly-once.
	check func(t *testing.T, got []seen)
	// keys are the partition keys the mapping's filters let through; nil
	// for all.
	keys []string
}

// TestSourcesFromConfig runs one mapping per kind of source, configured by
// YAML as README documents it, through a Go function that decodes the
// Lambda event it receives: every record arrives once, in order per key,
// in the event shape the mapping names.
func TestSourcesFromConfig(t *testing.T) {
	for _, tc := range []sourceCase{
		{name: "kafka", setup: kafkaTopic, kafkaEvent: true, check: func(t *testing.T, got []seen) {
			offsets := map[string][]int64{}
			for _, s := range got {
				offsets[s.shard] = append(offsets[s.shard], s.offset)
			}
			for shard, offs := range offsets {
				for i, o := range offs {
					if o != int64(i) {
						t.Fatalf("%s: offsets %v, want 0, 1, 2…", shard, offs)
					}
				}
			}
		}},
		{name: "kafka as KinesisEvent", setup: func(t *testing.T) (string, string, func(string, ...string)) {
			src, _, put := kafkaTopic(t)
			return src, "eventFormat: kinesis", put
		}},
		{name: "jetstream partitioned by token", setup: jetStreamByToken, check: func(t *testing.T, got []seen) {
			for _, s := range got {
				want := fmt.Sprintf("partition-%d-of-4", jetstream.Partition("orders."+s.key+".created", 2, 4))
				if s.shard != want {
					t.Fatalf("key %s in shard %s, want %s", s.key, s.shard, want)
				}
			}
		}},
		{name: "redis", setup: redisKeys},
		{name: "kafka with filterCriteria", kafkaEvent: true, keys: []string{"a", "c", "f"}, setup: func(t *testing.T) (string, string, func(string, ...string)) {
			src, _, put := kafkaTopic(t)
			return src, `filterCriteria: {filters: [{pattern: '{"value": {"key": ["a", "c"]}}'}, {pattern: '{"key": [{"prefix": "f"}]}'}]}`, put
		}},
		{name: "redis with filterCriteria", keys: []string{"b", "d", "e", "f"}, setup: func(t *testing.T) (string, string, func(string, ...string)) {
			src, _, put := redisKeys(t)
			return src, `filterCriteria: {filters: [{pattern: '{"data": {"key": [{"anything-but": ["a", "c"]}]}}'}]}`, put
		}},
		{name: "kinesis", setup: kinesisStream},
	} {
		t.Run(tc.name, func(t *testing.T) { testSourceFromConfig(t, tc) })
	}
}

func testSourceFromConfig(t *testing.T, tc sourceCase) {
	src, extra, put := tc.setup(t)
	var mu sync.Mutex
	var got []seen
	handler := idem.InvokeFunc(func(_ context.Context, payload []byte) ([]byte, error) {
		recs, err := decodeEvent(payload, tc.kafkaEvent)
		if err != nil {
			t.Errorf("decoding the event: %v\n%s", err, payload)
			return nil, err
		}
		mu.Lock()
		got = append(got, recs...)
		mu.Unlock()
		return []byte(`{"batchItemFailures":[]}`), nil
	})
	if extra != "" {
		extra = ", " + extra
	}
	serve(t, fmt.Sprintf(`
functions: [{name: decode}]
mappings:
  - {name: m, function: decode, startingPosition: TRIM_HORIZON, batchSize: 7, source: %s%s}
`, src, extra), nil, server.WithInvokeHandler("decode", handler))

	const perKey = 15
	keys := []string{"a", "b", "c", "d", "e", "f"}
	for _, k := range keys {
		data := make([]string, perKey)
		for i := range data {
			data[i] = fmt.Sprintf(`{"key":%q,"n":%d}`, k, i)
		}
		put(k, data...)
	}
	if tc.keys != nil {
		keys = tc.keys
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= len(keys)*perKey {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the function saw %d of %d records", n, len(keys)*perKey)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let a duplicate, if any, arrive
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(keys)*perKey {
		t.Fatalf("the function saw %d records, want %d: a record ran twice, or a filter let one through", len(got), len(keys)*perKey)
	}
	next := map[string]int{}
	for _, s := range got {
		if !slices.Contains(keys, s.key) {
			t.Fatalf("key %s reached the function: the filters should have dropped it", s.key)
		}
		want := fmt.Sprintf(`{"key":%q,"n":%d}`, s.key, next[s.key])
		if s.data != want {
			t.Fatalf("key %s: got %s, want %s (order per key)", s.key, s.data, want)
		}
		next[s.key]++
	}
	if tc.check != nil {
		tc.check(t, got)
	}
}

// decodeEvent decodes a KafkaEvent or a KinesisEvent with aws-lambda-go's
// types, as an existing handler would.
func decodeEvent(payload []byte, kafka bool) ([]seen, error) {
	var out []seen
	if kafka {
		var ev events.KafkaEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			return nil, err
		}
		if len(ev.Records) != 1 {
			return nil, fmt.Errorf("%d topic-partitions in one batch, want 1", len(ev.Records))
		}
		for group, recs := range ev.Records {
			for _, r := range recs {
				if group != fmt.Sprintf("%s-%d", r.Topic, r.Partition) {
					return nil, fmt.Errorf("record of %s-%d under %q", r.Topic, r.Partition, group)
				}
				key, err1 := base64.StdEncoding.DecodeString(r.Key)
				value, err2 := base64.StdEncoding.DecodeString(r.Value)
				if err1 != nil || err2 != nil {
					return nil, fmt.Errorf("key %q, value %q: not base64", r.Key, r.Value)
				}
				out = append(out, seen{shard: group, key: string(key), data: string(value), offset: r.Offset})
			}
		}
		return out, nil
	}
	var ev events.KinesisEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	for _, r := range ev.Records {
		shard, _, ok := strings.Cut(r.EventID, ":")
		if !ok || r.Kinesis.SequenceNumber == "" {
			return nil, fmt.Errorf("eventID %q, sequence %q", r.EventID, r.Kinesis.SequenceNumber)
		}
		var d struct{ Key string }
		if err := json.Unmarshal(r.Kinesis.Data, &d); err != nil {
			return nil, err
		}
		out = append(out, seen{shard: shard, key: d.Key, data: string(r.Kinesis.Data)})
	}
	return out, nil
}

func uniqueName(kind string) string {
	return fmt.Sprintf("idem_server_%s_%d", kind, time.Now().UnixNano())
}

// newKafka makes a topic of partitions partitions on an in-process kfake
// cluster, and returns the broker, the topic and a producing client.
func newKafka(t *testing.T, partitions int32) (string, string, *kgo.Client) {
	fc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fc.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(fc.ListenAddrs()...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	topic := uniqueName("kafka")
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	return fc.ListenAddrs()[0], topic, cl
}

// kafkaTopic makes a 3-partition topic on an in-process kfake cluster.
func kafkaTopic(t *testing.T) (string, string, func(string, ...string)) {
	ctx := context.Background()
	broker, topic, cl := newKafka(t, 3)
	src := fmt.Sprintf("{kafka: {brokers: [%q], topic: %s, pollInterval: 20ms}}", broker, topic)
	return src, "", func(key string, data ...string) {
		recs := make([]*kgo.Record, len(data))
		for i, d := range data {
			recs[i] = &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(d)}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// jetStreamByToken makes a stream on orders.<key>.created, split into 4
// shards by the key token.
func jetStreamByToken(t *testing.T) (string, string, func(string, ...string)) {
	url, js := testsvc.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	name := uniqueName("jetstream")
	subjects := name + ".>"
	if _, err := js.CreateStream(ctx, natsjs.StreamConfig{Name: name, Subjects: []string{subjects}, Storage: natsjs.MemoryStorage}); err != nil {
		testsvc.Absent(t, "creating a JetStream stream at %s: %v", url, err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), name) })
	src := fmt.Sprintf("{jetstream: {url: %q, stream: %s, partitionByToken: {token: 2, count: 4}}}", url, name)
	return src, "", func(key string, data ...string) {
		for _, d := range data {
			// The test's checks hash "orders.<key>.created"; token 2 is
			// the key whatever the first token, so the stream's name
			// stands in for "orders".
			if _, err := js.Publish(context.Background(), name+"."+key+".created", []byte(d)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// redisKeys makes 2 stream keys; a key's records go to the key its first
// byte picks.
func redisKeys(t *testing.T) (string, string, func(string, ...string)) {
	addr := testsvc.RedisAddr(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	name := uniqueName("redis")
	keys := []string{name + "-0", name + "-1"}
	t.Cleanup(func() { c.Del(context.Background(), keys...) })
	src := fmt.Sprintf("{redis: {addr: %q, keys: [%s, %s]}}", addr, keys[0], keys[1])
	return src, "", func(key string, data ...string) {
		for _, d := range data {
			err := c.XAdd(context.Background(), &goredis.XAddArgs{Stream: keys[int(key[0])%2], Values: []any{"data", d, "pk", key}}).Err()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// kinesisStream makes a 2-shard stream on kinesalite.
func kinesisStream(t *testing.T) (string, string, func(string, ...string)) {
	endpoint := testsvc.KinesisEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := awskinesis.New(awskinesis.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("idem", "idem", "")})
	name := uniqueName("kinesis")
	if _, err := c.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.DeleteStream(context.Background(), &awskinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	for {
		out, err := c.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		if out.StreamDescriptionSummary.StreamStatus == kinesistypes.StreamStatusActive {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	src := fmt.Sprintf("{kinesis: {stream: %s, region: us-east-1, endpoint: %q}}", name, endpoint)
	return src, "", func(key string, data ...string) {
		entries := make([]kinesistypes.PutRecordsRequestEntry, len(data))
		for i, d := range data {
			entries[i] = kinesistypes.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: []byte(d)}
		}
		out, err := c.PutRecords(context.Background(), &awskinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) > 0 {
			t.Fatalf("PutRecords: %v", err)
		}
	}
}
