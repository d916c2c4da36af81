// Command environ is a Lambda function that writes its environment, as a
// JSON object, to the file its first argument names when it starts, and
// then answers every invocation with success.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	b, err := json.Marshal(env)
	if err != nil {
		log.Fatal(err)
	}
	// Written whole, then renamed, so that a reader never sees half.
	if err := os.WriteFile(os.Args[1]+".tmp", b, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(os.Args[1]+".tmp", os.Args[1]); err != nil {
		log.Fatal(err)
	}
	lambda.Start(func(context.Context, json.RawMessage) error { return nil })
}
