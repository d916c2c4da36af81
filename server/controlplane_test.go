package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// recordCounter is an in-process batch handler that counts the runs of
// each record's data.
type recordCounter struct {
	mu   sync.Mutex
	runs map[string]int
}

func newRecordCounter() *recordCounter { return &recordCounter{runs: map[string]int{}} }

func (c *recordCounter) HandleBatch(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range b.Records {
		c.runs[string(r.Data)]++
	}
	return idem.BatchResult{}, nil
}

func (c *recordCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.runs {
		n += v
	}
	return n
}

// eventually polls cond until it holds or the test's patience ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// status reads GET /v1/status.
func status(t *testing.T, addr string) server.StatusResponse {
	t.Helper()
	code, body := call(t, "GET", "http://"+addr+"/v1/status", "Bearer "+token, "")
	if code != 200 {
		t.Fatalf("status: %d %s", code, body)
	}
	var st server.StatusResponse
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// shardsPaused reports whether every shard of mapping shows "paused".
func shardsPaused(t *testing.T, addr, mapping string) bool {
	n := 0
	for _, s := range status(t, addr).Shards {
		if s.Mapping == mapping {
			if s.State != "paused" {
				return false
			}
			n++
		}
	}
	return n > 0
}

func putRecords(t *testing.T, addr, stream string, data ...string) {
	t.Helper()
	var recs []server.PutRecord
	for i, d := range data {
		recs = append(recs, server.PutRecord{PartitionKey: fmt.Sprint("k", i), Data: d})
	}
	b, _ := json.Marshal(server.PutRequest{Records: recs})
	if code, body := call(t, "POST", "http://"+addr+"/v1/streams/"+stream+"/records", "Bearer "+token, string(b)); code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
}

func sleepCommand(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sleep")
	if err != nil {
		testsvc.Absent(t, "no sleep command: %v", err)
	}
	return p
}

func controlPlaneConfig(t *testing.T) string {
	return fmt.Sprintf(`
region: eu-west-1
auth: {tokens: [%s]}
streams: [{name: events, shards: 2}, {name: orders}, {name: failed}]
functions:
  - {name: count, timeout: 10s}
  - {name: count2, timeout: 1500ms}
  - {name: web, http: {url: "http://127.0.0.1:9/"}}
  - {name: proc, process: {command: %q, args: ["600"], env: {GREETING: hello}, memorySize: 256}}
mappings:
  - name: m1
    source: {stream: events}
    function: count
    startingPosition: TRIM_HORIZON
    batchSize: 10
    maximumBatchingWindow: 2s
    bisectBatchOnFunctionError: true
    maximumRetryAttempts: 3
    maximumRecordAge: 120s
    parallelizationFactor: 2
    functionResponseTypes: [ReportBatchItemFailures]
    destinationConfig: {onFailure: {stream: failed}}
    filterCriteria: {filters: [{pattern: '{"data":{"a":[1]}}'}]}
  - name: m2
    source: {stream: orders}
    function: count
    startingPosition: LATEST
    enabled: false
  - name: m3
    source: {stream: orders}
    function: count2
    startingPosition: AT_TIMESTAMP
    startingPositionTimestamp: 2026-01-02T03:04:05Z
`, token, sleepCommand(t))
}

func wantAPIError[E interface {
	error
	ErrorCode() string
}](t *testing.T, err error, contains string) {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want %T", err, err, e)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not say %q", err, contains)
	}
}

