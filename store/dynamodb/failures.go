package dynamodb

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Each store.Failure a Commit carries is one item of the partition
// "f#<destination>", its sort key the commit's time (20-digit Unix ns of
// the committing host), 16 random hex digits of the commit and the
// batch's place in it (4 digits), so a destination's batches list in
// about the order they were discarded, and a commit's in its order. The item holds
// shard (the records' shard ID), count (how many records) and records:
// the batch as gzip-compressed JSON,
//
//	{"metadata": "<base64 of the on-failure record>", "records": [{"stream", "shard",
//	 "sequence", "partitionKey", "data" (base64), "arrival" (RFC 3339, UTC),
//	 "headers": [{"key", "value" (base64)}], "idempotencyKey"}]}
//
// where a string that is not valid UTF-8 is {"b64": "<base64>"} instead.
// A batch whose compressed JSON is above 64 KB is written before the
// transaction, in chunks of 350 KB (items "fc#<destination>#<sort key>",
// sort keys 000000, 000001, ...), and its item holds chunks (their count)
// instead of records: nothing refers to the chunks until the transaction
// lands, and a transaction DynamoDB refused deletes them. idem never
// deletes a batch: redrive it, then delete the items.
const (
	inlineFailureMax = 64 << 10
	failureChunk     = 350 << 10
)

// Attribute names of on-failure items.
const (
	attrShard   = "shard"
	attrCount   = "count"
	attrRecords = "records"
	attrChunks  = "chunks"
)

// spill is one chunk of a large on-failure batch, written before the
// transaction.
type spill struct {
	pk, sk string
	data   []byte
}

// ustr is a string that travels in JSON as itself when it is UTF-8, and as
// {"b64": ...} when it is not, so that any bytes come back as they were.
type ustr string

func (s ustr) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(s)) {
		return json.Marshal(string(s))
	}
	return json.Marshal(struct {
		B64 []byte `json:"b64"`
	}{[]byte(s)})
}

