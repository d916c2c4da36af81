package ddbevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// streamsRecord is a DynamoDB Streams record as the DynamoDB source writes
// an idem.Record's data, indented.
const streamsRecord = `{
  "eventID": "c4ca4238a0b923820dcc509a6f75849b",
  "eventName": "MODIFY",
  "eventVersion": "1.1",
  "eventSource": "aws:dynamodb",
  "awsRegion": "eu-west-1",
  "dynamodb": {
    "ApproximateCreationDateTime": 1767225600,
    "Keys": {"id": {"S": "order-1"}},
    "NewImage": {"id": {"S": "order-1"}, "status": {"S": "paid"}, "total": {"N": "42.5"}, "tags": {"SS": ["a", "b"]}},
    "OldImage": {"id": {"S": "order-1"}, "status": {"S": "new"}, "total": {"N": "42.5"}},
    "SequenceNumber": "111100000000000000000001",
    "SizeBytes": 71,
    "StreamViewType": "NEW_AND_OLD_IMAGES"
  },
  "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
}`

// kinesisRecord is a change as Kinesis Data Streams for DynamoDB writes it
// (internal/testsvc/ddbstreams' field order): no SequenceNumber or
// StreamViewType, ApproximateCreationDateTime in milliseconds.
const kinesisRecord = `{"awsRegion":"eu-west-1","eventID":"9a3f1c52-1d4e-4f7e-8a55-2f1d6c9e0b11","eventName":"INSERT",` +
	`"userIdentity":null,"recordFormat":"application/json","tableName":"orders",` +
	`"dynamodb":{"ApproximateCreationDateTime":1767225600123,"Keys":{"id":{"S":"order-2"}},` +
	`"NewImage":{"id":{"S":"order-2"},"status":{"S":"paid"},"lines":{"L":[{"M":{"sku":{"S":"x<1>"},"qty":{"N":"2"}}}]},"gift":{"BOOL":true},"note":{"NULL":true},"blob":{"B":"AQID"}},` +
	`"SizeBytes":58},"eventSource":"aws:dynamodb"}`

const kinesisSeq = "49654000000000000000000000000000000000000000000000000002"

func decodeEvent(t *testing.T, recs ...json.RawMessage) events.DynamoDBEvent {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`{"Records":[`)
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(r)
	}
	b.WriteString(`]}`)
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(b.Bytes(), &ev); err != nil {
		t.Fatalf("events.DynamoDBEvent: %v: %s", err, b.Bytes())
	}
	return ev
}

// TestStreamsRecord: a DynamoDB Streams record is its own
// DynamoDBEventRecord, compacted; the sequence given is not used.
func TestStreamsRecord(t *testing.T) {
	p, err := Parse([]byte(streamsRecord), "7")
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, []byte(streamsRecord)); err != nil {
		t.Fatal(err)
	}
	if string(p.Record) != want.String() || p.Converted {
		t.Fatalf("Record = %s (converted %v), want the record compacted", p.Record, p.Converted)
	}
	if p.EventID != "c4ca4238a0b923820dcc509a6f75849b" || p.SequenceNumber != "111100000000000000000001" ||
		!strings.HasSuffix(p.EventSourceARN, "/stream/2026-01-01T00:00:00.000") {
		t.Errorf("Parsed %+v", p)
	}
	ev := decodeEvent(t, p.Record)
	r := ev.Records[0]
	if r.EventName != "MODIFY" || r.Change.NewImage["status"].String() != "paid" || r.Change.OldImage["status"].String() != "new" ||
		r.Change.Keys["id"].String() != "order-1" || r.Change.SequenceNumber != "111100000000000000000001" ||
		r.Change.StreamViewType != "NEW_AND_OLD_IMAGES" || !r.Change.ApproximateCreationDateTime.Equal(time.Unix(1767225600, 0)) {
		t.Errorf("decoded %+v", r)
	}
}