// TestControlPlaneWithSDK drives the control plane with aws-sdk-go-v2's
// Lambda client: the functions and mappings read back in Lambda's shapes,
// and UpdateEventSourceMapping pauses and resumes a mapping and refuses the
// settings the config file owns.
func TestControlPlaneWithSDK(t *testing.T) {
	fn := newRecordCounter()
	addr := serve(t, controlPlaneConfig(t), nil, server.WithHandler("count", fn), server.WithHandler("count2", fn))
	c := client(addr, token)
	ctx := context.Background()
	const arn = "arn:aws:lambda:eu-west-1:000000000000:function:"

	var fns []types.FunctionConfiguration
	for p := lambda.NewListFunctionsPaginator(c, &lambda.ListFunctionsInput{MaxItems: aws.Int32(3)}); p.HasMorePages(); {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Functions) > 3 {
			t.Fatalf("a page of %d functions, MaxItems 3", len(out.Functions))
		}
		fns = append(fns, out.Functions...)
	}
	var names []string
	for _, f := range fns {
		names = append(names, aws.ToString(f.FunctionName))
		if got, want := aws.ToString(f.FunctionArn), arn+aws.ToString(f.FunctionName); got != want {
			t.Errorf("FunctionArn %q, want %q", got, want)
		}
	}
	if !slices.Equal(names, []string{"count", "count2", "web", "proc"}) {
		t.Fatalf("ListFunctions: %v", names)
	}

	got, err := c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String(arn + "proc")})
	if err != nil {
		t.Fatal(err)
	}
	pc := got.Configuration
	if pc.Runtime != "provided.al2023" || pc.PackageType != types.PackageTypeZip || aws.ToInt32(pc.MemorySize) != 256 ||
		aws.ToInt32(pc.Timeout) != 3 || pc.Environment == nil || !maps.Equal(pc.Environment.Variables, map[string]string{"GREETING": "hello"}) {
		t.Fatalf("GetFunction proc: runtime %q, package %q, memory %d, timeout %d, environment %+v",
			pc.Runtime, pc.PackageType, aws.ToInt32(pc.MemorySize), aws.ToInt32(pc.Timeout), pc.Environment)
	}
	cfg, err := c.GetFunctionConfiguration(ctx, &lambda.GetFunctionConfigurationInput{FunctionName: aws.String("count2")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runtime != "idem.go" || aws.ToInt32(cfg.Timeout) != 2 || cfg.Environment != nil || aws.ToString(cfg.FunctionArn) != arn+"count2" {
		t.Fatalf("GetFunctionConfiguration count2: %+v", cfg)
	}
	_, err = c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("nope")})
	wantAPIError[*types.ResourceNotFoundException](t, err, "function not found")
	_, err = c.GetFunction(ctx, &lambda.GetFunctionInput{FunctionName: aws.String("count"), Qualifier: aws.String("1")})
	wantAPIError[*types.ResourceNotFoundException](t, err, "function not found")

	// Every mapping, one a page.
	var esms []types.EventSourceMappingConfiguration
	for p := lambda.NewListEventSourceMappingsPaginator(c, &lambda.ListEventSourceMappingsInput{MaxItems: aws.Int32(1)}); p.HasMorePages(); {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		esms = append(esms, out.EventSourceMappings...)
	}
	if len(esms) != 3 {
		t.Fatalf("ListEventSourceMappings: %d mappings, want 3", len(esms))
	}
	if u := aws.ToString(esms[0].UUID); u != server.MappingUUID("m1") {
		t.Fatalf("m1's UUID %q, want %q", u, server.MappingUUID("m1"))
	}
	m1 := esms[0]
	eventsArn := "arn:aws:kinesis:eu-west-1:000000000000:stream/events"
	checks := []struct {
		name      string
		got, want any
	}{
		{"FunctionArn", aws.ToString(m1.FunctionArn), arn + "count"},
		{"EventSourceArn", aws.ToString(m1.EventSourceArn), eventsArn},
		{"EventSourceMappingArn", aws.ToString(m1.EventSourceMappingArn), "arn:aws:lambda:eu-west-1:000000000000:event-source-mapping:" + server.MappingUUID("m1")},
		{"BatchSize", aws.ToInt32(m1.BatchSize), int32(10)},
		{"MaximumBatchingWindowInSeconds", aws.ToInt32(m1.MaximumBatchingWindowInSeconds), int32(2)},
		{"StartingPosition", m1.StartingPosition, types.EventSourcePositionTrimHorizon},
		{"MaximumRetryAttempts", aws.ToInt32(m1.MaximumRetryAttempts), int32(3)},
		{"MaximumRecordAgeInSeconds", aws.ToInt32(m1.MaximumRecordAgeInSeconds), int32(120)},
		{"BisectBatchOnFunctionError", aws.ToBool(m1.BisectBatchOnFunctionError), true},
		{"ParallelizationFactor", aws.ToInt32(m1.ParallelizationFactor), int32(2)},
		{"FunctionResponseTypes", fmt.Sprint(m1.FunctionResponseTypes), "[ReportBatchItemFailures]"},
		{"TumblingWindowInSeconds", aws.ToInt32(m1.TumblingWindowInSeconds), int32(0)},
		{"DestinationConfig", aws.ToString(m1.DestinationConfig.OnFailure.Destination), "arn:aws:kinesis:eu-west-1:000000000000:stream/failed"},
		{"FilterCriteria", aws.ToString(m1.FilterCriteria.Filters[0].Pattern), `{"data":{"a":[1]}}`},
		{"State", aws.ToString(m1.State), "Enabled"},
		{"LastProcessingResult", aws.ToString(m1.LastProcessingResult), "No records processed"},
		{"m2 State", aws.ToString(esms[1].State), "Disabled"},
		{"m2 MaximumRecordAgeInSeconds", aws.ToInt32(esms[1].MaximumRecordAgeInSeconds), int32(-1)},
		{"m3 StartingPositionTimestamp", aws.ToTime(esms[2].StartingPositionTimestamp).UTC(), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{"m3 FunctionArn", aws.ToString(esms[2].FunctionArn), arn + "count2"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
	if m1.LastModified == nil || m1.LastModified.IsZero() {
		t.Errorf("LastModified: %v", m1.LastModified)
	}

	// The filters.
	list := func(in *lambda.ListEventSourceMappingsInput) []string {
		t.Helper()
		out, err := c.ListEventSourceMappings(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		var uuids []string
		for _, m := range out.EventSourceMappings {
			uuids = append(uuids, aws.ToString(m.UUID))
		}
		return uuids
	}
	if got := list(&lambda.ListEventSourceMappingsInput{FunctionName: aws.String("count2")}); !slices.Equal(got, []string{server.MappingUUID("m3")}) {
		t.Errorf("--function-name count2: %v", got)
	}
	if got := list(&lambda.ListEventSourceMappingsInput{FunctionName: aws.String(arn + "count")}); len(got) != 2 {
		t.Errorf("--function-name ARN of count: %v, want m1 and m2", got)
	}
	if got := list(&lambda.ListEventSourceMappingsInput{EventSourceArn: aws.String(eventsArn)}); !slices.Equal(got, []string{server.MappingUUID("m1")}) {
		t.Errorf("--event-source-arn events: %v", got)
	}

	// Some records, then pause and resume.
	putRecords(t, addr, "events", `{"a":1}`, `{"a":1}`)
	eventually(t, "2 records", func() bool { return fn.total() == 2 })
	upd, err := c.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: m1.UUID, Enabled: aws.Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(upd.State) != "Disabled" || aws.ToString(upd.LastProcessingResult) != "OK" || !upd.LastModified.After(*m1.LastModified) {
		t.Fatalf("after pausing: state %q, last processing result %q, last modified %v (was %v)",
			aws.ToString(upd.State), aws.ToString(upd.LastProcessingResult), upd.LastModified, m1.LastModified)
	}
	eventually(t, "m1's shards paused", func() bool { return shardsPaused(t, addr, "m1") })
	st := status(t, addr)
	var states []string
	for _, m := range st.Mappings {
		states = append(states, m.Name+"="+m.State)
	}
	if want := []string{"m1=paused", "m2=disabled", "m3=enabled"}; !slices.Equal(states, want) {
		t.Errorf("status mappings: %v, want %v", states, want)
	}
	g, err := c.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: m1.UUID})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(g.State) != "Disabled" {
		t.Fatalf("GetEventSourceMapping after pausing: %q", aws.ToString(g.State))
	}

	_, err = c.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: m1.UUID, BatchSize: aws.Int32(5), Enabled: aws.Bool(true)})
	wantAPIError[*types.InvalidParameterValueException](t, err, "BatchSize")
	if !strings.Contains(err.Error(), "config file") {
		t.Errorf("the refusal does not name the config file: %v", err)
	}
	_, err = c.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: esms[1].UUID, Enabled: aws.Bool(true)})
	wantAPIError[*types.InvalidParameterValueException](t, err, "enabled: false")
	_, err = c.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: aws.String("00000000-0000-0000-0000-000000000000")})
	wantAPIError[*types.ResourceNotFoundException](t, err, "not found")

	if upd, err = c.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: m1.UUID, Enabled: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if aws.ToString(upd.State) != "Enabled" {
		t.Fatalf("after resuming: %q", aws.ToString(upd.State))
	}
	putRecords(t, addr, "events", `{"a":1}`)
	eventually(t, "3 records", func() bool { return fn.total() == 3 })
}

