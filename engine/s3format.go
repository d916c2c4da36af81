package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pattern"
	"github.com/idem-run/idem/internal/s3event"
)

// A mapping with idem.EventFormatS3 reads a stream whose records are the S3
// event notifications an S3-compatible store publishes to a broker (one
// {"Records":[…]} document each, usually of one record), and sends its
// function S3Events. Stores publish a notification at least once, so by
// default a record's idempotency key is the identity of the event it
// carries (s3event.Record.Key), the key idem's S3 webhook gives it too: a
// notification published twice, two stream records, runs once. Those keys
// are payload keys, kept as completion marks, not the record's place in
// its stream.
//
// A test notification (s3:TestEvent, which versitygw publishes when it
// starts) carries no event: it is filtered out, counted and checkpointed
// like a record no filter selects. A record that is not a notification
// cannot be keyed nor sent: it goes to the on-failure destination at once
// (a KeyError naming the field that is wrong).

// s3Key sets r.IdempotencyKey for a mapping that sends S3Events: the key
// expression's value over the notification when the mapping has one, else
// the notification's identity (s3NotificationKey). Data that is not a
// notification is a KeyError.
func (k *keyer) s3Key(r *idem.Record) error {
	n, err := s3event.Parse(r.Data)
	if err != nil {
		return keyError(r, err.Error())
	}
	if n.Test {
		// The filters drop test notifications before keys are computed.
		return keyError(r, "a test notification ("+s3event.TestEventName+") carries no event")
	}
	if k.expr != nil {
		return k.exprKey(r)
	}
	r.IdempotencyKey = s3NotificationKey(n.Records)
	return nil
}

// s3NotificationKey is the identity of a notification: its record's key,
// or for several records their keys joined by newlines (which no key
// holds), replaced by their SHA-256 when longer than s3event.MaxKeyBytes.
// The same notification published twice has one key; a notification that
// batches events differently from another has its own.
func s3NotificationKey(recs []s3event.Record) string {
	if len(recs) == 1 {
		return recs[0].Key()
	}
	keys := make([]string, len(recs))
	for i := range recs {
		keys[i] = recs[i].Key()
	}
	key := strings.Join(keys, "\n")
	if len(key) <= s3event.MaxKeyBytes {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// rejectsS3 is filterSet.rejects for a mapping that sends S3Events: a test
// notification is always rejected, and the patterns match the
// notification document itself ({"Records": {"eventName": [{"prefix":
// "ObjectCreated:"}]}}), a list of records matching when one record does.
// Data that is not a JSON object matches only patterns that do not look
// into it (the keyer then discards it).
func (f *filterSet) rejectsS3(r *idem.Record) bool {
	if isS3Test(r.Data) {
		return true
	}
	if len(f.patterns) == 0 {
		return false
	}
	v, _ := pattern.Decode(r.Data)
	doc, ok := v.(map[string]any)
	if !ok {
		doc = map[string]any{}
	}
	for _, p := range f.patterns {
		if p.Match(doc) {
			return false
		}
	}
	return true
}

// isS3Test reports whether data is a test notification, as s3event.Parse
// tells it. Only the Event field is decoded first, so that a notification
// of events, the usual record, is not parsed twice in full.
func isS3Test(data []byte) bool {
	var head struct {
		Event *string `json:"Event"`
	}
	if json.Unmarshal(data, &head) != nil || head.Event == nil || *head.Event != s3event.TestEventName {
		return false
	}
	n, err := s3event.Parse(data)
	return err == nil && n.Test
}
