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
	"github.com/idem-run/idem/source/internal/shards"
)

const (
	// fetchLimit is the Limit of every GetRecords call: Kinesis' maximum,
	// as Lambda asks. Read hands the records out in the caller's batches.
	fetchLimit = 10000
	// callsPerRead bounds the GetRecords calls of one Read that find
	// nothing to return (Kinesis answers empty while an iterator crosses a
	// gap), so that Read never hangs.
	callsPerRead = 3
	// iteratorTTL is how long Read uses a shard iterator: Kinesis expires
	// them after five minutes.
	iteratorTTL = 4*time.Minute + 30*time.Second
)

// shard is the state of one shard: its cursors (at most
// shards.MaxCursors), the newest sequence seen, and when the next
// GetRecords call is allowed. A cursor is a reader's place in a shard: the
// records fetched and not yet returned, and the iterator after them.
type (
	shard  = shards.Shard[types.Record]
	cursor = shards.Cursor[types.Record]
)

func recordSeq(r types.Record) idem.Sequence { return idem.Sequence(aws.ToString(r.SequenceNumber)) }

// records: cursors hold the SDK's records, made into idem.Records as Read
// returns them.
func (s *Source) records() shards.Records[types.Record] {
	return shards.Records[types.Record]{
		Seq:  recordSeq,
		Size: func(r types.Record) int { return len(r.Data) },
		Record: func(shardID string, r types.Record) idem.Record {
			return idem.Record{
				Stream:       s.stream,
				ShardID:      shardID,
				Sequence:     recordSeq(r),
				PartitionKey: aws.ToString(r.PartitionKey),
				Data:         r.Data,
				ArrivalTime:  aws.ToTime(r.ApproximateArrivalTimestamp),
			}
		},
	}
}

// Read returns up to limit records of shard above after, at most maxBytes
// of data (at least one record when there is one). Records fetched beyond
// those stay buffered for the Read that continues from the last record
// returned. Throttling that outlasts a few retries returns no records and no
// error. The records' Data belongs to the SDK's response and is not reused.
func (s *Source) Read(ctx context.Context, shardID string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if !after.Valid() {
		return source.ReadResult{}, fmt.Errorf("kinesis: stream %q shard %s: position %q is not a sequence number", s.stream, shardID, after)
	}
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	return sh.Read(after, limit, maxBytes, errThrottled, func(c *cursor) error { return s.fill(ctx, sh, c, after) }, s.records())
}

// errThrottled: Kinesis kept throttling; Read returns nothing this time.
var errThrottled = errors.New("kinesis: throttled")

// fill makes sure c holds records to return, fetching with a bounded number
// of GetRecords calls; c may still be empty when the shard has nothing new.
func (s *Source) fill(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	calls := 0
	for len(c.Buf) == 0 && !c.Ended && calls < callsPerRead {
		if c.Stale(iteratorTTL) {
			if err := s.open(ctx, sh, c, after); err != nil {
				return err
			}
			if c.Iter == nil {
				return nil // the shard expired: c reports the loss
			}
		}
		calls++
		out, err := s.getRecords(ctx, sh, *c.Iter)
		if err != nil {
			if s.expired(sh, c, after, err) {
				return nil
			}
			if expiredIterator(err) {
				s.log.Debug("kinesis: shard iterator expired, getting another", "shard", sh.ID)
				c.Iter = nil
				continue
			}
			return err
		}
		if err := s.take(sh, c, out); err != nil {
			return err
		}
		if len(c.Buf) > 0 {
			break
		}
		if caughtUp(out) {
			// At the tip: nothing is above what was fetched. When nothing
			// at all was, records appended from now on are new, not lost.
			sh.NoteLatest(c.Fetched)
			if len(out.Records) == 0 {
				c.StopVerifying()
			}
			return nil
		}
		if len(out.Records) > 0 {
			// All at or below the position: read on.
			continue
		}
		behind := aws.ToInt64(out.MillisBehindLatest)
		if retention := s.Retention(); !c.Jumped && !c.Ended && retention > 0 && time.Duration(behind)*time.Millisecond >= retention {
			// The iterator is older than the retention period: it is
			// walking through trimmed data, one empty answer at a time.
			// Jump to the oldest record kept, and check for loss there.
			s.log.Debug("kinesis: iterator behind the retention period, moving to TRIM_HORIZON", "shard", sh.ID, "millisBehindLatest", behind)
			it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
			if err != nil {
				return err
			}
			c.SetIter(it)
			c.Jumped = true
			if !c.Verifying() {
				c.Expect(c.Fetched)
			}
		}
	}
	return nil
}

// expired handles a ResourceNotFoundException for the iterator of a shard
// listed earlier as closed: Kinesis dropped the shard at the end of its
// retention, with whatever a reader at after had not read yet. That is a
// loss, never the shard's normal end (see shards.Cursor.ShardExpired). It
// reports whether it handled err.
func (s *Source) expired(sh *shard, c *cursor, after idem.Sequence, err error) bool {
	info := sh.Info()
	if !errors.Is(err, source.ErrShardNotFound) || !info.Closed() {
		return false
	}
	s.log.Warn("kinesis: closed shard expired before it was read to its end; records may have been lost to retention", "shard", sh.ID, "after", after, "ending", info.EndingSequence)
	c.ShardExpired(info)
	return true
}

