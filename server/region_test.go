package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/idem-run/idem/server"
)

// regionFunction is an HTTP function that fails every batch and keeps the
// events and Lambda-Runtime-Invoked-Function-Arn headers it got.
type regionFunction struct {
	mu     sync.Mutex
	events []events.KinesisEvent
	arns   []string
}

func (f *regionFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.arns = append(f.arns, r.Header.Get("Lambda-Runtime-Invoked-Function-Arn"))
	var ev events.KinesisEvent
	if json.Unmarshal(b, &ev) == nil && len(ev.Records) > 0 {
		f.events = append(f.events, ev)
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusInternalServerError)
	w.Write([]byte(`{"errorType":"Nope","errorMessage":"no"}`))
}

func (f *regionFunction) got() ([]events.KinesisEvent, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]events.KinesisEvent(nil), f.events...), append([]string(nil), f.arns...)
}

// TestRegionEverywhere (issue 11, item 5): with `region: eu-west-1`, every
// region and ARN idem presents names eu-west-1: an HTTP function's events
// (awsRegion, eventSourceARN) and its Lambda-Runtime-Invoked-Function-Arn,
// an on-failure record's ARNs, the Invoke API's error texts, and a process
// function's AWS_REGION, unless the function sets its own.
func TestRegionEverywhere(t *testing.T) {
	fn := &regionFunction{}
	hs := httptest.NewServer(fn)
	t.Cleanup(hs.Close)
	dir := t.TempDir()
	script := filepath.Join(dir, "bootstrap")
	// It writes its region where its argument says and waits to be ended.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s %s' \"$AWS_REGION\" \"$AWS_DEFAULT_REGION\" > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	own, set := filepath.Join(dir, "own"), filepath.Join(dir, "set")
	addr := serve(t, fmt.Sprintf(`
region: eu-west-1
streams: [{name: orders}, {name: orders-failed}]
functions:
  - {name: ship, http: {url: %q}}
  - {name: proc, process: {command: %q, args: [%q]}}
  - {name: proc-own, process: {command: %q, args: [%q], region: ap-south-1}}
mappings:
  - name: m
    source: {stream: orders}
    function: ship
    startingPosition: TRIM_HORIZON
    maximumRetryAttempts: 0
    destinationConfig: {onFailure: {stream: orders-failed}}
`, hs.URL, script, own, script, set), nil)

	for file, want := range map[string]string{own: "eu-west-1 eu-west-1", set: "ap-south-1 ap-south-1"} {
		var b []byte
		eventually(t, "the process function writing its region", func() bool {
			var err error
			b, err = os.ReadFile(file)
			return err == nil
		})
		if string(b) != want {
			t.Errorf("process function's AWS_REGION and AWS_DEFAULT_REGION: %q, want %q", b, want)
		}
	}

	if code, body := call(t, "POST", "http://"+addr+"/v1/streams/orders/records", "", `{"records":[{"partitionKey":"k","data":"d"}]}`); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	var failed server.RecordsResponse
	eventually(t, "the on-failure stream holding the metadata record and the record", func() bool {
		_, body := call(t, "GET", "http://"+addr+"/v1/streams/orders-failed/records?shard=shardId-000000000000", "", "")
		failed = server.RecordsResponse{}
		if err := json.Unmarshal([]byte(body), &failed); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return len(failed.Records) >= 2
	})
	var meta struct {
		RequestContext struct {
			FunctionArn string `json:"functionArn"`
		} `json:"requestContext"`
		KinesisBatchInfo struct {
			StreamArn string `json:"streamArn"`
		} `json:"KinesisBatchInfo"`
	}
	if err := json.Unmarshal([]byte(failed.Records[0].Data), &meta); err != nil {
		t.Fatal(err)
	}
	if got, want := meta.RequestContext.FunctionArn, "arn:aws:lambda:eu-west-1:000000000000:function:ship"; got != want {
		t.Errorf("on-failure functionArn %q, want %q", got, want)
	}
	if got, want := meta.KinesisBatchInfo.StreamArn, "arn:aws:kinesis:eu-west-1:000000000000:stream/orders"; got != want {
		t.Errorf("on-failure streamArn %q, want %q", got, want)
	}
	evs, _ := fn.got()
	if len(evs) == 0 {
		t.Fatal("the HTTP function got no event")
	}
	if r := evs[0].Records[0]; r.AwsRegion != "eu-west-1" || r.EventSourceArn != "arn:aws:kinesis:eu-west-1:000000000000:stream/orders" {
		t.Errorf("event record awsRegion %q, eventSourceARN %q; want eu-west-1 in both", r.AwsRegion, r.EventSourceArn)
	}

	c := client(addr, "any")
	if _, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("ship"), Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	_, arns := fn.got()
	if got, want := arns[len(arns)-1], "arn:aws:lambda:eu-west-1:000000000000:function:ship"; got != want {
		t.Errorf("Lambda-Runtime-Invoked-Function-Arn %q, want %q", got, want)
	}
	var nf *types.ResourceNotFoundException
	_, err := c.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("absent"), Payload: []byte(`{}`)})
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "arn:aws:lambda:eu-west-1:000000000000:function:absent") {
		t.Errorf("invoking an absent function: %v, want ResourceNotFoundException naming its eu-west-1 ARN", err)
	}
}
