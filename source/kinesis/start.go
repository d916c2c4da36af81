package kinesis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// tailWindows are how far back Start looks for a shard's newest record when
// the shard holds more than one GetRecords answer, widest last.
var tailWindows = []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour}

const (
	// scanCalls bounds the GetRecords calls of one scan in Start: reading
	// to the tip from a window's start, or to the first record at or after
	// a timestamp.
	scanCalls = 50
	// timestampCallTimeout bounds an AT_TIMESTAMP GetShardIterator call:
	// some emulators never answer one that matches no record.
	timestampCallTimeout = 10 * time.Second
)

// Start returns the position a mapping without a checkpoint starts from:
// "" for TRIM_HORIZON; for LATEST the sequence number of the shard's newest
// record ("" when it holds none); for AT_TIMESTAMP one below the sequence
// number of the first record that arrived at or after ts, or the LATEST
// position when none did. The iterator Start read with is kept, so the first
// Read from the position makes no GetShardIterator call.
//
// Finding LATEST reads the shard's tail (see the package documentation), a
// few GetRecords calls; so does AT_TIMESTAMP, plus one AT_TIMESTAMP
// iterator. Throttling that outlasts the retries is an error: the engine
// calls Start again.
func (s *Source) Start(ctx context.Context, shardID string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return "", err
	}
	switch pos {
	case source.TrimHorizon:
		return "", nil
	case source.Latest:
		c, newest, _, err := s.tail(ctx, sh)
		if err != nil {
			return "", err
		}
		sh.Install(c, newest)
		return newest, nil
	case source.AtTimestamp:
		return s.atTimestamp(ctx, sh, ts)
	}
	return "", fmt.Errorf("kinesis: stream %q shard %s: unknown starting position %q", s.stream, shardID, pos)
}

// caughtUp reports whether a GetRecords answer reached the shard's tip.
func caughtUp(out *kinesis.GetRecordsOutput) bool {
	return aws.ToInt64(out.MillisBehindLatest) == 0 && len(out.Records) < fetchLimit
}

// tail finds the shard's newest record: its sequence and arrival time, and
// a cursor positioned after it. It reads from TRIM_HORIZON when the shard
// fits in one or two GetRecords answers; otherwise from AT_TIMESTAMP
// iterators further and further back until one finds records. When even the
// widest finds none, it settles for the newest record the first reads found:
// a LATEST mapping then reads a little too much, never too little.
func (s *Source) tail(ctx context.Context, sh *shard) (*cursor, idem.Sequence, time.Time, error) {
	head := &cursor{}
	it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		return nil, "", time.Time{}, s.startErr(sh, err, "getting a TRIM_HORIZON iterator")
	}
	head.SetIter(it)
	var newest idem.Sequence
	var arrival time.Time
	for range 2 {
		out, err := s.getRecords(ctx, sh, *head.Iter)
		if err != nil {
			return nil, "", time.Time{}, s.startErr(sh, err, "reading the shard's tail")
		}
		if n := len(out.Records); n > 0 {
			newest = idem.Sequence(aws.ToString(out.Records[n-1].SequenceNumber))
			arrival = aws.ToTime(out.Records[n-1].ApproximateArrivalTimestamp)
		}
		head.SetIter(out.NextShardIterator)
		if head.Iter == nil || caughtUp(out) {
			return s.settle(sh, head, newest), newest, arrival, nil
		}
	}

	windows := tailWindows
	if r := s.Retention(); r > windows[len(windows)-1] {
		windows = append(windows[:len(windows):len(windows)], r)
	}
	for _, back := range windows {
		c, seq, at, found, err := s.scanFrom(ctx, sh, time.Now().Add(-back), false)
		if err != nil {
			return nil, "", time.Time{}, err
		}
		if found {
			return s.settle(sh, c, seq), seq, at, nil
		}
	}
	return s.settle(sh, head, newest), newest, arrival, nil
}

