// Command kafka is a Kafka handler written as for AWS Lambda, taking
// aws-lambda-go's events.KafkaEvent: it fails the whole invocation when a
// record's value says "fail", as a function does on data it cannot handle.
package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.KafkaEvent) error {
	for name, records := range ev.Records {
		for _, r := range records {
			value, err := base64.StdEncoding.DecodeString(r.Value)
			if err != nil {
				return fmt.Errorf("%s@%d: value is not base64: %w", name, r.Offset, err)
			}
			if strings.Contains(string(value), "fail") {
				return fmt.Errorf("%s@%d: cannot ship", name, r.Offset)
			}
		}
	}
	return nil
}

func main() { lambda.Start(handler) }
