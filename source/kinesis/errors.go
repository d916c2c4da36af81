package kinesis

import (
	"context"
	"fmt"

	"github.com/idem-run/idem/source/internal/shards"
)

// throttled reports whether err is Kinesis saying "too many requests".
func throttled(err error) bool {
	return shards.HasCode(err, "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException", "KMSThrottlingException")
}

func invalidArgument(err error) bool { return shards.HasCode(err, "InvalidArgumentException") }

func expiredIterator(err error) bool { return shards.HasCode(err, "ExpiredIteratorException") }

// wrap adds what the Source was doing to err, and source.ErrShardNotFound
// or source.ErrStreamNotFound for Kinesis' ResourceNotFoundException.
func (s *Source) wrap(err error, shard, doing string) error {
	return shards.Wrap(err, "kinesis", fmt.Sprintf("stream %q", s.stream), shard, doing)
}

// retry calls f until it succeeds, fails other than by throttling, or was
// throttled a few times (shards.Retry). It returns f's last error.
func (s *Source) retry(ctx context.Context, shard, what string, f func() error) error {
	return shards.RetryLogged(ctx, s.log, "kinesis", shard, what, throttled, s.sleep, f)
}
