// Package ddbstreams is a DynamoDB Streams server for tests. No local
// implementation of the Streams API exists (DynamoDB Local's terms rule it
// out here; minidyn and dynalite have none), so this one speaks its wire
// protocol, as the AWS API reference describes it, to the real
// aws-sdk-go-v2 clients: JSON 1.0 over HTTP POST, the operation in
// X-Amz-Target (DynamoDBStreams_20120810.ListStreams, DescribeStream,
// GetShardIterator, GetRecords), errors as HTTP 400 with
// {"__type": "com.amazonaws.dynamodb.v20120810#<Code>", "message": ...}.
//
// # Records come from table writes
//
// A Server fronts a DynamoDB server (minidyn, in internal/testsvc): it
// passes every DynamoDB_20120810.* request on, and for a table with a stream
// it reads the item before and after each write (PutItem, UpdateItem,
// DeleteItem, BatchWriteItem, TransactWriteItems, with a consistent GetItem
// through the same server, under one lock so no write interleaves) and
// appends a stream record: INSERT, MODIFY or REMOVE, with Keys, and NewImage
// and OldImage as the table's StreamViewType says. A write that changes
// nothing appends nothing, as on AWS. CreateTable and UpdateTable take a
// StreamSpecification; DescribeTable (and CreateTable, UpdateTable) answer
// LatestStreamArn, LatestStreamLabel and StreamSpecification.
//
// # What is pinned
//
//   - Shards: a stream has WithShards shards (default 1), each the head of a
//     lineage; an item's records go to one of them by a hash of its
//     partition key. Rollover closes every open shard of a table's stream,
//     with an EndingSequenceNumber, and opens a child whose ParentShardId
//     names it, as DynamoDB does about every four hours. A closed shard read
//     to its end answers GetRecords with no NextShardIterator (null).
//   - Sequence numbers are increasing decimal strings of 21 digits, like
//     AWS', unique across the server; a shard's StartingSequenceNumber is
//     below its first record's, its EndingSequenceNumber above its last's.
//     GetShardIterator accepts any number from StartingSequenceNumber to
//     EndingSequenceNumber (a ValidationException otherwise), record or
//     not: it is a position.
//   - Iterator types TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER and
//     AFTER_SEQUENCE_NUMBER. An iterator expires IteratorLifetime (15
//     minutes) after it was made: GetRecords then answers
//     ExpiredIteratorException. GetRecords returns at most Limit records
//     (1 to 1000, default 1000) and 1 MB.
//   - Retention: a record is trimmed Retention (24 hours) after it was
//     written, and a closed shard disappears Retention after it closed
//     (ResourceNotFoundException from then on). Trim trims at once. A
//     position whose next record was trimmed (AT_SEQUENCE_NUMBER at or
//     AFTER_SEQUENCE_NUMBER below the last trimmed record, or an iterator
//     made before the trim) is answered TrimmedDataAccessException, by
//     GetShardIterator and by GetRecords.
//   - The clock is injectable (WithClock) and Advance moves it, so tests
//     expire iterators and records without waiting.
//   - ApproximateCreationDateTime is in seconds, rounded down, as AWS'
//     default; eventVersion is "1.1"; eventID is 32 hex digits.
//
// WithKinesis also streams every change to the Kinesis data streams that
// EnableKinesisStreamingDestination named (Kinesis Data Streams for
// DynamoDB), in the shape AWS writes there.
//
// What it does not do: throttling (LimitExceededException), the two-readers
// limit per shard, userIdentity (no TTL deletes), partition splits (one
// parent with two children), PartiQL writes, and the gaps of the DynamoDB
// server it fronts (see testsvc.DynamoDBEndpoint).
package ddbstreams

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

// Limits of DynamoDB Streams the Server enforces.
const (
	// IteratorLifetime is how long a shard iterator can be used.
	IteratorLifetime = 15 * time.Minute
	// Retention is how long a stream record is kept.
	Retention = 24 * time.Hour
	// MaxGetRecords is the largest GetRecords Limit, and the default.
	MaxGetRecords = 1000
	// MaxGetRecordsBytes bounds one GetRecords answer.
	MaxGetRecordsBytes = 1 << 20
)

// Account is the AWS account ID in the Server's ARNs.
const Account = "000000000000"

// Option configures New.
type Option func(*Server)

// WithClock makes now the Server's clock (default time.Now); Advance moves
// it on.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.clock = now } }

// WithRegion sets the region of the stream ARNs and records' awsRegion
// (default us-east-1).
func WithRegion(region string) Option { return func(s *Server) { s.region = region } }

// WithShards makes each stream created from then on have n shards
// (default 1), n lineages of rollovers.
func WithShards(n int) Option { return func(s *Server) { s.shardsPerStream = max(n, 1) } }

