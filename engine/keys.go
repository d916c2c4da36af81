package engine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmespath/go-jmespath"

	"github.com/idem-run/idem"
)

// KeyError reports that a record's idempotency key could not be computed
// from its data. The record cannot be processed exactly-once, so it is
// discarded to the on-failure destination at once: retrying cannot help.
type KeyError struct {
	Stream, Shard string
	Sequence      idem.Sequence
	Reason        string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("record %s/%s/%s: idempotency key: %s", e.Stream, e.Shard, e.Sequence, e.Reason)
}

// keyer computes idempotency keys: the record identity by default, the
// identity of the S3 event its data names for a mapping that sends
// S3Events (s3format.go), or a JMESPath expression over the data (over the
// DynamoDBEventRecord it converts to for a mapping that sends
// DynamoDBEvents: ddbformat.go).
type keyer struct {
	scope string
	expr  *jmespath.JMESPath // nil: the record's identity, or its S3 event's
	// path is expr when it is a plain path of fields and indexes, found
	// by scanning the data rather than decoding it (keypath.go).
	path keyPath
	// s3 is set for a mapping that sends S3Events: a record's data must
	// be an S3 event notification, and without expr its key is the
	// notification's identity.
	s3 bool
	// ddb is set for a mapping that sends DynamoDBEvents: a record's data
	// must be a DynamoDB change, and expr reads its converted record.
	ddb bool
}

func newKeyer(scope, expression string, format idem.EventFormat) (*keyer, error) {
	k := &keyer{scope: scope, s3: format == idem.EventFormatS3, ddb: format == idem.EventFormatDynamoDB}
	if expression != "" {
		e, err := jmespath.Compile(expression)
		if err != nil {
			return nil, fmt.Errorf("idempotency.key %q: %w", expression, err)
		}
		k.expr = e
		k.path, _ = compileKeyPath(expression)
	}
	return k, nil
}

// PayloadKeyed reports whether m's records are keyed by their payload
// (idempotency.key, or an S3 event's identity), each recorded by a
// completion mark of its own, rather than by their place in the stream:
// stores that bound the items of one write (store.TxLimiter) bound such a
// mapping's batchSize. The engine's keyer decides it; configuration checks
// ask here rather than repeat the rule.
func (m Mapping) PayloadKeyed() bool {
	k, err := newKeyer(m.Scope, m.KeyExpression, m.EventFormat)
	return err == nil && !k.byIdentity()
}

// byIdentity reports whether keys are the record identity, recorded as
// progress rather than marks. An S3 event's identity is a payload key: the
// same notification published twice is two records with one key.
func (k *keyer) byIdentity() bool { return k.expr == nil && !k.s3 }

// identities sets the IdempotencyKey of every record to its identity,
// "stream/shardId/sequence", all in one allocation: a window of ten
// thousand records would otherwise make ten thousand small strings. The
// records of a window share their stream and shard, so the prefix is
// written from the first.
func identities(recs []idem.Record) {
	if len(recs) == 0 {
		return
	}
	prefix := recs[0].Stream + "/" + recs[0].ShardID + "/"
	n := 0
	for i := range recs {
		r := &recs[i]
		if r.Stream != recs[0].Stream || r.ShardID != recs[0].ShardID {
			n += len(r.Stream) + len(r.ShardID) + 2 - len(prefix)
		}
		n += len(prefix) + len(r.Sequence)
	}
	var b strings.Builder
	b.Grow(n)
	for i := range recs {
		r := &recs[i]
		if r.Stream == recs[0].Stream && r.ShardID == recs[0].ShardID {
			b.WriteString(prefix)
		} else {
			b.WriteString(r.Stream)
			b.WriteByte('/')
			b.WriteString(r.ShardID)
			b.WriteByte('/')
		}
		b.WriteString(string(r.Sequence))
	}
	all, at := b.String(), 0
	for i := range recs {
		r := &recs[i]
		n := len(r.Stream) + len(r.ShardID) + len(r.Sequence) + 2
		r.IdempotencyKey = all[at : at+n]
		at += n
	}
}

// key sets r.IdempotencyKey.
func (k *keyer) key(r *idem.Record) error {
	if k.s3 {
		return k.s3Key(r)
	}
	if k.ddb {
		return k.ddbKey(r)
	}
	if k.expr == nil {
		r.IdempotencyKey = r.Stream + "/" + r.ShardID + "/" + string(r.Sequence)
		return nil
	}
	return k.exprKey(r)
}

// keyError is the KeyError of r.
func keyError(r *idem.Record, reason string) error {
	return &KeyError{Stream: r.Stream, Shard: r.ShardID, Sequence: r.Sequence, Reason: reason}
}

// exprKey sets r.IdempotencyKey to the value of the key expression over
// r's data.
func (k *keyer) exprKey(r *idem.Record) error { return k.exprKeyOf(r, r.Data) }

// exprKeyOf sets r.IdempotencyKey to the value of the key expression over
// data, r's or what it converts to.
func (k *keyer) exprKeyOf(r *idem.Record, data []byte) error {
	if k.path != nil {
		if key, ok := k.path.key(data); ok {
			r.IdempotencyKey = key
			return nil
		}
	}
	key, reason := k.evalKey(data)
	if reason != "" {
		return keyError(r, reason)
	}
	r.IdempotencyKey = key
	return nil
}

// evalKey evaluates the key expression over data decoded whole, and
// returns the key or why there is none.
func (k *keyer) evalKey(data []byte) (key, reason string) {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", "data is not JSON: " + err.Error()
	}
	v, err := k.expr.Search(doc)
	if err != nil {
		return "", err.Error()
	}
	switch v := v.(type) {
	case nil:
		return "", "expression resolves to nothing"
	case string:
		if v == "" {
			return "", "expression resolves to an empty string"
		}
		return v, ""
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), ""
	case bool:
		return strconv.FormatBool(v), ""
	default:
		b, _ := json.Marshal(v)
		return string(b), ""
	}
}