// TestPausedMappingHoldsRecordsAcrossRestart: records put while a mapping
// is paused stay unprocessed across a restart on the same data directory,
// and once it is resumed each runs exactly once.
func TestPausedMappingHoldsRecordsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
auth: {tokens: [%s]}
streams: [{name: events, shards: 2}]
functions: [{name: count}]
mappings: [{name: m, source: {stream: events}, function: count, startingPosition: TRIM_HORIZON}]
`, token)
	fn := newRecordCounter()
	addr, stop := start(t, dir, "127.0.0.1:0", yaml, nil, server.WithHandler("count", fn))
	putRecords(t, addr, "events", "0", "1", "2")
	eventually(t, "3 records", func() bool { return fn.total() == 3 })
	ctx := context.Background()
	uuid := aws.String(server.MappingUUID("m"))
	if _, err := client(addr, token).UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: uuid, Enabled: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the shards paused", func() bool { return shardsPaused(t, addr, "m") })
	putRecords(t, addr, "events", "3", "4", "5", "6", "7")
	stop()

	addr, _ = start(t, dir, "127.0.0.1:0", yaml, nil, server.WithHandler("count", fn))
	eventually(t, "the shards paused after the restart", func() bool { return shardsPaused(t, addr, "m") })
	if n := fn.total(); n != 3 {
		t.Fatalf("%d records ran, want the 3 put before the pause", n)
	}
	c := client(addr, token)
	g, err := c.GetEventSourceMapping(ctx, &lambda.GetEventSourceMappingInput{UUID: uuid})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(g.State) != "Disabled" {
		t.Fatalf("state after the restart: %q", aws.ToString(g.State))
	}
	if _, err := c.UpdateEventSourceMapping(ctx, &lambda.UpdateEventSourceMappingInput{UUID: uuid, Enabled: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "8 records", func() bool { return fn.total() == 8 })
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for i := range 8 {
		if n := fn.runs[fmt.Sprint(i)]; n != 1 {
			t.Errorf("record %d ran %d times, want once", i, n)
		}
	}
}

// TestControlPlaneWithAWSCLI runs the AWS CLI against the control plane,
// signing with a token as its secret key.
func TestControlPlaneWithAWSCLI(t *testing.T) {
	awsCLI, err := exec.LookPath("aws")
	if err != nil {
		testsvc.Absent(t, "no aws command: %v", err)
	}
	fn := newRecordCounter()
	addr := serve(t, controlPlaneConfig(t), nil, server.WithHandler("count", fn), server.WithHandler("count2", fn))
	run := func(out any, args ...string) {
		t.Helper()
		cmd := exec.Command(awsCLI, append(append([]string{"lambda"}, args...), "--endpoint-url", "http://"+addr, "--region", "eu-west-1", "--output", "json")...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=idem", "AWS_SECRET_ACCESS_KEY="+token,
			"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")
		b, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
			}
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("aws %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	var list struct {
		EventSourceMappings []struct{ UUID, State, EventSourceArn string }
	}
	run(&list, "list-event-source-mappings")
	if len(list.EventSourceMappings) != 3 || list.EventSourceMappings[0].UUID != server.MappingUUID("m1") {
		t.Fatalf("list-event-source-mappings: %+v", list)
	}
	run(&list, "list-event-source-mappings", "--function-name", "count2")
	if len(list.EventSourceMappings) != 1 {
		t.Fatalf("list-event-source-mappings --function-name count2: %+v", list)
	}
	var esm struct{ UUID, State string }
	run(&esm, "update-event-source-mapping", "--uuid", server.MappingUUID("m1"), "--no-enabled")
	if esm.State != "Disabled" {
		t.Fatalf("update-event-source-mapping --no-enabled: %+v", esm)
	}
	run(&esm, "get-event-source-mapping", "--uuid", server.MappingUUID("m1"))
	if esm.State != "Disabled" {
		t.Fatalf("get-event-source-mapping: %+v", esm)
	}
	run(&esm, "update-event-source-mapping", "--uuid", server.MappingUUID("m1"), "--enabled")
	if esm.State != "Enabled" {
		t.Fatalf("update-event-source-mapping --enabled: %+v", esm)
	}
	var fns struct {
		Functions []struct{ FunctionName, Runtime string }
	}
	run(&fns, "list-functions")
	if len(fns.Functions) != 4 {
		t.Fatalf("list-functions: %+v", fns)
	}
	var f struct {
		Configuration struct {
			FunctionName string
			Environment  struct{ Variables map[string]string }
		}
	}
	run(&f, "get-function", "--function-name", "proc")
	if f.Configuration.FunctionName != "proc" || f.Configuration.Environment.Variables["GREETING"] != "hello" {
		t.Fatalf("get-function: %+v", f)
	}
}

// TestControlPlaneTokens: the control plane's reads take a read token, its
// update a full one.
func TestControlPlaneTokens(t *testing.T) {
	addr := serve(t, `
