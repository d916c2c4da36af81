// Command traceid is a Lambda function that answers every invocation with
// the _X_AMZN_TRACE_ID its runtime (aws-lambda-go) set from the
// Lambda-Runtime-Trace-Id header: {"traceId": "..."}.
package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(context.Context, json.RawMessage) (map[string]string, error) {
		return map[string]string{"traceId": os.Getenv("_X_AMZN_TRACE_ID")}, nil
	})
}
