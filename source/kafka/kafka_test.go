package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kafka"
	"github.com/idem-run/idem/source/sourcetest"
)

// maxMessageBytes lets 1 MiB values (Kinesis' limit, the suite's default)
// through: Kafka's default max.message.bytes (1048588) counts the whole
// batch, so a 1 MiB value with its key and framing is just over it.
const maxMessageBytes = 2 << 20

// cluster is a Kafka cluster for one test function: in-process kfake, or
// the brokers of IDEM_TEST_KAFKA_BROKERS.
type cluster struct {
	brokers []string
	adm     *kadm.Client
	prod    *kgo.Client
	n       atomic.Int64
	prefix  string
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{prefix: fmt.Sprintf("idem-%d-", time.Now().UnixNano())}
	if env := os.Getenv("IDEM_TEST_KAFKA_BROKERS"); env != "" && t.Name() == "TestConformanceExternal" {
		c.brokers = strings.Split(env, ",")
	} else {
		fc, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fc.Close)
		c.brokers = fc.ListenAddrs()
	}
	admCl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admCl.Close)
	c.adm = kadm.NewClient(admCl)
	// The producer partitions by key with kgo's default partitioner (the
	// Java client's murmur2), and sends each record at once.
	c.prod, err = kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ProducerBatchMaxBytes(maxMessageBytes), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.prod.Close)
	return c
}

// topic creates a new topic with partitions partitions and configs.
func (c *cluster) topic(ctx context.Context, t testing.TB, partitions int, configs map[string]*string) string {
	t.Helper()
	name := fmt.Sprintf("%stopic-%d", c.prefix, c.n.Add(1))
	cfg := map[string]*string{"max.message.bytes": kadm.StringPtr(fmt.Sprint(maxMessageBytes))}
	for k, v := range configs {
		cfg[k] = v
	}
	if _, err := c.adm.CreateTopic(ctx, int32(partitions), 1, cfg, name); err != nil {
		t.Fatalf("creating topic %s: %v", name, err)
	}
	t.Cleanup(func() { c.adm.DeleteTopic(context.Background(), name) })
	return name
}

