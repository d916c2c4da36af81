package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/internal/shards"
)

const (
	// fetchLimit is the Limit of every GetRecords call: DynamoDB Streams'
	// maximum, as Lambda asks. Read hands the records out in the caller's
	// batches.
	fetchLimit = 1000
	// callsPerRead bounds the GetRecords calls of one Read, so that it
	// never hangs.
	callsPerRead = 3
	// iteratorTTL is how long Read uses a shard iterator: DynamoDB Streams
	// expires them after 15 minutes.
	iteratorTTL = 14 * time.Minute
)

// shard is the state of one shard: its cursors, the newest sequence seen,
// and when the next GetRecords call is allowed (see package
// source/internal/shards). Cursors buffer records already made into
// idem.Records, whose Data sizes Read's maxBytes counts.
type (
	shard  = shards.Shard[idem.Record]
	cursor = shards.Cursor[idem.Record]
)

func recordSeq(r idem.Record) idem.Sequence { return r.Sequence }

// records: cursors hold the idem.Records that Read returns, whose Data
// sizes its maxBytes counts.
var records = shards.Records[idem.Record]{
	Seq:    recordSeq,
	Size:   func(r idem.Record) int { return len(r.Data) },
	Record: func(_ string, r idem.Record) idem.Record { return r },
}

// Read returns up to limit records of shard above after, at most maxBytes
// of data (at least one record when there is one). Records fetched beyond
// those stay buffered for the Read that continues from the last record
// returned. Throttling that outlasts a few retries returns no records and no
// error.
func (s *Source) Read(ctx context.Context, shardID string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if !after.Valid() {
		return source.ReadResult{}, fmt.Errorf("dynamodb: stream %s shard %s: position %q is not a sequence number", s.arn, shardID, after)
	}
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	return sh.Read(after, limit, maxBytes, errThrottled, func(c *cursor) error { return s.fill(ctx, sh, c, after) }, records)
}

// fill makes sure c holds records to return, with a bounded number of
// GetRecords calls; c may still be empty when the shard has nothing new.
// An expired iterator is made again from after (the checkpoint); a trimmed
// position moves c to TRIM_HORIZON, with the loss checked there.
func (s *Source) fill(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	for calls := 0; len(c.Buf) == 0 && !c.Ended && calls < callsPerRead; {
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
		switch {
		case err == nil:
		case s.expired(sh, c, after, err):
			return nil
		case expiredIterator(err):
			s.log.Debug("dynamodb: shard iterator expired; renewing it from the position", "shard", sh.ID, "after", after)
			c.Iter = nil
			continue
		case trimmed(err):
			if err := s.jump(ctx, sh, c, after, err); err != nil {
				return err
			}
			continue
		default:
			return err
		}
		recs := make([]idem.Record, 0, len(out.Records))
		for _, r := range out.Records {
			rec, err := s.record(sh.ID, r)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		lost, err := c.Add(sh, out.NextShardIterator, recs, recordSeq)
		if err != nil {
			return fmt.Errorf("dynamodb: stream %s shard %s: %w", s.arn, sh.ID, err)
		}
		if lost {
			s.log.Warn("dynamodb: records were trimmed (kept 24 hours) before they were read", "shard", sh.ID, "after", after, "firstKept", c.Buf[0].Sequence)
		}
		if len(out.Records) == 0 {
			// At the tip, or crossing a stretch with no records (DynamoDB
			// may answer empty there): the next Read goes on from the
			// iterator, which c keeps.
			return nil
		}
	}
	return nil
}

// jump moves c to TRIM_HORIZON because the records after its position
// were trimmed (cause, a TrimmedDataAccessException), checking for loss
// against what c fetched last.
func (s *Source) jump(ctx context.Context, sh *shard, c *cursor, after idem.Sequence, cause error) error {
	s.log.Warn("dynamodb: the position is older than the stream's trim point; reading from TRIM_HORIZON", "shard", sh.ID, "after", c.Fetched, "err", cause)
	it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		if s.expired(sh, c, after, err) {
			return nil
		}
		return err
	}
	pos := c.Fetched
	c.SetIter(it)
	c.Jumped = true
	if !c.Verifying() {
		c.Expect(pos)
	}
	return nil
}

// expired handles a ResourceNotFoundException for a shard listed earlier
// as closed: DynamoDB dropped it 24 hours after it closed, with whatever a
// reader at after had not read yet. That is a loss, never the shard's
// normal end (shards.Cursor.ShardExpired). It reports whether it handled
// err.
func (s *Source) expired(sh *shard, c *cursor, after idem.Sequence, err error) bool {
	info := sh.Info()
	if !errors.Is(err, source.ErrShardNotFound) || !info.Closed() {
		return false
	}
	s.log.Warn("dynamodb: closed shard expired before it was read to its end; records may have been lost to retention", "shard", sh.ID, "after", after, "ending", info.EndingSequence)
	c.ShardExpired(info)
	return true
}

