package gofunc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
	"github.com/idem-run/idem/function/gofunc"
)

// ValidationError is a pointer-receiver error, as most named errors are.
type ValidationError struct{ Field string }

func (e *ValidationError) Error() string { return "invalid " + e.Field }

// QuotaError is a value-receiver error.
type QuotaError struct{}

func (QuotaError) Error() string { return "quota exceeded" }

func batch(n int) *idem.Batch {
	recs := make([]idem.Record, n)
	for i := range recs {
		recs[i] = idem.Record{Stream: "orders", ShardID: "shardId-000000000000", Sequence: idem.SequenceOf(uint64(i + 1)),
			PartitionKey: "k", Data: []byte(fmt.Sprint(i + 1)), IdempotencyKey: fmt.Sprintf("orders/shardId-000000000000/%d", i+1)}
	}
	return idem.NewBatch("m", "f", "inv-1", recs, nil)
}

// failAt returns a RecordFunc that fails at the record with sequence n.
func failAt(n uint64, err error) idem.RecordFunc {
	return func(_ context.Context, r *idem.Record) error {
		if r.Sequence == idem.SequenceOf(n) {
			return err
		}
		return nil
	}
}

func TestRecordFunc(t *testing.T) {
	b := batch(10)
	fourth := b.Records[3].EventID()
	cases := []struct {
		name      string
		err       error
		typ       string
		permanent bool
	}{
		{"errors.New", errors.New("boom"), "errorString", false},
		{"fmt.Errorf with %w", fmt.Errorf("charging: %w", errors.New("declined")), "wrapError", false},
		{"pointer type", &ValidationError{Field: "amount"}, "ValidationError", false},
		{"value type", QuotaError{}, "QuotaError", false},
		{"permanent", idem.Permanent(&ValidationError{Field: "amount"}), "ValidationError", true},
		{"wrapped permanent", fmt.Errorf("order 4: %w", idem.Permanent(QuotaError{})), "QuotaError", true},
		{"function error passes through", &function.Error{Type: "Custom.Type", Message: "m"}, "Custom.Type", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := gofunc.New(failAt(4, c.err)).Invoke(context.Background(), b)
			if err != nil {
				t.Fatalf("err = %v; a failed record is a partial result, not an error", err)
			}
			if !res.Native || !slices.Equal(res.Failures, []string{fourth}) || res.Invalid != "" {
				t.Fatalf("result = %+v, want native failure at %s", res, fourth)
			}
			if res.Err == nil || res.Err.Type != c.typ || res.Err.Permanent != c.permanent {
				t.Fatalf("Err = %#v, want type %s permanent %v", res.Err, c.typ, c.permanent)
			}
			if res.Err.Message != c.err.Error() && res.Err != c.err {
				t.Fatalf("Message = %q, want %q", res.Err.Message, c.err.Error())
			}
		})
	}
	t.Run("success", func(t *testing.T) {
		var seen []idem.Sequence
		res, err := gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
			seen = append(seen, r.Sequence)
			return nil
		})).Invoke(context.Background(), b)
		if err != nil || len(res.Failures) != 0 || res.Invalid != "" || res.Err != nil {
			t.Fatalf("got %+v, %v; want success", res, err)
		}
		if len(seen) != 10 {
			t.Fatalf("handler saw %v", seen)
		}
	})
	t.Run("permanent outside the record error", func(t *testing.T) {
		h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
			return idem.BatchResult{}, idem.Permanent(&idem.RecordError{Record: fourth, Err: &ValidationError{}})
		})
		res, err := gofunc.New(h).Invoke(context.Background(), b)
		if err != nil || !res.Native || res.Err == nil || !res.Err.Permanent || res.Err.Type != "ValidationError" {
			t.Fatalf("got %+v (Err %+v), %v", res, res.Err, err)
		}
	})
}

