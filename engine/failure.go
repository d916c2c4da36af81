package engine

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/idem-run/idem"
)

// Conditions of an on-failure record, as Lambda names them.
const (
	conditionRetriesExhausted = "RetryAttemptsExhausted"
	conditionRecordAge        = "RecordAgeExceeded"
	// conditionKeyError is idem's own: the mapping's idempotency key
	// expression failed on the record, which was never invoked.
	conditionKeyError = "IdempotencyKeyError"
)

// lambdaTime is how Lambda writes the times of an on-failure record: UTC,
// to the millisecond ("2024-01-02T03:04:05.835Z").
const lambdaTime = "2006-01-02T15:04:05.000Z"

// failureRecord is Lambda's on-failure metadata record for a stream batch:
// KinesisBatchInfo for a Kinesis-shaped source, DDBStreamBatchInfo (the
// same fields) for a DynamoDB stream's, KafkaBatchInfo for a Kafka one (the
// shape Lambda sends an SQS or SNS destination:
// https://docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html).
type failureRecord struct {
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	// ResponseContext is null for a batch the function never got
	// (MaximumPayloadSizeExceeded, as on Lambda, and IdempotencyKeyError).
	ResponseContext  *responseContext `json:"responseContext"`
	Version          string           `json:"version"`
	Timestamp        string           `json:"timestamp"`
	KinesisBatchInfo *batchInfo       `json:"KinesisBatchInfo,omitempty"`
	// DDBStreamBatchInfo is KinesisBatchInfo's fields, under the name
	// Lambda gives them for a DynamoDB stream.
	DDBStreamBatchInfo *batchInfo      `json:"DDBStreamBatchInfo,omitempty"`
	KafkaBatchInfo     *kafkaBatchInfo `json:"KafkaBatchInfo,omitempty"`
	// Idem adds why the batch failed, so an operator need not dig in logs.
	IdemErrorType    string `json:"idemErrorType,omitempty"`
	IdemErrorMessage string `json:"idemErrorMessage,omitempty"`
	// IdemRecords names each record that follows, in order: where it came
	// from and its idempotency key, which its copy on the on-failure stream
	// no longer carries, so that a redrive can report it and run it under
	// its original key (see FailedRecord).
	IdemRecords []FailedRecord `json:"idemRecords,omitempty"`
}

// FailedRecord is one discarded record's identity as the on-failure
// metadata record lists it (idemRecords): a redrive reads it back to know
// each record's origin and idempotency key.
type FailedRecord struct {
	Stream         string `json:"stream"`
	ShardID        string `json:"shardId"`
	SequenceNumber string `json:"sequenceNumber"`
	PartitionKey   string `json:"partitionKey"`
	// IdempotencyKey is empty for a record whose key could not be
	// computed (IdempotencyKeyError).
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
}

type responseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError"`
}

type batchInfo struct {
	ShardID                         string `json:"shardId"`
	StartSequenceNumber             string `json:"startSequenceNumber"`
	EndSequenceNumber               string `json:"endSequenceNumber"`
	ApproximateArrivalOfFirstRecord string `json:"approximateArrivalOfFirstRecord"`
	ApproximateArrivalOfLastRecord  string `json:"approximateArrivalOfLastRecord"`
	BatchSize                       int    `json:"batchSize"`
	StreamArn                       string `json:"streamArn"`
}

// kafkaBatchInfo is Lambda's KafkaBatchInfo: the batch's records by
// "<topic>-<partition>", with their first and last offsets and timestamps.
type kafkaBatchInfo struct {
	BatchSize        int                             `json:"batchSize"`
	EventSourceArn   string                          `json:"eventSourceArn"`
	BootstrapServers string                          `json:"bootstrapServers"`
	PayloadSize      int                             `json:"payloadSize"`
	RecordsInfo      map[string]*kafkaPartitionRange `json:"recordsInfo"`
}

type kafkaPartitionRange struct {
	FirstRecordOffset    string `json:"firstRecordOffset"`
	LastRecordOffset     string `json:"lastRecordOffset"`
	FirstRecordTimestamp string `json:"firstRecordTimestamp"`
	LastRecordTimestamp  string `json:"lastRecordTimestamp"`
}

