// Command sleep is a Kinesis handler that ignores its deadline: at a record
// whose data is "sleep" it sleeps for an hour.
package main

import (
	"context"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	for _, r := range ev.Records {
		if string(r.Kinesis.Data) == "sleep" {
			time.Sleep(time.Hour)
		}
	}
	return events.KinesisEventResponse{}, nil
}

func main() { lambda.Start(handler) }
