// Command s3fn is an unmodified aws-lambda-go function over S3 events, for
// idem's end-to-end tests. Its own store is a directory (S3FN_DIR): for
// each S3 record it gets, it appends one line to attempts.log, then
// records its effect as a file named by the invocation's request id and the
// record's index, created once: a run cut off by a crash is rerun
// under the same request id, and its effect is not applied twice, the way
// a function keys its own writes by the request id.
//
// An object whose key contains "permanent" fails with a CorruptImageError
// (errorType "CorruptImageError"), one whose key contains "transient" with
// a plain error, every time.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// CorruptImageError is a failure caused by the object's own data: retrying
// cannot help.
type CorruptImageError struct{ Key string }

func (e *CorruptImageError) Error() string { return "corrupt image: " + e.Key }

func handler(ctx context.Context, ev events.S3Event) error {
	dir := os.Getenv("S3FN_DIR")
	lc, ok := lambdacontext.FromContext(ctx)
	if !ok || lc.AwsRequestID == "" {
		return errors.New("no request id")
	}
	if len(ev.Records) == 0 {
		return errors.New("an S3Event without records")
	}
	for i, r := range ev.Records {
		obj := r.S3.Bucket.Name + "/" + r.S3.Object.Key
		line := fmt.Sprintf("%s %d %s %s\n", lc.AwsRequestID, i, r.EventName, obj)
		if err := appendLine(filepath.Join(dir, "attempts.log"), line); err != nil {
			return err
		}
		switch {
		case strings.Contains(r.S3.Object.Key, "permanent"):
			return &CorruptImageError{Key: r.S3.Object.Key}
		case strings.Contains(r.S3.Object.Key, "transient"):
			return errors.New("transient failure: " + r.S3.Object.Key)
		}
		if err := applyOnce(filepath.Join(dir, "effects"), fmt.Sprintf("%s-%d", lc.AwsRequestID, i), obj+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// applyOnce writes content to dir/name unless a run did already: the
// file is written whole under a temporary name, then linked to its name,
// which fails if it exists.
func applyOnce(dir, name, content string) error {
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func main() { lambda.Start(handler) }
