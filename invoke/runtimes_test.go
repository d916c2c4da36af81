package invoke_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/idem-run/idem/function/process"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/invoke"
)

// The Invoke API over unmodified Lambda functions run as processes, under
// the official runtime clients: aws-lambda-go, and Node.js's aws-lambda-ric.
// What a caller sees is what Lambda would show it: the answer, the error
// object the runtime posted (its stack trace included), Lambda's timeout
// message with the whole timeout, and a REPORT line with memory figures.

// runtimeCase is one function under one runtime client, with the events
// that make it answer, throw and sleep.
type runtimeCase struct {
	cfg     process.Config
	answer  string // an event, and what the answer must contain
	want    string
	fail    string // an event that makes the handler throw or panic
	errType string // the errorType posted for it
	stack   string // the member holding its stack trace, and a frame's text
	frame   string
	sleep   string // an event that makes the handler outlive its timeout
}

func goCase(t *testing.T) runtimeCase {
	return runtimeCase{
		cfg:    process.Config{Name: "echo", Command: buildEcho(t)},
		answer: `{"n":1}`, want: `{"n":1}`,
		fail: `{"panic":"no such order"}`, errType: "string", stack: "stackTrace", frame: "main.go",
		sleep: `{"sleep":60000}`,
	}
}

func nodeCase(t *testing.T) runtimeCase {
	dir := testsvc.NodeDir(t)
	return runtimeCase{
		cfg: process.Config{Name: "echo", Command: "node_modules/.bin/aws-lambda-ric", Args: []string{"index.handler"},
			Dir: dir},
		answer: `{"n":1}`, want: `"echo":{"n":1}`,
		fail: `{"throw":"no such order"}`, errType: "Error", stack: "trace", frame: "index.mjs",
		sleep: `{"sleep":60000}`,
	}
}

func TestRuntimesThroughInvokeAPI(t *testing.T) {
	for name, mk := range map[string]func(*testing.T) runtimeCase{"aws-lambda-go": goCase, "aws-lambda-ric": nodeCase} {
		t.Run(name, func(t *testing.T) {
			c := mk(t)
			const timeout = 2 * time.Second
			c.cfg.Timeout, c.cfg.MemorySize = timeout, 512
			p, err := process.New(c.cfg, process.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Close)
			e := start(t, "", nil, invoke.Function{Name: "echo", Driver: p, Timeout: timeout})
			ctx := context.Background()
			call := func(payload string) *lambda.InvokeOutput {
				t.Helper()
				out, err := e.client.Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String("echo"), Payload: []byte(payload), LogType: types.LogTypeTail})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}

			// A synchronous answer, with Lambda's REPORT line.
			out := call(c.answer)
			if out.FunctionError != nil || !strings.Contains(string(out.Payload), c.want) {
				t.Fatalf("answer %s (function error %v), want it to contain %s", out.Payload, aws.ToString(out.FunctionError), c.want)
			}
			tail, _ := base64.StdEncoding.DecodeString(aws.ToString(out.LogResult))
			report := regexp.MustCompile(`REPORT RequestId: \S+\tDuration: [0-9.]+ ms\tBilled Duration: [1-9][0-9]* ms\tMemory Size: 512 MB\tMax Memory Used: ([0-9]+) MB\t\n$`)
			if m := report.FindSubmatch(tail); m == nil || (runtime.GOOS == "linux" && string(m[1]) == "0") {
				t.Fatalf("Tail log %q: want a REPORT line with Memory Size and Max Memory Used", tail)
			}

			// A thrown error (a panic) reaches the caller as the runtime
			// posted it, stack trace included.
			out = call(c.fail)
			var obj map[string]any
			if err := json.Unmarshal(out.Payload, &obj); err != nil || aws.ToString(out.FunctionError) != "Unhandled" ||
				obj["errorType"] != c.errType || obj["errorMessage"] != "no such order" {
				t.Fatalf("error answer %s (%v)", out.Payload, err)
			}
			if frames, _ := obj[c.stack].([]any); len(frames) == 0 || !strings.Contains(string(out.Payload), c.frame) {
				t.Fatalf("error answer %s: want its %s, naming %s", out.Payload, c.stack, c.frame)
			}

			// Timeouts: each invocation has its whole timeout, though the
			// one before it left the runtime to restart.
			for i := range 3 {
				out = call(c.sleep)
				if err := json.Unmarshal(out.Payload, &obj); err != nil || obj["errorType"] != "Function.Timeout" ||
					obj["errorMessage"] != "Task timed out after 2.00 seconds" {
					t.Fatalf("invocation %d after a timeout: %s (%v), want Task timed out after 2.00 seconds", i+1, out.Payload, err)
				}
			}
			if out := call(c.answer); out.FunctionError != nil {
				t.Fatalf("after the timeouts: %s", out.Payload)
			}
		})
	}
}
