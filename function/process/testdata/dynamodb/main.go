// Command dynamodb is a DynamoDB stream handler written as for AWS Lambda,
// taking aws-lambda-go's events.DynamoDBEvent: it appends one line per
// record, "<eventName> <id> <status> <SequenceNumber>" (the item's id key
// and its new image's status, or its old image's for a REMOVE), to the
// file named by IDEM_TEST_KEYS, and reports as failed, by SequenceNumber
// as Lambda's DynamoDB partial batch responses do, each record whose
// status is "fail".
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.DynamoDBEvent) (events.DynamoDBEventResponse, error) {
	var out events.DynamoDBEventResponse
	var lines string
	for _, r := range ev.Records {
		img := r.Change.NewImage
		if r.EventName == "REMOVE" {
			img = r.Change.OldImage
		}
		status := str(img["status"])
		lines += fmt.Sprintf("%s %s %s %s\n", r.EventName, str(r.Change.Keys["id"]), status, r.Change.SequenceNumber)
		if status == "fail" {
			out.BatchItemFailures = append(out.BatchItemFailures, events.DynamoDBBatchItemFailure{ItemIdentifier: r.Change.SequenceNumber})
		}
	}
	if path := os.Getenv("IDEM_TEST_KEYS"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return out, err
		}
		if _, err := f.WriteString(lines); err != nil {
			f.Close()
			return out, err
		}
		if err := f.Close(); err != nil {
			return out, err
		}
	}
	return out, nil
}

// str is a string attribute's value, "" for any other (String panics on
// them).
func str(v events.DynamoDBAttributeValue) string {
	if v.DataType() != events.DataTypeString {
		return ""
	}
	return v.String()
}

func main() { lambda.Start(handler) }
