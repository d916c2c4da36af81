package httpfn

import "github.com/idem-run/idem"

// AppendEvent appends b to dst as the event JSON that Invoke POSTs, in the
// shape b.Format names: a KinesisEvent by default, a KafkaEvent for
// idem.EventFormatKafka (each record with its "idempotencyKey"), with
// region in awsRegion and in the ARNs, or an S3Event for
// idem.EventFormatS3 (the event records of the batch's notifications as
// the store wrote them, compacted: no idempotencyKey, no region of idem's),
// or a DynamoDBEvent for idem.EventFormatDynamoDB (each record's DynamoDB
// change as a DynamoDBEventRecord, converted from Kinesis' shape when read
// there: no idempotencyKey, no region of idem's but in a window's ARN).
// Other drivers that hand a batch to Lambda code (function/process) build
// their events with it, so that a function receives byte-identical events
// whichever way idem reaches it.
func AppendEvent(dst []byte, region string, b *idem.Batch) []byte {
	f := Function{region: region}
	return f.appendEvent(dst, b)
}

// AppendKinesisEvent appends b to dst as a KinesisEvent, whatever b.Format
// says. New code should use AppendEvent.
func AppendKinesisEvent(dst []byte, region string, b *idem.Batch) []byte {
	f := Function{region: region}
	return f.appendKinesisEvent(dst, b)
}
