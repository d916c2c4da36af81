package dynamodb_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/dynamodb"
	"github.com/idem-run/idem/source/sourcetest"
)

// clients returns the DynamoDB and DynamoDB Streams clients of endpoint,
// the real SDK's.
func clients(endpoint string) (*dynamodbstreams.Client, *awsddb.Client) {
	creds := credentials.NewStaticCredentialsProvider("idem", "idem", "")
	return dynamodbstreams.New(dynamodbstreams.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), Credentials: creds}),
		awsddb.New(awsddb.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint), Credentials: creds})
}

// createTable creates a table keyed by the string pk with a stream of view.
func createTable(ctx context.Context, db *awsddb.Client, name string, view ddbtypes.StreamViewType) error {
	_, err := db.CreateTable(ctx, &awsddb.CreateTableInput{
		TableName:            aws.String(name),
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		StreamSpecification:  &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: view},
	})
	return err
}

// harness makes a table with a stream per test, on a DynamoDB Streams test
// server of its own, and appends by writing items: pk is the partition key,
// data a binary attribute, n a counter so that every write changes the item.
type harness struct {
	servers sync.Map // *dynamodb.Source -> *testsvc.DynamoDBStreamsServer
}

func (h *harness) MakeStream(ctx context.Context, t testing.TB, shards int) (source.Driver, sourcetest.Appender, error) {
	srv := testsvc.DynamoDBStreams(t, ddbstreams.WithShards(shards))
	streams, db := clients(srv.URL)
	if err := createTable(ctx, db, "conformance", ddbtypes.StreamViewTypeNewImage); err != nil {
		return nil, nil, err
	}
	src, err := dynamodb.New(ctx, dynamodb.WithTable("conformance"), dynamodb.WithClients(streams, db), dynamodb.WithPollInterval(5*time.Millisecond))
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { src.Close() })
	h.servers.Store(src, srv)
	var n atomic.Int64
	app := func(ctx context.Context, key string, data []byte) (string, idem.Sequence, error) {
		_, err := db.PutItem(ctx, &awsddb.PutItemInput{TableName: aws.String("conformance"), Item: map[string]ddbtypes.AttributeValue{
			"pk":   &ddbtypes.AttributeValueMemberS{Value: key},
			"n":    &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(n.Add(1), 10)},
			"data": &ddbtypes.AttributeValueMemberB{Value: data},
		}})
		if err != nil {
			return "", "", err
		}
		shard, seq, ok := srv.LastRecord("conformance")
		if !ok {
			return "", "", errors.New("the write made no stream record")
		}
		return shard, idem.Sequence(seq), nil
	}
	return src, app, nil
}

func (h *harness) Features() sourcetest.Features {
	return sourcetest.Features{
		// An item holds at most 400 KB.
		MaxRecordBytes: 300 << 10,
		NoAtTimestamp:  true,
		Payload:        payload,
	}
}

// payload is the data attribute of a record's new image.
func payload(r idem.Record) []byte {
	var rec struct {
		Dynamodb struct {
			NewImage struct {
				Data struct{ B string } `json:"data"`
			}
		} `json:"dynamodb"`
	}
	if err := json.Unmarshal(r.Data, &rec); err != nil {
		return []byte("not a stream record: " + err.Error())
	}
	b, err := base64.StdEncoding.DecodeString(rec.Dynamodb.NewImage.Data.B)
	if err != nil {
		return []byte("not base64: " + err.Error())
	}
	return b
}

// Trim trims the records of a shard through a sequence number, as the
// 24-hour retention would.
func (h *harness) Trim(_ context.Context, _ testing.TB, d source.Driver, shard string, through idem.Sequence) error {
	srv, ok := h.servers.Load(d)
	if !ok {
		return errors.New("unknown driver")
	}
	return srv.(*testsvc.DynamoDBStreamsServer).Trim("conformance", shard, string(through))
}

// TestConformance runs the source conformance suite over the DynamoDB
// Streams test server, through the real SDK clients.
func TestConformance(t *testing.T) { sourcetest.RunConformance(t, &harness{}) }