// TestKinesisRecord: a change Kinesis Data Streams for DynamoDB wrote
// converts to the DynamoDBEventRecord Lambda sends for a DynamoDB stream:
// seconds, the Kinesis sequence as SequenceNumber, the stream view type
// its images imply, the table's ARN; converting that again changes nothing.
func TestKinesisRecord(t *testing.T) {
	p, err := Parse([]byte(kinesisRecord), kinesisSeq)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"eventID":"9a3f1c52-1d4e-4f7e-8a55-2f1d6c9e0b11","eventName":"INSERT","eventVersion":"1.1","eventSource":"aws:dynamodb","awsRegion":"eu-west-1",` +
		`"dynamodb":{"ApproximateCreationDateTime":1767225600.123,"Keys":{"id":{"S":"order-2"}},` +
		`"NewImage":{"id":{"S":"order-2"},"status":{"S":"paid"},"lines":{"L":[{"M":{"sku":{"S":"x<1>"},"qty":{"N":"2"}}}]},"gift":{"BOOL":true},"note":{"NULL":true},"blob":{"B":"AQID"}},` +
		`"SequenceNumber":"` + kinesisSeq + `","SizeBytes":58,"StreamViewType":"NEW_IMAGE"},` +
		`"eventSourceARN":"arn:aws:dynamodb:eu-west-1:000000000000:table/orders"}`
	if string(p.Record) != want {
		t.Fatalf("Record\n got %s\nwant %s", p.Record, want)
	}
	if !p.Converted || p.SequenceNumber != kinesisSeq || p.EventSourceARN != "arn:aws:dynamodb:eu-west-1:000000000000:table/orders" {
		t.Errorf("Parsed %+v", p)
	}
	again, err := Record(p.Record, "other")
	if err != nil || string(again) != want {
		t.Errorf("Record of the converted record = %s, %v", again, err)
	}
	r := decodeEvent(t, p.Record).Records[0]
	if r.Change.NewImage["status"].String() != "paid" || r.Change.Keys["id"].String() != "order-2" ||
		r.Change.NewImage["lines"].List()[0].Map()["qty"].Number() != "2" || !r.Change.NewImage["gift"].Boolean() ||
		!r.Change.NewImage["note"].IsNull() || string(r.Change.NewImage["blob"].Binary()) != "\x01\x02\x03" ||
		r.Change.SequenceNumber != kinesisSeq || r.EventSource != "aws:dynamodb" || r.UserIdentity != nil ||
		r.Change.ApproximateCreationDateTime.Sub(time.UnixMilli(1767225600123)).Abs() > time.Microsecond { // a float64 of seconds
		t.Errorf("decoded %+v", r)
	}
}

// TestKinesisRecordVariants: stream view types from the images present, a
// TTL deletion's userIdentity, microsecond precision, whole seconds.
func TestKinesisRecordVariants(t *testing.T) {
	base := func(dynamodb string) string {
		return `{"awsRegion":"us-east-1","eventID":"e","eventName":"REMOVE","userIdentity":{"type":"Service","principalId":"dynamodb.amazonaws.com"},` +
			`"recordFormat":"application/json","tableName":"t","dynamodb":` + dynamodb + `,"eventSource":"aws:dynamodb"}`
	}
	for _, c := range []struct {
		dynamodb, view string
		at             time.Time
	}{
		{`{"ApproximateCreationDateTime":1767225600000,"Keys":{"id":{"N":"1"}},"OldImage":{"id":{"N":"1"}},"SizeBytes":4}`, OldImage, time.Unix(1767225600, 0)},
		{`{"ApproximateCreationDateTime":1767225600000001,"ApproximateCreationDateTimePrecision":"MICROSECOND","Keys":{"id":{"N":"1"}},"NewImage":{"id":{"N":"1"}},"OldImage":{"id":{"N":"1"}}}`, NewAndOldImages, time.UnixMicro(1767225600000001)},
		{`{"Keys":{"id":{"N":"1"}}}`, KeysOnly, time.Time{}},
	} {
		rec, err := Record([]byte(base(c.dynamodb)), "5")
		if err != nil {
			t.Fatalf("%s: %v", c.dynamodb, err)
		}
		r := decodeEvent(t, rec).Records[0]
		if r.Change.StreamViewType != c.view || r.UserIdentity == nil || r.UserIdentity.Type != "Service" ||
			r.Change.SequenceNumber != "5" || r.EventSourceArn != "arn:aws:dynamodb:us-east-1:000000000000:table/t" {
			t.Errorf("%s: decoded %+v", rec, r)
		}
		if !c.at.IsZero() && r.Change.ApproximateCreationDateTime.Sub(c.at).Abs() > time.Microsecond {
			t.Errorf("%s: time %v, want %v", rec, r.Change.ApproximateCreationDateTime.Time, c.at)
		}
		if c.at.IsZero() && strings.Contains(string(rec), "ApproximateCreationDateTime") {
			t.Errorf("%s: a time that was not there", rec)
		}
	}
}

// TestErrors: data that is neither shape names the field that is wrong.
func TestErrors(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{`hello`, "not a DynamoDB stream record: the data is not a JSON object"},
		{`[1]`, "not a DynamoDB stream record: the data is not a JSON object"},
		{`{"eventName":"INSERT"`, "not a DynamoDB stream record: the data is not JSON: unexpected end of JSON input"},
		{`{"hello":"world"}`, "not a DynamoDB stream record: eventName: missing"},
		{`{"eventName":"PUT","dynamodb":{}}`, `not a DynamoDB stream record: eventName: "PUT" is not INSERT, MODIFY or REMOVE`},
		{`{"eventName":5,"dynamodb":{}}`, "not a DynamoDB stream record: eventName: is a JSON number, not a string"},
		{`{"eventName":"INSERT"}`, "not a DynamoDB stream record: dynamodb: missing"},
		{`{"eventName":"INSERT","dynamodb":[]}`, "not a DynamoDB stream record: dynamodb: is a JSON array, not an object"},
		{`{"eventName":"INSERT","dynamodb":{"SizeBytes":"7"}}`, "not a DynamoDB stream record: dynamodb.SizeBytes: is a JSON string, not an integer"},
		{`{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":"now"}}`, "not a DynamoDB stream record: dynamodb.ApproximateCreationDateTime: is not a number (epoch seconds)"},
		{`{"eventName":"INSERT","dynamodb":{"NewImage":{"a":{"S":1}}}}`, "not a DynamoDB stream record: dynamodb.NewImage.a.S: is not a string"},
		{`{"eventName":"INSERT","dynamodb":{"NewImage":{"a":{"BS":[1]}}}}`, "not a DynamoDB stream record: dynamodb.NewImage.a.BS[0]: is not a base64 string"},
		{`{"eventName":"INSERT","dynamodb":{"Keys":{"a":{"S":"x","N":"1"}}}}`, `not a DynamoDB stream record: dynamodb.Keys.a: is not a typed attribute value such as {"S": "text"}`},
		{`{"eventName":"INSERT","dynamodb":{"OldImage":{"a":{"M":{"b":{"L":[{"X":1}]}}}}}}`, `not a DynamoDB stream record: dynamodb.OldImage.a.M.b.L[0]: type "X" is not one of S, N, B, BOOL, NULL, SS, NS, BS, L, M`},
		{`{"eventName":"INSERT","dynamodb":{"Keys":[1]}}`, "not a DynamoDB stream record: dynamodb.Keys: is not a JSON object of attribute values"},
		{`{"eventName":"INSERT","dynamodb":{},"userIdentity":{"type":1}}`, "not a DynamoDB stream record: userIdentity.type: is a JSON number, not a string"},
		{`{"eventName":"INSERT","dynamodb":{},"tableName":"t"}`, "not a DynamoDB stream record: awsRegion: missing"},
		{`{"eventName":"INSERT","dynamodb":{},"recordFormat":"application/json","awsRegion":"r"}`, "not a DynamoDB stream record: tableName: missing"},
		{`{"eventName":"INSERT","dynamodb":{},"recordFormat":"avro","tableName":"t","awsRegion":"r"}`, `not a DynamoDB stream record: recordFormat: "avro" is not application/json`},
		{`{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1.5},"tableName":"t","awsRegion":"r"}`, "not a DynamoDB stream record: dynamodb.ApproximateCreationDateTime: is not a whole number of epoch milliseconds (or microseconds)"},
		{`{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1,"ApproximateCreationDateTimePrecision":"SECOND"},"tableName":"t","awsRegion":"r"}`, `not a DynamoDB stream record: dynamodb.ApproximateCreationDateTimePrecision: "SECOND" is not MILLISECOND or MICROSECOND`},
	} {
		_, err := Record([]byte(c.data), "1")
		var e *Error
		if !errors.As(err, &e) || err.Error() != c.want {
			t.Errorf("Record(%s) = %v, want %q", c.data, err, c.want)
		}
	}
}

