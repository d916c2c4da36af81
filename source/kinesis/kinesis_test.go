package kinesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/sourcetest"
)

// harness makes a Kinesis stream per test. It is not a sourcetest.Trimmer:
// Kinesis (and kinesalite) only trims by age, with a retention of at least
// 24 hours, so the suite's loss test is skipped here; the fake API of
// loss_test.go covers loss detection instead.
type harness struct {
	endpoint string
	poll     time.Duration
}

var streams atomic.Int64

func testClient(endpoint string) *kinesis.Client {
	return kinesis.New(kinesis.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("idem", "idem", ""),
	})
}

// createStream creates a stream with shards shards, waits until it is
// ACTIVE, and deletes it when t ends.
func createStream(ctx context.Context, t testing.TB, client *kinesis.Client, shards int) (string, error) {
	name := fmt.Sprintf("idem-test-%d-%d", os.Getpid(), streams.Add(1))
	if _, err := client.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(int32(shards))}); err != nil {
		return "", fmt.Errorf("creating stream %s: %w", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil {
			t.Errorf("deleting stream %s: %v", name, err)
		}
	})
	for {
		out, err := client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			return "", fmt.Errorf("describing stream %s: %w", name, err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return name, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("stream %s not ACTIVE: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func putter(client *kinesis.Client, stream string) sourcetest.Appender {
	return func(ctx context.Context, key string, data []byte) (string, idem.Sequence, error) {
		out, err := client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String(key), Data: data})
		if err != nil {
			return "", "", err
		}
		return aws.ToString(out.ShardId), idem.Sequence(aws.ToString(out.SequenceNumber)), nil
	}
}

func (h harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	client := testClient(h.endpoint)
	name, err := createStream(ctx, t, client, shards)
	if err != nil {
		return nil, nil, err
	}
	src, err := New(ctx, name, WithEndpoint(h.endpoint), WithRegion("us-east-1"), WithPollInterval(h.poll))
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { src.Close() })
	return src, putter(client, name), nil
}

// Features: Kinesis' limit is 1 MiB of data and partition key together;
// kinesalite checks the data alone, so the suite's 1 MiB record (key "big")
// passes there. Against another endpoint (IDEM_TEST_KINESIS_ENDPOINT, maybe
// real Kinesis) the record is 1 MiB less the key. Arrival times are in
// milliseconds, the suite's default.
func (harness) Features() sourcetest.Features {
	if os.Getenv("IDEM_TEST_KINESIS_ENDPOINT") != "" {
		return sourcetest.Features{MaxRecordBytes: 1<<20 - len("big")}
	}
	return sourcetest.Features{}
}

func TestConformance(t *testing.T) {
	sourcetest.RunConformance(t, harness{endpoint: testEndpoint(t), poll: 20 * time.Millisecond})
}

