package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store/dynamodb"
)

// TestAddRefusesBatchesAboveTheWriteLimit: on a store whose atomic write
// holds at most 100 items (DynamoDB), Add refuses a mapping keyed by its
// payload whose batches could need more (a mark per record), whether the
// key comes from idempotency.key or from eventFormat s3, and takes the
// largest that fits and any batch keyed by identity.
func TestAddRefusesBatchesAboveTheWriteLimit(t *testing.T) {
	ctx := context.Background()
	st, err := dynamodb.New(ctx, dynamodb.WithEndpoint(testsvc.DynamoDBEndpoint(t)), dynamodb.WithRegion("us-east-1"), dynamodb.WithTable("engine-txlimit"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v := newEnv(t)
	v.stream("in", 1)
	h := gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	mapping := func(name string, batch int, key string, format idem.EventFormat) engine.Mapping {
		return engine.Mapping{Name: name, Stream: "in", Source: v.source("in"), Function: "f", Invoker: h,
			StartingPosition: source.TrimHorizon, BatchSize: batch, KeyExpression: key, EventFormat: format}
	}
	e := engine.New(st)
	for _, c := range []struct {
		m    engine.Mapping
		want string
	}{
		{mapping("payload-96", 96, "id", ""), "batchSize 96: records keyed by their payload need up to 101 items in one write, and the store takes 100 (batchSize at most 95)"},
		{mapping("s3-100", 100, "", idem.EventFormatS3), "batchSize 100"},
		{mapping("payload-95", 95, "id", ""), ""},
		{mapping("identity-1000", 1000, "", ""), ""},
	} {
		err := e.Add(c.m)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.m.Name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.m.Name, err, c.want)
		}
	}
}