func TestAppend(t *testing.T) {
	dst := []byte("x")
	out, err := Append(dst, []byte(kinesisRecord), "1")
	if err != nil || !bytes.HasPrefix(out, []byte(`x{"eventID":`)) {
		t.Fatalf("Append = %s, %v", out, err)
	}
	if out, err := Append(dst, []byte("{}"), "1"); err == nil || string(out) != "x" {
		t.Fatalf("Append of bad data = %s, %v", out, err)
	}
}

func FuzzRecord(f *testing.F) {
	f.Add([]byte(streamsRecord), "1")
	f.Add([]byte(kinesisRecord), kinesisSeq)
	f.Add([]byte(`{"eventName":"REMOVE","dynamodb":{"Keys":{"k":{"B":"AA=="}},"OldImage":{"k":{"BS":["AA=="]},"m":{"M":{}},"l":{"L":[]}}}}`), "2")
	f.Add([]byte(`{"eventName":"INSERT","tableName":"t","awsRegion":"r","userIdentity":{"type":"Service"},"dynamodb":{"ApproximateCreationDateTime":1234,"NewImage":{"a":{"NS":["1"]}}}}`), "3")
	f.Fuzz(func(t *testing.T, data []byte, seq string) {
		p, err := Parse(data, seq)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			return
		}
		// aws-lambda-go decodes every record accepted, in an event.
		var ev events.DynamoDBEvent
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("events.DynamoDBEvent panicked on %s: %v", p.Record, r)
				}
			}()
			if err := json.Unmarshal([]byte(`{"Records":[`+string(p.Record)+`]}`), &ev); err != nil {
				t.Fatalf("events.DynamoDBEvent of %s: %v", p.Record, err)
			}
		}()
		if !json.Valid(p.Record) {
			t.Fatalf("invalid JSON %s", p.Record)
		}
		if p.Converted && utf8.ValidString(seq) && ev.Records[0].Change.SequenceNumber != seq {
			t.Fatalf("converted SequenceNumber %q, want %q", ev.Records[0].Change.SequenceNumber, seq)
		}
		// A record is its own conversion.
		again, err := Record(p.Record, seq+"x")
		if err != nil || !bytes.Equal(again, p.Record) {
			t.Fatalf("Record of %s = %s, %v", p.Record, again, err)
		}
	})
}

