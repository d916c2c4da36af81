package server

import "testing"

// TestParseFailureDynamoDB: an on-failure record of a DynamoDBEvent
// mapping (DDBStreamBatchInfo) is a stream batch, as a KinesisEvent
// mapping's is: its records follow it, and without idemRecords its stream
// is the one its streamArn names (a DynamoDB stream's table, as the
// DynamoDB source names its records' stream, or the stream idem read).
func TestParseFailureDynamoDB(t *testing.T) {
	for arn, stream := range map[string]string{
		"arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000": "orders",
		"arn:aws:kinesis:us-east-1:000000000000:stream/changes":                               "changes",
	} {
		b := parseFailure([]byte(`{"requestContext":{"functionArn":"arn:aws:lambda:us-east-1:000000000000:function:f","condition":"RetryAttemptsExhausted"},` +
			`"DDBStreamBatchInfo":{"shardId":"shardId-1","startSequenceNumber":"1","endSequenceNumber":"2","batchSize":2,"streamArn":"` + arn + `"}}`))
		if b == nil || b.async || b.left != 2 || b.stream != stream || b.function != "f" || b.condition != "RetryAttemptsExhausted" {
			t.Errorf("%s: parseFailure = %+v, want a batch of 2 records of stream %s", arn, b, stream)
		}
	}
}
