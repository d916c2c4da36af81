package testsvc

import (
	"net/http/httptest"
	"testing"

	miniserver "github.com/truora/minidyn/server"

	"github.com/idem-run/idem/internal/testsvc/ddbstreams"
)

// DynamoDBStreamsServer is a DynamoDB with DynamoDB Streams for one test
// (see package ddbstreams): its methods roll shards over, trim records and
// move the clock.
type DynamoDBStreamsServer struct {
	*ddbstreams.Server
	// URL is the endpoint of both the DynamoDB and the DynamoDB Streams
	// clients.
	URL string
}

// DynamoDBStreams starts a DynamoDB Streams server for t on a loopback
// httptest server, over a minidyn DynamoDB of its own (with the limits
// DynamoDBEndpoint enforces), and stops it when t ends. It is always the
// in-process server, never IDEM_TEST_DYNAMODB_ENDPOINT: tests roll its
// shards over, trim its records and move its clock, which no real
// DynamoDB lets them do.
func DynamoDBStreams(t testing.TB, opts ...ddbstreams.Option) *DynamoDBStreamsServer {
	t.Helper()
	srv := ddbstreams.New(&dynamoLimits{next: miniserver.NewServer(), stats: new(DynamoDBStats)}, opts...)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &DynamoDBStreamsServer{Server: srv, URL: hs.URL}
}