// WithKinesis makes EnableKinesisStreamingDestination available: changes
// to the table are put into the Kinesis data stream it names, through
// client (kinesalite in tests).
func WithKinesis(client *kinesis.Client) Option { return func(s *Server) { s.kinesis = client } }

// Server is a DynamoDB and DynamoDB Streams endpoint (an http.Handler) over
// a DynamoDB server. It is safe for concurrent use.
type Server struct {
	next            http.Handler
	clock           func() time.Time
	region          string
	shardsPerStream int
	kinesis         *kinesis.Client

	mu      sync.Mutex
	offset  time.Duration
	tables  map[string]*table
	streams []*stream // in creation order, disabled ones too
	counter uint64    // the last sequence number given
	lastID  int64     // the last shard ID's timestamp, in milliseconds
}

// New returns a Server passing DynamoDB requests to next.
func New(next http.Handler, opts ...Option) *Server {
	s := &Server{next: next, clock: time.Now, region: "us-east-1", shardsPerStream: 1, tables: make(map[string]*table)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Advance moves the Server's clock on by d: iterators made more than
// IteratorLifetime ago expire, records written more than Retention ago
// are trimmed.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	s.offset += d
	s.mu.Unlock()
}

// Now is the Server's clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Server) now() time.Time { return s.clock().Add(s.offset) }

// StreamARN returns the ARN of table's latest stream, "" when it never had
// one.
func (s *Server) StreamARN(table string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tables[table]; t != nil && t.latest != nil {
		return t.latest.arn
	}
	return ""
}

// LastRecord returns the shard and sequence number of the last record
// appended to table's latest stream; ok is false when there is none.
func (s *Server) LastRecord(table string) (shard, seq string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[table]
	if t == nil || t.latest == nil || t.latest.last.seq == "" {
		return "", "", false
	}
	return t.latest.last.shard, t.latest.last.seq, true
}

// Rollover closes every open shard of table's enabled stream and opens a
// child of each, as DynamoDB does every few hours: records written from
// then on go to the children. It returns the children's IDs.
func (s *Server) Rollover(table string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.enabledStream(table)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var ids []string
	for i, sh := range st.open {
		sh.close(s.nextSeq(), now)
		child := s.newShard(st, sh.id, now)
		st.open[i] = child
		ids = append(ids, child.id)
	}
	return ids, nil
}

// Trim removes the records of shard (of table's latest stream) up to and
// including the sequence number through, as retention would: iterators and
// sequence numbers below them are answered TrimmedDataAccessException.
func (s *Server) Trim(table, shard, through string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[table]
	if t == nil || t.latest == nil {
		return fmt.Errorf("ddbstreams: table %q has no stream", table)
	}
	sh := t.latest.shard(shard)
	if sh == nil {
		return fmt.Errorf("ddbstreams: stream of table %q has no shard %q", table, shard)
	}
	sh.trim(through)
	return nil
}

func (s *Server) enabledStream(table string) (*stream, error) {
	t := s.tables[table]
	if t == nil || t.latest == nil || t.latest.status != statusEnabled {
		return nil, fmt.Errorf("ddbstreams: table %q has no enabled stream", table)
	}
	return t.latest, nil
}

// nextSeq returns the next sequence number: 21 digits, increasing.
func (s *Server) nextSeq() string {
	s.counter++
	return fmt.Sprintf("1%020d", s.counter)
}

// ServeHTTP answers DynamoDB Streams requests, and DynamoDB requests
// through the DynamoDB server.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	service, op, _ := strings.Cut(target, ".")
	switch service {
	case "DynamoDBStreams_20120810":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "SerializationException", err.Error())
			return
		}
		s.serveStreams(w, op, body)
	case "DynamoDB_20120810":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "SerializationException", err.Error())
			return
		}
		s.serveDynamoDB(w, r, op, body)
	default:
		writeError(w, http.StatusBadRequest, "UnknownOperationException", "unknown target "+target)
	}
}

// apiError is an error answer of the JSON protocol.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func validation(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ValidationException", fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "ResourceNotFoundException", fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{
		"__type":  "com.amazonaws.dynamodb.v20120810#" + code,
		"message": message,
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Write(buf.Bytes())
}

// forward passes a DynamoDB request to the DynamoDB server and returns its
// answer.
func (s *Server) forward(r *http.Request, op string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(r.Context(), http.MethodPost, "/", bytes.NewReader(body))
	req.Header = r.Header.Clone()
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810."+op)
	req.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, req)
	return rec
}

// copyResponse writes rec's answer to w, with body in place of its own.
func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	for k, v := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(rec.Code)
	w.Write(body)
}
