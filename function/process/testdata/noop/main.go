// Command noop is the smallest Kinesis handler: it decodes the event and
// reports success. It measures idem's own cost of an invocation.
package main

import (
	"context"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(context.Context, events.KinesisEvent) (events.KinesisEventResponse, error) {
	return events.KinesisEventResponse{}, nil
}

func main() { lambda.Start(handler) }