// source opens a Source over topic, closed at cleanup.
func (c *cluster) source(ctx context.Context, t testing.TB, topic string, opts ...kafka.Option) *kafka.Source {
	t.Helper()
	src, err := kafka.New(ctx, topic, append([]kafka.Option{kafka.WithBrokers(c.brokers...), kafka.WithPollInterval(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatalf("kafka.New(%s): %v", topic, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// produce appends one record and returns where it landed.
func (c *cluster) produce(ctx context.Context, r *kgo.Record) (string, idem.Sequence, error) {
	res := c.prod.ProduceSync(ctx, r)
	if err := res.FirstErr(); err != nil {
		return "", "", err
	}
	got := res[0].Record
	return kafka.ShardID(got.Topic, got.Partition), kafka.RecordSequence(got.Offset), nil
}

// harness runs the conformance suite: a topic per stream, partitions as
// shards.
type harness struct{ c *cluster }

func (h harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	topic := h.c.topic(ctx, t, shards, nil)
	src := h.c.source(ctx, t, topic)
	app := func(ctx context.Context, key string, data []byte) (string, idem.Sequence, error) {
		return h.c.produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: data})
	}
	return src, app, nil
}

func (harness) Features() sourcetest.Features { return sourcetest.Features{} }

// Trim implements sourcetest.Trimmer with DeleteRecords: the log start
// offset moves to just after the record at through.
func (h harness) Trim(ctx context.Context, _ testing.TB, d source.Driver, shard string, through idem.Sequence) error {
	src := d.(*kafka.Source)
	off, err := kafka.Offset(through)
	if err != nil {
		return err
	}
	p := partitionOf(shard)
	return deleteRecords(ctx, h.c.adm, src.Topic(), p, off+1)
}

func deleteRecords(ctx context.Context, adm *kadm.Client, topic string, p int32, before int64) error {
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: p, At: before})
	res, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		return err
	}
	return res.Error()
}

func partitionOf(shard string) int32 {
	i := strings.LastIndexByte(shard, '-')
	var p int32
	fmt.Sscan(shard[i+1:], &p)
	return p
}

func TestConformance(t *testing.T) {
	sourcetest.RunConformance(t, harness{newCluster(t)})
}

// TestConformanceExternal runs the suite against a real cluster when
// IDEM_TEST_KAFKA_BROKERS names one (comma-separated host:port); it creates
// and deletes topics prefixed "idem-".
func TestConformanceExternal(t *testing.T) {
	if os.Getenv("IDEM_TEST_KAFKA_BROKERS") == "" {
		t.Skip("IDEM_TEST_KAFKA_BROKERS is not set; the kfake run covers the suite")
	}
	sourcetest.RunConformance(t, harness{newCluster(t)})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func read(t *testing.T, src *kafka.Source, shard string, after idem.Sequence, limit int) source.ReadResult {
	t.Helper()
	res, err := src.Read(testCtx(t), shard, after, limit, 1<<20)
	if err != nil {
		t.Fatalf("Read(%s, after %q): %v", shard, after, err)
	}
	return res
}

// TestSequencesAreOffsetsPlusOne pins the spelling of sequences, shard IDs,
// keys, values and timestamps.
func TestSequencesAreOffsetsPlusOne(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	ts := time.UnixMilli(1_700_000_000_123)
	c.produce(ctx, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("first"), Timestamp: ts})
	c.produce(ctx, &kgo.Record{Topic: topic, Value: []byte("keyless")})
	c.produce(ctx, &kgo.Record{Topic: topic, Key: []byte("k")}) // a tombstone

	shard := topic + "-0"
	if ids, _ := src.Shards(ctx); len(ids) != 1 || ids[0] != shard {
		t.Fatalf("Shards = %q, want [%q]", ids, shard)
	}
	res := read(t, src, shard, "", 10)
	if len(res.Records) != 3 {
		t.Fatalf("%d records, want 3", len(res.Records))
	}
	r := res.Records[0]
	if r.Sequence != "00000000000000000001" || r.Stream != topic || r.ShardID != shard || r.PartitionKey != "k" || string(r.Data) != "first" || !r.ArrivalTime.Equal(ts) {
		t.Fatalf("record at offset 0 = %+v", r)
	}
	if r.EventID() != shard+":00000000000000000001" {
		t.Fatalf("EventID = %q", r.EventID())
	}
	if off, err := kafka.Offset(r.Sequence); err != nil || off != 0 {
		t.Fatalf("Offset(%q) = %d, %v; want 0", r.Sequence, off, err)
	}
	if res.Records[1].PartitionKey != "" || string(res.Records[1].Data) != "keyless" {
		t.Fatalf("keyless record = %+v", res.Records[1])
	}
	if res.Records[2].Data != nil {
		t.Fatalf("tombstone Data = %q, want nil", res.Records[2].Data)
	}
	if res.Latest != idem.SequenceOf(3) {
		t.Fatalf("Latest = %q, want %q", res.Latest, idem.SequenceOf(3))
	}
	// Positions need not be padded: "1" is the position after offset 0.
	if res := read(t, src, shard, "1", 10); len(res.Records) != 2 || res.Records[0].Sequence != idem.SequenceOf(2) {
		t.Fatalf("read after \"1\": %+v", res.Records)
	}
	if _, err := kafka.Offset(""); err == nil {
		t.Fatal("Offset of the zero Sequence: no error")
	}
	if _, err := src.Read(ctx, shard, "x1", 10, 1<<20); err == nil {
		t.Fatal("Read after a non-decimal position: no error")
	}
}

// TestLossIsExact: a trim reports exactly the offsets lost, from any
// position behind it, and TRIM_HORIZON moves with the log start.
func TestLossIsExact(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	shard := topic + "-0"
	for i := range 10 {
		c.produce(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "r%d", i)})
	}
	// Read once so that the Source caches the partition: the trim must
	// still be reported to a reader behind it.
	read(t, src, shard, "", 2)
	if err := deleteRecords(ctx, c.adm, topic, 0, 6); err != nil {
		t.Fatal(err)
	}
	res := read(t, src, shard, "", 100)
	if res.Lost != 6 || res.Trimmed != idem.SequenceOf(6) || len(res.Records) != 4 || res.Records[0].Sequence != kafka.RecordSequence(6) || res.Latest != idem.SequenceOf(10) {
		t.Fatalf("read from the start after trimming 6: lost %d, trimmed %q, %d records, latest %q", res.Lost, res.Trimmed, len(res.Records), res.Latest)
	}
	if res := read(t, src, shard, kafka.RecordSequence(1), 1); res.Lost != 4 || res.Trimmed != idem.SequenceOf(6) || len(res.Records) != 1 {
		t.Fatalf("read of 1 after offset 1: lost %d, trimmed %q, %d records; want 4 lost", res.Lost, res.Trimmed, len(res.Records))
	}
	if res := read(t, src, shard, res.Trimmed, 100); res.Lost != 0 || len(res.Records) != 4 {
		t.Fatalf("read from Trimmed: lost %d, %d records", res.Lost, len(res.Records))
	}
	if pos, err := src.Start(ctx, shard, source.TrimHorizon, time.Time{}); err != nil || pos != idem.SequenceOf(6) {
		t.Fatalf("TRIM_HORIZON = %q, %v; want %q", pos, err, idem.SequenceOf(6))
	}
	// Everything trimmed: the loss is reported, with nothing to read.
	if err := deleteRecords(ctx, c.adm, topic, 0, 10); err != nil {
		t.Fatal(err)
	}
	res = read(t, src, shard, kafka.RecordSequence(7), 100)
	if res.Lost != 2 || res.Trimmed != idem.SequenceOf(10) || len(res.Records) != 0 || res.Latest != idem.SequenceOf(10) {
		t.Fatalf("after trimming all: %+v", res)
	}
}

