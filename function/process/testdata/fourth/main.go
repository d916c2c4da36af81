// Command fourth is ESM.md's worked example as an unmodified Lambda
// function: a Kinesis handler that reports the 4th record of every batch
// of at least 4 in batchItemFailures, and appends each batch's size to the
// file named by IDEM_TEST_SIZES.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	if path := os.Getenv("IDEM_TEST_SIZES"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return events.KinesisEventResponse{}, err
		}
		fmt.Fprintln(f, len(ev.Records))
		f.Close()
	}
	var resp events.KinesisEventResponse
	if len(ev.Records) >= 4 {
		resp.BatchItemFailures = []events.KinesisBatchItemFailure{{ItemIdentifier: ev.Records[3].EventID}}
	}
	return resp, nil
}

func main() { lambda.Start(handler) }
