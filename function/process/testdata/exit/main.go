// Command exit is a Kinesis handler that calls os.Exit(1) at a record whose
// data is "exit", in the middle of a batch. With EXIT_AT_INIT set it exits
// before it starts, as a function whose initialization fails.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.KinesisEvent) (events.KinesisEventResponse, error) {
	for _, r := range ev.Records {
		if string(r.Kinesis.Data) == "exit" {
			fmt.Println("exiting at", r.EventID)
			os.Exit(1)
		}
	}
	return events.KinesisEventResponse{}, nil
}

func main() {
	if os.Getenv("EXIT_AT_INIT") != "" {
		fmt.Fprintln(os.Stderr, "cannot initialize")
		os.Exit(3)
	}
	lambda.Start(handler)
}
