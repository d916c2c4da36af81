package engine

import (
	"encoding/json"
	"time"

	"github.com/idem-run/idem"
)

// Conditions of an on-failure record, as Lambda names them.
const (
	conditionRetriesExhausted = "RetryAttemptsExhausted"
	conditionRecordAge        = "RecordAgeExceeded"
)

// lambdaTime is how Lambda writes the times of an on-failure record: UTC,
// to the millisecond ("2024-01-02T03:04:05.835Z").
const lambdaTime = "2006-01-02T15:04:05.000Z"

// failureRecord is Lambda's on-failure metadata record for a stream batch.
type failureRecord struct {
	RequestContext struct {
		RequestID              string `json:"requestId"`
		FunctionArn            string `json:"functionArn"`
		Condition              string `json:"condition"`
		ApproximateInvokeCount int    `json:"approximateInvokeCount"`
	} `json:"requestContext"`
	ResponseContext struct {
		StatusCode      int    `json:"statusCode"`
		ExecutedVersion string `json:"executedVersion"`
		FunctionError   string `json:"functionError"`
	} `json:"responseContext"`
	Version          string    `json:"version"`
	Timestamp        string    `json:"timestamp"`
	KinesisBatchInfo batchInfo `json:"KinesisBatchInfo"`
	// Idem adds why the batch failed, so an operator need not dig in logs.
	IdemErrorType    string `json:"idemErrorType,omitempty"`
	IdemErrorMessage string `json:"idemErrorMessage,omitempty"`
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

// failureMetadata builds the JSON metadata record of a discarded batch.
func failureMetadata(requestID, function, condition string, invokes int, errType, errMsg string, recs []idem.Record, now time.Time) []byte {
	var f failureRecord
	f.RequestContext.RequestID = requestID
	f.RequestContext.FunctionArn = FunctionArn(function)
	f.RequestContext.Condition = condition
	f.RequestContext.ApproximateInvokeCount = invokes
	f.ResponseContext.StatusCode = 200
	f.ResponseContext.ExecutedVersion = "$LATEST"
	if condition == conditionRetriesExhausted {
		f.ResponseContext.FunctionError = "Unhandled"
	}
	f.Version = "1.0"
	f.Timestamp = now.UTC().Format(lambdaTime)
	first, last := recs[0], recs[len(recs)-1]
	f.KinesisBatchInfo = batchInfo{
		ShardID:                         first.ShardID,
		StartSequenceNumber:             first.SequenceNumber(),
		EndSequenceNumber:               last.SequenceNumber(),
		ApproximateArrivalOfFirstRecord: first.ArrivalTime.UTC().Format(lambdaTime),
		ApproximateArrivalOfLastRecord:  last.ArrivalTime.UTC().Format(lambdaTime),
		BatchSize:                       len(recs),
		StreamArn:                       StreamArn(first.Stream),
	}
	f.IdemErrorType, f.IdemErrorMessage = errType, errMsg
	b, _ := json.Marshal(&f)
	return b
}

// FunctionArn is the ARN idem reports for a function, in Lambda's form.
func FunctionArn(name string) string { return "arn:aws:lambda:local:000000000000:function:" + name }

// StreamArn is the ARN idem reports for an embedded stream, in Kinesis' form.
func StreamArn(name string) string { return "arn:aws:kinesis:local:000000000000:stream/" + name }
