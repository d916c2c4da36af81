// Package ddbevent turns the data of a stream record that carries one
// DynamoDB item change into the record of Lambda's DynamoDBEvent that a
// function gets for it.
//
// Two shapes of change reach idem's streams:
//
//   - a DynamoDB Streams record, as the DynamoDB source writes each
//     idem.Record's data (eventID, eventName, eventVersion, eventSource,
//     awsRegion, dynamodb, eventSourceARN, userIdentity): it already is a
//     DynamoDBEventRecord, and is kept as it is, compacted;
//   - the change Kinesis Data Streams for DynamoDB writes into a Kinesis
//     data stream (awsRegion, eventID, eventName, userIdentity,
//     recordFormat, tableName, dynamodb without SequenceNumber or
//     StreamViewType, ApproximateCreationDateTime in epoch milliseconds, or
//     microseconds with ApproximateCreationDateTimePrecision MICROSECOND,
//     eventSource): it is converted.
//
// Anything else is an *Error naming the field that is wrong. Every value a
// record must hold for aws-lambda-go's events.DynamoDBEvent to decode it is
// checked (strings, numbers, typed attribute values), so that a record this
// package accepts never fails a function's decoding of its whole batch.
package ddbevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// EventSource is a DynamoDBEventRecord's eventSource.
const EventSource = "aws:dynamodb"

// EventVersion is the eventVersion of a converted record: DynamoDB Streams'
// current one.
const EventVersion = "1.1"

// Account is the account in the ARN of a converted record, which its
// Kinesis record does not name.
const Account = "000000000000"

// Stream view types, as a converted record's StreamViewType infers them
// from the images it holds.
const (
	NewAndOldImages = "NEW_AND_OLD_IMAGES"
	NewImage        = "NEW_IMAGE"
	OldImage        = "OLD_IMAGE"
	KeysOnly        = "KEYS_ONLY"
)

// Error describes data that is not a DynamoDB change. Field names the
// offending field as a path (dynamodb.NewImage.status), "" for the data as
// a whole.
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "not a DynamoDB stream record: " + e.Reason
	}
	return "not a DynamoDB stream record: " + e.Field + ": " + e.Reason
}

// Parsed is a record Parse read.
type Parsed struct {
	// Record is the DynamoDBEventRecord, compacted: for a DynamoDB Streams
	// record written compact already (as the DynamoDB source writes
	// them), the data Parse was given itself, not a copy.
	Record json.RawMessage
	// Converted is set for a change Kinesis Data Streams for DynamoDB
	// wrote: Record was built from it.
	Converted bool
	// EventID, SequenceNumber and EventSourceARN are the record's (a
	// converted record's SequenceNumber is the sequence Parse was given,
	// its eventSourceARN the table's ARN).
	EventID, SequenceNumber, EventSourceARN string
}

// Record returns the DynamoDBEventRecord, compacted, of a stream record's
// data: the data itself for a DynamoDB Streams record, and for a change
// Kinesis Data Streams for DynamoDB wrote, the record it converts to, with
// sequence (the Kinesis record's sequence number) as its SequenceNumber.
// The error is an *Error.
func Record(data []byte, sequence string) (json.RawMessage, error) {
	p, err := Parse(data, sequence)
	if err != nil {
		return nil, err
	}
	return p.Record, nil
}

// Append appends Record(data, sequence) to dst; on error dst is returned
// unchanged.
func Append(dst, data []byte, sequence string) ([]byte, error) {
	p, err := Parse(data, sequence)
	if err != nil {
		return dst, err
	}
	return append(dst, p.Record...), nil
}

// wire is a record of either shape. Its fields decode as aws-lambda-go's
// events.DynamoDBEventRecord decodes them, with encoding/json: names are
// matched without regard to case, and a member given twice is decoded
// twice (into one struct, or one map, merged), every time checked, so
// that what passes here decodes there.
type wire struct {
	AWSRegion      *string      `json:"awsRegion"`
	EventID        *string      `json:"eventID"`
	EventName      *string      `json:"eventName"`
	EventVersion   *string      `json:"eventVersion"`
	EventSource    *string      `json:"eventSource"`
	EventSourceARN *string      `json:"eventSourceARN"`
	UserIdentity   userIdentity `json:"userIdentity"`
	Dynamodb       *change      `json:"dynamodb"`
	// A change Kinesis Data Streams for DynamoDB wrote has these.
	RecordFormat *string `json:"recordFormat"`
	TableName    *string `json:"tableName"`
}

