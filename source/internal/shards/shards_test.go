package shards

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/idem-run/idem"
)

// TestSortParentsFirst: children follow their parents whatever their IDs,
// and IDs order the rest by number.
func TestSortParentsFirst(t *testing.T) {
	infos := []Info{
		{ID: "shardId-000000000010"},
		{ID: "shardId-000000000002", ParentID: "shardId-000000000009"}, // a child with a smaller ID
		{ID: "shardId-000000000009"},
		{ID: "shardId-000000000001", ParentID: "shardId-000000000002", AdjacentParentID: "shardId-000000000010"},
		{ID: "shardId-000000000003", ParentID: "shardId-000000000099"}, // its parent expired
	}
	Sort(infos)
	var got []string
	for _, in := range infos {
		got = append(got, in.ID[len(in.ID)-2:])
	}
	if fmt.Sprint(got) != "[09 02 10 01 03]" {
		t.Fatalf("order %v, want [09 02 10 01 03]", got)
	}
}

func TestInfo(t *testing.T) {
	open := Info{ID: "a", StartingSequence: "100"}
	closed := Info{ID: "b", ParentID: "a", StartingSequence: "100", EndingSequence: "200"}
	if open.Closed() || open.Ended("999") || !closed.Closed() || closed.Ended("199") || !closed.Ended("200") || !closed.Ended("1000") {
		t.Fatal("Closed or Ended wrong")
	}
	if fmt.Sprint(closed.Parents(), open.Parents()) != "[a] []" {
		t.Fatalf("Parents = %v %v", closed.Parents(), open.Parents())
	}
}

func TestIncrementDecrement(t *testing.T) {
	for _, tc := range []struct{ in, inc, dec idem.Sequence }{
		{"", "1", ""}, {"0", "1", ""}, {"9", "10", "8"}, {"10", "11", "9"}, {"100", "101", "99"}, {"199", "200", "198"},
	} {
		if got := Increment(tc.in); got != tc.inc {
			t.Errorf("Increment(%q) = %q, want %q", tc.in, got, tc.inc)
		}
		if got := Decrement(tc.in); got != tc.dec {
			t.Errorf("Decrement(%q) = %q, want %q", tc.in, got, tc.dec)
		}
	}
}

type rec struct {
	seq  idem.Sequence
	size int
}

func seqOf(r rec) idem.Sequence { return r.seq }
func sizeOf(r rec) int          { return r.size }

// TestCursorChecksLoss: after Expect, records at or below the position are
// dropped and a first record that does not follow it is a loss, reported
// once; ExpectStrict turns records below the position into an error.
func TestCursorChecksLoss(t *testing.T) {
	var sh Shard[rec]
	c := sh.Cursor("10")
	c.Open("10")
	c.Expect("10")
	it := "next"
	if lost, err := c.Add(&sh, &it, []rec{{"15", 1}, {"16", 1}}, seqOf); err != nil || !lost {
		t.Fatalf("Add = %v, %v; want a loss", lost, err)
	}
	if n, tr := c.Loss(); n != 1 || tr != "14" {
		t.Fatalf("Loss = %d, %q; want 1, 14", n, tr)
	}
	if n, _ := c.Loss(); n != 0 {
		t.Fatal("the loss was reported twice")
	}
	if got := c.Take(&sh, 10, 100, sizeOf, seqOf); len(got) != 2 || sh.Latest() != "16" {
		t.Fatalf("Take = %v, latest %q", got, sh.Latest())
	}
	c.Unlock()

	// No loss when the next record follows, or records at the position
	// show it is retained.
	c = sh.Cursor("16")
	c.Open("16")
	c.Expect("16")
	if lost, _ := c.Add(&sh, &it, []rec{{"12", 1}, {"16", 1}, {"20", 1}}, seqOf); lost {
		t.Fatal("a loss, though the position's record is retained")
	}
	if len(c.Buf) != 1 || c.Buf[0].seq != "20" {
		t.Fatalf("buffered %v, want only 20", c.Buf)
	}
	c.Unlock()

	c = sh.Cursor("30")
	c.Open("30")
	c.ExpectStrict("30", errors.New("refused"))
	if _, err := c.Add(&sh, &it, []rec{{"25", 1}}, seqOf); !errors.Is(err, ErrNotInShard) {
		t.Fatalf("strict Add below the position: %v, want ErrNotInShard", err)
	}
	c.Add(&sh, nil, nil, seqOf)
	if !c.Ended || c.Stale(time.Hour) {
		t.Fatal("no next iterator: the cursor should have ended, and need none")
	}
	c.Unlock()
}