auth: {tokens: [`+token+`], readTokens: [`+readToken+`]}
streams: [{name: events}]
functions: [{name: count}]
mappings: [{name: m, source: {stream: events}, function: count, startingPosition: LATEST}]
`, nil, server.WithHandler("count", newRecordCounter()))
	esm := "/2015-03-31/event-source-mappings/" + server.MappingUUID("m")
	for _, tc := range []struct {
		name, method, path, auth, body string
		want                           int
	}{
		{"list no token", "GET", "/2015-03-31/event-source-mappings/", "", "", 403},
		{"functions no token", "GET", "/2015-03-31/functions/", "", "", 403},
		{"list read token", "GET", "/2015-03-31/event-source-mappings/", "Bearer " + readToken, "", 200},
		{"function read token", "GET", "/2015-03-31/functions/count", "Bearer " + readToken, "", 200},
		{"update read token", "PUT", esm, "Bearer " + readToken, `{"Enabled":false}`, 403},
		{"update full token", "PUT", esm, "Bearer " + token, `{"Enabled":false}`, 202},
		{"update not JSON", "PUT", esm, "Bearer " + token, `{`, 400},
		{"update unknown", "PUT", "/2015-03-31/event-source-mappings/x", "Bearer " + token, `{"Enabled":false}`, 404},
		{"bad MaxItems", "GET", "/2015-03-31/functions?MaxItems=0", "Bearer " + token, "", 400},
	} {
		if code, body := call(t, tc.method, "http://"+addr+tc.path, tc.auth, tc.body); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
}
