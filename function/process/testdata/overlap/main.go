// Command overlap shows whether invocations run in parallel: each writes
// its start time to $OVERLAP_DIR/<request id>.start, waits (until its
// deadline, or for $OVERLAP_WAIT) for $OVERLAP_N start files to exist, then
// writes its end time to <request id>.end. Run one at a time, the first never
// sees the others and fails.
package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

func stamp(path string) error {
	return os.WriteFile(path, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644)
}

func handler(ctx context.Context, _ events.KinesisEvent) (events.KinesisEventResponse, error) {
	lc, _ := lambdacontext.FromContext(ctx)
	dir := os.Getenv("OVERLAP_DIR")
	n, _ := strconv.Atoi(os.Getenv("OVERLAP_N"))
	if wait, err := time.ParseDuration(os.Getenv("OVERLAP_WAIT")); err == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	if err := stamp(filepath.Join(dir, lc.AwsRequestID+".start")); err != nil {
		return events.KinesisEventResponse{}, err
	}
	for {
		starts, _ := filepath.Glob(filepath.Join(dir, "*.start"))
		if len(starts) >= n {
			break
		}
		select {
		case <-ctx.Done():
			return events.KinesisEventResponse{}, errors.New("the other invocations never started")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return events.KinesisEventResponse{}, stamp(filepath.Join(dir, lc.AwsRequestID+".end"))
}

func main() { lambda.Start(handler) }
