package dynamodb

import (
	"context"
	"errors"

	"github.com/idem-run/idem/source/internal/shards"
)

// errThrottled: DynamoDB Streams kept throttling; Read returns nothing this
// time.
var errThrottled = errors.New("dynamodb: throttled")

// throttled reports whether err is DynamoDB Streams saying "too many
// requests".
func throttled(err error) bool {
	return shards.HasCode(err, "LimitExceededException", "ThrottlingException", "RequestLimitExceeded", "ProvisionedThroughputExceededException")
}

// invalid reports whether DynamoDB Streams refused a request's values
// (a sequence number out of a shard's range).
func invalid(err error) bool { return shards.HasCode(err, "ValidationException") }

// trimmed reports whether a position is older than the stream's trim point:
// records after it were removed before they were read.
func trimmed(err error) bool { return shards.HasCode(err, "TrimmedDataAccessException") }

func expiredIterator(err error) bool { return shards.HasCode(err, "ExpiredIteratorException") }

// wrap adds what the Source was doing to err, and source.ErrShardNotFound
// or source.ErrStreamNotFound for a ResourceNotFoundException.
func (s *Source) wrap(err error, shard, doing string) error {
	return shards.Wrap(err, "dynamodb", "stream "+s.arn, shard, doing)
}

// retry calls f until it succeeds, fails other than by throttling, or was
// throttled a few times (shards.Retry). It returns f's last error.
func (s *Source) retry(ctx context.Context, shard, what string, f func() error) error {
	return shards.RetryLogged(ctx, s.log, "dynamodb", shard, what, throttled, s.sleep, f)
}