// open gets an iterator for c at after: TRIM_HORIZON for "", otherwise
// AFTER_SEQUENCE_NUMBER after. A position DynamoDB refuses as a sequence
// number (one below a record, where a loss left a reader) is tried as the
// record's own, AT_SEQUENCE_NUMBER; one older than the trim point reads
// from TRIM_HORIZON and reports the loss.
func (s *Source) open(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	c.Open(after)
	var it *string
	var err error
	if after == "" {
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	} else {
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeAfterSequenceNumber, after)
		if err != nil && invalid(err) {
			it, err = s.iterator(ctx, sh, types.ShardIteratorTypeAtSequenceNumber, shards.Increment(after))
		}
		if err != nil && invalid(err) {
			s.log.Debug("dynamodb: position refused, reading from TRIM_HORIZON", "shard", sh.ID, "after", after, "err", err)
			c.ExpectStrict(after, err)
			it, err = s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
		}
		if err != nil && trimmed(err) {
			s.log.Warn("dynamodb: the position is older than the stream's trim point; reading from TRIM_HORIZON", "shard", sh.ID, "after", after, "err", err)
			if !c.Verifying() {
				c.Expect(after)
			}
			c.Jumped = true
			it, err = s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
		}
	}
	switch {
	case err != nil && s.expired(sh, c, after, err):
		return nil
	case err != nil && (invalid(err) || trimmed(err)):
		return s.wrap(err, sh.ID, "getting an iterator")
	case err != nil:
		return err
	}
	c.SetIter(it)
	return nil
}

// iterator gets a shard iterator, retrying when throttled. Refusals
// (ValidationException, TrimmedDataAccessException) are returned as they
// are, for the caller to decide.
func (s *Source) iterator(ctx context.Context, sh *shard, typ types.ShardIteratorType, seq idem.Sequence) (*string, error) {
	in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(s.arn), ShardId: aws.String(sh.ID), ShardIteratorType: typ}
	if seq != "" {
		in.SequenceNumber = aws.String(string(seq))
	}
	var out *dynamodbstreams.GetShardIteratorOutput
	err := s.retry(ctx, sh.ID, "GetShardIterator", func() error {
		var err error
		out, err = s.api.GetShardIterator(ctx, in)
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && (invalid(err) || trimmed(err)):
		return nil, err
	case err != nil:
		return nil, s.wrap(err, sh.ID, "getting a "+string(typ)+" iterator")
	case out.ShardIterator == nil:
		return nil, fmt.Errorf("dynamodb: stream %s shard %s: GetShardIterator returned no iterator", s.arn, sh.ID)
	}
	return out.ShardIterator, nil
}

// getRecords makes one GetRecords call in the shard's next free slot,
// retrying when throttled.
func (s *Source) getRecords(ctx context.Context, sh *shard, iter string) (*dynamodbstreams.GetRecordsOutput, error) {
	var out *dynamodbstreams.GetRecordsOutput
	err := s.retry(ctx, sh.ID, "GetRecords", func() error {
		if err := s.sleep(ctx, time.Until(sh.Reserve(s.poll))); err != nil {
			return err
		}
		var err error
		out, err = s.api.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String(iter), Limit: aws.Int32(fetchLimit)})
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && (expiredIterator(err) || trimmed(err)):
		return nil, err
	case err != nil:
		return nil, s.wrap(err, sh.ID, "getting records")
	}
	return out, nil
}

// Wait returns at once when a record above after is known (fetched, or
// buffered for a Read from after); otherwise it sleeps until the shard's
// next GetRecords call is allowed (the poll interval), ctx is done, or the
// Source is closed. DynamoDB Streams cannot notify a poller.
func (s *Source) Wait(ctx context.Context, shardID string, after idem.Sequence) error {
	return s.shards.Wait(ctx, shardID, after, s.poll, s.done, ErrClosed)
}

// Finished reports whether a reader at after has read all of shard: the
// shard is closed and holds no record above after (GetRecords answered no
// next iterator there), or after is at or beyond its ending sequence
// number (where a Read that found the shard expired leaves its reader).
// The engine then reads the shard's children. For a shard listed as open
// whose reader has not met its end, it answers false without a call: the
// engine asks after every empty Read, and DescribeStream allows ten calls
// a second per account; Shards, which the engine calls every discovery
// interval, learns of the closing. Like Read it returns false, not an
// error, when throttled.
func (s *Source) Finished(ctx context.Context, shardID string, after idem.Sequence) (bool, error) {
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return false, err
	}
	info := sh.Info()
	if info.Ended(after) {
		return true, nil
	}
	c := sh.Cursor(after)
	defer c.Unlock()
	if !info.Closed() && !c.Ended {
		return false, nil
	}
	return c.ReadToEnd(callsPerRead, errThrottled, func(c *cursor) error { return s.fill(ctx, sh, c, after) })
}
