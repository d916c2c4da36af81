package process

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/internal/testsvc"
)

// startNode runs handler (module.export, in testdata/node) under
// aws-lambda-ric, as a Lambda function's container image runs it.
func startNode(t *testing.T, handler string, cfg Config) (*Function, *logs) {
	t.Helper()
	cfg.Dir = testsvc.NodeDir(t)
	cfg.Command = "node_modules/.bin/aws-lambda-ric"
	cfg.Args = []string{handler}
	if cfg.Name == "" {
		cfg.Name = "node"
	}
	return launch(t, cfg)
}

func invokePayload(t *testing.T, f *Function, payload string, timeout time.Duration) ([]byte, function.Report, error) {
	t.Helper()
	// As the Invoke API calls it: the deadline is the call's start plus
	// the timeout.
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return f.InvokePayloadReport(ctx, []byte(payload), function.InvokeMeta{RequestID: newUUID(), Deadline: deadline})
}

func TestNodeRuntime(t *testing.T) {
	const timeout = time.Second
	f, _ := startNode(t, "index.handler", Config{Name: "node-fn", Timeout: timeout, MemorySize: 256})

	out, rep, err := invokePayload(t, f, `{"hello":"world"}`, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Echo         map[string]string `json:"echo"`
		RequestID    string            `json:"requestId"`
		FunctionName string            `json:"functionName"`
		RemainingMs  int64             `json:"remainingMs"`
	}
	if err := json.Unmarshal(out, &got); err != nil || got.Echo["hello"] != "world" || len(got.RequestID) != 36 ||
		got.FunctionName != "node-fn" || got.RemainingMs <= 0 || got.RemainingMs > timeout.Milliseconds() {
		t.Fatalf("answer %s (%v)", out, err)
	}
	if rep.MemorySize != 256 || rep.Duration <= 0 || (peerChecked && rep.MaxMemoryUsed < 1<<20) {
		t.Fatalf("report %+v: want memory size 256, a duration, and node's peak memory", rep)
	}

	t.Run("thrown error", func(t *testing.T) {
		_, _, err := invokePayload(t, f, `{"throw":"no such order"}`, 30*time.Second)
		var fe *function.Error
		var re *RuntimeError
		if !errors.As(err, &fe) || fe.Type != "Error" || fe.Message != "no such order" || !errors.As(err, &re) {
			t.Fatalf("err = %#v, want the thrown Error", err)
		}
		if !slices.ContainsFunc(re.StackTrace, func(s string) bool { return strings.Contains(s, "index.mjs") }) {
			t.Fatalf("stack trace %q does not name index.mjs", re.StackTrace)
		}
		var obj map[string]any
		if err := json.Unmarshal(re.ErrorObject(), &obj); err != nil || obj["errorType"] != "Error" || obj["trace"] == nil {
			t.Fatalf("error object %s (%v): want it as the client posted it, trace included", re.ErrorObject(), err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		// Each invocation after a timeout waits for node to start again,
		// and still has its whole second.
		for i := range 3 {
			_, _, err := invokePayload(t, f, `{"sleep":60000}`, timeout)
			var fe *function.Error
			if !errors.As(err, &fe) || fe.Type != function.TypeTimeout || fe.Message != "Task timed out after 1.00 seconds" {
				t.Fatalf("invocation %d: err = %v, want Task timed out after 1.00 seconds", i+1, err)
			}
		}
		if _, _, err := invokePayload(t, f, `{}`, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func TestNodeRuntimeInitErrors(t *testing.T) {
	cases := []struct {
		handler, typ, msg string
	}{
		{"index.nosuch", "Runtime.HandlerNotFound", "index.nosuch is undefined or not exported"},
		{"nosuch.handler", "Runtime.ImportModuleError", "Cannot find module"},
		// The client posts a module's own error as it is.
		{"broken.handler", "Error", "cannot connect to the database"},
	}
	for _, c := range cases {
		t.Run(c.handler, func(t *testing.T) {
			f, _ := startNode(t, c.handler, Config{})
			_, _, err := invokePayload(t, f, `{}`, 30*time.Second)
			var fe *function.Error
			if !errors.As(err, &fe) || fe.Type != c.typ || !strings.Contains(fe.Message, c.msg) {
				t.Fatalf("err = %#v, want %s: %s", err, c.typ, c.msg)
			}
		})
	}
}
