package ddbstreams_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
)

type fixture struct {
	t       *testing.T
	ctx     context.Context
	srv     *testsvc.DynamoDBStreamsServer
	db      *dynamodb.Client
	streams *dynamodbstreams.Client
}

func newFixture(t *testing.T, opts ...ddbstreams.Option) *fixture {
	srv := testsvc.DynamoDBStreams(t, opts...)
	creds := credentials.NewStaticCredentialsProvider("idem", "idem", "")
	return &fixture{
		t: t, ctx: context.Background(), srv: srv,
		db:      dynamodb.New(dynamodb.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: creds}),
		streams: dynamodbstreams.New(dynamodbstreams.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), Credentials: creds}),
	}
}

// createTable creates a table keyed by the string id, with a stream of
// view type view ("" for none), and returns the stream's ARN.
func (f *fixture) createTable(name string, view ddbtypes.StreamViewType) string {
	f.t.Helper()
	in := &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: ddbtypes.KeyTypeHash}},
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	}
	if view != "" {
		in.StreamSpecification = &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: view}
	}
	out, err := f.db.CreateTable(f.ctx, in)
	if err != nil {
		f.t.Fatalf("CreateTable: %v", err)
	}
	return aws.ToString(out.TableDescription.LatestStreamArn)
}

func (f *fixture) put(table, id string, version int) {
	f.t.Helper()
	_, err := f.db.PutItem(f.ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]ddbtypes.AttributeValue{
		"id": &ddbtypes.AttributeValueMemberS{Value: id}, "v": &ddbtypes.AttributeValueMemberN{Value: strconv.Itoa(version)},
	}})
	if err != nil {
		f.t.Fatalf("PutItem %s: %v", id, err)
	}
}

func (f *fixture) shards(arn string) []types.Shard {
	f.t.Helper()
	var all []types.Shard
	in := &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), Limit: aws.Int32(1)}
	for {
		out, err := f.streams.DescribeStream(f.ctx, in)
		if err != nil {
			f.t.Fatalf("DescribeStream: %v", err)
		}
		all = append(all, out.StreamDescription.Shards...)
		if out.StreamDescription.LastEvaluatedShardId == nil {
			return all
		}
		in.ExclusiveStartShardId = out.StreamDescription.LastEvaluatedShardId
	}
}

func (f *fixture) iterator(arn, shard string, typ types.ShardIteratorType, seq string) (string, error) {
	in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(arn), ShardId: aws.String(shard), ShardIteratorType: typ}
	if seq != "" {
		in.SequenceNumber = aws.String(seq)
	}
	out, err := f.streams.GetShardIterator(f.ctx, in)
	if err != nil {
		return "", err
	}
	return aws.ToString(out.ShardIterator), nil
}

// readAll reads a shard from an iterator until an answer is empty or the
// shard ends; it returns the records and whether the shard ended.
func (f *fixture) readAll(it string, limit int32) ([]types.Record, bool) {
	f.t.Helper()
	var recs []types.Record
	for {
		out, err := f.streams.GetRecords(f.ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(it), Limit: aws.Int32(limit)})
		if err != nil {
			f.t.Fatalf("GetRecords: %v", err)
		}
		recs = append(recs, out.Records...)
		if out.NextShardIterator == nil {
			return recs, true
		}
		if len(out.Records) == 0 {
			return recs, false
		}
		it = *out.NextShardIterator
	}
}

func attr(m map[string]types.AttributeValue, name string) string {
	switch v := m[name].(type) {
	case *types.AttributeValueMemberS:
		return v.Value
	case *types.AttributeValueMemberN:
		return v.Value
	}
	return ""
}