// change is a record's dynamodb member.
type change struct {
	ApproximateCreationDateTime          epochTime `json:"ApproximateCreationDateTime"`
	ApproximateCreationDateTimePrecision *string   `json:"ApproximateCreationDateTimePrecision"`
	Keys                                 keysItem  `json:"Keys"`
	NewImage                             newImage  `json:"NewImage"`
	OldImage                             oldImage  `json:"OldImage"`
	SequenceNumber                       *string   `json:"SequenceNumber"`
	SizeBytes                            *int64    `json:"SizeBytes"`
	StreamViewType                       *string   `json:"StreamViewType"`
}

// epochTime is ApproximateCreationDateTime as given (nil: null or absent),
// and whether every time it was given it was a number, as
// events.SecondsEpochTime decodes one (a DynamoDB Streams record's
// seconds), and a whole number (Kinesis' milliseconds).
type epochTime struct {
	raw              json.RawMessage
	notNum, notWhole bool
}

func (t *epochTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.raw = nil
		return nil
	}
	t.raw = bytes.Clone(b)
	var f float64
	if json.Unmarshal(b, &f) != nil {
		t.notNum = true
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err != nil || n < 0 {
		t.notWhole = true
	}
	return nil
}

// item is Keys or an image as given (nil: null or absent), each time
// checked (checkItem).
type item struct{ raw json.RawMessage }

func (it *item) set(field string, b []byte) error {
	if string(b) == "null" {
		it.raw = nil
		return nil
	}
	if !validItem(b) { // the fast check declines: the full one decides and says why
		if err := checkItem(field, b); err != nil {
			return err
		}
	}
	it.raw = bytes.Clone(b)
	return nil
}

type (
	keysItem struct{ item }
	newImage struct{ item }
	oldImage struct{ item }
)

func (it *keysItem) UnmarshalJSON(b []byte) error { return it.set("dynamodb.Keys", b) }
func (it *newImage) UnmarshalJSON(b []byte) error { return it.set("dynamodb.NewImage", b) }
func (it *oldImage) UnmarshalJSON(b []byte) error { return it.set("dynamodb.OldImage", b) }

// userIdentity is a userIdentity as given (nil: null or absent), each time
// checked: an object whose type and principalId are strings.
type userIdentity struct{ raw json.RawMessage }

func (u *userIdentity) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		u.raw = nil
		return nil
	}
	var id struct {
		Type        *string `json:"type"`
		PrincipalID *string `json:"principalId"`
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return decodeError("userIdentity.", err)
	}
	u.raw = bytes.Clone(b)
	return nil
}

// Parse is Record, with what the record names.
func Parse(data []byte, sequence string) (Parsed, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return Parsed{}, &Error{Reason: "the data is not a JSON object"}
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return Parsed{}, e
		}
		return Parsed{}, decodeError("", err)
	}
	kinesis := w.RecordFormat != nil || w.TableName != nil
	if w.EventName == nil {
		return Parsed{}, &Error{Field: "eventName", Reason: "missing"}
	}
	switch *w.EventName {
	case "INSERT", "MODIFY", "REMOVE":
	default:
		return Parsed{}, &Error{Field: "eventName", Reason: fmt.Sprintf("%q is not INSERT, MODIFY or REMOVE", *w.EventName)}
	}
	c := w.Dynamodb
	if c == nil {
		return Parsed{}, &Error{Field: "dynamodb", Reason: "missing"}
	}
	if !kinesis {
		if c.ApproximateCreationDateTime.notNum {
			return Parsed{}, &Error{Field: "dynamodb.ApproximateCreationDateTime", Reason: "is not a number (epoch seconds)"}
		}
		rec := json.RawMessage(data)
		if !compact(data) {
			var buf bytes.Buffer
			buf.Grow(len(data))
			if err := json.Compact(&buf, data); err != nil {
				return Parsed{}, &Error{Reason: err.Error()} // cannot happen: data decoded
			}
			rec = buf.Bytes()
		}
		return Parsed{Record: rec, EventID: deref(w.EventID), SequenceNumber: deref(c.SequenceNumber),
			EventSourceARN: deref(w.EventSourceARN)}, nil
	}
	return convert(&w, c, sequence)
}