// TestRepeatedMembers: a member given twice is checked both times, as
// events.DynamoDBEvent decodes both (an image's values one by one).
func TestRepeatedMembers(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{`{"eventName":"INSERT","dynamodb":{"NewImage":{"a":{},"a":{"S":"x"}}}}`, `dynamodb.NewImage.a: is not a typed attribute value such as {"S": "text"}`},
		{`{"eventName":"INSERT","dynamodb":{"NewImage":{"a":{}}},"dynamodb":{"Keys":{"k":{"S":"x"}}}}`, `dynamodb.NewImage.a: is not a typed attribute value such as {"S": "text"}`},
		{`{"eventName":"INSERT","dynamodb":{},"DynamoDB":{"SizeBytes":"x"}}`, "dynamodb.SizeBytes: is a JSON string, not an integer"},
		{`{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":"x","ApproximateCreationDateTime":1}}`, "dynamodb.ApproximateCreationDateTime: is not a number (epoch seconds)"},
		{`{"eventName":"INSERT","dynamodb":{},"userIdentity":{"type":1},"userIdentity":null}`, "userIdentity.type: is a JSON number, not a string"},
	} {
		_, err := Record([]byte(c.data), "1")
		if err == nil || !strings.HasSuffix(err.Error(), c.want) {
			t.Errorf("Record(%s) = %v, want %q", c.data, err, c.want)
		}
		var ev events.DynamoDBEvent
		if json.Unmarshal([]byte(`{"Records":[`+c.data+`]}`), &ev) == nil {
			t.Errorf("events.DynamoDBEvent decodes %s: the check is stricter than it need be", c.data)
		}
	}
}