// TestPositionAhead: a position beyond the partition's end is an error, not
// an empty read that would skip the records later appended below it.
func TestPositionAhead(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	c.produce(ctx, &kgo.Record{Topic: topic, Value: []byte("only")})
	_, err := src.Read(ctx, topic+"-0", idem.SequenceOf(100), 10, 1<<20)
	if !errors.Is(err, kafka.ErrPositionAhead) {
		t.Fatalf("Read beyond the end: %v, want ErrPositionAhead", err)
	}
	// At the end exactly is fine.
	if res := read(t, src, topic+"-0", idem.SequenceOf(1), 10); len(res.Records) != 0 {
		t.Fatalf("read at the end: %d records", len(res.Records))
	}
}

// TestReadCommitted: aborted records are never delivered, markers are
// skipped, open transactions are invisible until they commit, and a reader
// at the end neither spins nor errs.
func TestReadCommitted(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	shard := topic + "-0"
	txn, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.TransactionalID("txn-"+topic), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	inTxn := func(commit kgo.TransactionEndTry, values ...string) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	inTxn(kgo.TryAbort, "a1", "a2", "a3")
	inTxn(kgo.TryCommit, "c1", "c2")
	res := read(t, src, shard, "", 100)
	var got []string
	for _, r := range res.Records {
		got = append(got, string(r.Data))
	}
	if fmt.Sprint(got) != "[c1 c2]" {
		t.Fatalf("read_committed read %q, want [c1 c2]", got)
	}
	last := res.Records[len(res.Records)-1].Sequence
	if res.Latest.Compare(last) < 0 {
		t.Fatalf("Latest %q below the last record %q", res.Latest, last)
	}
	if res := read(t, src, shard, last, 100); len(res.Records) != 0 || res.Lost != 0 {
		t.Fatalf("read after the last committed record: %+v", res)
	}
	// The partition ends with a commit marker: a caught-up reader's Wait
	// must wait, not return at once forever (the engine would spin).
	for i := range 3 {
		start := time.Now()
		if err := src.Wait(ctx, shard, last); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("Wait %d at the end of a transactional partition returned after %s", i, d)
		}
		read(t, src, shard, last, 100)
	}

	// An open transaction is not read, and does not count as new.
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	pos, err := src.Start(ctx, shard, source.Latest, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res := read(t, src, shard, pos, 100); len(res.Records) != 0 {
		t.Fatalf("read the open transaction's record %q", res.Records[0].Data)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := src.Wait(ctx, shard, pos); err != nil {
		t.Fatal(err)
	}
	if res := read(t, src, shard, pos, 100); len(res.Records) != 1 || string(res.Records[0].Data) != "open" {
		t.Fatalf("after commit, read from LATEST: %+v", res.Records)
	}
}

// TestCacheIsInvisible: interleaved readers at different positions of one
// partition get exactly what fresh reads would.
func TestCacheIsInvisible(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	shard := topic + "-0"
	const n = 300
	for i := range n {
		c.produce(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "r%d", i)})
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after, next := idem.Sequence(""), 0
			for next < n {
				res, err := src.Read(ctx, shard, after, 7+g, 1<<20)
				if err != nil {
					t.Error(err)
					return
				}
				if len(res.Records) == 0 {
					t.Errorf("reader %d: empty read at %d of %d", g, next, n)
					return
				}
				for _, r := range res.Records {
					if want := fmt.Sprintf("r%d", next); string(r.Data) != want || r.Sequence != kafka.RecordSequence(int64(next)) {
						t.Errorf("reader %d: got %s %q, want %s", g, r.Sequence, r.Data, want)
						return
					}
					next++
					after = r.Sequence
				}
			}
		}()
	}
	wg.Wait()
}