// convert builds the DynamoDBEventRecord of a change Kinesis Data Streams
// for DynamoDB wrote.
func convert(w *wire, c *change, sequence string) (Parsed, error) {
	if w.RecordFormat != nil && *w.RecordFormat != "application/json" {
		return Parsed{}, &Error{Field: "recordFormat", Reason: fmt.Sprintf("%q is not application/json", *w.RecordFormat)}
	}
	if w.TableName == nil || *w.TableName == "" {
		return Parsed{}, &Error{Field: "tableName", Reason: missingOrEmpty(w.TableName)}
	}
	if w.AWSRegion == nil || *w.AWSRegion == "" {
		return Parsed{}, &Error{Field: "awsRegion", Reason: missingOrEmpty(w.AWSRegion)}
	}
	type outChange struct {
		ApproximateCreationDateTime json.Number     `json:"ApproximateCreationDateTime,omitempty"`
		Keys                        json.RawMessage `json:"Keys,omitempty"`
		NewImage                    json.RawMessage `json:"NewImage,omitempty"`
		OldImage                    json.RawMessage `json:"OldImage,omitempty"`
		SequenceNumber              string          `json:"SequenceNumber"`
		SizeBytes                   int64           `json:"SizeBytes"`
		StreamViewType              string          `json:"StreamViewType"`
	}
	type outRecord struct {
		EventID        string          `json:"eventID"`
		EventName      string          `json:"eventName"`
		EventVersion   string          `json:"eventVersion"`
		EventSource    string          `json:"eventSource"`
		AWSRegion      string          `json:"awsRegion"`
		Dynamodb       outChange       `json:"dynamodb"`
		EventSourceARN string          `json:"eventSourceARN"`
		UserIdentity   json.RawMessage `json:"userIdentity,omitempty"`
	}
	out := outRecord{
		EventID:        deref(w.EventID),
		EventName:      *w.EventName,
		EventVersion:   EventVersion,
		EventSource:    EventSource,
		AWSRegion:      *w.AWSRegion,
		EventSourceARN: TableARN(*w.AWSRegion, *w.TableName),
	}
	out.UserIdentity = w.UserIdentity.raw
	d := &out.Dynamodb
	if at := c.ApproximateCreationDateTime; at.raw != nil {
		digits := 3 // milliseconds
		if p := c.ApproximateCreationDateTimePrecision; p != nil {
			switch *p {
			case "MILLISECOND":
			case "MICROSECOND":
				digits = 6
			default:
				return Parsed{}, &Error{Field: "dynamodb.ApproximateCreationDateTimePrecision", Reason: fmt.Sprintf("%q is not MILLISECOND or MICROSECOND", *p)}
			}
		}
		n, err := strconv.ParseInt(string(at.raw), 10, 64)
		if err != nil || at.notWhole {
			return Parsed{}, &Error{Field: "dynamodb.ApproximateCreationDateTime", Reason: "is not a whole number of epoch milliseconds (or microseconds)"}
		}
		d.ApproximateCreationDateTime = epochSeconds(n, digits)
	}
	d.Keys, d.NewImage, d.OldImage = c.Keys.raw, c.NewImage.raw, c.OldImage.raw
	hasNew, hasOld := d.NewImage != nil, d.OldImage != nil
	d.SequenceNumber = sequence
	if c.SizeBytes != nil {
		d.SizeBytes = *c.SizeBytes
	}
	switch {
	case hasNew && hasOld:
		d.StreamViewType = NewAndOldImages
	case hasNew:
		d.StreamViewType = NewImage
	case hasOld:
		d.StreamViewType = OldImage
	default:
		d.StreamViewType = KeysOnly
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&out); err != nil {
		return Parsed{}, &Error{Reason: err.Error()} // cannot happen: every part decoded
	}
	rec := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return Parsed{Record: rec, Converted: true, EventID: out.EventID, SequenceNumber: sequence, EventSourceARN: out.EventSourceARN}, nil
}

