package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// TestDynamoDBSourceFromConfig configures two mappings over a table's
// stream, one by table name and one by stream ARN, as README documents, and
// writes and deletes items: each function sees every change once, each
// item's in order, as the records of the DynamoDBEvent a dynamodb source's
// mapping sends by default, or, with eventFormat: kinesis, as stream
// records in its KinesisEvent's data. (Rollovers
// are source/dynamodb's TestRolloverKeepsItemOrder: the server discovers a
// child shard within 30 seconds.)
func TestDynamoDBSourceFromConfig(t *testing.T) {
	srv := testsvc.DynamoDBStreams(t)
	ctx := context.Background()
	db := awsddb.New(awsddb.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("idem", "idem", "")})
	out, err := db.CreateTable(ctx, &awsddb.CreateTableInput{
		TableName:            aws.String("orders"),
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		StreamSpecification:  &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		t.Fatal(err)
	}
	arn := aws.ToString(out.TableDescription.LatestStreamArn)

	var mu sync.Mutex
	got := map[string][]string{} // function -> "id name version"
	handler := func(name string) idem.InvokeFunc {
		return func(_ context.Context, payload []byte) ([]byte, error) {
			var recs []events.DynamoDBEventRecord
			if name == "byArn" {
				// The default: a DynamoDBEvent.
				var ev events.DynamoDBEvent
				if err := json.Unmarshal(payload, &ev); err != nil {
					return nil, err
				}
				recs = ev.Records
			} else {
				var ev events.KinesisEvent
				if err := json.Unmarshal(payload, &ev); err != nil {
					return nil, err
				}
				for _, r := range ev.Records {
					var rec events.DynamoDBEventRecord
					if err := json.Unmarshal(r.Kinesis.Data, &rec); err != nil {
						t.Errorf("%s: data is no DynamoDB stream record: %v", name, err)
						continue
					}
					if rec.Change.SequenceNumber != r.Kinesis.SequenceNumber {
						t.Errorf("%s: record %s in a Kinesis record %s", name, rec.Change.SequenceNumber, r.Kinesis.SequenceNumber)
					}
					recs = append(recs, rec)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, rec := range recs {
				if rec.Change.SequenceNumber == "" || rec.EventSourceArn != arn {
					t.Errorf("%s: record %q of stream %s", name, rec.Change.SequenceNumber, rec.EventSourceArn)
				}
				img := rec.Change.NewImage
				if rec.EventName == "REMOVE" {
					img = rec.Change.OldImage
				}
				got[name] = append(got[name], fmt.Sprintf("%s %s %s", rec.Change.Keys["id"].String(), rec.EventName, img["v"].Number()))
			}
			return []byte(`{"batchItemFailures":[]}`), nil
		}
	}
	serve(t, fmt.Sprintf(`
functions: [{name: byTable}, {name: byArn}]
mappings:
  - name: table
    function: byTable
    startingPosition: TRIM_HORIZON
    batchSize: 7
    eventFormat: kinesis
    source: {dynamodb: {table: orders, region: us-east-1, endpoint: %q}}
  - name: arn
    function: byArn
    startingPosition: TRIM_HORIZON
    source: {dynamodb: {streamArn: %q, endpoint: %q}}
`, srv.URL, arn, srv.URL), nil, server.WithInvokeHandler("byTable", handler("byTable")), server.WithInvokeHandler("byArn", handler("byArn")))

	items := []string{"A-1", "A-2", "A-3"}
	put := func(v int) {
		for _, id := range items {
			if _, err := db.PutItem(ctx, &awsddb.PutItemInput{TableName: aws.String("orders"), Item: map[string]ddbtypes.AttributeValue{
				"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(v)},
			}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for v := 1; v <= 10; v++ {
		put(v)
	}
	for _, id := range items {
		if _, err := db.DeleteItem(ctx, &awsddb.DeleteItemInput{TableName: aws.String("orders"),
			Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}}}); err != nil {
			t.Fatal(err)
		}
	}
	const want = 3 * 11
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		done := len(got["byTable"]) >= want && len(got["byArn"]) >= want
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("the functions saw %d and %d of %d changes", len(got["byTable"]), len(got["byArn"]), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let a duplicate, if any, arrive
	mu.Lock()
	defer mu.Unlock()
	for fn, changes := range got {
		if len(changes) != want {
			t.Fatalf("%s saw %d changes, want %d", fn, len(changes), want)
		}
		perItem := map[string][]string{}
		for _, c := range changes {
			id := c[:3]
			perItem[id] = append(perItem[id], c)
		}
		for _, id := range items {
			var w []string
			for v := 1; v <= 10; v++ {
				name := "MODIFY"
				if v == 1 {
					name = "INSERT"
				}
				w = append(w, fmt.Sprintf("%s %s %d", id, name, v))
			}
			w = append(w, id+" REMOVE 10")
			if fmt.Sprint(perItem[id]) != fmt.Sprint(w) {
				t.Errorf("%s: item %s saw %q, want %q", fn, id, perItem[id], w)
			}
		}
	}
}
