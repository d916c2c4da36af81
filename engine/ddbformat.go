package engine

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/ddbevent"
	"github.com/idem-run/idem/internal/pattern"
)

// A mapping with idem.EventFormatDynamoDB sends its function DynamoDBEvents:
// each record's data is a DynamoDB change, the DynamoDB Streams record the
// DynamoDB source reads or the change Kinesis Data Streams for DynamoDB
// writes into a Kinesis stream, and the function gets it as the
// DynamoDBEventRecord it converts to (internal/ddbevent). Filter patterns
// and key expressions see that converted record, so a mapping reads a
// table's changes the same way from either stream. A record's default key
// stays its identity: a change is one stream record, not a payload.
//
// A record whose data is no DynamoDB change cannot be sent: it goes to the
// on-failure destination at once, as an IdempotencyKeyError naming the
// field that is wrong, as eventFormat s3 discards data that is no
// notification. With a key expression the keyer finds it; with identity
// keys, which the engine computes without reading data, runBatch does,
// before the batch is invoked (dropUnsendable).

// ddbKey sets r.IdempotencyKey for a mapping that sends DynamoDBEvents:
// the key expression's value over the converted record when the mapping
// has one, else the record's identity. Data that does not convert is a
// KeyError.
func (k *keyer) ddbKey(r *idem.Record) error {
	rec, err := ddbevent.Record(r.Data, string(r.Sequence))
	if err != nil {
		return keyError(r, err.Error())
	}
	if k.expr == nil {
		r.IdempotencyKey = r.Stream + "/" + r.ShardID + "/" + string(r.Sequence)
		return nil
	}
	return k.exprKeyOf(r, rec)
}

// rejectsDDB is filterSet.rejects for a mapping that sends DynamoDBEvents:
// the patterns match the converted record, as Lambda's filters match a
// DynamoDB stream record ({"eventName": ["INSERT"], "dynamodb":
// {"NewImage": {"status": {"S": ["paid"]}}}}). Data that does not convert
// matches only patterns that do not look into it (it is then discarded
// before its batch is invoked).
func (f *filterSet) rejectsDDB(r *idem.Record) bool {
	if len(f.patterns) == 0 {
		return false
	}
	doc := map[string]any{}
	if rec, err := ddbevent.Record(r.Data, string(r.Sequence)); err == nil {
		if v, err := pattern.Decode(rec); err == nil {
			if m, ok := v.(map[string]any); ok {
				doc = m
			}
		}
	}
	for _, p := range f.patterns {
		if p.Match(doc) {
			return false
		}
	}
	return true
}

// dropUnsendable, for a mapping that sends DynamoDBEvents under identity
// keys, sends the records of b whose data is no DynamoDB change to the
// on-failure destination, in one commit, and returns the others, in
// order. Other mappings' b is returned as it is: their keyer has read
// every record's data already, or their events carry any data.
func (s *shard) dropUnsendable(work context.Context, b []idem.Record) ([]idem.Record, error) {
	if s.m.cfg.EventFormat != idem.EventFormatDynamoDB || !s.m.keyer.byIdentity() {
		return b, nil
	}
	var c commit
	var kept []idem.Record
	for i := range b {
		r := &b[i]
		_, err := ddbevent.Parse(r.Data, string(r.Sequence))
		if err == nil {
			if kept != nil {
				kept = append(kept, *r)
			}
			continue
		}
		if kept == nil {
			kept = slices.Clone(b[:i])
		}
		kerr := keyError(r, err.Error())
		s.e.log.Error("discarding record: it is no DynamoDB stream record", "mapping", s.m.cfg.Name, "err", kerr)
		c.discard(s, b[i:i+1], conditionKeyError, 0, "IdempotencyKeyError", kerr.Error())
	}
	if kept == nil {
		return b, nil
	}
	if err := s.commit(work, &c); err != nil {
		return nil, err
	}
	return kept, nil
}

// indexOfDDBRecord finds the record of b that an itemIdentifier names by
// what its data says: the SequenceNumber of a DynamoDB Streams record
// that an embedded stream holds, which is not the record's Sequence
// there, or its eventID. -1 if none does.
func indexOfDDBRecord(b []idem.Record, id string) int {
	for i := range b {
		var rec struct {
			EventID  string `json:"eventID"`
			Dynamodb struct {
				SequenceNumber string `json:"SequenceNumber"`
			} `json:"dynamodb"`
		}
		if json.Unmarshal(b[i].Data, &rec) != nil {
			continue
		}
		if rec.Dynamodb.SequenceNumber == id || rec.EventID == id {
			return i
		}
	}
	return -1
}

// ddbStreamArn is a DynamoDB mapping's streamArn in its on-failure
// records (DDBStreamBatchInfo): the DynamoDB stream's ARN that its first
// record names, as Lambda's, when that record is a DynamoDB Streams
// record; otherwise (a change read from Kinesis, whose converted record
// names only its table, or data that is no change) the ARN of the stream
// idem read it from, in Kinesis' form, as KinesisBatchInfo names it.
func ddbStreamArn(region string, first *idem.Record) string {
	if p, err := ddbevent.Parse(first.Data, string(first.Sequence)); err == nil && !p.Converted && p.EventSourceARN != "" {
		return p.EventSourceARN
	}
	return StreamArn(region, first.Stream)
}
