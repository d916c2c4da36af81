// Package s3event reads S3 event notifications, the {"Records": [...]}
// documents that Amazon S3 and S3-compatible stores (MinIO, Ceph RGW,
// versitygw, SeaweedFS) send to a webhook or publish to a broker, and
// names each record's event by its identity.
//
// idem runs a function once per notification record, as S3 runs Lambda,
// with an S3Event holding that record. Stores deliver a notification at
// least once: a webhook retried after a timeout, a store restarted with its
// queue, a broker's redelivery. The identity (Record.Key) is what makes a
// redelivery one run: it names the event, not the request or the message
// that carried it, so the same notification delivered twice has one key,
// and two uploads of one object key (even with the same content) have two.
package s3event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TestEventName is the Event of the test notification that S3 (and
// versitygw, at start) sends when notifications are configured. It carries
// no record and runs nothing.
const TestEventName = "s3:TestEvent"

// MaxKeyBytes bounds a Record's Key: the idempotency key limit of idem's
// engine and Invoke API. A key that would be longer names the object by
// the SHA-256 of its key instead.
const MaxKeyBytes = 1024

// Notification is one decoded notification document.
type Notification struct {
	// Test is set for a test notification (Event "s3:TestEvent"), which
	// has no Records.
	Test bool
	// Records are the notification's event records, in order.
	Records []Record
}

// Record is one event record of a notification.
type Record struct {
	// Raw is the record as sent, compacted: the function gets it verbatim,
	// so fields this package does not read (userIdentity,
	// responseElements, a store's own additions) reach it unchanged. One
	// exception keeps events.S3Event of aws-lambda-go decoding it: a
	// glacierEventData without a valid restoration expiry time (versitygw
	// sends an empty one with every event; S3 sends the member only for
	// restore events) is left out.
	Raw json.RawMessage
	// EventName is the event's type, such as "ObjectCreated:Put" (MinIO
	// and Ceph prefix it with "s3:").
	EventName string
	// EventTime is the event's time as the store wrote it.
	EventTime string
	// Bucket and Object name the object.
	Bucket, Object string
	// VersionID is the object version's id; "" when the bucket is not
	// versioned (the store sends null, "" or nothing).
	VersionID string
	// ETag is the object's entity tag; "" when absent (deletions).
	ETag string
	// Sequencer orders the events of one object key. S3's is unique per
	// key over time; versitygw's restarts from 1 when it restarts.
	Sequencer string
}

// Error describes a document that is not an S3 event notification. Field
// names the offending field as a path (Records[2].s3.object.key), "" for
// the document as a whole.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "not an S3 event notification: " + e.Reason
	}
	return "not an S3 event notification: " + e.Field + ": " + e.Reason
}

// wire is the part of a record this package reads.
type wire struct {
	EventName *string `json:"eventName"`
	EventTime *string `json:"eventTime"`
	S3        *struct {
		Bucket *struct {
			Name *string `json:"name"`
		} `json:"bucket"`
		Object *struct {
			Key       *string `json:"key"`
			ETag      *string `json:"eTag"`
			VersionID *string `json:"versionId"`
			Sequencer *string `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
	GlacierEventData *struct {
		RestoreEventData *struct {
			LifecycleRestorationExpiryTime *string `json:"lifecycleRestorationExpiryTime"`
		} `json:"restoreEventData"`
	} `json:"glacierEventData"`
}

// placeholderGlacier reports whether w carries a glacierEventData that only
// holds empty values: S3 sends the member only for restore events, with
// their expiry time, and aws-lambda-go's events.S3Event fails on an empty
// time ("parsing time \"\""), which versitygw sends with every event.
func (w *wire) placeholderGlacier() bool {
	g := w.GlacierEventData
	if g == nil {
		return false
	}
	if g.RestoreEventData == nil || g.RestoreEventData.LifecycleRestorationExpiryTime == nil {
		return true
	}
	_, err := time.Parse(time.RFC3339, *g.RestoreEventData.LifecycleRestorationExpiryTime)
	return err != nil
}

// Parse decodes a notification document: a test notification, or an
// object whose Records is a non-empty list of event records, each with
// eventName, eventTime, s3.bucket.name and s3.object.key. Other top-level
// fields (MinIO adds EventName and Key) are ignored. The error, an *Error,
// names the first field that is wrong.
func Parse(body []byte) (Notification, error) {
	var doc struct {
		Event   *string           `json:"Event"`
		Records []json.RawMessage `json:"Records"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(&doc); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return Notification{}, &Error{Field: ute.Field, Reason: "is a JSON " + ute.Value + ", not " + jsonKind(ute.Type.Kind().String())}
		}
		return Notification{}, &Error{Reason: "the body is not a JSON object: " + err.Error()}
	}
	if d.More() {
		return Notification{}, &Error{Reason: "the body holds more than one JSON value"}
	}
	if doc.Event != nil && *doc.Event == TestEventName {
		return Notification{Test: true}, nil
	}
	if doc.Records == nil {
		return Notification{}, &Error{Field: "Records", Reason: "missing (a notification is {\"Records\": [...]}, a test notification has \"Event\": \"s3:TestEvent\")"}
	}
	if len(doc.Records) == 0 {
		return Notification{}, &Error{Field: "Records", Reason: "is empty"}
	}
	n := Notification{Records: make([]Record, len(doc.Records))}
	for i, raw := range doc.Records {
		r, err := parseRecord(raw)
		if err != nil {
			err.Field = fmt.Sprintf("Records[%d]%s", i, err.Field)
			return Notification{}, err
		}
		n.Records[i] = r
	}
	return n, nil
}

