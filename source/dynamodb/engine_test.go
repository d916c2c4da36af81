package dynamodb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
	"github.com/idem-run/idem/source"
	stembedded "github.com/idem-run/idem/store/embedded"
)

// driverOnly hides a source's lineage from the engine, which then reads
// children as soon as it finds them.
type driverOnly struct{ source.Driver }

// TestRolloverKeepsItemOrder writes versions of a few items while a
// mapping runs, rolls the stream's shards over in the middle, and keeps
// writing: each item's versions must reach the function in order, each
// once. The parents' first batches are held until the children have
// records, so an engine that read a child before its parent was done
// would deliver newer versions first: the subtest without lineage shows
// the check catches that.
func TestRolloverKeepsItemOrder(t *testing.T) {
	t.Run("lineage", func(t *testing.T) {
		if bad := runRollover(t, false); bad != "" {
			t.Fatal(bad)
		}
	})
	t.Run("without lineage the check fails", func(t *testing.T) {
		if bad := runRollover(t, true); bad == "" {
			t.Fatal("children read before their parents were done, and every item's versions still arrived in order: the test cannot catch a lineage bug")
		}
	})
}

// runRollover runs the scenario and returns what broke the items' order,
// "" when nothing did.
func runRollover(t *testing.T, hideLineage bool) string {
	const items, perPhase = 4, 20
	tb := newTable(t, ddbtypes.StreamViewTypeNewImage, ddbstreams.WithShards(2))
	parents, err := tb.src.Shards(tb.ctx)
	if err != nil || len(parents) != 2 {
		t.Fatalf("Shards = %q, %v", parents, err)
	}

	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string][]int{}
	childSeen := false
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		if slices.Contains(parents, r.ShardID) {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var rec struct {
			Dynamodb struct {
				NewImage struct {
					PK struct{ S string } `json:"pk"`
					V  struct{ N string } `json:"v"`
				}
			} `json:"dynamodb"`
		}
		if err := json.Unmarshal(r.Data, &rec); err != nil {
			return err
		}
		v, err := strconv.Atoi(rec.Dynamodb.NewImage.V.N)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		seen[rec.Dynamodb.NewImage.PK.S] = append(seen[rec.Dynamodb.NewImage.PK.S], v)
		if !slices.Contains(parents, r.ShardID) {
			childSeen = true
		}
		return nil
	})

	var src source.Driver = tb.src
	if hideLineage {
		src = driverOnly{tb.src}
	}
	e, stop := startEngine(t, openDB(t), engine.Mapping{Name: "m", Stream: "orders", Source: src, Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, BatchSize: 5}, engine.WithShardDiscovery(50*time.Millisecond))
	defer stop()

	version := 0
	write := func() {
		version++
		for i := range items {
			tb.put(fmt.Sprintf("item-%d", i), version)
		}
	}
	for range perPhase {
		write()
	}
	if _, err := tb.srv.Rollover("orders"); err != nil {
		t.Fatal(err)
	}
	for range perPhase {
		write()
	}
	if hideLineage {
		waitUntil(t, "a child's record", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return childSeen
		})
	} else {
		// Long enough for the engine to discover the children and, were
		// it to ignore lineage, read them.
		time.Sleep(500 * time.Millisecond)
	}
	mu.Lock()
	early := childSeen
	mu.Unlock()
	close(release)
	waitUntil(t, "every version", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, vs := range seen {
			n += len(vs)
		}
		return n >= items*2*perPhase
	})

	mu.Lock()
	defer mu.Unlock()
	if early {
		return "a child's record reached the function while its parent's records waited"
	}
	for i := range items {
		vs := seen[fmt.Sprintf("item-%d", i)]
		for j, v := range vs {
			if v != j+1 {
				return fmt.Sprintf("item-%d got versions %v: version %d at position %d", i, vs, v, j)
			}
		}
		if len(vs) != 2*perPhase {
			return fmt.Sprintf("item-%d got %d versions, want %d", i, len(vs), 2*perPhase)
		}
	}
	if !hideLineage {
		for _, s := range e.Status() {
			if slices.Contains(parents, s.Shard) && s.State != "finished" {
				t.Errorf("parent %s is %q, want finished", s.Shard, s.State)
			}
		}
	}
	return ""
}

