// Package awsconfig loads the AWS SDK configuration idem's AWS clients
// share (the Kinesis and DynamoDB Streams sources, the DynamoDB store), so
// that region, endpoint and credentials follow one rule everywhere.
package awsconfig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Load returns the SDK's default configuration (environment, shared
// files, instance or task role), in region when it is not empty. With an
// endpoint (a local emulator, a VPC endpoint) and no credentials configured,
// it uses static placeholder credentials instead of asking the instance
// metadata service, which would stall outside AWS, and region defaults to
// us-east-1. Callers set the endpoint on their client (BaseEndpoint).
func Load(ctx context.Context, region, endpoint string) (aws.Config, error) {
	var load []func(*config.LoadOptions) error
	if region != "" {
		load = append(load, config.WithRegion(region))
	}
	if endpoint != "" && !credentialsConfigured() {
		load = append(load, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("idem", "idem", "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if endpoint != "" && cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return cfg, nil
}

// credentialsConfigured reports whether the SDK's default chain has
// credentials to find without asking the instance metadata service.
func credentialsConfigured() bool {
	for _, env := range []string{"AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		if os.Getenv(env) != "" {
			return true
		}
	}
	if f := os.Getenv("AWS_SHARED_CREDENTIALS_FILE"); f != "" {
		_, err := os.Stat(f)
		return err == nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		if _, err := os.Stat(filepath.Join(home, ".aws", "credentials")); err == nil {
			return true
		}
	}
	return false
}
