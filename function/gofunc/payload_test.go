package gofunc

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

func TestInvokePayload(t *testing.T) {
	ctx := context.Background()
	f := NewInvoke(idem.InvokeFunc(func(_ context.Context, p []byte) ([]byte, error) {
		switch string(p) {
		case `"fail"`:
			return nil, errors.New("no")
		case `"permanent"`:
			return nil, idem.Permanent(errors.New("bad data"))
		case `"panic"`:
			panic("boom")
		case `"big"`:
			return make([]byte, function.MaxResponseSize+1), nil
		}
		return append([]byte("got "), p...), nil
	}))
	if out, err := f.InvokePayload(ctx, []byte(`"x"`), function.InvokeMeta{}); err != nil || string(out) != `got "x"` {
		t.Fatalf("InvokePayload = %q, %v", out, err)
	}
	for payload, want := range map[string]string{`"fail"`: "errorString", `"permanent"`: "errorString", `"panic"`: function.TypePanic, `"big"`: function.TypeResponseTooLarge} {
		_, err := f.InvokePayload(ctx, []byte(payload), function.InvokeMeta{})
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != want || fe.Permanent != (payload == `"permanent"`) {
			t.Errorf("%s: %v, want a %s function error", payload, err, want)
		}
	}
	if f.InProcess() {
		t.Error("an InvokeHandler gets event JSON, not the engine's batch: not InProcess")
	}
}

func TestInvokePayloadTimeout(t *testing.T) {
	f := NewInvoke(idem.InvokeFunc(func(ctx context.Context, p []byte) ([]byte, error) {
		<-ctx.Done()
		return p, nil
	}))
	_, err := f.InvokePayload(context.Background(), []byte(`{}`), function.InvokeMeta{Deadline: time.Now().Add(20 * time.Millisecond)})
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != function.TypeTimeout {
		t.Fatalf("err = %v, want %s", err, function.TypeTimeout)
	}
}

func TestBatchHandlerTakesNoPayload(t *testing.T) {
	f := New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	_, err := f.InvokePayload(context.Background(), []byte(`{}`), function.InvokeMeta{Function: "counter"})
	if !errors.Is(err, function.ErrNoPayloadHandler) || !strings.Contains(err.Error(), "WithInvokeHandler") {
		t.Fatalf("err = %v, want ErrNoPayloadHandler naming WithInvokeHandler", err)
	}
	both := New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }),
		WithInvokeHandler(idem.InvokeFunc(func(context.Context, []byte) ([]byte, error) { return []byte("ok"), nil })))
	if out, err := both.InvokePayload(context.Background(), nil, function.InvokeMeta{}); err != nil || string(out) != "ok" || !both.InProcess() {
		t.Fatalf("with both handlers: %q, %v", out, err)
	}
}

// TestInvokeHandlerServesMappings: a batch reaches an InvokeHandler as
// Lambda's KinesisEvent, and its answer is read as a KinesisEventResponse.
func TestInvokeHandlerServesMappings(t *testing.T) {
	var got string
	f := NewInvoke(idem.InvokeFunc(func(_ context.Context, p []byte) ([]byte, error) {
		got = string(p)
		return []byte(`{"batchItemFailures":[{"itemIdentifier":"shardId-000000000000:00000000000000000002"}]}`), nil
	}))
	recs := []idem.Record{
		{Stream: "s", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(1), PartitionKey: "k", Data: []byte("a"), ArrivalTime: time.Unix(1, 0)},
		{Stream: "s", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(2), PartitionKey: "k", Data: []byte("b"), ArrivalTime: time.Unix(1, 0)},
	}
	res, err := f.Invoke(context.Background(), idem.NewBatch("m", "f", "id", recs, nil))
	if err != nil || len(res.Failures) != 1 || res.Failures[0] != recs[1].EventID() {
		t.Fatalf("Invoke = %+v, %v", res, err)
	}
	if !strings.HasPrefix(got, `{"Records":[{`) || !strings.Contains(got, `"eventSource":"aws:kinesis"`) {
		t.Errorf("event = %s", got)
	}
}

// TestInvokeHandlerEventRegion (issue 11, item 5): the events an
// InvokeHandler gets name the region it is given (awsRegion and the
// eventSourceARN), us-east-1 by default, and the engine sizes them with it.
func TestInvokeHandlerEventRegion(t *testing.T) {
	recs := []idem.Record{{Stream: "s", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(1), PartitionKey: "k", Data: []byte("a"), ArrivalTime: time.Unix(1, 0)}}
	for _, tt := range []struct {
		opts []Option
		want string
	}{
		{nil, "us-east-1"},
		{[]Option{WithRegion("eu-west-1")}, "eu-west-1"},
	} {
		var got string
		f := NewInvoke(idem.InvokeFunc(func(_ context.Context, p []byte) ([]byte, error) {
			got = string(p)
			return []byte(`{}`), nil
		}), tt.opts...)
		if _, err := f.Invoke(context.Background(), idem.NewBatch("m", "f", "id", recs, nil)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"awsRegion":"` + tt.want + `"`, `"arn:aws:kinesis:` + tt.want + `:000000000000:stream/s"`} {
			if !strings.Contains(got, want) {
				t.Errorf("event %s lacks %s", got, want)
			}
		}
		if r := f.EventRegion(); r != tt.want {
			t.Errorf("EventRegion() = %q, want %q", r, tt.want)
		}
	}
}