// TestWaitAcrossPartitions: idle waiters on many partitions share one
// poller, and each wakes for its own partition.
func TestWaitAcrossPartitions(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	const parts = 8
	topic := c.topic(ctx, t, parts, nil)
	src := c.source(ctx, t, topic)
	shards, err := src.Shards(ctx)
	if err != nil || len(shards) != parts {
		t.Fatalf("Shards = %q, %v", shards, err)
	}
	var wg sync.WaitGroup
	for p, shard := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pos, err := src.Start(ctx, shard, source.Latest, time.Time{})
			if err != nil {
				t.Error(err)
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if err := src.Wait(ctx, shard, pos); err != nil {
					t.Error(err)
					return
				}
				res, err := src.Read(ctx, shard, pos, 10, 1<<20)
				if err != nil {
					t.Error(err)
					return
				}
				if len(res.Records) > 0 {
					if want := fmt.Sprintf("p%d", p); string(res.Records[0].Data) != want {
						t.Errorf("%s read %q, want %q", shard, res.Records[0].Data, want)
					}
					return
				}
			}
			t.Errorf("%s: no record within 10s", shard)
		}()
	}
	manual, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer manual.Close()
	time.Sleep(50 * time.Millisecond)
	for p := range parts {
		if err := manual.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(p), Value: fmt.Appendf(nil, "p%d", p)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// TestRetention: a record can be read for retention.ms plus segment.ms
// (its segment stays active that long) plus the retention check interval
// (kfake does not list it: Kafka's default); infinite retention,
// compaction, override.
func TestRetention(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	const week, check = 7 * 24 * time.Hour, kafka.DefaultRetentionCheckInterval
	for _, tc := range []struct {
		name    string
		configs map[string]*string
		opts    []kafka.Option
		want    time.Duration
	}{
		{"default", nil, nil, week + week + check},
		{"one hour", map[string]*string{"retention.ms": kadm.StringPtr("3600000")}, nil, time.Hour + week + check},
		{"segment.ms", map[string]*string{"retention.ms": kadm.StringPtr("3600000"), "segment.ms": kadm.StringPtr("600000")}, nil, time.Hour + 10*time.Minute + check},
		{"forever", map[string]*string{"retention.ms": kadm.StringPtr("-1")}, nil, kafka.InfiniteRetention},
		{"compacted", map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "retention.ms": kadm.StringPtr("3600000")}, nil, kafka.InfiniteRetention},
		{"compact,delete", map[string]*string{"cleanup.policy": kadm.StringPtr("compact,delete"), "retention.ms": kadm.StringPtr("3600000"), "segment.ms": kadm.StringPtr("60000")}, nil, time.Hour + time.Minute + check},
		{"override", nil, []kafka.Option{kafka.WithRetention(48 * time.Hour)}, 48 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := c.source(ctx, t, c.topic(ctx, t, 1, tc.configs), tc.opts...)
			if got := src.Retention(); got != tc.want {
				t.Fatalf("Retention = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRetentionRefreshedByShards: a change of the topic's retention.ms or
// segment.ms shows in Retention after the next Shards, which the engine
// calls every discovery interval; a declared retention stays.
func TestRetentionRefreshedByShards(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000"), "segment.ms": kadm.StringPtr("60000")})
	src := c.source(ctx, t, topic)
	declared := c.source(ctx, t, topic, kafka.WithRetention(48*time.Hour))
	check := kafka.DefaultRetentionCheckInterval
	if got, want := src.Retention(), time.Hour+time.Minute+check; got != want {
		t.Fatalf("Retention = %s, want %s", got, want)
	}
	alter := func(k, v string) {
		t.Helper()
		res, err := c.adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(v)}}, topic)
		if err == nil {
			var r kadm.AlterConfigsResponse
			r, err = res.On(topic, nil)
			if err == nil {
				err = r.Err
			}
		}
		if err != nil {
			t.Fatalf("setting %s=%s: %v", k, v, err)
		}
	}
	for _, step := range []struct {
		key, value string
		want       time.Duration
	}{
		{"retention.ms", "86400000", 24*time.Hour + time.Minute + check},
		{"segment.ms", "7200000", 24*time.Hour + 2*time.Hour + check},
		{"retention.ms", "-1", kafka.InfiniteRetention},
	} {
		alter(step.key, step.value)
		if _, err := src.Shards(ctx); err != nil {
			t.Fatal(err)
		}
		if got := src.Retention(); got != step.want {
			t.Fatalf("after %s=%s and Shards: Retention = %s, want %s", step.key, step.value, got, step.want)
		}
		if _, err := declared.Shards(ctx); err != nil {
			t.Fatal(err)
		}
		if got := declared.Retention(); got != 48*time.Hour {
			t.Fatalf("after %s=%s: a declared retention became %s", step.key, step.value, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	if _, err := kafka.New(ctx, "no-such-topic", kafka.WithBrokers(c.brokers...)); !errors.Is(err, source.ErrStreamNotFound) {
		t.Fatalf("New of a missing topic: %v, want source.ErrStreamNotFound", err)
	}
	if _, err := kafka.New(ctx, "t"); err == nil {
		t.Fatal("New without brokers or client: no error")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kafka.New(ctx, "t", kafka.WithClient(cl), kafka.WithBrokers(c.brokers...)); err == nil {
		t.Fatal("New with both a client and brokers: no error")
	}
	if _, err := kafka.New(ctx, "t", kafka.WithClient(cl), kafka.WithPollInterval(0)); err == nil {
		t.Fatal("New with a zero poll interval: no error")
	}
}

// TestWithClientIsNotClosed: a Source over a caller's client leaves it
// open, and refuses calls once closed itself.
func TestWithClientIsNotClosed(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 2, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	src, err := kafka.New(ctx, topic, kafka.WithClient(cl))
	if err != nil {
		t.Fatal(err)
	}
	shards, err := src.Shards(ctx)
	if err != nil || len(shards) != 2 {
		t.Fatalf("Shards = %q, %v", shards, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- src.Wait(ctx, shards[0], "") }()
	time.Sleep(20 * time.Millisecond)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil && !errors.Is(err, kafka.ErrClosed) {
		t.Fatalf("Wait across Close: %v", err)
	}
	if _, err := src.Read(ctx, shards[0], "", 1, 1); !errors.Is(err, kafka.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := kadm.NewClient(cl).ListTopics(ctx, topic); err != nil {
		t.Fatalf("the caller's client after Close: %v", err)
	}
}

// TestLargeRecordThenMany: a fetch sized for small records still returns a
// large one whole, and then the small ones after it.
func TestLargeRecordThenMany(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t)
	topic := c.topic(ctx, t, 1, nil)
	src := c.source(ctx, t, topic)
	shard := topic + "-0"
	for i := range 50 {
		c.produce(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "s%d", i)})
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	c.produce(ctx, &kgo.Record{Topic: topic, Value: big})
	c.produce(ctx, &kgo.Record{Topic: topic, Value: []byte("after")})
	after := idem.Sequence("")
	var got [][]byte
	for {
		res := read(t, src, shard, after, 10)
		if len(res.Records) == 0 {
			break
		}
		for _, r := range res.Records {
			got = append(got, r.Data)
			after = r.Sequence
		}
	}
	if len(got) != 52 || !bytes.Equal(got[50], big) || string(got[51]) != "after" {
		t.Fatalf("read %d records", len(got))
	}
}
