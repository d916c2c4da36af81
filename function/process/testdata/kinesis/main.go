// Command kinesis is a Kinesis stream handler written as for AWS Lambda: it
// reports the records whose data is "fail" in batchItemFailures. It prints
// its Lambda environment at start and a line per record, and exits cleanly
// on SIGTERM, which lambda.WithEnableSIGTERM asks the runtime to send.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

// record is a Kinesis record with the idempotency key idem adds.
type record struct {
	events.KinesisEventRecord
	IdempotencyKey string `json:"idempotencyKey"`
}

type event struct {
	Records []record `json:"Records"`
}

func handler(_ context.Context, ev event) (events.KinesisEventResponse, error) {
	var resp events.KinesisEventResponse
	for _, r := range ev.Records {
		fmt.Printf("processing %s key %s\n", r.EventID, r.IdempotencyKey)
		if string(r.Kinesis.Data) == "fail" {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.KinesisBatchItemFailure{ItemIdentifier: r.EventID})
		}
	}
	return resp, nil
}

func main() {
	env := map[string]string{}
	for _, k := range []string{"AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_RUNTIME_API",
		"_LAMBDA_SERVER_PORT", "IDEM_TEST_VAR"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	b, _ := json.Marshal(env)
	fmt.Printf("env %s\n", b)
	lambda.StartWithOptions(handler, lambda.WithEnableSIGTERM(func() {
		fmt.Println("sigterm")
		os.Exit(0)
	}))
}
