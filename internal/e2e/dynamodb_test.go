package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// ordersTable creates table orders, keyed by a string id, with stream (nil:
// no DynamoDB stream) on the DynamoDB server at url, and returns a client
// of that server.
func ordersTable(ctx context.Context, t *testing.T, url string, stream *ddbtypes.StreamSpecification) *dynamodb.Client {
	t.Helper()
	client := dynamodb.New(dynamodb.Options{BaseEndpoint: aws.String(url), Region: "us-east-1", Credentials: aws.AnonymousCredentials{}})
	if _, err := client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String("orders"),
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		StreamSpecification:  stream,
	}); err != nil {
		t.Fatal(err)
	}
	return client
}

// TestSeed002DynamoDB is seed 002's incident on DynamoDB, end to end
// through the CLI: a table's stream (the tests' DynamoDB Streams server)
// read by a mapping to the counter example, with the DynamoDB store. 1,000
// item writes are processed; the mapping is renamed, same scope, and
// restarted at TRIM_HORIZON: it reads every retained record again, runs
// none (every count is unchanged), and `idem status --json` shows them
// all skipped.
func TestSeed002DynamoDB(t *testing.T) {
	if testing.Short() {
		t.Skip("runs idem twice")
	}
	idemBin, counter := binaries(t)
	ddb := testsvc.DynamoDBStreams(t)
	ctx := context.Background()
	client := ordersTable(ctx, t, ddb.URL, &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages})
	const (
		total      = 1000
		items      = 100
		oldMapping = "orders-to-counter"
		newMapping = "orders-to-counter-v2"
	)
	for i := range total {
		if _, err := client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("orders"), Item: map[string]ddbtypes.AttributeValue{
			"id":      &ddbtypes.AttributeValueMemberS{Value: fmt.Sprintf("order-%03d", i%items)},
			"version": &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(i / items)},
		}}); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	config := func(mapping string) string {
		return fmt.Sprintf(`dataDir: %s
listen: %s
store: {dynamodb: {table: idem-seed-002, region: us-east-1, endpoint: %q}}
streams:
  - {name: orders-failed}
functions:
  - {name: counter}
mappings:
  - name: %s
    source: {dynamodb: {table: orders, region: us-east-1, endpoint: %q}}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 40
    destinationConfig: {onFailure: {stream: orders-failed}}
    idempotency: {scope: counter}
`, filepath.Join(dir, "data"), addr, ddb.URL, mapping, ddb.URL)
	}
	shardTotals := func(mapping string) (processed, skipped, discarded uint64, shards int, raw string) {
		out, errOut, code := runCLI(t, idemBin, nil, "status", "--json", "--addr", addr)
		if code != 0 {
			t.Fatalf("idem status --json: exit %d: %s", code, errOut)
		}
		var st server.StatusResponse
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("idem status --json: %v\n%s", err, out)
		}
		for _, s := range st.Shards {
			if s.Mapping == mapping {
				shards++
				processed += s.Processed
				skipped += s.Skipped
				discarded += s.Discarded
			}
		}
		return processed, skipped, discarded, shards, out
	}
	a := newAPI(addr)
	writeFile(t, cfg, config(oldMapping))
	srv := startServe(t, counter, cfg, addr)
	eventually(t, 2*time.Minute, "1,000 writes processed", func() (bool, string) {
		p, s, d, _, _ := shardTotals(oldMapping)
		return p == total, fmt.Sprintf("processed %d, skipped %d, discarded %d", p, s, d)
	})
	countKeys := make([]string, items)
	for i := range countKeys {
		countKeys[i] = fmt.Sprintf("count/order-%03d", i)
	}
	// The counter counts by partition key; a DynamoDB record's is its
	// item's key, so each of the 100 items was written 10 times.
	before, err := a.states(ctx, "counter", countKeys)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, k := range countKeys {
		n, _ := strconv.Atoi(before[k])
		sum += n
	}
	if sum != total {
		t.Fatalf("the counts sum to %d, want %d: %v", sum, total, before)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}

	writeFile(t, cfg, config(newMapping))
	srv = startServe(t, counter, cfg, addr)
	eventually(t, 2*time.Minute, "the renamed mapping caught up", func() (bool, string) {
		p, s, d, _, _ := shardTotals(newMapping)
		return p+s+d >= total, fmt.Sprintf("processed %d, skipped %d, discarded %d", p, s, d)
	})
	time.Sleep(500 * time.Millisecond)
	after, err := a.states(ctx, "counter", countKeys)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range countKeys {
		if after[k] != before[k] {
			t.Errorf("%s was %q before the rename and is %q after it: records ran again", k, before[k], after[k])
		}
	}
	p, s, d, shards, out := shardTotals(newMapping)
	if p != 0 || s != total || d != 0 || shards == 0 {
		t.Errorf("idem status --json for %s: %d shards, processed %d, skipped %d, discarded %d; want processed 0, skipped %d\n%s", newMapping, shards, p, s, d, total, out)
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited %d after SIGTERM, want 0\n%s", code, srv.tail(20))
	}
}
