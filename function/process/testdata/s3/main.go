// Command s3 is an S3 handler written as for AWS Lambda, taking
// aws-lambda-go's events.S3Event: it appends one line per invocation, the
// bucket/key of each record it got, to the file named by IDEM_TEST_KEYS,
// and fails the invocation when an object key starts with "fail", as a
// function does on an object it cannot handle.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(_ context.Context, ev events.S3Event) error {
	keys := make([]string, len(ev.Records))
	for i, r := range ev.Records {
		keys[i] = r.S3.Bucket.Name + "/" + r.S3.Object.Key
	}
	if path := os.Getenv("IDEM_TEST_KEYS"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintln(f, strings.Join(keys, " "))
		if err := f.Close(); err != nil {
			return err
		}
	}
	for _, r := range ev.Records {
		if strings.HasPrefix(r.S3.Object.Key, "fail") {
			return fmt.Errorf("%s/%s: cannot handle", r.S3.Bucket.Name, r.S3.Object.Key)
		}
	}
	return nil
}

func main() { lambda.Start(handler) }