// settle prepares c as the cursor after newest.
func (s *Source) settle(sh *shard, c *cursor, newest idem.Sequence) *cursor {
	c.Fetched, c.Ended = newest, c.Iter == nil
	sh.NoteLatest(newest)
	return c
}

// scanFrom reads from an AT_TIMESTAMP iterator at ts. With first, it stops
// at the first record and returns a cursor holding it and the records
// fetched with it, positioned one below it; otherwise it reads to the tip
// and returns the newest record and a cursor after it. found is false when
// no record arrived at or after ts (or the iterator call timed out).
func (s *Source) scanFrom(ctx context.Context, sh *shard, ts time.Time, first bool) (c *cursor, seq idem.Sequence, arrival time.Time, found bool, err error) {
	tctx, cancel := context.WithTimeout(ctx, timestampCallTimeout)
	it, err := s.iteratorFor(tctx, sh, &kinesis.GetShardIteratorInput{
		StreamName:        aws.String(s.stream),
		ShardId:           aws.String(sh.ID),
		ShardIteratorType: types.ShardIteratorTypeAtTimestamp,
		Timestamp:         aws.Time(ts),
	})
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || invalidArgument(err)):
		// No answer, or a time Kinesis refuses (after its clock's now):
		// no record is known at or after ts.
		s.log.Debug("kinesis: no AT_TIMESTAMP iterator", "shard", sh.ID, "timestamp", ts, "err", err)
		return nil, "", time.Time{}, false, nil
	case err != nil:
		return nil, "", time.Time{}, false, s.startErr(sh, err, "getting an AT_TIMESTAMP iterator")
	}
	c = &cursor{}
	c.SetIter(it)
	for range scanCalls {
		out, err := s.getRecords(ctx, sh, *c.Iter)
		if err != nil {
			return nil, "", time.Time{}, false, s.startErr(sh, err, "reading from AT_TIMESTAMP")
		}
		c.SetIter(out.NextShardIterator)
		if n := len(out.Records); n > 0 {
			last := out.Records[n-1]
			seq, arrival, found = idem.Sequence(aws.ToString(last.SequenceNumber)), aws.ToTime(last.ApproximateArrivalTimestamp), true
			sh.NoteLatest(seq)
			if first {
				c.Buf, c.Fetched, c.Ended = out.Records, seq, c.Iter == nil
				return c, decrement(idem.Sequence(aws.ToString(out.Records[0].SequenceNumber))), aws.ToTime(out.Records[0].ApproximateArrivalTimestamp), true, nil
			}
		}
		if c.Iter == nil || caughtUp(out) {
			break
		}
	}
	c.Fetched, c.Ended = seq, c.Iter == nil
	return c, seq, arrival, found, nil
}

// atTimestamp is Start at AT_TIMESTAMP ts.
func (s *Source) atTimestamp(ctx context.Context, sh *shard, ts time.Time) (idem.Sequence, error) {
	tc, newest, arrival, err := s.tail(ctx, sh)
	if err != nil {
		return "", err
	}
	// Kinesis compares arrival times in milliseconds; a millisecond of slack
	// covers rounding. Asking for an AT_TIMESTAMP iterator when no record
	// matches is avoided: kinesalite never answers that.
	if newest == "" || arrival.UnixMilli()+1 < ts.UnixMilli() {
		sh.Install(tc, newest)
		return newest, nil
	}
	c, pos, _, found, err := s.scanFrom(ctx, sh, ts, true)
	if err != nil {
		return "", err
	}
	if !found {
		sh.Install(tc, newest)
		return newest, nil
	}
	sh.Install(c, pos)
	return pos, nil
}

// startErr wraps an error of Start's reads; throttling is an error there.
func (s *Source) startErr(sh *shard, err error, doing string) error {
	if errors.Is(err, errThrottled) || invalidArgument(err) || expiredIterator(err) {
		return fmt.Errorf("kinesis: stream %q shard %s: %s: %w", s.stream, sh.ID, doing, err)
	}
	return err
}
