package engine_test

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kinesis"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// TestReshardKeepsKeyOrder splits a Kinesis shard (kinesalite) between two
// runs of puts for one partition key: the engine discovers the children
// and reads them only after their parent is read to its end, so the key's
// records reach the function in put order, each once.
func TestReshardKeepsKeyOrder(t *testing.T) {
	k := newReshardStream(t)
	k.put(0, 30)
	k.split()
	k.put(30, 60)

	e, r := k.run(100 * time.Millisecond)
	waitFor(t, "60 records", func() bool { return len(r.seen()) >= 60 })
	// A third run of puts after the engine is reading the children.
	k.put(60, 70)
	waitFor(t, "70 records", func() bool { return len(r.seen()) >= 70 })
	r.inOrder(70)
	states := map[string]string{}
	for _, s := range e.Status() {
		states[s.Shard] = s.State
	}
	if states["shardId-000000000000"] != "finished" {
		t.Errorf("parent shard state %q, want finished (%v)", states["shardId-000000000000"], states)
	}
}

// reshardStream is a Kinesis stream of one shard (kinesalite) whose test
// puts records of one partition key and splits the shard.
type reshardStream struct {
	t                *testing.T
	cl               *awskinesis.Client
	endpoint, stream string
}

func newReshardStream(t *testing.T) *reshardStream {
	endpoint := testsvc.KinesisEndpoint(t)
	ctx := context.Background()
	cl := awskinesis.New(awskinesis.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("idem", "idem", ""),
	})
	stream := fmt.Sprintf("reshard-%d", time.Now().UnixNano())
	if _, err := cl.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(stream), ShardCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.DeleteStream(context.Background(), &awskinesis.DeleteStreamInput{StreamName: aws.String(stream)})
	})
	k := &reshardStream{t: t, cl: cl, endpoint: endpoint, stream: stream}
	k.waitActive()
	return k
}

func (k *reshardStream) waitActive() {
	waitFor(k.t, "stream ACTIVE", func() bool {
		out, err := k.cl.DescribeStreamSummary(context.Background(), &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(k.stream)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	})
}

// put puts the records from to to (their data, their number), in order.
func (k *reshardStream) put(from, to int) {
	for i := from; i < to; i++ {
		if _, err := k.cl.PutRecord(context.Background(), &awskinesis.PutRecordInput{StreamName: aws.String(k.stream), PartitionKey: aws.String("k"),
			Data: []byte(strconv.Itoa(i))}); err != nil {
			k.t.Fatal(err)
		}
	}
}

// split splits the first shard at the middle of the hash key range.
func (k *reshardStream) split() {
	mid := new(big.Int).Lsh(big.NewInt(1), 127)
	if _, err := k.cl.SplitShard(context.Background(), &awskinesis.SplitShardInput{StreamName: aws.String(k.stream),
		ShardToSplit: aws.String("shardId-000000000000"), NewStartingHashKey: aws.String(mid.String())}); err != nil {
		k.t.Fatal(err)
	}
	k.waitActive()
}

// TestReshardDiscoveredAtParentEnd: children that appear while the engine
// runs start as soon as their parent is read to its end, not at the next
// discovery (an hour here): the split's records arrive, in order.
func TestReshardDiscoveredAtParentEnd(t *testing.T) {
	k := newReshardStream(t)
	_, r := k.run(time.Hour)
	k.put(0, 20)
	waitFor(t, "20 records from the parent", func() bool { return len(r.seen()) >= 20 })
	k.split()
	k.put(20, 40)
	waitFor(t, "40 records, the children's included", func() bool { return len(r.seen()) >= 40 })
	r.inOrder(40)
}

// received is what the function of a reshard test was given.
type received struct {
	t    *testing.T
	mu   sync.Mutex
	data []string
}

func (r *received) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.data)
}

// inOrder checks that the function got records 0 to n-1 of the key, in
// put order, each once.
func (r *received) inOrder(n int) {
	seen := r.seen()
	for i, d := range seen {
		if d != strconv.Itoa(i) {
			r.t.Fatalf("record %d of key k is %q; want %d (order across the reshard, each once): %v", i, d, i, seen)
		}
	}
	if len(seen) != n {
		r.t.Fatalf("saw %d records, want %d", len(seen), n)
	}
}

// run runs a mapping over the stream, discovering shards every discovery,
// until the test ends.
func (k *reshardStream) run(discovery time.Duration) (*engine.Engine, *received) {
	t := k.t
	ctx := context.Background()
	src, err := kinesis.New(ctx, k.stream, kinesis.WithEndpoint(k.endpoint), kinesis.WithRegion("us-east-1"), kinesis.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	r := &received{t: t}
	h := idem.RecordFunc(func(_ context.Context, rec *idem.Record) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.data = append(r.data, string(rec.Data))
		return nil
	})
	v := newEnv(t)
	e := engine.New(stembedded.New(v.db), engine.WithLogger(testLogger(t)), engine.WithShardDiscovery(discovery))
	if err := e.Add(engine.Mapping{Name: "m", Stream: k.stream, Source: src, Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 7}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e, r
}