// ParseRecord decodes one event record, such as one element of an
// S3Event's Records.
func ParseRecord(raw []byte) (Record, error) {
	r, err := parseRecord(raw)
	if err != nil {
		err.Field = strings.TrimPrefix(err.Field, ".")
		return Record{}, err
	}
	return r, nil
}

func parseRecord(raw []byte) (Record, *Error) {
	var w wire
	if err := json.Unmarshal(raw, &w); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			field := ""
			if ute.Field != "" {
				field = "." + ute.Field
			}
			return Record{}, &Error{Field: field, Reason: "is a JSON " + ute.Value + ", not " + jsonKind(ute.Type.Kind().String())}
		}
		return Record{}, &Error{Reason: "is not a JSON object: " + err.Error()}
	}
	need := func(field string, v *string) *Error {
		if v == nil {
			return &Error{Field: "." + field, Reason: "missing"}
		}
		if *v == "" {
			return &Error{Field: "." + field, Reason: "is empty"}
		}
		return nil
	}
	if err := need("eventName", w.EventName); err != nil {
		return Record{}, err
	}
	if err := need("eventTime", w.EventTime); err != nil {
		return Record{}, err
	}
	if w.S3 == nil {
		return Record{}, &Error{Field: ".s3", Reason: "missing"}
	}
	if w.S3.Bucket == nil {
		return Record{}, &Error{Field: ".s3.bucket", Reason: "missing"}
	}
	if err := need("s3.bucket.name", w.S3.Bucket.Name); err != nil {
		return Record{}, err
	}
	if w.S3.Object == nil {
		return Record{}, &Error{Field: ".s3.object", Reason: "missing"}
	}
	if err := need("s3.object.key", w.S3.Object.Key); err != nil {
		return Record{}, err
	}
	if w.placeholderGlacier() {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(raw, &members); err == nil {
			delete(members, "glacierEventData")
			raw, _ = json.Marshal(members)
		}
	}
	var compact bytes.Buffer
	compact.Grow(len(raw))
	_ = json.Compact(&compact, raw) // raw decoded: it is valid JSON
	o := w.S3.Object
	return Record{
		Raw:       compact.Bytes(),
		EventName: *w.EventName,
		EventTime: *w.EventTime,
		Bucket:    *w.S3.Bucket.Name,
		Object:    *o.Key,
		VersionID: deref(o.VersionID),
		ETag:      strings.Trim(deref(o.ETag), `"`),
		Sequencer: deref(o.Sequencer),
	}, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func jsonKind(goKind string) string {
	switch goKind {
	case "ptr", "string":
		return "a string"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	}
	return goKind
}

// Key is the record's identity, the default idempotency key of an S3
// event in idem: the event's name, time and sequencer, the object
// version's id (or, unversioned, its ETag), the bucket and the object key:
//
//	ObjectCreated:Put|2026-12-06T02:33:29.000Z|0055AED6DCD90281E5|v=3HL4kq…|photos/cat.jpg
//
// The same notification delivered twice has one key. Two uploads of one
// key differ in their time and sequencer (and version id, or ETag when the
// content changed). A store whose sequencer restarts (versitygw's, from 1)
// gives two uploads one key only if they also share the second of their
// time, their ETag and their sequence number, across its restart. The
// "s3:" prefix some stores write on event names is dropped, so that a
// store's retry keeps its key. An object key that would make the key
// longer than MaxKeyBytes is replaced by its SHA-256 (and the whole key
// by its own, should the other fields alone be that long).
func (r *Record) Key() string {
	version := "v=" + r.VersionID
	if r.VersionID == "" || r.VersionID == "null" {
		version = "e=" + r.ETag
	}
	head := strings.TrimPrefix(r.EventName, "s3:") + "|" + r.EventTime + "|" + r.Sequencer + "|" + version + "|" + r.Bucket + "/"
	if len(head)+len(r.Object) <= MaxKeyBytes {
		return head + r.Object
	}
	const hashed = len("sha256:") + 2*sha256.Size
	if len(head)+hashed <= MaxKeyBytes {
		sum := sha256.Sum256([]byte(r.Object))
		return head + "sha256:" + hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256([]byte(head + r.Object)) // a store's oversized fields
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Event returns the S3Event a function gets for r: {"Records":[r]}, as S3
// invokes Lambda with one record per invocation.
func (r *Record) Event() []byte {
	return AppendEvent(nil, r.Raw)
}

// AppendEvent appends to dst the S3Event {"Records":[…]} of the given
// compacted records.
func AppendEvent(dst []byte, records ...json.RawMessage) []byte {
	dst = append(dst, `{"Records":[`...)
	for i, r := range records {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, r...)
	}
	return append(dst, "]}"...)
}
