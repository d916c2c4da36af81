package ddbstreams_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	kinesistypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/ddbevent"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/kinesis"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testsvc.StopKinesalite()
	os.Exit(code)
}

// TestKinesisDestination: with a Kinesis streaming destination (Kinesis
// Data Streams for DynamoDB), every change is put into the Kinesis stream
// as AWS writes it there, and the Kinesis source reads it in order.
func TestKinesisDestination(t *testing.T) {
	endpoint := testsvc.KinesisEndpoint(t)
	ctx := context.Background()
	kc := awskinesis.New(awskinesis.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("idem", "idem", "")})
	name := fmt.Sprintf("ddb-cdc-%d", time.Now().UnixNano())
	if _, err := kc.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kc.DeleteStream(context.Background(), &awskinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	for {
		out, err := kc.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		if out.StreamDescriptionSummary.StreamStatus == kinesistypes.StreamStatusActive {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	f := newFixture(t, ddbstreams.WithKinesis(kc))
	f.createTable("orders", "") // no DynamoDB stream: Kinesis only
	if _, err := f.db.EnableKinesisStreamingDestination(ctx, &dynamodb.EnableKinesisStreamingDestinationInput{
		TableName: aws.String("orders"), StreamArn: aws.String("arn:aws:kinesis:us-east-1:000000000000:stream/" + name),
	}); err != nil {
		t.Fatal(err)
	}
	f.put("orders", "A-1", 1)
	f.put("orders", "A-1", 2)
	if _, err := f.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String("orders"),
		Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "A-1"}}}); err != nil {
		t.Fatal(err)
	}

	src, err := kinesis.New(ctx, name, kinesis.WithEndpoint(endpoint), kinesis.WithRegion("us-east-1"), kinesis.WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	shards, err := src.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []idem.Record
	after, err := src.Start(ctx, shards[0], source.TrimHorizon, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for len(recs) < 3 {
		res, err := src.Read(ctx, shards[0], after, 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Records) == 0 {
			t.Fatalf("read %d records, want 3", len(recs))
		}
		recs = append(recs, res.Records...)
		after = res.Records[len(res.Records)-1].Sequence
	}
	want := []struct{ name, old, new string }{{"INSERT", "", "1"}, {"MODIFY", "1", "2"}, {"REMOVE", "2", ""}}
	for i, r := range recs {
		var d struct {
			AWSRegion    string          `json:"awsRegion"`
			EventID      string          `json:"eventID"`
			EventName    string          `json:"eventName"`
			UserIdentity json.RawMessage `json:"userIdentity"`
			RecordFormat string          `json:"recordFormat"`
			TableName    string          `json:"tableName"`
			EventSource  string          `json:"eventSource"`
			Dynamodb     struct {
				ApproximateCreationDateTime int64
				Keys, NewImage, OldImage    map[string]map[string]string
				SizeBytes                   int
				SequenceNumber              *string
			} `json:"dynamodb"`
		}
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatalf("record %d: %v\n%s", i, err, r.Data)
		}
		w := want[i]
		if d.EventName != w.name || d.Dynamodb.OldImage["v"]["N"] != w.old || d.Dynamodb.NewImage["v"]["N"] != w.new || d.Dynamodb.Keys["id"]["S"] != "A-1" {
			t.Errorf("record %d: %s", i, r.Data)
		}
		if d.AWSRegion != "us-east-1" || len(d.EventID) != 36 || string(d.UserIdentity) != "null" || d.RecordFormat != "application/json" ||
			d.TableName != "orders" || d.EventSource != "aws:dynamodb" || d.Dynamodb.SizeBytes <= 0 || d.Dynamodb.SequenceNumber != nil {
			t.Errorf("record %d: %s", i, r.Data)
		}
		if ms := d.Dynamodb.ApproximateCreationDateTime; time.Since(time.UnixMilli(ms)).Abs() > time.Minute {
			t.Errorf("record %d: ApproximateCreationDateTime %d is not now in milliseconds", i, ms)
		}
		if len(r.PartitionKey) != 32 || strings.Trim(r.PartitionKey, "0123456789ABCDEF") != "" {
			t.Errorf("record %d: partition key %q, want 32 hex digits", i, r.PartitionKey)
		}
	}
	// eventFormat dynamodb converts these records to the DynamoDBEvent a
	// DynamoDB stream's mapping sends (internal/ddbevent).
	var ev events.DynamoDBEvent
	var all []string
	for _, r := range recs {
		rec, err := ddbevent.Record(r.Data, string(r.Sequence))
		if err != nil {
			t.Fatalf("%s: %v", r.Data, err)
		}
		all = append(all, string(rec))
	}
	if err := json.Unmarshal([]byte(`{"Records":[`+strings.Join(all, ",")+`]}`), &ev); err != nil {
		t.Fatal(err)
	}
	for i, r := range ev.Records {
		views := []string{"NEW_IMAGE", "NEW_AND_OLD_IMAGES", "OLD_IMAGE"}
		if r.Change.SequenceNumber != string(recs[i].Sequence) || r.Change.StreamViewType != views[i] || r.EventName != want[i].name ||
			r.Change.Keys["id"].String() != "A-1" || r.EventSourceArn != "arn:aws:dynamodb:us-east-1:000000000000:table/orders" ||
			time.Since(r.Change.ApproximateCreationDateTime.Time).Abs() > time.Minute {
			t.Errorf("converted record %d: %s", i, all[i])
		}
	}
	desc, err := f.db.DescribeKinesisStreamingDestination(ctx, &dynamodb.DescribeKinesisStreamingDestinationInput{TableName: aws.String("orders")})
	if err != nil || len(desc.KinesisDataStreamDestinations) != 1 || desc.KinesisDataStreamDestinations[0].DestinationStatus != ddbtypes.DestinationStatusActive {
		t.Fatalf("DescribeKinesisStreamingDestination = %+v, %v", desc, err)
	}
}
