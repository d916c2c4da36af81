package idem_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/idem-run/idem"
)

// fakeTx logs how RecordFunc drives a Transaction.
type fakeTx struct {
	log    []string
	endErr map[int]error
}

func (f *fakeTx) Handle(_ context.Context, i int) (any, error) {
	f.log = append(f.log, fmt.Sprintf("handle %d", i))
	return fmt.Sprintf("tx for %d", i), nil
}

func (f *fakeTx) BeginRecord(_ context.Context, i int) error {
	f.log = append(f.log, fmt.Sprintf("begin %d", i))
	return nil
}

func (f *fakeTx) EndRecord(_ context.Context, i int) error {
	f.log = append(f.log, fmt.Sprintf("end %d", i))
	return f.endErr[i]
}

func (f *fakeTx) AbortRecord(_ context.Context, i int) {
	f.log = append(f.log, fmt.Sprintf("abort %d", i))
}

func TestRecordFuncTransaction(t *testing.T) {
	recs := []idem.Record{{ShardID: "s", Sequence: "1"}, {ShardID: "s", Sequence: "2"}, {ShardID: "s", Sequence: "3"}}
	t.Run("each record between begin and end, a failed one aborted", func(t *testing.T) {
		tx := &fakeTx{}
		b := idem.NewBatchWithTx("m", "f", "id", recs, nil, tx)
		var got []any
		_, err := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			h, err := idem.TxFrom(ctx)
			if err != nil {
				return err
			}
			got = append(got, h)
			if r.Sequence == "2" {
				return errors.New("boom")
			}
			return nil
		}).HandleBatch(context.Background(), b)
		var re *idem.RecordError
		if !errors.As(err, &re) || re.Record != "s:2" {
			t.Fatalf("err %v, want a RecordError for s:2", err)
		}
		if want := "begin 0,handle 0,end 0,begin 1,handle 1,abort 1"; strings.Join(tx.log, ",") != want {
			t.Fatalf("calls %s, want %s", strings.Join(tx.log, ","), want)
		}
		if fmt.Sprint(got) != "[tx for 0 tx for 1]" {
			t.Fatalf("handles %v", got)
		}
	})
	t.Run("a record EndRecord refuses fails", func(t *testing.T) {
		tx := &fakeTx{endErr: map[int]error{0: errors.New("left failed")}}
		b := idem.NewBatchWithTx("m", "f", "id", recs, nil, tx)
		_, err := idem.RecordFunc(func(context.Context, *idem.Record) error { return nil }).HandleBatch(context.Background(), b)
		var re *idem.RecordError
		if !errors.As(err, &re) || re.Record != "s:1" || !strings.Contains(err.Error(), "left failed") {
			t.Fatalf("err %v, want record s:1 to fail with EndRecord's error", err)
		}
		if want := "begin 0,end 0,abort 0"; strings.Join(tx.log, ",") != want {
			t.Fatalf("calls %s, want %s", strings.Join(tx.log, ","), want)
		}
	})
	t.Run("batch handlers get the whole batch's", func(t *testing.T) {
		tx := &fakeTx{}
		b := idem.NewBatchWithTx("m", "f", "id", recs, nil, tx)
		if h, err := b.Tx(context.Background()); err != nil || h != "tx for -1" {
			t.Fatalf("Batch.Tx = %v, %v", h, err)
		}
	})
	t.Run("none without a transaction", func(t *testing.T) {
		b := idem.NewBatch("m", "f", "id", recs, nil)
		if _, err := b.Tx(context.Background()); !errors.Is(err, idem.ErrNoTx) {
			t.Fatalf("Batch.Tx: %v, want ErrNoTx", err)
		}
		_, err := idem.RecordFunc(func(ctx context.Context, _ *idem.Record) error {
			_, err := idem.TxFrom(ctx)
			return err
		}).HandleBatch(context.Background(), b)
		if !errors.Is(err, idem.ErrNoTx) {
			t.Fatalf("TxFrom: %v, want ErrNoTx", err)
		}
	})
}

// flushTx is a fakeTx that holds statements back (idem.Flusher): Flush
// reports fail at the record failAt.
type flushTx struct {
	fakeTx
	failAt int
	fail   error
}

func (f *flushTx) Flush(context.Context) (int, error) {
	f.log = append(f.log, "flush")
	if f.fail == nil {
		return -1, nil
	}
	return f.failAt, f.fail
}

// TestRecordFuncFlush: RecordFunc flushes what the transaction held back
// when its records have run, or when one failed, before it answers; a
// flushed statement's failure at an earlier record than the one that
// failed is the batch's failure, at a later one it is not, and a failure
// of no single record fails the whole batch.
func TestRecordFuncFlush(t *testing.T) {
	recs := []idem.Record{{ShardID: "s", Sequence: "1"}, {ShardID: "s", Sequence: "2"}, {ShardID: "s", Sequence: "3"}}
	boom := errors.New("deferred statement failed")
	for _, c := range []struct {
		name      string
		failAt    int   // the record the flush reports
		fail      error // its error; nil: the flush succeeds
		fnFails   int   // the record whose function fails; -1 none
		want      string
		wantCalls string
	}{
		{"all succeed", -1, nil, -1, "", "begin 0,end 0,begin 1,end 1,begin 2,end 2,flush"},
		{"a held-back statement fails", 1, boom, -1, "record s:2: deferred statement failed", "begin 0,end 0,begin 1,end 1,begin 2,end 2,flush"},
		{"before the record that failed", 0, boom, 1, "record s:1: deferred statement failed", "begin 0,end 0,begin 1,abort 1,flush"},
		{"at the record that failed", 1, boom, 1, "record s:2: the function failed", "begin 0,end 0,begin 1,abort 1,flush"},
		{"of the whole batch", -1, boom, 1, "deferred statement failed", "begin 0,end 0,begin 1,abort 1,flush"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx := &flushTx{failAt: c.failAt, fail: c.fail}
			b := idem.NewBatchWithTx("m", "f", "id", recs, nil, tx)
			res, err := idem.RecordFunc(func(_ context.Context, r *idem.Record) error {
				if r.Sequence == recs[max(c.fnFails, 0)].Sequence && c.fnFails >= 0 {
					return errors.New("the function failed")
				}
				return nil
			}).HandleBatch(context.Background(), b)
			if got := fmt.Sprint(err); c.want == "" && err != nil || c.want != "" && got != c.want {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			var re *idem.RecordError
			if errors.As(err, &re) != (len(res.BatchItemFailures) == 1) || re != nil && res.BatchItemFailures[0].ItemIdentifier != re.Record {
				t.Fatalf("result %+v for err %v", res, err)
			}
			if got := strings.Join(tx.log, ","); got != c.wantCalls {
				t.Fatalf("calls %s, want %s", got, c.wantCalls)
			}
		})
	}
}
