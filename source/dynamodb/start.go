package dynamodb

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/internal/shards"
)

// scanCalls bounds the GetRecords calls Start makes to find an open
// shard's newest record for LATEST.
const scanCalls = 100

// Start returns the position a mapping without a checkpoint starts from:
// for TRIM_HORIZON one below the shard's StartingSequenceNumber, so that a
// reader that gets there after records were trimmed learns of the loss; for
// LATEST the sequence number of the shard's newest record (TRIM_HORIZON's
// position when it holds none), or a closed shard's ending sequence number.
// AT_TIMESTAMP is refused with an error wrapping ErrAtTimestamp.
//
// Finding LATEST reads an open shard from TRIM_HORIZON (see the package
// documentation), a GetRecords call per 1000 records; the cursor it read
// with is kept, so the first Read from the position makes no
// GetShardIterator call. Throttling that outlasts the retries is an error:
// the engine calls Start again.
func (s *Source) Start(ctx context.Context, shardID string, pos source.StartingPosition, _ time.Time) (idem.Sequence, error) {
	switch pos {
	case source.TrimHorizon, source.Latest:
	case source.AtTimestamp:
		return "", fmt.Errorf("dynamodb: stream %s: %w", s.arn, ErrAtTimestamp)
	default:
		return "", fmt.Errorf("dynamodb: stream %s shard %s: unknown starting position %q", s.arn, shardID, pos)
	}
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return "", err
	}
	info := sh.Info()
	switch {
	case pos == source.TrimHorizon:
		return horizon(info), nil
	case info.Closed():
		return info.EndingSequence, nil
	}
	return s.latest(ctx, sh)
}

// horizon is the position before every record of a shard: one below its
// StartingSequenceNumber ("" when DynamoDB gave none). Unlike "", it is a
// position DynamoDB can say was trimmed.
func horizon(info ShardInfo) idem.Sequence {
	return shards.Decrement(info.StartingSequence)
}

// latest reads an open shard from TRIM_HORIZON to its newest record, and
// installs the cursor after it.
func (s *Source) latest(ctx context.Context, sh *shard) (idem.Sequence, error) {
	it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	if err != nil {
		return "", s.startErr(sh, err, "getting a TRIM_HORIZON iterator")
	}
	c := &cursor{}
	c.SetIter(it)
	newest := horizon(sh.Info())
	for calls := 0; c.Iter != nil; calls++ {
		if calls == scanCalls {
			s.log.Warn("dynamodb: LATEST: the shard holds more records than Start reads; a LATEST mapping reads the rest of them", "shard", sh.ID, "newestFound", newest)
			break
		}
		out, err := s.getRecords(ctx, sh, *c.Iter)
		if err != nil {
			return "", s.startErr(sh, err, "reading the shard's tail")
		}
		c.SetIter(out.NextShardIterator)
		n := len(out.Records)
		if n == 0 {
			break
		}
		if d := out.Records[n-1].Dynamodb; d != nil {
			newest = idem.MaxSequence(newest, idem.Sequence(aws.ToString(d.SequenceNumber)))
		}
	}
	c.Fetched, c.Ended = newest, c.Iter == nil
	sh.NoteLatest(newest)
	sh.Install(c, newest)
	return newest, nil
}

// startErr wraps an error of Start's reads: throttling, a refusal and a
// trimmed or expired iterator are errors there, and the engine calls Start
// again.
func (s *Source) startErr(sh *shard, err error, doing string) error {
	return fmt.Errorf("dynamodb: stream %s shard %s: %s: %w", s.arn, sh.ID, doing, err)
}