// counting counts the requests a handler serves, by operation.
type counting struct {
	next http.Handler
	mu   sync.Mutex
	ops  map[string]int
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	c.mu.Lock()
	c.ops[op]++
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

func (c *counting) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ops[op]
}

// table is one table with a stream on a test server, and a Source over it.
type table struct {
	t     *testing.T
	ctx   context.Context
	srv   *testsvc.DynamoDBStreamsServer
	calls *counting
	db    *awsddb.Client
	src   *dynamodb.Source
	name  string
}

func newTable(t *testing.T, view ddbtypes.StreamViewType, opts ...ddbstreams.Option) *table {
	t.Helper()
	ctx := context.Background()
	srv := testsvc.DynamoDBStreams(t, opts...)
	calls := &counting{next: srv.Server, ops: map[string]int{}}
	hs := httptest.NewServer(calls)
	t.Cleanup(hs.Close)
	streams, db := clients(hs.URL)
	if err := createTable(ctx, db, "orders", view); err != nil {
		t.Fatal(err)
	}
	src, err := dynamodb.New(ctx, dynamodb.WithTable("orders"), dynamodb.WithClients(streams, db), dynamodb.WithPollInterval(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return &table{t: t, ctx: ctx, srv: srv, calls: calls, db: db, src: src, name: "orders"}
}

func (tb *table) put(pk string, version int, extra ...string) {
	tb.t.Helper()
	item := map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: pk},
		"v":  &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(version)},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		item[extra[i]] = &ddbtypes.AttributeValueMemberS{Value: extra[i+1]}
	}
	if _, err := tb.db.PutItem(tb.ctx, &awsddb.PutItemInput{TableName: aws.String(tb.name), Item: item}); err != nil {
		tb.t.Fatal(err)
	}
}

func (tb *table) shard() string {
	tb.t.Helper()
	ids, err := tb.src.Shards(tb.ctx)
	if err != nil || len(ids) == 0 {
		tb.t.Fatalf("Shards = %q, %v", ids, err)
	}
	return ids[len(ids)-1]
}

func (tb *table) read(shard string, after idem.Sequence) source.ReadResult {
	tb.t.Helper()
	res, err := tb.src.Read(tb.ctx, shard, after, 1000, 1<<20)
	if err != nil {
		tb.t.Fatalf("Read(%s, %q): %v", shard, after, err)
	}
	return res
}

// TestRecordIsLambdaEventRecord: a record's Data decodes as a record of
// aws-lambda-go's events.DynamoDBEvent, with its images and typed values;
// Sequence is the SequenceNumber, PartitionKey the item's partition key.
func TestRecordIsLambdaEventRecord(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewAndOldImages)
	tb.put("A-1", 1, "status", "new")
	tb.put("A-1", 2, "status", "paid")
	if _, err := tb.db.DeleteItem(tb.ctx, &awsddb.DeleteItemInput{TableName: aws.String("orders"),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "A-1"}}}); err != nil {
		t.Fatal(err)
	}
	shard := tb.shard()
	start, err := tb.src.Start(tb.ctx, shard, source.TrimHorizon, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	res := tb.read(shard, start)
	if len(res.Records) != 3 {
		t.Fatalf("%d records, want 3", len(res.Records))
	}
	want := []struct{ name, old, new string }{{"INSERT", "", "new"}, {"MODIFY", "new", "paid"}, {"REMOVE", "paid", ""}}
	for i, r := range res.Records {
		var ev events.DynamoDBEventRecord
		if err := json.Unmarshal(r.Data, &ev); err != nil {
			t.Fatalf("record %d does not decode as events.DynamoDBEventRecord: %v\n%s", i, err, r.Data)
		}
		str := func(img map[string]events.DynamoDBAttributeValue, name string) string {
			if v, ok := img[name]; ok && v.DataType() == events.DataTypeString {
				return v.String()
			}
			return ""
		}
		w := want[i]
		if ev.EventName != w.name || str(ev.Change.OldImage, "status") != w.old || str(ev.Change.NewImage, "status") != w.new {
			t.Errorf("record %d: %s old %q new %q, want %s %q %q", i, ev.EventName, str(ev.Change.OldImage, "status"), str(ev.Change.NewImage, "status"), w.name, w.old, w.new)
		}
		if str(ev.Change.Keys, "pk") != "A-1" || r.PartitionKey != "A-1" {
			t.Errorf("record %d: keys %v, PartitionKey %q", i, ev.Change.Keys, r.PartitionKey)
		}
		if ev.Change.SequenceNumber != string(r.Sequence) || ev.EventSourceArn != tb.src.StreamARN() || ev.EventSource != "aws:dynamodb" ||
			ev.Change.StreamViewType != "NEW_AND_OLD_IMAGES" || ev.Change.SizeBytes <= 0 || ev.EventID == "" || ev.AWSRegion != "us-east-1" {
			t.Errorf("record %d: %+v (Sequence %q, stream %s)", i, ev, r.Sequence, tb.src.StreamARN())
		}
		if r.ArrivalTime.IsZero() || !ev.Change.ApproximateCreationDateTime.Equal(r.ArrivalTime) {
			t.Errorf("record %d: ArrivalTime %v, ApproximateCreationDateTime %v", i, r.ArrivalTime, ev.Change.ApproximateCreationDateTime)
		}
		if v, ok := ev.Change.NewImage["v"]; i < 2 && (!ok || v.Number() != strconv.Itoa(i+1)) {
			t.Errorf("record %d: NewImage v = %v, want the number %d", i, ev.Change.NewImage["v"], i+1)
		}
		if r.Stream != "orders" || r.ShardID != shard {
			t.Errorf("record %d: stream %q shard %q", i, r.Stream, r.ShardID)
		}
	}
}