// TestCursorTakeAndReuse: Take honours limit and maxBytes (at least one
// record), and the cursor is found again at the last record taken.
func TestCursorTakeAndReuse(t *testing.T) {
	var sh Shard[rec]
	c := sh.Cursor("")
	c.Buf = []rec{{"1", 100}, {"2", 100}, {"3", 100}}
	if got := c.Take(&sh, 10, 150, sizeOf, seqOf); len(got) != 1 {
		t.Fatalf("Take(maxBytes 150) = %d records, want 1", len(got))
	}
	if got := c.Take(&sh, 1, 50, sizeOf, seqOf); len(got) != 1 || got[0].seq != "2" {
		t.Fatalf("Take(limit 1, maxBytes 50) = %v, want record 2", got)
	}
	c.Unlock()
	if !sh.Buffered("2") || sh.Buffered("1") {
		t.Fatal("Buffered: the cursor should continue from 2")
	}
	again := sh.Cursor("2")
	if again != c || len(again.Buf) != 1 {
		t.Fatal("the cursor at 2 is not the one that took records")
	}
	again.Unlock()
	for i := range MaxCursors + 1 {
		sh.Cursor(idem.Sequence(fmt.Sprint(100 + i))).Unlock()
	}
	if sh.Buffered("2") {
		t.Fatal("the least recently used cursor was not evicted")
	}
}

func TestRetry(t *testing.T) {
	throttle := errors.New("throttled")
	calls := 0
	noSleep := func(context.Context, time.Duration) error { return nil }
	err := Retry(context.Background(), func(err error) bool { return err == throttle }, noSleep, nil, func() error {
		calls++
		return throttle
	})
	if err != throttle || calls != ThrottleRetries+1 {
		t.Fatalf("Retry = %v after %d calls, want throttled after %d", err, calls, ThrottleRetries+1)
	}
	calls = 0
	err = Retry(context.Background(), func(err error) bool { return err == throttle }, noSleep, nil, func() error {
		calls++
		if calls < 2 {
			return throttle
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("Retry = %v after %d calls, want success after 2", err, calls)
	}
}

// TestHasCode: a typed exception answers to its name, as an untyped error
// with the same code does, through wrapping.
func TestHasCode(t *testing.T) {
	typed := fmt.Errorf("op: %w", &types.ExpiredIteratorException{Message: aws.String("expired")})
	generic := fmt.Errorf("op: %w", &smithy.GenericAPIError{Code: "ThrottlingException"})
	switch {
	case !HasCode(typed, "ExpiredIteratorException"), HasCode(typed, "ThrottlingException"):
		t.Error("HasCode wrong for a typed exception")
	case !HasCode(generic, "LimitExceededException", "ThrottlingException"), HasCode(generic):
		t.Error("HasCode wrong for a generic API error")
	case HasCode(errors.New("ExpiredIteratorException"), "ExpiredIteratorException"):
		t.Error("HasCode true for an error that is no API error")
	}
}

// TestShardRead: Read hands out what fill buffered, returns nothing and no
// error when fill was throttled, and drops the cursor on any other error;
// ReadToEnd is true once fill met the end of the shard.
func TestShardRead(t *testing.T) {
	throttled := errors.New("throttled")
	recs := Records[rec]{Seq: seqOf, Size: sizeOf, Record: func(id string, r rec) idem.Record {
		return idem.Record{ShardID: id, Sequence: r.seq}
	}}
	sh := &Shard[rec]{ID: "s"}
	it := "it"
	res, err := sh.Read("", 10, 100, throttled, func(c *Cursor[rec]) error {
		_, err := c.Add(sh, &it, []rec{{"1", 1}, {"2", 1}}, seqOf)
		return err
	}, recs)
	if err != nil || len(res.Records) != 2 || res.Records[1].Sequence != "2" || res.Records[1].ShardID != "s" || res.Latest != "2" {
		t.Fatalf("Read = %+v, %v", res, err)
	}
	res, err = sh.Read("2", 10, 100, throttled, func(*Cursor[rec]) error { return fmt.Errorf("x: %w", throttled) }, recs)
	if err != nil || len(res.Records) != 0 || res.Latest != "2" {
		t.Fatalf("throttled Read = %+v, %v", res, err)
	}
	failed := errors.New("failed")
	if _, err := sh.Read("2", 10, 100, throttled, func(c *Cursor[rec]) error {
		c.Buf = []rec{{"3", 1}}
		return failed
	}, recs); err != failed || sh.Buffered("2") {
		t.Fatalf("failed Read: %v, buffered %v", err, sh.Buffered("2"))
	}
	c := sh.Cursor("2")
	done, err := c.ReadToEnd(3, throttled, func(c *Cursor[rec]) error {
		_, err := c.Add(sh, nil, nil, seqOf)
		return err
	})
	c.Unlock()
	if !done || err != nil {
		t.Fatalf("ReadToEnd = %v, %v; want true", done, err)
	}
}