func (s *ustr) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var v struct {
			B64 []byte `json:"b64"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = ustr(v.B64)
		return nil
	}
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = ustr(v)
	return nil
}

type failureDoc struct {
	Metadata []byte          `json:"metadata"`
	Records  []failureRecord `json:"records"`
}

type failureRecord struct {
	Stream         ustr            `json:"stream"`
	Shard          ustr            `json:"shard"`
	Sequence       string          `json:"sequence"`
	PartitionKey   ustr            `json:"partitionKey"`
	Data           []byte          `json:"data"`
	Arrival        string          `json:"arrival,omitempty"`
	Headers        []failureHeader `json:"headers,omitempty"`
	IdempotencyKey ustr            `json:"idempotencyKey"`
}

type failureHeader struct {
	Key   ustr   `json:"key"`
	Value []byte `json:"value"`
}

// encodeFailure is f as gzip-compressed JSON.
func encodeFailure(f *store.Failure) ([]byte, error) {
	doc := failureDoc{Metadata: f.Metadata, Records: make([]failureRecord, len(f.Records))}
	for i := range f.Records {
		r := &f.Records[i]
		fr := failureRecord{Stream: ustr(r.Stream), Shard: ustr(r.ShardID), Sequence: string(r.Sequence),
			PartitionKey: ustr(r.PartitionKey), Data: r.Data, IdempotencyKey: ustr(r.IdempotencyKey)}
		if !r.ArrivalTime.IsZero() {
			fr.Arrival = r.ArrivalTime.UTC().Format(time.RFC3339Nano)
		}
		for _, h := range r.Headers {
			fr.Headers = append(fr.Headers, failureHeader{Key: ustr(h.Key), Value: h.Value})
		}
		doc.Records[i] = fr
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(&doc); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeFailure reads what encodeFailure wrote.
func decodeFailure(b []byte) (failureDoc, error) {
	var doc failureDoc
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return doc, err
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return doc, err
	}
	return doc, json.Unmarshal(raw, &doc)
}

// failureCommit is the sort key prefix of a commit's on-failure batches.
func failureCommit() string {
	var rnd [8]byte
	rand.Read(rnd[:])
	return nanos(time.Now()) + "#" + hex.EncodeToString(rnd[:])
}

func failurePK(destination string) string { return joinKey(maxPKBytes, "f", destination) }

// failureItem makes the item of f, the i-th of a commit whose sort key
// prefix is commit (failureCommit), and the chunks to write first when it
// is large.
func (s *Store) failureItem(f *store.Failure, commit string, i int) (map[string]types.AttributeValue, []spill, error) {
	blob, err := encodeFailure(f)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding an on-failure batch for %q: %w", f.Destination, err)
	}
	pk := failurePK(f.Destination)
	sk := fmt.Sprintf("%s#%04d", commit, i)
	shard := ""
	if len(f.Records) > 0 {
		shard = f.Records[0].ShardID
	}
	item := itemKey(pk, sk)
	item[attrCount] = num(int64(len(f.Records)))
	if shard != "" {
		item[attrShard] = str(string(appendEscaped(nil, shard)))
	}
	if len(blob) <= inlineFailureMax {
		item[attrRecords] = bin(blob)
		return item, nil, nil
	}
	var spills []spill
	cpk := "fc#" + pk[len("f#"):] + "#" + sk
	for i := 0; len(blob) > 0; i++ {
		n := min(len(blob), failureChunk)
		spills = append(spills, spill{pk: cpk, sk: fmt.Sprintf("%06d", i), data: blob[:n]})
		blob = blob[n:]
	}
	item[attrChunks] = num(int64(len(spills)))
	return item, spills, nil
}

// writeSpills writes chunks in BatchWriteItems of 25, asking again for
// what DynamoDB left unprocessed a few times.
func (s *Store) writeSpills(ctx context.Context, spills []spill) error {
	reqs := make([]types.WriteRequest, 0, len(spills))
	for _, sp := range spills {
		item := itemKey(sp.pk, sp.sk)
		item[attrRecords] = bin(sp.data)
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item}})
	}
	return s.batchWrite(ctx, reqs)
}

// deleteSpills deletes chunks of a transaction DynamoDB refused, as far as
// it can: left over, they only take space.
func (s *Store) deleteSpills(ctx context.Context, spills []spill) {
	if len(spills) == 0 {
		return
	}
	reqs := make([]types.WriteRequest, 0, len(spills))
	for _, sp := range spills {
		reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: itemKey(sp.pk, sp.sk)}})
	}
	_ = s.batchWrite(ctx, reqs)
}

func (s *Store) batchWrite(ctx context.Context, reqs []types.WriteRequest) error {
	for len(reqs) > 0 {
		batch := reqs[:min(len(reqs), 25)]
		reqs = reqs[len(batch):]
		for attempt := 1; len(batch) > 0; attempt++ {
			out, err := s.api.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{*s.table: batch}})
			if err != nil {
				return err
			}
			batch = out.UnprocessedItems[*s.table]
			if len(batch) == 0 {
				break
			}
			if attempt == maxAttempts {
				return fmt.Errorf("%d items left unprocessed after %d attempts (throttled)", len(batch), attempt)
			}
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
	}
	return nil
}

// FailureBatch is one discarded batch, as Commit stored it for its
// on-failure destination.
type FailureBatch struct {
	// ID is the batch's sort key; pass the last one read as afterID to
	// read on.
	ID string
	// Shard is the discarded records' shard ID.
	Shard string
	// Metadata is the JSON on-failure record.
	Metadata []byte
	// Records are the discarded records, in order, as their source
	// delivered them.
	Records []idem.Record
}

// DefaultFailuresLimit is how many batches Failures returns for a limit of
// 0 or less.
const DefaultFailuresLimit = 100

// Failures reads the on-failure batches Commit stored for destination,
// oldest first: those after afterID ("" to start at the first), at most
// limit of them. It returns none at the end or for a destination never
// written to.
func (s *Store) Failures(ctx context.Context, destination, afterID string, limit int) ([]FailureBatch, error) {
	if err := s.enter("failures"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultFailuresLimit
	}
	wrap := func(err error) error {
		return fmt.Errorf("dynamodb store: failures of destination %q after %q: %w", destination, afterID, err)
	}
	in := &dynamodb.QueryInput{
		TableName: s.table, ConsistentRead: aws.Bool(true), Limit: aws.Int32(int32(min(limit, 1000))),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(failurePK(destination))},
	}
	if afterID != "" {
		in.KeyConditionExpression = aws.String("#pk = :pk AND #sk > :after")
		in.ExpressionAttributeNames["#sk"] = attrSK
		in.ExpressionAttributeValues[":after"] = str(afterID)
	}
	var out []FailureBatch
	for len(out) < limit {
		page, err := s.api.Query(ctx, in)
		if err != nil {
			return nil, wrap(err)
		}
		for _, it := range page.Items {
			if len(out) == limit {
				break
			}
			fb, err := s.readFailure(ctx, it)
			if err != nil {
				return nil, wrap(err)
			}
			out = append(out, fb)
		}
		if len(page.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
	return out, nil
}

// readFailure decodes one on-failure item, reading its chunks if it has
// any.
func (s *Store) readFailure(ctx context.Context, it map[string]types.AttributeValue) (FailureBatch, error) {
	pk, _ := getS(it, attrPK)
	sk, _ := getS(it, attrSK)
	fb := FailureBatch{ID: sk}
	if sh, ok := getS(it, attrShard); ok {
		v, err := unescape(sh)
		if err != nil {
			return fb, fmt.Errorf("batch %s: %w", sk, err)
		}
		fb.Shard = v
	}
	blob, ok := getB(it, attrRecords)
	if !ok {
		n, _, err := getI(it, attrChunks)
		if err != nil {
			return fb, err
		}
		chunks, err := s.queryPartition(ctx, "fc#"+pk[len("f#"):]+"#"+sk)
		if err != nil {
			return fb, fmt.Errorf("batch %s: reading its chunks: %w", sk, err)
		}
		if int64(len(chunks)) != n {
			return fb, fmt.Errorf("batch %s: %d of its %d chunks", sk, len(chunks), n)
		}
		for i, c := range chunks {
			if csk, _ := getS(c, attrSK); csk != fmt.Sprintf("%06d", i) {
				return fb, fmt.Errorf("batch %s: chunk %q out of order", sk, csk)
			}
			b, _ := getB(c, attrRecords)
			blob = append(blob, b...)
		}
	}
	doc, err := decodeFailure(blob)
	if err != nil {
		return fb, fmt.Errorf("batch %s: %w", sk, err)
	}
	fb.Metadata = doc.Metadata
	for _, r := range doc.Records {
		rec := idem.Record{Stream: string(r.Stream), ShardID: string(r.Shard), Sequence: idem.Sequence(r.Sequence),
			PartitionKey: string(r.PartitionKey), Data: r.Data, IdempotencyKey: string(r.IdempotencyKey)}
		if r.Arrival != "" {
			if rec.ArrivalTime, err = time.Parse(time.RFC3339Nano, r.Arrival); err != nil {
				return fb, fmt.Errorf("batch %s: corrupt arrival time: %w", sk, err)
			}
		}
		for _, h := range r.Headers {
			rec.Headers = append(rec.Headers, idem.Header{Key: string(h.Key), Value: h.Value})
		}
		fb.Records = append(fb.Records, rec)
	}
	return fb, nil
}
