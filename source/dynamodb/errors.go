package dynamodb

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"

	"github.com/idem-run/idem/source/internal/shards"
)

// errThrottled: DynamoDB Streams kept throttling; Read returns nothing this
// time.
var errThrottled = errors.New("dynamodb: throttled")

// errorCode is the AWS error code of err ("" for other errors).
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// throttled reports whether err is DynamoDB Streams saying "too many
// requests".
func throttled(err error) bool {
	var le *types.LimitExceededException
	if errors.As(err, &le) {
		return true
	}
	switch errorCode(err) {
	case "LimitExceededException", "ThrottlingException", "RequestLimitExceeded", "ProvisionedThroughputExceededException":
		return true
	}
	return false
}

// invalid reports whether DynamoDB Streams refused a request's values
// (a sequence number out of a shard's range).
func invalid(err error) bool { return errorCode(err) == "ValidationException" }

// trimmed reports whether a position is older than the stream's trim point:
// records after it were removed before they were read.
func trimmed(err error) bool {
	var te *types.TrimmedDataAccessException
	return errors.As(err, &te) || errorCode(err) == "TrimmedDataAccessException"
}

func expiredIterator(err error) bool {
	var ei *types.ExpiredIteratorException
	return errors.As(err, &ei) || errorCode(err) == "ExpiredIteratorException"
}

func notFound(err error) bool {
	var nf *types.ResourceNotFoundException
	return errors.As(err, &nf) || errorCode(err) == "ResourceNotFoundException"
}

// wrap adds what the Source was doing to err, and source.ErrShardNotFound
// or source.ErrStreamNotFound for a ResourceNotFoundException.
func (s *Source) wrap(err error, shard, doing string) error {
	return shards.Wrap(err, "dynamodb", "stream "+s.arn, shard, doing, notFound(err))
}

// retry calls f until it succeeds, fails other than by throttling, or was
// throttled a few times (shards.Retry). It returns f's last error.
func (s *Source) retry(ctx context.Context, shard, what string, f func() error) error {
	return shards.RetryLogged(ctx, s.log, "dynamodb", shard, what, throttled, s.sleep, f)
}
