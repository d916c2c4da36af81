// Command window is a tumbling-window aggregator written as for AWS
// Lambda, with state values that are numbers, as in AWS's own example
// ({"state": {"1": 282, "2": 715}}): it sums the records' numbers into
// {"sum": …, "count": …}. It appends the state each invocation received,
// as raw JSON, to the file IDEM_TEST_OUT ("batch <state>" or "final
// <state>"). With IDEM_TEST_MODE=nostate it answers as a function written
// without windows in mind: a KinesisEventResponse, which has no state.
// With IDEM_TEST_MODE=failfinal its first two final invocations fail (it
// counts them in IDEM_TEST_OUT). With IDEM_TEST_MODE=miscased it answers
// "BatchItemFailures", a key in the wrong case, beside its state.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

type event struct {
	Records                []events.KinesisEventRecord `json:"Records"`
	State                  json.RawMessage             `json:"state"`
	IsFinalInvokeForWindow bool                        `json:"isFinalInvokeForWindow"`
}

type state struct {
	Sum   int `json:"sum"`
	Count int `json:"count"`
}

type response struct {
	State             *state                           `json:"state"`
	BatchItemFailures []events.KinesisBatchItemFailure `json:"batchItemFailures"`
}

func handler(_ context.Context, ev event) (any, error) {
	kind := "batch"
	if ev.IsFinalInvokeForWindow {
		kind = "final"
	}
	mode := os.Getenv("IDEM_TEST_MODE")
	if out := os.Getenv("IDEM_TEST_OUT"); out != "" {
		f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(f, "%s %s\n", kind, ev.State)
		f.Close()
		if b, err := os.ReadFile(out); mode == "failfinal" && ev.IsFinalInvokeForWindow && err == nil && strings.Count(string(b), "final ") <= 2 {
			return nil, errors.New("the final invocation fails, for now")
		}
	}
	if mode == "nostate" {
		return events.KinesisEventResponse{BatchItemFailures: []events.KinesisBatchItemFailure{}}, nil
	}
	var st state
	if len(ev.State) > 0 && string(ev.State) != "null" {
		if err := json.Unmarshal(ev.State, &st); err != nil {
			return nil, err
		}
	}
	for _, r := range ev.Records {
		n, err := strconv.Atoi(string(r.Kinesis.Data))
		if err != nil {
			return nil, err
		}
		st.Sum += n
		st.Count++
	}
	if mode == "miscased" {
		return map[string]any{"BatchItemFailures": []any{}, "state": st}, nil
	}
	return response{State: &st, BatchItemFailures: []events.KinesisBatchItemFailure{}}, nil
}

func main() { lambda.Start(handler) }