// openDB is an embedded database in a temporary directory, closed when
// the test ends.
func openDB(t *testing.T) *pebbledb.DB {
	t.Helper()
	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// startEngine runs an engine with mapping m over an embedded store on db.
// stop cancels the run and waits for it, failing the test (not at once)
// when Run returned an error; it returns that error, and does nothing
// when called again.
func startEngine(t *testing.T, db *pebbledb.DB, m engine.Mapping, opts ...engine.Option) (e *engine.Engine, stop func() error) {
	t.Helper()
	e = engine.New(stembedded.New(db), append([]engine.Option{engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err := e.Add(m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	var err error
	return e, func() error {
		once.Do(func() {
			cancel()
			if err = <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
		return err
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTrimmedCountedLost: a mapping stopped for longer than the stream's
// 24 hours finds its checkpoint behind the trim point when it restarts: the
// engine counts the trimmed records as lost (one: DynamoDB does not say how
// many), logs them, and runs the records kept, each once.
func TestTrimmedCountedLost(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewImage)
	db := openDB(t)
	var mu sync.Mutex
	var seen []string
	h := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
		var rec struct {
			Dynamodb struct {
				NewImage struct {
					V struct{ N string } `json:"v"`
				}
			} `json:"dynamodb"`
		}
		if err := json.Unmarshal(r.Data, &rec); err != nil {
			return err
		}
		mu.Lock()
		seen = append(seen, rec.Dynamodb.NewImage.V.N)
		mu.Unlock()
		return nil
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	run := func(until func() bool) []engine.ShardStatus {
		e, stop := startEngine(t, db, engine.Mapping{Name: "m", Stream: "orders", Source: tb.src, Function: "f", Invoker: gofunc.New(h),
			StartingPosition: source.TrimHorizon, BatchSize: 10})
		defer stop()
		waitUntil(t, "the records", until)
		time.Sleep(50 * time.Millisecond) // let the commit land
		status := e.Status()
		if stop() != nil {
			t.FailNow() // stop reported Run's error
		}
		return status
	}
	tb.put("k", 1)
	run(func() bool { return count() == 1 })

	// Stopped for a day: versions 2 and 3 expire unread; 4 is kept.
	tb.put("k", 2)
	tb.put("k", 3)
	tb.srv.Advance(ddbstreams.Retention - time.Hour)
	tb.put("k", 4)
	tb.srv.Advance(2 * time.Hour)
	status := run(func() bool { return count() == 2 })
	mu.Lock()
	got := fmt.Sprint(seen)
	mu.Unlock()
	if got != "[1 4]" {
		t.Fatalf("the function saw versions %s, want [1 4]", got)
	}
	if len(status) != 1 || status[0].Lost != 1 || status[0].Processed != 2 {
		t.Fatalf("status %+v, want 1 lost and 2 processed", status)
	}
}

// TestDynamoDBEventThroughEngine (issue 12): a mapping over the source with
// eventFormat dynamodb (the default a configured dynamodb source gets)
// sends a function written for Lambda's DynamoDB triggers the DynamoDBEvent
// it expects: INSERT, MODIFY and REMOVE records with their keys and images
// in typed values, each with its stream's SequenceNumber and ARN. A record
// the function reports failed by its SequenceNumber, as Lambda's DynamoDB
// partial batch responses name one, is retried from there, and runs once
// it succeeds; the records before it complete once.
func TestDynamoDBEventThroughEngine(t *testing.T) {
	tb := newTable(t, ddbtypes.StreamViewTypeNewAndOldImages)
	tb.put("A-1", 1, "status", "new")
	tb.put("A-1", 2, "status", "paid")
	if _, err := tb.db.DeleteItem(tb.ctx, &awsddb.DeleteItemInput{TableName: aws.String("orders"),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "A-1"}}}); err != nil {
		t.Fatal(err)
	}
	tb.put("B-1", 1, "status", "flaky")
	tb.put("C-1", 1, "status", "new")

	str := func(v events.DynamoDBAttributeValue) string {
		if v.DataType() != events.DataTypeString && v.DataType() != events.DataTypeNumber {
			return "-"
		}
		if v.DataType() == events.DataTypeNumber {
			return v.Number()
		}
		return v.String()
	}
	var mu sync.Mutex
	var calls [][]string
	failed := false
	h := idem.InvokeFunc(func(_ context.Context, payload []byte) ([]byte, error) {
		var ev events.DynamoDBEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			t.Errorf("decoding the DynamoDBEvent: %v", err)
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		var call []string
		var resp events.DynamoDBEventResponse
		for _, r := range ev.Records {
			c := r.Change
			call = append(call, fmt.Sprintf("%s %s new:%s/%s old:%s/%s", r.EventName, str(c.Keys["pk"]),
				str(c.NewImage["v"]), str(c.NewImage["status"]), str(c.OldImage["v"]), str(c.OldImage["status"])))
			if !strings.HasPrefix(r.EventSourceArn, "arn:aws:dynamodb:") || !strings.Contains(r.EventSourceArn, ":table/orders/stream/") ||
				c.SequenceNumber == "" || c.StreamViewType != "NEW_AND_OLD_IMAGES" || r.EventSource != "aws:dynamodb" {
				t.Errorf("record %+v", r)
			}
			if str(c.NewImage["status"]) == "flaky" && !failed {
				failed = true
				resp.BatchItemFailures = []events.DynamoDBBatchItemFailure{{ItemIdentifier: c.SequenceNumber}}
			}
		}
		calls = append(calls, call)
		return json.Marshal(resp)
	})

	e, stop := startEngine(t, openDB(t), engine.Mapping{Name: "m", Stream: "orders", Source: tb.src, Function: "f", Invoker: gofunc.NewInvoke(h),
		StartingPosition: source.TrimHorizon, BatchSize: 10, EventFormat: idem.EventFormatDynamoDB, ReportBatchItemFailures: true,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond})
	defer stop()
	processed := func() uint64 {
		var n uint64
		for _, s := range e.Status() {
			n += s.Processed
		}
		return n
	}
	waitUntil(t, "every change processed", func() bool { return processed() == 5 })

	mu.Lock()
	defer mu.Unlock()
	all := []string{
		"INSERT A-1 new:1/new old:-/-",
		"MODIFY A-1 new:2/paid old:1/new",
		"REMOVE A-1 new:-/- old:2/paid",
		"INSERT B-1 new:1/flaky old:-/-",
		"INSERT C-1 new:1/new old:-/-",
	}
	// The records may come in more than one batch; the one that failed
	// and those after it come again, together.
	var got []string
	for _, c := range calls {
		got = append(got, c...)
	}
	want := append(slices.Clone(all), all[3:]...)
	if fmt.Sprint(got) != fmt.Sprint(want) || !slices.Equal(calls[len(calls)-1], all[3:]) {
		t.Errorf("the function got %q, want the five changes, then B-1 and C-1 again", calls)
	}
}
