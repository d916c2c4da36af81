package kinesis

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/idem-run/idem/source/internal/shards"
)

// errorCode is the Kinesis error code of err ("" for other errors).
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// throttled reports whether err is Kinesis saying "too many requests".
func throttled(err error) bool {
	var pt *types.ProvisionedThroughputExceededException
	var le *types.LimitExceededException
	var kt *types.KMSThrottlingException
	if errors.As(err, &pt) || errors.As(err, &le) || errors.As(err, &kt) {
		return true
	}
	switch errorCode(err) {
	case "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException", "KMSThrottlingException":
		return true
	}
	return false
}

func invalidArgument(err error) bool {
	var ia *types.InvalidArgumentException
	return errors.As(err, &ia) || errorCode(err) == "InvalidArgumentException"
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
// or source.ErrStreamNotFound for Kinesis' ResourceNotFoundException.
func (s *Source) wrap(err error, shard, doing string) error {
	return shards.Wrap(err, "kinesis", fmt.Sprintf("stream %q", s.stream), shard, doing, notFound(err))
}

// retry calls f until it succeeds, fails other than by throttling, or was
// throttled a few times (shards.Retry). It returns f's last error.
func (s *Source) retry(ctx context.Context, shard, what string, f func() error) error {
	return shards.RetryLogged(ctx, s.log, "kinesis", shard, what, throttled, s.sleep, f)
}