// TestAtTimestampRefused: DynamoDB Streams has no AT_TIMESTAMP iterator,
// and Lambda refuses it for DynamoDB: so does Start, with an error that
// names the setting.
func TestAtTimestampRefused(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeKeysOnly)
	_, err := tb.src.Start(tb.ctx, tb.shard(), source.AtTimestamp, time.Now())
	if !errors.Is(err, dynamodb.ErrAtTimestamp) || !strings.Contains(err.Error(), "startingPosition AT_TIMESTAMP") {
		t.Fatalf("Start(AT_TIMESTAMP) = %v, want ErrAtTimestamp naming startingPosition", err)
	}
}

// TestNoStream: a table without a stream, or no table, is
// source.ErrStreamNotFound.
func TestNoStream(t *testing.T) {
	srv := testsvc.DynamoDBStreams(t)
	streams, db := clients(srv.URL)
	ctx := context.Background()
	if _, err := db.CreateTable(ctx, &awsddb.CreateTableInput{
		TableName:            aws.String("plain"),
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	}); err != nil {
		t.Fatal(err)
	}
	for _, opt := range []dynamodb.Option{dynamodb.WithTable("plain"), dynamodb.WithTable("absent"),
		dynamodb.WithStreamARN("arn:aws:dynamodb:us-east-1:000000000000:table/plain/stream/2026-01-01T00:00:00.000")} {
		if _, err := dynamodb.New(ctx, opt, dynamodb.WithClients(streams, db)); !errors.Is(err, source.ErrStreamNotFound) {
			t.Errorf("New: %v, want source.ErrStreamNotFound", err)
		}
	}
}

// TestExpiredIteratorRenewed: an iterator DynamoDB expired (15 minutes) is
// made again from the reader's position, AFTER_SEQUENCE_NUMBER: the next
// Read returns exactly the records after it.
func TestExpiredIteratorRenewed(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewImage)
	for i := range 3 {
		tb.put("k", i)
	}
	shard := tb.shard()
	start, err := tb.src.Start(tb.ctx, shard, source.TrimHorizon, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	first := tb.read(shard, start)
	if len(first.Records) != 3 {
		t.Fatalf("%d records, want 3", len(first.Records))
	}
	last := first.Records[2].Sequence
	if res := tb.read(shard, last); len(res.Records) != 0 {
		t.Fatalf("%d records after the last", len(res.Records))
	}
	tb.put("k", 3)
	tb.put("k", 4)
	tb.srv.Advance(ddbstreams.IteratorLifetime + time.Minute)
	iterators := tb.calls.count("GetShardIterator")
	res := tb.read(shard, last)
	if len(res.Records) != 2 || res.Lost != 0 {
		t.Fatalf("after the iterator expired: %d records, %d lost; want 2 and 0", len(res.Records), res.Lost)
	}
	if got := tb.calls.count("GetShardIterator") - iterators; got != 1 {
		t.Fatalf("%d GetShardIterator calls to renew the iterator, want 1", got)
	}
	if res.Records[0].Sequence.Compare(last) <= 0 {
		t.Fatalf("renewed from %q: read %q again", last, res.Records[0].Sequence)
	}
}

