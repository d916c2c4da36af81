package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/s3event"
)

func s3Rec(key, sequencer string) string {
	return `{"eventName":"ObjectCreated:Put","eventTime":"2026-12-06T02:33:29.000Z","s3":{"bucket":{"name":"b"},"object":{"key":"` +
		key + `","eTag":"e","sequencer":"` + sequencer + `"}}}`
}

// TestS3Keys: an s3 mapping's key is its notification's identity (one
// record's key, several records' keys joined, hashed past the limit),
// never the record's place in its stream; data that is not a notification
// is a KeyError naming the field; an expression is evaluated over the
// notification, which must still be one.
func TestS3Keys(t *testing.T) {
	k, err := newKeyer("scope", "", idem.EventFormatS3)
	if err != nil {
		t.Fatal(err)
	}
	if k.byIdentity() {
		t.Fatal("s3 keys are recorded as progress: a duplicate published as another record would run again")
	}
	key := func(k *keyer, data string) (string, error) {
		r := idem.Record{Stream: "s", ShardID: "all", Sequence: idem.SequenceOf(7), Data: []byte(data)}
		err := k.key(&r)
		return r.IdempotencyKey, err
	}
	one, err := key(k, `{"Records":[`+s3Rec("a.jpg", "1")+`]}`)
	if err != nil || one != "ObjectCreated:Put|2026-12-06T02:33:29.000Z|1|e=e|b/a.jpg" {
		t.Errorf("one record: %q, %v", one, err)
	}
	two, err := key(k, `{"Records":[`+s3Rec("a.jpg", "1")+`,`+s3Rec("c.jpg", "2")+`]}`)
	if err != nil || two != one+"\nObjectCreated:Put|2026-12-06T02:33:29.000Z|2|e=e|b/c.jpg" {
		t.Errorf("two records: %q, %v", two, err)
	}
	long := strings.Repeat("x", 600)
	hashed, err := key(k, `{"Records":[`+s3Rec(long, "1")+`,`+s3Rec(long, "2")+`]}`)
	if err != nil || len(hashed) > s3event.MaxKeyBytes || !strings.HasPrefix(hashed, "sha256:") {
		t.Errorf("long records: %q, %v", hashed, err)
	}
	for data, field := range map[string]string{
		`{"hello":"world"}`: "Records: missing",
		`{"Records":[` + s3Rec("a.jpg", "1") + `,{"eventName":"x","eventTime":"t","s3":{"bucket":{"name":"b"}}}]}`: "Records[1].s3.object: missing",
		`not json`: "the body is not a JSON object",
	} {
		_, err := key(k, data)
		var ke *KeyError
		if !errors.As(err, &ke) || !strings.Contains(ke.Reason, "not an S3 event notification: "+field) {
			t.Errorf("%s: %v, want a KeyError with %q", data, err, field)
		}
	}

	byExpr, err := newKeyer("scope", "Records[0].s3.object.key", idem.EventFormatS3)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := key(byExpr, `{"Records":[`+s3Rec("a.jpg", "1")+`]}`); err != nil || got != "a.jpg" {
		t.Errorf("expression: %q, %v", got, err)
	}
	if _, err := key(byExpr, `{"Records":[{"s3":{"object":{"key":"a.jpg"}}}]}`); err == nil || !strings.Contains(err.Error(), "Records[0].eventName: missing") {
		t.Errorf("expression over a document that is not a notification: %v", err)
	}
}

// TestS3TestNotificationFiltered: an s3 mapping's filters reject test
// notifications, with or without patterns, and only them.
func TestS3TestNotificationFiltered(t *testing.T) {
	for _, patterns := range [][]string{nil, {`{"Records": {"eventName": [{"exists": true}]}}`}} {
		f, err := newFilterSet(idem.EventFormatS3, patterns)
		if err != nil {
			t.Fatal(err)
		}
		for data, want := range map[string]bool{
			`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"b"}`: true,
			`{"Records":[` + s3Rec("a.jpg", "1") + `]}`:                                                     false,
			`{"Event":"s3:ObjectCreated:Put"}`:                                                              len(patterns) > 0,
			`not json`:                                                                                      len(patterns) > 0,
		} {
			if got := f.rejects(&idem.Record{Data: []byte(data)}); got != want {
				t.Errorf("patterns %v: rejects(%s) = %v, want %v", patterns, data, got, want)
			}
		}
	}
}