// open gets an iterator for c at after: TRIM_HORIZON for "", otherwise
// AT_SEQUENCE_NUMBER after, so that the first record tells whether after
// is still retained. A closed shard that Kinesis no longer knows has
// expired: see expired.
func (s *Source) open(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	err := s.openIter(ctx, sh, c, after)
	if err != nil && s.expired(sh, c, after, err) {
		return nil
	}
	return err
}

func (s *Source) openIter(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	c.Open(after)
	if after == "" {
		it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
		if err != nil && invalidArgument(err) {
			return s.wrap(err, sh.ID, "getting an iterator")
		}
		if err != nil {
			return err
		}
		c.SetIter(it)
		return nil
	}
	c.Expect(after)
	it, err := s.iterator(ctx, sh, types.ShardIteratorTypeAtSequenceNumber, after)
	if err != nil && invalidArgument(err) {
		// A position one below a record (AT_TIMESTAMP, Trimmed) need not
		// be a number Kinesis accepts; the record's own is.
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeAtSequenceNumber, increment(after))
	}
	if err != nil && invalidArgument(err) {
		// Kinesis refuses the position: it may have been trimmed. Start at
		// the oldest record kept, which must be above it.
		s.log.Debug("kinesis: position refused, reading from TRIM_HORIZON", "shard", sh.ID, "after", after, "err", err)
		c.ExpectStrict(after, err)
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	}
	if err != nil && invalidArgument(err) {
		return s.wrap(err, sh.ID, "getting an iterator")
	}
	if err != nil {
		return err
	}
	c.SetIter(it)
	return nil
}

// take adds a GetRecords answer to c: it advances the iterator, and while
// a check is pending drops records at or below the position and decides
// whether records were lost before the first one above.
func (s *Source) take(sh *shard, c *cursor, out *kinesis.GetRecordsOutput) error {
	lost, err := c.Add(sh, out.NextShardIterator, out.Records, recordSeq)
	if err != nil {
		return fmt.Errorf("kinesis: stream %q shard %s: %w", s.stream, sh.ID, err)
	}
	if lost {
		s.log.Warn("kinesis: records may have been lost to retention", "shard", sh.ID, "firstKept", recordSeq(c.Buf[0]))
	}
	return nil
}

// iterator gets a shard iterator, retrying when throttled.
func (s *Source) iterator(ctx context.Context, sh *shard, typ types.ShardIteratorType, seq idem.Sequence) (*string, error) {
	in := &kinesis.GetShardIteratorInput{
		StreamName:        aws.String(s.stream),
		ShardId:           aws.String(sh.ID),
		ShardIteratorType: typ,
	}
	if seq != "" {
		in.StartingSequenceNumber = aws.String(string(seq))
	}
	return s.iteratorFor(ctx, sh, in)
}

func (s *Source) iteratorFor(ctx context.Context, sh *shard, in *kinesis.GetShardIteratorInput) (*string, error) {
	var out *kinesis.GetShardIteratorOutput
	err := s.retry(ctx, sh.ID, "GetShardIterator", func() error {
		var err error
		out, err = s.api.GetShardIterator(ctx, in)
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && invalidArgument(err):
		return nil, err // open decides; wrapped by its caller
	case err != nil:
		return nil, s.wrap(err, sh.ID, "getting a "+string(in.ShardIteratorType)+" iterator")
	case out.ShardIterator == nil:
		return nil, fmt.Errorf("kinesis: stream %q shard %s: GetShardIterator returned no iterator", s.stream, sh.ID)
	}
	return out.ShardIterator, nil
}

// getRecords makes one GetRecords call in the shard's next free slot,
// retrying when throttled.
func (s *Source) getRecords(ctx context.Context, sh *shard, iter string) (*kinesis.GetRecordsOutput, error) {
	var out *kinesis.GetRecordsOutput
	err := s.retry(ctx, sh.ID, "GetRecords", func() error {
		if err := s.sleep(ctx, time.Until(sh.Reserve(s.poll))); err != nil {
			return err
		}
		var err error
		out, err = s.api.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(iter), Limit: aws.Int32(fetchLimit)})
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && expiredIterator(err):
		return nil, err
	case err != nil:
		return nil, s.wrap(err, sh.ID, "getting records")
	}
	return out, nil
}

// Wait returns at once when a record above after is known (fetched, or
// buffered for a Read from after); otherwise it sleeps until the shard's
// next GetRecords call is allowed (the poll interval), ctx is done, or the
// Source is closed. Kinesis cannot notify a poller of new records.
func (s *Source) Wait(ctx context.Context, shardID string, after idem.Sequence) error {
	return s.shards.Wait(ctx, shardID, after, s.poll, s.done, ErrClosed)
}

// Finished reports whether a reader at after has read all of shard: the
// shard is closed (a reshard replaced it by its children) and holds no
// record above after, or after is at or beyond its ending sequence number
// (where a Read that reported the shard expired leaves its reader). A
// shard that expired with records above after is not finished until a
// Read reported the loss. The engine then starts reading the children. It
// makes the same calls as Read, and like Read returns false, not an error,
// when throttled.
func (s *Source) Finished(ctx context.Context, shardID string, after idem.Sequence) (bool, error) {
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return false, err
	}
	if sh.Info().Ended(after) {
		return true, nil
	}
	if !sh.Info().Closed() {
		if _, err := s.ShardInfos(ctx); err != nil {
			return false, err
		}
		if !sh.Info().Closed() {
			return false, nil
		}
	}
	c := sh.Cursor(after)
	defer c.Unlock()
	return c.ReadToEnd(callsPerRead, errThrottled, func(c *cursor) error { return s.fill(ctx, sh, c, after) })
}