// TestTableWritesMakeRecords: INSERT, MODIFY and REMOVE with the images the
// view type asks for, none for a write that changes nothing; sequence
// numbers of 21 digits, increasing; the answers the SDK parses.
func TestTableWritesMakeRecords(t *testing.T) {
	f := newFixture(t)
	arn := f.createTable("orders", ddbtypes.StreamViewTypeNewAndOldImages)
	if arn == "" {
		t.Fatal("CreateTable answered no LatestStreamArn")
	}
	desc, err := f.db.DescribeTable(f.ctx, &dynamodb.DescribeTableInput{TableName: aws.String("orders")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(desc.Table.LatestStreamArn) != arn || desc.Table.StreamSpecification == nil || desc.Table.StreamSpecification.StreamViewType != ddbtypes.StreamViewTypeNewAndOldImages {
		t.Fatalf("DescribeTable: stream %q %+v, want %q NEW_AND_OLD_IMAGES", aws.ToString(desc.Table.LatestStreamArn), desc.Table.StreamSpecification, arn)
	}
	ls, err := f.streams.ListStreams(f.ctx, &dynamodbstreams.ListStreamsInput{TableName: aws.String("orders")})
	if err != nil || len(ls.Streams) != 1 || aws.ToString(ls.Streams[0].StreamArn) != arn {
		t.Fatalf("ListStreams = %+v, %v", ls, err)
	}

	f.put("orders", "a", 1)
	f.put("orders", "a", 1) // unchanged: no record
	if _, err := f.db.UpdateItem(f.ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String("orders"), Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "a"}},
		UpdateExpression:          aws.String("SET v = :v"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberN{Value: "2"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.DeleteItem(f.ctx, &dynamodb.DeleteItemInput{TableName: aws.String("orders"), Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "a"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.DeleteItem(f.ctx, &dynamodb.DeleteItemInput{TableName: aws.String("orders"), Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "none"}}}); err != nil {
		t.Fatal(err) // deletes nothing: no record
	}

	shards := f.shards(arn)
	if len(shards) != 1 || shards[0].SequenceNumberRange.EndingSequenceNumber != nil {
		t.Fatalf("shards = %+v, want one open shard", shards)
	}
	it, err := f.iterator(arn, aws.ToString(shards[0].ShardId), types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		t.Fatal(err)
	}
	recs, ended := f.readAll(it, 1000)
	if ended {
		t.Fatal("an open shard ended")
	}
	want := []struct {
		name     types.OperationType
		old, new string
	}{{types.OperationTypeInsert, "", "1"}, {types.OperationTypeModify, "1", "2"}, {types.OperationTypeRemove, "2", ""}}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	prev := aws.ToString(shards[0].SequenceNumberRange.StartingSequenceNumber)
	for i, w := range want {
		r := recs[i]
		seq := aws.ToString(r.Dynamodb.SequenceNumber)
		if r.EventName != w.name || attr(r.Dynamodb.OldImage, "v") != w.old || attr(r.Dynamodb.NewImage, "v") != w.new || attr(r.Dynamodb.Keys, "id") != "a" {
			t.Errorf("record %d = %s old %v new %v keys %v, want %s old v=%q new v=%q", i, r.EventName, r.Dynamodb.OldImage, r.Dynamodb.NewImage, r.Dynamodb.Keys, w.name, w.old, w.new)
		}
		if len(seq) != 21 || seq <= prev {
			t.Errorf("record %d: sequence %q after %q, want 21 increasing digits", i, seq, prev)
		}
		prev = seq
		if aws.ToString(r.EventSource) != "aws:dynamodb" || aws.ToString(r.EventVersion) != "1.1" || aws.ToString(r.AwsRegion) != "us-east-1" || len(aws.ToString(r.EventID)) != 32 {
			t.Errorf("record %d: source %q version %q region %q id %q", i, aws.ToString(r.EventSource), aws.ToString(r.EventVersion), aws.ToString(r.AwsRegion), aws.ToString(r.EventID))
		}
		if r.Dynamodb.StreamViewType != types.StreamViewTypeNewAndOldImages || aws.ToInt64(r.Dynamodb.SizeBytes) <= 0 || r.Dynamodb.ApproximateCreationDateTime == nil {
			t.Errorf("record %d: view %s size %d time %v", i, r.Dynamodb.StreamViewType, aws.ToInt64(r.Dynamodb.SizeBytes), r.Dynamodb.ApproximateCreationDateTime)
		}
	}

	// Iterator types and Limit.
	first, second := aws.ToString(recs[0].Dynamodb.SequenceNumber), aws.ToString(recs[1].Dynamodb.SequenceNumber)
	shard := aws.ToString(shards[0].ShardId)
	for _, tc := range []struct {
		typ  types.ShardIteratorType
		seq  string
		want int
	}{
		{types.ShardIteratorTypeAtSequenceNumber, second, 2},
		{types.ShardIteratorTypeAfterSequenceNumber, first, 2},
		{types.ShardIteratorTypeAfterSequenceNumber, second, 1},
		{types.ShardIteratorTypeLatest, "", 0},
	} {
		it, err := f.iterator(arn, shard, tc.typ, tc.seq)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.typ, tc.seq, err)
		}
		if got, _ := f.readAll(it, 1); len(got) != tc.want {
			t.Errorf("%s %s read %d records, want %d", tc.typ, tc.seq, len(got), tc.want)
		}
	}
	if _, err := f.streams.GetRecords(f.ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(it), Limit: aws.Int32(1001)}); err == nil {
		t.Error("GetRecords with Limit 1001 succeeded")
	}
	if _, err := f.iterator(arn, shard, types.ShardIteratorTypeAfterSequenceNumber, "12"); err == nil {
		t.Error("an iterator below the shard's range was made")
	}
}

