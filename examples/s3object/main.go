// Command s3object is a Lambda function, written with aws-lambda-go, that
// idem runs for S3 object events: it reads each object named in its
// S3Event with aws-sdk-go-v2's S3 client, from the same S3-compatible store
// that sent the notification, and reports the object's size and SHA-256.
// It runs unchanged on AWS Lambda; under idem it is a process function
// (examples/s3object/idem.yaml).
//
// An empty object is a failure of the object's own data: the function
// returns an EmptyObjectError, which the configuration lists in
// async.permanentErrorTypes, so it is not retried and goes to the
// on-failure stream at once. Any other error (the store unreachable, say)
// is retried as the function's async settings say.
//
// S3_ENDPOINT names the store (unset: AWS's own); the credentials come
// from the usual AWS environment variables, given to the process in the
// function's env. Amazon S3 and MinIO URL-encode the object key in their
// notifications (a space as '+'), versitygw does not:
// S3_KEYS_URL_ENCODED=false says so.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// EmptyObjectError reports an object with no content: retrying cannot
// help. Its type name is the errorType idem sees.
type EmptyObjectError struct{ Bucket, Key string }

func (e *EmptyObjectError) Error() string { return "s3://" + e.Bucket + "/" + e.Key + " is empty" }

// newClient returns an S3 client for S3_ENDPOINT (path-style, as
// self-hosted stores expect) with the environment's static credentials.
func newClient() *s3.Client {
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = "us-east-1"
	}
	o := s3.Options{
		Region: region,
		Credentials: credentials.NewStaticCredentialsProvider(
			os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN")),
	}
	if ep := os.Getenv("S3_ENDPOINT"); ep != "" {
		o.BaseEndpoint = aws.String(ep)
		o.UsePathStyle = true
	}
	return s3.New(o)
}

// keysURLEncoded is whether notifications carry URL-encoded object keys.
var keysURLEncoded = os.Getenv("S3_KEYS_URL_ENCODED") != "false"

func handler(ctx context.Context, ev events.S3Event) error {
	client := newClient()
	for _, r := range ev.Records {
		bucket := r.S3.Bucket.Name
		key := r.S3.Object.Key
		if keysURLEncoded {
			k, err := url.QueryUnescape(key)
			if err != nil {
				return fmt.Errorf("object key %q: %w", key, err)
			}
			key = k
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, out.Body)
		out.Body.Close()
		if err != nil {
			return fmt.Errorf("reading s3://%s/%s: %w", bucket, key, err)
		}
		if n == 0 {
			return &EmptyObjectError{Bucket: bucket, Key: key}
		}
		log.Printf("s3://%s/%s (%s): %d bytes, sha256 %s", bucket, key, r.EventName, n, hex.EncodeToString(h.Sum(nil)))
	}
	return nil
}

func main() { lambda.Start(handler) }