func TestBatchHandler(t *testing.T) {
	b := batch(5)
	cases := []struct {
		name     string
		result   idem.BatchResult
		err      error
		failures []string
		invalid  string
		typ      string
		perm     bool
	}{
		{name: "success"},
		{name: "empty list", result: idem.BatchResult{BatchItemFailures: []idem.BatchItemFailure{}}},
		{name: "partial", result: idem.BatchResult{BatchItemFailures: []idem.BatchItemFailure{
			{ItemIdentifier: b.Records[3].EventID()}, {ItemIdentifier: b.Records[1].EventID()}}},
			failures: []string{b.Records[3].EventID(), b.Records[1].EventID()}},
		{name: "empty identifier", result: idem.BatchResult{BatchItemFailures: []idem.BatchItemFailure{{ItemIdentifier: "x"}, {}}},
			invalid: "batchItemFailures[1]: itemIdentifier is an empty string"},
		{name: "error wins over result", result: idem.BatchResult{BatchItemFailures: []idem.BatchItemFailure{{ItemIdentifier: "x"}}},
			err: errors.New("db down"), typ: "errorString"},
		{name: "typed error", err: &ValidationError{}, typ: "ValidationError"},
		{name: "permanent", err: idem.Permanent(errors.New("bad schema")), typ: "errorString", perm: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got *idem.Batch
			h := idem.HandlerFunc(func(_ context.Context, b *idem.Batch) (idem.BatchResult, error) {
				got = b
				return c.result, c.err
			})
			res, err := gofunc.New(h).Invoke(context.Background(), b)
			if got != b {
				t.Fatal("the handler did not get the batch")
			}
			if c.typ != "" {
				var fe *function.Error
				if !errors.As(err, &fe) || fe.Type != c.typ || fe.Permanent != c.perm || fe.Message != c.err.Error() {
					t.Fatalf("err = %#v, want *function.Error type %s permanent %v", err, c.typ, c.perm)
				}
				if !errors.Is(err, c.err) {
					t.Fatal("the function error does not wrap the handler's")
				}
				if c.perm != idem.IsPermanent(err) {
					t.Fatal("idem.IsPermanent disagrees with Permanent")
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if res.Native || res.Err != nil || res.Invalid != c.invalid || !slices.Equal(res.Failures, c.failures) {
				t.Fatalf("result = %+v, want failures %q invalid %q", res, c.failures, c.invalid)
			}
		})
	}
}

func TestPanic(t *testing.T) {
	b := batch(3)
	t.Run("string", func(t *testing.T) {
		res, err := gofunc.New(failAt(2, nil)).Invoke(context.Background(), b) // nil error: success
		if err != nil || res.Native {
			t.Fatalf("got %+v, %v", res, err)
		}
		res, err = gofunc.New(idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
			if r.Sequence == idem.SequenceOf(2) {
				panicsHere()
			}
			return nil
		})).Invoke(context.Background(), b)
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != function.TypePanic || fe.Message != "index out of range" {
			t.Fatalf("err = %#v, want a %s", err, function.TypePanic)
		}
		if len(res.Failures) != 0 || res.Native {
			t.Fatalf("result %+v alongside a panic", res)
		}
		var pe *gofunc.PanicError
		if !errors.As(err, &pe) || !strings.Contains(string(pe.Stack), "panicsHere") {
			t.Fatalf("no stack naming the panicking function in %#v", err)
		}
		if strings.Contains(fe.Message, "goroutine") {
			t.Fatal("the stack leaked into the message")
		}
		if idem.IsPermanent(err) {
			t.Fatal("a plain panic is permanent")
		}
	})
	t.Run("permanent error value", func(t *testing.T) {
		_, err := gofunc.New(idem.HandlerFunc(func(context.Context, *idem.Batch) (idem.BatchResult, error) {
			panic(idem.Permanent(&ValidationError{}))
		})).Invoke(context.Background(), b)
		if !idem.IsPermanent(err) {
			t.Fatalf("err = %v; panicking with idem.Permanent should stop retries", err)
		}
	})
	t.Run("nil RecordFunc", func(t *testing.T) {
		_, err := gofunc.New(idem.RecordFunc(nil)).Invoke(context.Background(), b)
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != function.TypePanic {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("New(nil)", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Fatal("New(nil) did not panic")
			}
		}()
		gofunc.New(nil)
	})
}

func panicsHere() { panic("index out of range") }

func TestDeadline(t *testing.T) {
	b := batch(5)
	timeoutCtx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	wantTimeout := func(t *testing.T, fe *function.Error) {
		t.Helper()
		if fe == nil || fe.Type != function.TypeTimeout || !strings.HasPrefix(fe.Message, "Task timed out after 0.0") || !strings.HasSuffix(fe.Message, " seconds") {
			t.Fatalf("error = %#v, want %s \"Task timed out after 0.05 seconds\"", fe, function.TypeTimeout)
		}
		if !errors.Is(fe, context.DeadlineExceeded) {
			t.Fatal("a timeout does not wrap context.DeadlineExceeded")
		}
	}
	t.Run("handler returns ctx.Err", func(t *testing.T) {
		_, err := gofunc.New(idem.HandlerFunc(func(ctx context.Context, _ *idem.Batch) (idem.BatchResult, error) {
			<-ctx.Done()
			return idem.BatchResult{}, fmt.Errorf("calling the API: %w", ctx.Err())
		})).Invoke(timeoutCtx(t), b)
		var fe *function.Error
		errors.As(err, &fe)
		wantTimeout(t, fe)
	})
	t.Run("handler ignores ctx and succeeds late", func(t *testing.T) {
		_, err := gofunc.New(idem.HandlerFunc(func(ctx context.Context, _ *idem.Batch) (idem.BatchResult, error) {
			time.Sleep(80 * time.Millisecond)
			return idem.BatchResult{}, nil
		})).Invoke(timeoutCtx(t), b)
		var fe *function.Error
		errors.As(err, &fe)
		wantTimeout(t, fe)
	})
	t.Run("RecordFunc keeps its progress", func(t *testing.T) {
		res, err := gofunc.New(idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if r.Sequence == idem.SequenceOf(3) {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})).Invoke(timeoutCtx(t), b)
		if err != nil || !res.Native || !slices.Equal(res.Failures, []string{b.Records[2].EventID()}) {
			t.Fatalf("got %+v, %v; want a native failure at the third record", res, err)
		}
		wantTimeout(t, res.Err)
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := gofunc.New(idem.HandlerFunc(func(ctx context.Context, _ *idem.Batch) (idem.BatchResult, error) {
			cancel()
			return idem.BatchResult{}, fmt.Errorf("aborted: %w", ctx.Err())
		})).Invoke(ctx, b)
		if err != context.Canceled {
			t.Fatalf("err = %#v, want context.Canceled unwrapped", err)
		}
	})
}

// TestConcurrentInvokes: one Function serves many shards at once.
func TestConcurrentInvokes(t *testing.T) {
	f := gofunc.New(failAt(2, &ValidationError{}))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				res, err := f.Invoke(context.Background(), batch(3))
				if err != nil || res.Err == nil || res.Err.Type != "ValidationError" {
					t.Errorf("got %+v, %v", res, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkInvoke(b *testing.B) {
	f := gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	bt := batch(100)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Invoke(ctx, bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(bt.Records))/b.Elapsed().Seconds(), "records/s")
}

func TestInProcess(t *testing.T) {
	var d function.Driver = gofunc.New(idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }))
	ip, ok := d.(function.InProcess)
	if !ok || !ip.InProcess() {
		t.Fatal("gofunc.Function is not function.InProcess")
	}
}