// TestTrimmedReportsLoss: records trimmed before they were read (24 hours)
// are reported lost, once, and the reader goes on from the oldest kept;
// a closed shard that expired with unread records is a loss too.
func TestTrimmedReportsLoss(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewImage)
	tb.put("k", 0)
	shard := tb.shard()
	start, err := tb.src.Start(tb.ctx, shard, source.TrimHorizon, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pos := tb.read(shard, start).Records[0].Sequence
	for i := 1; i <= 3; i++ {
		tb.put("k", i)
	}
	// The reader stops for a day: the first two records after it expire.
	tb.srv.Advance(ddbstreams.Retention - time.Hour)
	tb.put("k", 4)
	tb.srv.Advance(2 * time.Hour)
	res := tb.read(shard, pos)
	if res.Lost != 1 || len(res.Records) != 1 {
		t.Fatalf("behind the trim point: %d lost, %d records; want 1 and 1", res.Lost, len(res.Records))
	}
	if res.Trimmed.Compare(pos) <= 0 || res.Trimmed.Compare(res.Records[0].Sequence) >= 0 {
		t.Fatalf("Trimmed = %q, want between %q and %q", res.Trimmed, pos, res.Records[0].Sequence)
	}
	if again := tb.read(shard, res.Trimmed); again.Lost != 0 || len(again.Records) != 1 {
		t.Fatalf("from Trimmed: %d lost, %d records; want 0 and 1", again.Lost, len(again.Records))
	}

	// A closed shard that expires with unread records.
	tb.put("k", 5)
	mid := tb.read(shard, res.Records[0].Sequence).Records[0].Sequence
	tb.put("k", 6)
	if _, err := tb.srv.Rollover("orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.src.Shards(tb.ctx); err != nil { // learns that the shard closed
		t.Fatal(err)
	}
	tb.srv.Advance(ddbstreams.Retention + time.Hour)
	gone := tb.read(shard, mid)
	if gone.Lost != 1 || len(gone.Records) != 0 {
		t.Fatalf("expired shard: %d lost, %d records; want 1 and 0", gone.Lost, len(gone.Records))
	}
	if fin, err := tb.src.Finished(tb.ctx, shard, gone.Trimmed); err != nil || !fin {
		t.Fatalf("Finished at the expired shard's end = %v, %v", fin, err)
	}
}

// TestLatest: LATEST skips what the shard holds when the mapping starts;
// on a closed shard it is the shard's end.
func TestLatest(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewImage)
	for i := range 5 {
		tb.put(fmt.Sprintf("k%d", i), i)
	}
	shard := tb.shard()
	pos, err := tb.src.Start(tb.ctx, shard, source.Latest, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if res := tb.read(shard, pos); len(res.Records) != 0 {
		t.Fatalf("LATEST read %d old records", len(res.Records))
	}
	tb.put("k9", 9)
	if res := tb.read(shard, pos); len(res.Records) != 1 {
		t.Fatalf("after LATEST: %d records, want 1", len(res.Records))
	}
	if _, err := tb.srv.Rollover("orders"); err != nil {
		t.Fatal(err)
	}
	infos, err := tb.src.ShardInfos(tb.ctx)
	if err != nil {
		t.Fatal(err)
	}
	end, err := tb.src.Start(tb.ctx, shard, source.Latest, time.Time{})
	if err != nil || end != infos[0].EndingSequence {
		t.Fatalf("LATEST of the closed shard = %q, %v; want its end %q", end, err, infos[0].EndingSequence)
	}
	if fin, err := tb.src.Finished(tb.ctx, shard, end); err != nil || !fin {
		t.Fatalf("Finished at the end = %v, %v", fin, err)
	}
}
