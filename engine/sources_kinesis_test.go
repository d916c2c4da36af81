package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kinesis"
)

// kinesisEndpoint returns the Kinesis endpoint of the tests: kinesalite on
// loopback, started once per test binary, or IDEM_TEST_KINESIS_ENDPOINT.
func kinesisEndpoint(t testing.TB) string { return testsvc.KinesisEndpoint(t) }

// kinesaliteExited adds nothing: testsvc's kinesalite outlives a dropped
// client connection, which made the old launcher's server exit.
func kinesaliteExited() string { return "" }

// openKinesisSource creates a Kinesis stream of shards shards, deleted when
// t ends. Kinesis routes a partition key to a shard by its MD5 hash.
func openKinesisSource(t *testing.T, _ *env, shards int) (source.Driver, string, putFunc) {
	t.Helper()
	endpoint := kinesisEndpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := awskinesis.New(awskinesis.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("idem", "idem", ""),
	})
	name := uniqueStreamName("kinesis")
	if _, err := client.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(int32(shards))}); err != nil {
		t.Fatalf("creating stream %s: %v%s", name, err, kinesaliteExited())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := client.DeleteStream(ctx, &awskinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil {
			t.Errorf("deleting stream %s: %v%s", name, err, kinesaliteExited())
		}
	})
	for {
		out, err := client.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatalf("describing stream %s: %v", name, err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s is not ACTIVE: %v", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	src, err := kinesis.New(ctx, name, kinesis.WithEndpoint(endpoint), kinesis.WithRegion("us-east-1"),
		kinesis.WithPollInterval(20*time.Millisecond), kinesis.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("kinesis.New(%s): %v", name, err)
	}
	t.Cleanup(func() { src.Close() })
	return src, name, func(key string, data ...string) {
		t.Helper()
		// One PutRecords call of up to 500 records at a time: Kinesis
		// appends a call's records to their shard in the call's order.
		for len(data) > 0 {
			n := min(len(data), 500)
			entries := make([]types.PutRecordsRequestEntry, n)
			for i, d := range data[:n] {
				entries[i] = types.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: []byte(d)}
			}
			out, err := client.PutRecords(context.Background(), &awskinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
			if err != nil {
				t.Fatalf("PutRecords to %s: %v%s", name, err, kinesaliteExited())
			}
			if c := aws.ToInt32(out.FailedRecordCount); c > 0 {
				for _, r := range out.Records {
					if r.ErrorCode != nil {
						t.Fatalf("PutRecords to %s: %d records failed, first: %s %s", name, c, aws.ToString(r.ErrorCode), aws.ToString(r.ErrorMessage))
					}
				}
			}
			data = data[n:]
		}
	}
}