// BenchmarkRecord is what turning one change into its DynamoDBEventRecord
// costs, for each shape: the engine, the batch sizing and the HTTP event
// each do it once per record.
func BenchmarkRecord(b *testing.B) {
	for _, c := range []struct{ name, data, seq string }{
		{"Streams", streamsRecord, "000000000000000000000111"},
		{"Kinesis", kinesisRecord, kinesisSeq},
	} {
		b.Run(c.name, func(b *testing.B) {
			data := []byte(c.data)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Record(data, c.seq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzFastChecks: the fast checks never accept what the full ones refuse
// (go test -fuzz FuzzFastChecks ./internal/ddbevent/): an item validItem
// accepts, checkItem accepts; data compact says is compact, json.Compact
// leaves unchanged.
func FuzzFastChecks(f *testing.F) {
	for _, item := range []string{
		`{"k":{"S":"a"}}`, `{"k":{"N":"1"},"b":{"B":"AA=="},"t":{"BOOL":false},"n":{"NULL":true}}`,
		`{"s":{"SS":["a","b"]},"n":{"NS":[]},"b":{"BS":["AA==","AQ=="]}}`,
		`{"l":{"L":[{"S":"x"},{"M":{"in":{"N":"2"}}}]},"m":{"M":{}}}`,
		`{"k":{"S":"a","S":"b"}}`, `{"k":{"S":"a","N":"1"}}`, `{"k":{}}`, `{"k":{"B":"A"}}`, `{"k":{"NULL":false}}`,
		`{"k":{"\u0053":"a"}}`, `{"k":{"M":{"a":1,"a":{"S":"x"}}}}`, ` { "k" : { "S" : "a" } } `, `{}`, `[]`, `"x"`,
	} {
		f.Add([]byte(item))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		if validItem(b) {
			if err := checkItem("f", b); err != nil {
				t.Fatalf("validItem accepted %s, which checkItem refuses: %v", b, err)
			}
		}
		if compact(b) {
			var buf bytes.Buffer
			if err := json.Compact(&buf, b); err != nil || !bytes.Equal(buf.Bytes(), b) {
				t.Fatalf("compact(%s) but json.Compact gives %s, %v", b, buf.Bytes(), err)
			}
		}
	})
}

// TestFastChecksAccept: the fast check accepts the items of real records,
// so that they take the fast path.
func TestFastChecksAccept(t *testing.T) {
	for _, item := range []string{
		`{"k":{"S":"a"}}`,
		`{"k":{"N":"1"},"b":{"B":"AA=="},"t":{"BOOL":false},"n":{"NULL":true}}`,
		`{"s":{"SS":["a","b"]},"n":{"NS":[]},"b":{"BS":["AA==","AQ=="]}}`,
		`{"l":{"L":[{"S":"x"},{"M":{"in":{"N":"2"}}}]},"m":{"M":{}}}`,
		` { "k" : { "S" : "a\"b" } } `,
	} {
		if !validItem([]byte(item)) {
			t.Errorf("validItem(%s) = false", item)
		}
	}
	for _, item := range []string{`{"k":{}}`, `{"k":{"S":"a","N":"1"}}`, `{"k":{"B":"A"}}`, `{"k":{"NULL":false}}`, `{"k":{"S":1}}`, `{"k":{"X":"a"}}`} {
		if validItem([]byte(item)) {
			t.Errorf("validItem(%s) = true", item)
		}
	}
}
