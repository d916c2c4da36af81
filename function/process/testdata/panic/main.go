// Command panic is a Kinesis handler with a bug: a record whose data is
// "panic" makes it index past the end of a slice.
package main

import (
	"context"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	var seen []string
	for _, r := range ev.Records {
		if string(r.Kinesis.Data) == "panic" {
			_ = seen[len(ev.Records)]
		}
		seen = append(seen, r.EventID)
	}
	return events.KinesisEventResponse{}, nil
}

func main() { lambda.Start(handler) }
