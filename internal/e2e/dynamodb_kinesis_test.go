package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	kinesistypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
)

// TestDynamoDBThroughKinesis: a table streams its changes to a Kinesis data
// stream (Kinesis Data Streams for DynamoDB, into kinesalite), which
// `idem serve` reads with the Kinesis source and eventFormat: dynamodb: an
// HTTP function receives Lambda's DynamoDBEvent, which aws-lambda-go's
// events.DynamoDBEvent decodes, with INSERT, MODIFY and REMOVE and their
// images, in order.
func TestDynamoDBThroughKinesis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs idem")
	}
	idemBin, _ := binaries(t)
	endpoint := testsvc.KinesisEndpoint(t)
	ctx := context.Background()
	kc := awskinesis.New(awskinesis.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("idem", "idem", "")})
	name := fmt.Sprintf("ddb-cdc-e2e-%d", time.Now().UnixNano())
	if _, err := kc.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kc.DeleteStream(context.Background(), &awskinesis.DeleteStreamInput{StreamName: aws.String(name)})
	})
	eventually(t, 30*time.Second, "the Kinesis stream active", func() (bool, string) {
		out, err := kc.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			return false, err.Error()
		}
		return out.StreamDescriptionSummary.StreamStatus == kinesistypes.StreamStatusActive, string(out.StreamDescriptionSummary.StreamStatus)
	})
	ddb := testsvc.DynamoDBStreams(t, ddbstreams.WithKinesis(kc))
	db := ordersTable(ctx, t, ddb.URL, nil)
	if _, err := db.EnableKinesisStreamingDestination(ctx, &dynamodb.EnableKinesisStreamingDestinationInput{
		TableName: aws.String("orders"), StreamArn: aws.String("arn:aws:kinesis:us-east-1:000000000000:stream/" + name),
	}); err != nil {
		t.Fatal(err)
	}
	put := func(status string) {
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("orders"), Item: map[string]ddbtypes.AttributeValue{
			"id": &ddbtypes.AttributeValueMemberS{Value: "A-1"}, "status": &ddbtypes.AttributeValueMemberS{Value: status},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	put("new")
	put("paid")
	if _, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String("orders"),
		Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "A-1"}}}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got []events.DynamoDBEventRecord
	var bad []string
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev events.DynamoDBEvent
		mu.Lock()
		if err := json.Unmarshal(body, &ev); err != nil || len(ev.Records) == 0 {
			bad = append(bad, string(body))
		}
		got = append(got, ev.Records...)
		mu.Unlock()
		fmt.Fprint(w, `{"batchItemFailures":[]}`)
	}))
	defer fn.Close()

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, fmt.Sprintf(`dataDir: %s
listen: %s
functions:
  - {name: on-order-change, http: {url: %q}, timeout: 10s}
mappings:
  - name: order-changes
    source: {kinesis: {stream: %s, region: us-east-1, endpoint: %q}}
    function: on-order-change
    eventFormat: dynamodb
    startingPosition: TRIM_HORIZON
    functionResponseTypes: [ReportBatchItemFailures]
`, filepath.Join(dir, "data"), addr, fn.URL, name, endpoint))
	srv := startServe(t, idemBin, cfg, addr)
	eventually(t, time.Minute, "3 changes delivered", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3, fmt.Sprintf("%d records, %d bad bodies %v", len(got), len(bad), bad)
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("bodies events.DynamoDBEvent cannot decode: %v", bad)
	}
	want := []struct{ name, old, new string }{{"INSERT", "", "new"}, {"MODIFY", "new", "paid"}, {"REMOVE", "paid", ""}}
	if len(got) != 3 {
		t.Fatalf("%d records, want 3: %+v", len(got), got)
	}
	for i, w := range want {
		r := got[i]
		status := func(img map[string]events.DynamoDBAttributeValue) string {
			if v, ok := img["status"]; ok {
				return v.String()
			}
			return ""
		}
		if r.EventName != w.name || r.EventSource != "aws:dynamodb" || r.Change.Keys["id"].String() != "A-1" ||
			status(r.Change.OldImage) != w.old || status(r.Change.NewImage) != w.new || r.Change.SequenceNumber == "" {
			t.Errorf("record %d: %+v, want %s %q -> %q", i, r, w.name, w.old, w.new)
		}
	}
	srv.stop(t)
}