// TestKeysOnlyBatchAndTransaction: a KEYS_ONLY stream's records carry no
// image; BatchWriteItem and TransactWriteItems make one record per item.
func TestKeysOnlyBatchAndTransaction(t *testing.T) {
	f := newFixture(t)
	arn := f.createTable("keys", ddbtypes.StreamViewTypeKeysOnly)
	item := func(id string) map[string]ddbtypes.AttributeValue {
		return map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: id}, "x": &ddbtypes.AttributeValueMemberS{Value: "y"}}
	}
	if _, err := f.db.BatchWriteItem(f.ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{
		"keys": {{PutRequest: &ddbtypes.PutRequest{Item: item("b1")}}, {PutRequest: &ddbtypes.PutRequest{Item: item("b2")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.TransactWriteItems(f.ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Put: &ddbtypes.Put{TableName: aws.String("keys"), Item: item("t1")}},
		{Delete: &ddbtypes.Delete{TableName: aws.String("keys"), Key: map[string]ddbtypes.AttributeValue{"id": &ddbtypes.AttributeValueMemberS{Value: "b1"}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	shard := aws.ToString(f.shards(arn)[0].ShardId)
	it, err := f.iterator(arn, shard, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := f.readAll(it, 2)
	var got []string
	for _, r := range recs {
		if r.Dynamodb.NewImage != nil || r.Dynamodb.OldImage != nil {
			t.Errorf("a KEYS_ONLY record has an image: %+v", r.Dynamodb)
		}
		got = append(got, fmt.Sprintf("%s %s", r.EventName, attr(r.Dynamodb.Keys, "id")))
	}
	if fmt.Sprint(got) != "[INSERT b1 INSERT b2 INSERT t1 REMOVE b1]" && fmt.Sprint(got) != "[INSERT b2 INSERT b1 INSERT t1 REMOVE b1]" {
		t.Fatalf("records %q", got)
	}
}

// TestRolloverExpiryAndTrim: a rollover closes the shard with an ending
// sequence number and opens a child naming it; the parent read to its end
// answers no next iterator; iterators expire after 15 minutes; trimmed
// positions answer TrimmedDataAccessException; a shard closed for 24 hours
// is gone.
func TestRolloverExpiryAndTrim(t *testing.T) {
	f := newFixture(t)
	arn := f.createTable("roll", ddbtypes.StreamViewTypeNewImage)
	f.put("roll", "k", 1)
	f.put("roll", "k", 2)
	children, err := f.srv.Rollover("roll")
	if err != nil || len(children) != 1 {
		t.Fatalf("Rollover = %q, %v", children, err)
	}
	f.put("roll", "k", 3)
	shards := f.shards(arn)
	if len(shards) != 2 {
		t.Fatalf("%d shards after a rollover, want 2", len(shards))
	}
	parent, child := shards[0], shards[1]
	if parent.SequenceNumberRange.EndingSequenceNumber == nil || aws.ToString(child.ParentShardId) != aws.ToString(parent.ShardId) || aws.ToString(child.ShardId) != children[0] {
		t.Fatalf("parent %+v child %+v", parent, child)
	}
	it, err := f.iterator(arn, aws.ToString(parent.ShardId), types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		t.Fatal(err)
	}
	recs, ended := f.readAll(it, 1000)
	if len(recs) != 2 || !ended {
		t.Fatalf("parent: %d records, ended %v; want 2 and the end", len(recs), ended)
	}
	it, err = f.iterator(arn, children[0], types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		t.Fatal(err)
	}
	if recs, _ := f.readAll(it, 1000); len(recs) != 1 || attr(recs[0].Dynamodb.NewImage, "v") != "3" {
		t.Fatalf("child: %d records", len(recs))
	}

	// Expiry.
	f.srv.Advance(ddbstreams.IteratorLifetime + time.Second)
	var ei *types.ExpiredIteratorException
	if _, err := f.streams.GetRecords(f.ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(it)}); !errors.As(err, &ei) {
		t.Fatalf("GetRecords with an old iterator: %v, want ExpiredIteratorException", err)
	}

	// Trim.
	seq3 := aws.ToString(f.mustRead(arn, children[0])[0].Dynamodb.SequenceNumber)
	f.put("roll", "k", 4)
	if err := f.srv.Trim("roll", children[0], seq3); err != nil {
		t.Fatal(err)
	}
	var te *types.TrimmedDataAccessException
	if _, err := f.iterator(arn, children[0], types.ShardIteratorTypeAtSequenceNumber, seq3); !errors.As(err, &te) {
		t.Fatalf("AT_SEQUENCE_NUMBER of a trimmed record: %v, want TrimmedDataAccessException", err)
	}
	if _, err := f.iterator(arn, children[0], types.ShardIteratorTypeAfterSequenceNumber, seq3); err != nil {
		t.Fatalf("AFTER_SEQUENCE_NUMBER of the last trimmed record: %v", err)
	}
	if recs := f.mustRead(arn, children[0]); len(recs) != 1 || attr(recs[0].Dynamodb.NewImage, "v") != "4" {
		t.Fatalf("after the trim: %d records", len(recs))
	}

	// Retention: records older than 24 hours are trimmed, a shard closed
	// that long ago is gone.
	f.srv.Advance(ddbstreams.Retention)
	if n := len(f.shards(arn)); n != 1 {
		t.Fatalf("%d shards a day after the rollover, want 1", n)
	}
	if recs := f.mustRead(arn, children[0]); len(recs) != 0 {
		t.Fatalf("%d records a day later, want 0", len(recs))
	}
	var nf *types.ResourceNotFoundException
	if _, err := f.iterator(arn, aws.ToString(parent.ShardId), types.ShardIteratorTypeTrimHorizon, ""); !errors.As(err, &nf) {
		t.Fatalf("an iterator of an expired shard: %v, want ResourceNotFoundException", err)
	}
}

func (f *fixture) mustRead(arn, shard string) []types.Record {
	f.t.Helper()
	it, err := f.iterator(arn, shard, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		f.t.Fatal(err)
	}
	recs, _ := f.readAll(it, 1000)
	return recs
}

// TestShardsAndStreams: WithShards spreads items over shards, each item in
// one; disabling a stream closes its shards, enabling makes a new stream.
func TestShardsAndStreams(t *testing.T) {
	f := newFixture(t, ddbstreams.WithShards(3))
	arn := f.createTable("spread", ddbtypes.StreamViewTypeNewImage)
	for i := range 30 {
		f.put("spread", fmt.Sprintf("item-%d", i%10), i)
	}
	where := map[string]string{}
	total := 0
	for _, sh := range f.shards(arn) {
		recs := f.mustRead(arn, aws.ToString(sh.ShardId))
		for _, r := range recs {
			id := attr(r.Dynamodb.Keys, "id")
			if s, ok := where[id]; ok && s != aws.ToString(sh.ShardId) {
				t.Fatalf("item %s in shards %s and %s", id, s, aws.ToString(sh.ShardId))
			}
			where[id] = aws.ToString(sh.ShardId)
		}
		total += len(recs)
	}
	if total != 30 || len(where) != 10 {
		t.Fatalf("%d records of %d items, want 30 of 10", total, len(where))
	}
	if _, err := f.db.UpdateTable(f.ctx, &dynamodb.UpdateTableInput{TableName: aws.String("spread"),
		StreamSpecification: &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(false)}}); err != nil {
		t.Fatal(err)
	}
	for _, sh := range f.shards(arn) {
		if sh.SequenceNumberRange.EndingSequenceNumber == nil {
			t.Fatalf("shard %s of a disabled stream is open", aws.ToString(sh.ShardId))
		}
	}
	out, err := f.db.UpdateTable(f.ctx, &dynamodb.UpdateTableInput{TableName: aws.String("spread"),
		StreamSpecification: &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeKeysOnly}})
	if err != nil {
		t.Fatal(err)
	}
	if next := aws.ToString(out.TableDescription.LatestStreamArn); next == arn || next == "" {
		t.Fatalf("re-enabled stream %q, want a new one", next)
	}
	ls, err := f.streams.ListStreams(f.ctx, &dynamodbstreams.ListStreamsInput{Limit: aws.Int32(1)})
	if err != nil || len(ls.Streams) != 1 || ls.LastEvaluatedStreamArn == nil {
		t.Fatalf("ListStreams with Limit 1 = %+v, %v", ls, err)
	}
}