// TableARN is the eventSourceARN of a converted record: its table's ARN,
// in region, under Account (a Kinesis record names no stream of DynamoDB's).
func TableARN(region, table string) string {
	return "arn:aws:dynamodb:" + region + ":" + Account + ":table/" + table
}

// epochSeconds writes n, in units of 10^-digits seconds, as seconds: a
// whole number when it is one, else with its fraction, trailing zeros
// dropped (events.SecondsEpochTime reads either).
func epochSeconds(n int64, digits int) json.Number {
	unit := int64(1)
	for range digits {
		unit *= 10
	}
	s := strconv.FormatInt(n/unit, 10)
	frac := n % unit
	if frac == 0 {
		return json.Number(s)
	}
	f := strconv.FormatInt(frac, 10)
	f = strings.Repeat("0", digits-len(f)) + f
	return json.Number(s + "." + strings.TrimRight(f, "0"))
}

// checkItem checks Keys or an image, not null: an object of typed
// attribute values. Each member is checked as it comes, as
// events.DynamoDBEvent decodes them, a name given twice included.
func checkItem(field string, b []byte) error {
	bad := &Error{Field: field, Reason: "is not a JSON object of attribute values"}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return bad
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad
		}
		name, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return &Error{Field: field + "." + name, Reason: "is not JSON: " + err.Error()}
		}
		if err := checkValue(field+"."+name, v); err != nil {
			return err
		}
	}
	return nil
}

// checkValue checks one typed attribute value, {"<type>": value}, as
// events.DynamoDBAttributeValue decodes it, but for NULL, which must be
// true as DynamoDB writes it.
func checkValue(field string, v any) error {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return &Error{Field: field, Reason: `is not a typed attribute value such as {"S": "text"}`}
	}
	for typ, val := range m {
		at := field + "." + typ
		bad := func(want string) error { return &Error{Field: at, Reason: "is not " + want} }
		switch typ {
		case "S", "N":
			if _, ok := val.(string); !ok {
				return bad("a string")
			}
		case "B":
			if !isBase64(val) {
				return bad("a base64 string")
			}
		case "BOOL":
			if _, ok := val.(bool); !ok {
				return bad("a boolean")
			}
		case "NULL":
			if b, ok := val.(bool); !ok || !b {
				return bad("true")
			}
		case "SS", "NS", "BS":
			list, ok := val.([]any)
			if !ok {
				return bad("a list")
			}
			for i, e := range list {
				if _, ok := e.(string); !ok || (typ == "BS" && !isBase64(e)) {
					if typ == "BS" {
						return &Error{Field: fmt.Sprintf("%s[%d]", at, i), Reason: "is not a base64 string"}
					}
					return &Error{Field: fmt.Sprintf("%s[%d]", at, i), Reason: "is not a string"}
				}
			}
		case "L":
			list, ok := val.([]any)
			if !ok {
				return bad("a list")
			}
			for i, e := range list {
				if err := checkValue(fmt.Sprintf("%s[%d]", at, i), e); err != nil {
					return err
				}
			}
		case "M":
			inner, ok := val.(map[string]any)
			if !ok {
				return bad("an object")
			}
			for _, name := range sortedKeys(inner) {
				if err := checkValue(at+"."+name, inner[name]); err != nil {
					return err
				}
			}
		default:
			return &Error{Field: field, Reason: fmt.Sprintf("type %q is not one of S, N, B, BOOL, NULL, SS, NS, BS, L, M", typ)}
		}
	}
	return nil
}

func isBase64(v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(s)
	return err == nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeError is the *Error of a decoding error of a member under prefix.
func decodeError(prefix string, err error) *Error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		field := prefix + ute.Field
		if ute.Field == "" {
			field = strings.TrimSuffix(prefix, ".")
		}
		return &Error{Field: field, Reason: "is a JSON " + ute.Value + ", not " + kind(ute.Type)}
	}
	if prefix == "" {
		return &Error{Reason: "the data is not JSON: " + err.Error()}
	}
	return &Error{Field: strings.TrimSuffix(prefix, "."), Reason: "is not JSON: " + err.Error()}
}

// kind names a Go type as JSON does.
func kind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int64:
		return "an integer"
	case reflect.Float64:
		return "a number"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func missingOrEmpty(s *string) string {
	if s == nil {
		return "missing"
	}
	return "is empty"
}
