// Command echo is a Lambda function for direct invocations: it returns its
// event as it got it, with the request id and client context it was given
// when the event asks for them ({"whoami": true}), fails with a
// ValidationError when the event is {"fail": "message"}, panics at
// {"panic": "message"} and sleeps first at {"sleep": milliseconds}. It
// serves the Invoke API's tests and the process-versus-in-process
// benchmark.
package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// ValidationError is the error type permanentErrorTypes can name.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func handler(ctx context.Context, event json.RawMessage) (json.RawMessage, error) {
	var ask struct {
		Fail   *string `json:"fail"`
		WhoAmI bool    `json:"whoami"`
		Panic  string  `json:"panic"`
		Sleep  int     `json:"sleep"`
	}
	_ = json.Unmarshal(event, &ask)
	if ask.Sleep > 0 {
		time.Sleep(time.Duration(ask.Sleep) * time.Millisecond)
	}
	if ask.Panic != "" {
		panic(ask.Panic)
	}
	if ask.Fail != nil {
		return nil, &ValidationError{Msg: *ask.Fail}
	}
	if ask.WhoAmI {
		lc, _ := lambdacontext.FromContext(ctx)
		return json.Marshal(map[string]any{"requestId": lc.AwsRequestID, "functionArn": lc.InvokedFunctionArn, "clientContext": lc.ClientContext.Custom})
	}
	return event, nil
}

func main() { lambda.Start(handler) }