// failureMetadata builds the JSON metadata record of a discarded batch, in
// the shape Lambda writes for the event format the function gets (a Kafka
// mapping's records say KafkaBatchInfo, a DynamoDBEvent mapping's
// DDBStreamBatchInfo, whose streamArn is ddbStreamArn; every other's,
// whose events are KinesisEvents or S3Events, KinesisBatchInfo).
// payloadSize is the bytes of the batch's event; region is the region of
// its ARNs.
func failureMetadata(region, requestID, function string, format idem.EventFormat, condition string, invokes int, errType, errMsg string, recs []idem.Record, payloadSize int, now time.Time) []byte {
	var f failureRecord
	f.RequestContext.RequestID = requestID
	f.RequestContext.FunctionArn = FunctionArn(region, function)
	f.RequestContext.Condition = condition
	f.RequestContext.ApproximateInvokeCount = invokes
	if condition != conditionPayloadSize && condition != conditionKeyError {
		f.ResponseContext = &responseContext{StatusCode: 200, ExecutedVersion: "$LATEST"}
		if condition == conditionRetriesExhausted {
			f.ResponseContext.FunctionError = "Unhandled"
		}
	}
	f.Version = "1.0"
	f.Timestamp = now.UTC().Format(lambdaTime)
	first, last := recs[0], recs[len(recs)-1]
	if format == idem.EventFormatKafka {
		info := &kafkaBatchInfo{BatchSize: len(recs), EventSourceArn: KafkaClusterArn(region, first.Stream), PayloadSize: payloadSize,
			RecordsInfo: map[string]*kafkaPartitionRange{}}
		for i := range recs {
			r := &recs[i]
			off, at := strconv.FormatUint(r.KafkaOffset(), 10), r.ArrivalTime.UTC().Format(lambdaTime)
			p := info.RecordsInfo[r.ShardID]
			if p == nil {
				p = &kafkaPartitionRange{FirstRecordOffset: off, FirstRecordTimestamp: at}
				info.RecordsInfo[r.ShardID] = p
			}
			p.LastRecordOffset, p.LastRecordTimestamp = off, at
		}
		f.KafkaBatchInfo = info
	} else {
		info := &batchInfo{
			ShardID:                         first.ShardID,
			StartSequenceNumber:             first.SequenceNumber(),
			EndSequenceNumber:               last.SequenceNumber(),
			ApproximateArrivalOfFirstRecord: first.ArrivalTime.UTC().Format(lambdaTime),
			ApproximateArrivalOfLastRecord:  last.ArrivalTime.UTC().Format(lambdaTime),
			BatchSize:                       len(recs),
		}
		if format == idem.EventFormatDynamoDB {
			info.StreamArn = ddbStreamArn(region, &first)
			f.DDBStreamBatchInfo = info
		} else {
			info.StreamArn = StreamArn(region, first.Stream)
			f.KinesisBatchInfo = info
		}
	}
	f.IdemErrorType, f.IdemErrorMessage = errType, errMsg
	f.IdemRecords = make([]FailedRecord, len(recs))
	for i := range recs {
		r := &recs[i]
		f.IdemRecords[i] = FailedRecord{Stream: r.Stream, ShardID: r.ShardID, SequenceNumber: r.SequenceNumber(),
			PartitionKey: r.PartitionKey, IdempotencyKey: r.IdempotencyKey}
	}
	b, _ := json.Marshal(&f)
	return b
}

// FunctionArn is the ARN idem reports for a function in region, in
// Lambda's form.
func FunctionArn(region, name string) string {
	return "arn:aws:lambda:" + region + ":000000000000:function:" + name
}

// StreamArn is the ARN idem reports for an embedded stream in region, in
// Kinesis' form.
func StreamArn(region, name string) string {
	return "arn:aws:kinesis:" + region + ":000000000000:stream/" + name
}

// KafkaClusterArn is the event source ARN idem reports for a Kafka topic in
// region, in Amazon MSK's form, as its KafkaEvents' eventSourceArn names it.
func KafkaClusterArn(region, topic string) string {
	return "arn:aws:kafka:" + region + ":000000000000:cluster/idem/" + topic
}