// stream makes a stream and a Source over it for the tests below.
func stream(t *testing.T, shards int, opts ...Option) (context.Context, *Source, sourcetest.Appender, *kinesis.Client) {
	t.Helper()
	endpoint := testEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	client := testClient(endpoint)
	name, err := createStream(ctx, t, client, shards)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(ctx, name, append([]Option{WithClient(client), WithPollInterval(10 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return ctx, src, putter(client, name), client
}

func appendN(t *testing.T, ctx context.Context, app sourcetest.Appender, n int) []idem.Sequence {
	t.Helper()
	seqs := make([]idem.Sequence, n)
	for i := range seqs {
		_, seq, err := app(ctx, "key", fmt.Appendf(nil, "rec-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		seqs[i] = seq
	}
	return seqs
}

func sequences(recs []idem.Record) []idem.Sequence {
	out := make([]idem.Sequence, len(recs))
	for i, r := range recs {
		out[i] = r.Sequence
	}
	return out
}

func TestNewUnknownStream(t *testing.T) {
	endpoint := testEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := New(ctx, "no-such-stream", WithEndpoint(endpoint), WithRegion("us-east-1"))
	if !errors.Is(err, source.ErrStreamNotFound) {
		t.Fatalf("New of a missing stream: %v, want source.ErrStreamNotFound", err)
	}
}

// TestConsecutiveReadsReuseIterator: reading on from the last record read
// makes no GetShardIterator call, and records maxBytes held back come in
// the next Read, none dropped.
func TestConsecutiveReadsReuseIterator(t *testing.T) {
	ctx, src, app, _ := stream(t, 1)
	seqs := appendN(t, ctx, app, 30)
	counted := &countingAPI{api: src.api}
	src.api = counted
	shard := "shardId-000000000000"
	var got []idem.Sequence
	after := idem.Sequence("")
	for {
		res, err := src.Read(ctx, shard, after, 7, 6) // 6 bytes: one record
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) == 0 {
			break
		}
		if len(res.Records) != 1 {
			t.Fatalf("Read(maxBytes 6) returned %d records", len(res.Records))
		}
		got = append(got, sequences(res.Records)...)
		after = res.Records[len(res.Records)-1].Sequence
	}
	if fmt.Sprint(got) != fmt.Sprint(seqs) {
		t.Fatalf("read %d records %v, want %v", len(got), got, seqs)
	}
	if n := counted.iterators.Load(); n != 1 {
		t.Fatalf("%d GetShardIterator calls, want 1", n)
	}
	if n := counted.gets.Load(); n != 2 {
		t.Fatalf("%d GetRecords calls, want 2 (the records, then the empty tip)", n)
	}
}

// TestPositionsSurviveRestart: positions one below a record (AT_TIMESTAMP,
// Trimmed) are read from by a new Source, with no cache, exactly: no record
// missed, none reported lost.
func TestPositionsSurviveRestart(t *testing.T) {
	ctx, src, app, client := stream(t, 1)
	shard := "shardId-000000000000"
	early := appendN(t, ctx, app, 3)
	time.Sleep(20 * time.Millisecond)
	ts := time.Now()
	time.Sleep(20 * time.Millisecond)
	late := appendN(t, ctx, app, 2)
	pos, err := src.Start(ctx, shard, source.AtTimestamp, ts)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Compare(early[2]) < 0 || pos.Compare(late[0]) >= 0 {
		t.Fatalf("AT_TIMESTAMP = %q, want in [%q, %q)", pos, early[2], late[0])
	}
	latest, err := src.Start(ctx, shard, source.Latest, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if latest != late[1] {
		t.Fatalf("LATEST = %q, want the newest record %q", latest, late[1])
	}

	fresh, err := New(ctx, src.Stream(), WithClient(client), WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, tc := range []struct {
		after idem.Sequence
		want  []idem.Sequence
	}{
		{pos, late},
		{decrement(early[1]), append(early[1:], late...)},
		{early[0], append(early[1:], late...)},
		{latest, nil},
		{"", append(early, late...)},
	} {
		res, err := fresh.Read(ctx, shard, tc.after, 100, 1<<20)
		if err != nil {
			t.Fatalf("Read after %q: %v", tc.after, err)
		}
		if res.Lost != 0 || fmt.Sprint(sequences(res.Records)) != fmt.Sprint(tc.want) {
			t.Fatalf("Read after %q: %v (lost %d), want %v", tc.after, sequences(res.Records), res.Lost, tc.want)
		}
	}
}

func TestInvalidPosition(t *testing.T) {
	ctx, src, app, _ := stream(t, 1)
	appendN(t, ctx, app, 2)
	if _, err := src.Read(ctx, "shardId-000000000000", "12x", 10, 1<<20); err == nil {
		t.Fatal("Read after a position that is not a number: no error")
	}
}

// TestResharding: after a split, ShardInfos names the parent of each child,
// the parent is closed, and Finished says when it is read to its end.
func TestResharding(t *testing.T) {
	ctx, src, app, client := stream(t, 1)
	parent := "shardId-000000000000"
	seqs := appendN(t, ctx, app, 3)
	if _, err := client.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName:         aws.String(src.Stream()),
		ShardToSplit:       aws.String(parent),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728"),
	}); err != nil {
		t.Fatal(err)
	}
	for {
		out, err := client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(src.Stream())})
		if err != nil {
			t.Fatal(err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ids, err := src.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != parent {
		t.Fatalf("Shards after a split = %q, want the parent first and two children", ids)
	}
	infos, err := src.ShardInfos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !infos[0].Closed() || len(infos[0].Parents()) != 0 {
		t.Fatalf("parent %+v: want closed, without parents", infos[0])
	}
	for _, child := range ids[1:] {
		p, err := src.Parents(ctx, child)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 1 || p[0] != parent {
			t.Fatalf("Parents(%s) = %q, want [%s]", child, p, parent)
		}
		if done, err := src.Finished(ctx, child, ""); err != nil || done {
			t.Fatalf("Finished(open child %s) = %v, %v; want false", child, done, err)
		}
	}
	if done, err := src.Finished(ctx, parent, seqs[1]); err != nil || done {
		t.Fatalf("Finished(parent, before its last record) = %v, %v; want false", done, err)
	}
	res, err := src.Read(ctx, parent, "", 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sequences(res.Records)) != fmt.Sprint(seqs) {
		t.Fatalf("parent holds %v, want %v", sequences(res.Records), seqs)
	}
	if done, err := src.Finished(ctx, parent, seqs[2]); err != nil || !done {
		t.Fatalf("Finished(parent, at its last record) = %v, %v; want true", done, err)
	}
	// The parent takes no new records; a key's next record goes to a child.
	shard, seq, err := app(ctx, "key", []byte("after the split"))
	if err != nil {
		t.Fatal(err)
	}
	if shard == parent {
		t.Fatalf("a record landed in the closed parent")
	}
	res, err = src.Read(ctx, shard, "", 10, 1<<20)
	if err != nil || len(res.Records) != 1 || res.Records[0].Sequence != seq {
		t.Fatalf("child %s: %v, %v; want the record %q", shard, res.Records, err, seq)
	}
}

func TestWaitCloses(t *testing.T) {
	ctx, src, _, _ := stream(t, 1, WithPollInterval(time.Hour))
	errc := make(chan error, 1)
	go func() { errc <- src.Wait(ctx, "shardId-000000000000", "") }()
	time.Sleep(20 * time.Millisecond)
	src.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return on Close")
	}
	if _, err := src.Read(ctx, "shardId-000000000000", "", 1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
}

func TestRecordFields(t *testing.T) {
	ctx, src, app, _ := stream(t, 1)
	before := time.Now().Add(-time.Second)
	shard, seq, err := app(ctx, "pk", []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := src.Read(ctx, shard, "", 10, 1<<20)
	if err != nil || len(res.Records) != 1 {
		t.Fatalf("Read: %v, %v", res.Records, err)
	}
	r := res.Records[0]
	if r.Stream != src.Stream() || r.ShardID != shard || r.Sequence != seq || r.PartitionKey != "pk" || !bytes.Equal(r.Data, []byte("payload")) {
		t.Fatalf("record %+v", r)
	}
	if r.ArrivalTime.Before(before) || r.ArrivalTime.After(time.Now().Add(time.Second)) {
		t.Fatalf("ArrivalTime %s, want about now", r.ArrivalTime)
	}
	if res.Latest != seq {
		t.Fatalf("Latest = %q, want %q", res.Latest, seq)
	}
	if got, want := src.Retention(), 24*time.Hour; got != want {
		t.Fatalf("Retention = %s, want %s", got, want)
	}
}
