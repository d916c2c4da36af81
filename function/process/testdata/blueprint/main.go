// Command blueprint is AWS's console blueprint for Kinesis, as it ships:
// it logs each record and returns a plain string, which Lambda ignores
// unless the mapping reports batch item failures.
package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, e events.KinesisEvent) (string, error) {
	for _, r := range e.Records {
		fmt.Printf("%s Data = %s\n", r.EventName, r.Kinesis.Data)
	}
	return fmt.Sprintf("Successfully processed %d records.", len(e.Records)), nil
}

func main() { lambda.Start(handler) }
