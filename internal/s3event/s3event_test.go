package s3event

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
)

// awsRecord is the record of Amazon S3's documented example notification.
const awsRecord = `{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-west-2","eventTime":"1970-01-01T00:00:00.000Z","eventName":"ObjectCreated:Put","userIdentity":{"principalId":"AIDAJDPLRKLG7UEXAMPLE"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},"s3":{"s3SchemaVersion":"1.0","configurationId":"testRule","bucket":{"name":"amzn-s3-demo-bucket","ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::amzn-s3-demo-bucket"},"object":{"key":"HappyFace.jpg","size":1024,"eTag":"d41d8cd98f00b204e9800998ecf8427e","versionId":"096fKKXTRTtl3on89fVO.nfljtsv6qko","sequencer":"0055AED6DCD90281E5"}}}`

func TestParseAWS(t *testing.T) {
	n, err := Parse([]byte(`{"Records":[` + awsRecord + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.Test || len(n.Records) != 1 {
		t.Fatalf("got %+v", n)
	}
	r := n.Records[0]
	want := "ObjectCreated:Put|1970-01-01T00:00:00.000Z|0055AED6DCD90281E5|v=096fKKXTRTtl3on89fVO.nfljtsv6qko|amzn-s3-demo-bucket/HappyFace.jpg"
	if got := r.Key(); got != want {
		t.Errorf("Key = %q, want %q", got, want)
	}
	var ev events.S3Event
	if err := json.Unmarshal(r.Event(), &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Records) != 1 || ev.Records[0].S3.Object.Key != "HappyFace.jpg" || ev.Records[0].S3.Object.Size != 1024 ||
		ev.Records[0].ResponseElements["x-amz-request-id"] != "C3D13FE58DE4C810" {
		t.Errorf("S3Event = %+v", ev)
	}
}

func TestParseTestEvent(t *testing.T) {
	for _, body := range []string{
		`{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"bucketname","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}`,
		`{"Bucket":"Test-Bucket","Event":"s3:TestEvent","Service":"S3","Time":"2026-12-06T02:33:29Z"}`,
	} {
		n, err := Parse([]byte(body))
		if err != nil || !n.Test || len(n.Records) != 0 {
			t.Errorf("Parse(%s) = %+v, %v", body, n, err)
		}
	}
}

func TestKeyDistinguishesUploads(t *testing.T) {
	rec := func(name, time, seq, version, etag, key string) Record {
		return Record{EventName: name, EventTime: time, Sequencer: seq, VersionID: version, ETag: etag, Bucket: "b", Object: key}
	}
	a := rec("ObjectCreated:Put", "t1", "1", "", "e", "k")
	same := []Record{a, rec("s3:ObjectCreated:Put", "t1", "1", "null", "e", "k")}
	for _, r := range same {
		if r.Key() != a.Key() {
			t.Errorf("%+v: key %q, want %q", r, r.Key(), a.Key())
		}
	}
	different := []Record{
		rec("ObjectCreated:Put", "t2", "1", "", "e", "k"),
		rec("ObjectCreated:Put", "t1", "2", "", "e", "k"),
		rec("ObjectCreated:Put", "t1", "1", "", "f", "k"),
		rec("ObjectCreated:Put", "t1", "1", "v2", "e", "k"),
		rec("ObjectRemoved:Delete", "t1", "1", "", "e", "k"),
		rec("ObjectCreated:Put", "t1", "1", "", "e", "k2"),
	}
	for _, r := range different {
		if r.Key() == a.Key() {
			t.Errorf("%+v: same key as %+v", r, a)
		}
	}
	long := rec("ObjectCreated:Put", "t1", "1", "", "e", strings.Repeat("x", 1024))
	if k := long.Key(); len(k) > MaxKeyBytes || !strings.Contains(k, "sha256:") {
		t.Errorf("long key %d bytes: %q…", len(k), k[:60])
	}
}

func TestParseErrors(t *testing.T) {
	rec := func(s string) string { return `{"Records":[` + awsRecord + `,` + s + `]}` }
	for _, c := range []struct{ body, want string }{
		{`[]`, "the body is not a JSON object"},
		{`{"Records":{}}`, "Records: is a JSON object, not a list"},
		{`{}`, "Records: missing"},
		{`{"Records":[]}`, "Records: is empty"},
		{`{"Records":[]} {}`, "more than one JSON value"},
		{rec(`3`), "Records[1]: is a JSON number, not an object"},
		{rec(`{"eventTime":"t","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}`), "Records[1].eventName: missing"},
		{rec(`{"eventName":"x","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}`), "Records[1].eventTime: missing"},
		{rec(`{"eventName":"x","eventTime":"t"}`), "Records[1].s3: missing"},
		{rec(`{"eventName":"x","eventTime":"t","s3":{"object":{"key":"k"}}}`), "Records[1].s3.bucket: missing"},
		{rec(`{"eventName":"x","eventTime":"t","s3":{"bucket":{"name":""},"object":{"key":"k"}}}`), "Records[1].s3.bucket.name: is empty"},
		{rec(`{"eventName":"x","eventTime":"t","s3":{"bucket":{"name":"b"}}}`), "Records[1].s3.object: missing"},
		{rec(`{"eventName":"x","eventTime":"t","s3":{"bucket":{"name":"b"},"object":{"key":5}}}`), "Records[1].s3.object.key: is a JSON number, not a string"},
	} {
		_, err := Parse([]byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) = %v, want an error with %q", c.body, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"Records":[` + awsRecord + `]}`))
	f.Add([]byte(`{"Event":"s3:TestEvent"}`))
	f.Add([]byte(`{"Records":[{"eventName":"a","eventTime":"b","s3":{"bucket":{"name":"c"},"object":{"key":"d","versionId":null}}}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := Parse(body)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			return
		}
		for _, r := range n.Records {
			if len(r.Key()) > MaxKeyBytes {
				t.Fatalf("key of %d bytes", len(r.Key()))
			}
			var ev struct{ Records []json.RawMessage }
			if err := json.Unmarshal(r.Event(), &ev); err != nil || len(ev.Records) != 1 {
				t.Fatalf("Event %s: %v", r.Event(), err)
			}
			if _, err := ParseRecord(r.Raw); err != nil {
				t.Fatalf("ParseRecord of a parsed record: %v", err)
			}
		}
	})
}

// versitygwRecord is a record as versitygw v1.8.0 sends it: an empty
// glacierEventData that events.S3Event cannot decode.
const versitygwRecord = `{"eventVersion":"2.2","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-06T02:51:40Z","eventName":"s3:ObjectCreated:Put","userIdentity":{"PrincipalId":"idemtestaccess"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"","x-amz-id-2":""},"s3":{"s3SchemaVersion":"1.0","configurationId":"webhook-global","bucket":{"name":"photos","ownerIdentity":{"PrincipalId":"idemtestaccess"},"arn":"arn:aws:s3:::/photos/img-0000.jpg"},"object":{"key":"img-0000.jpg","size":23,"eTag":"\"4c9bfcb70eeadf32a6c6e95c13a05c31\"","versionId":null,"sequencer":"1"}},"glacierEventData":{"restoreEventData":{"lifecycleRestorationExpiryTime":"","lifecycleRestoreStorageClass":""}}}`

func TestVersityGWRecordDecodes(t *testing.T) {
	var ev events.S3Event
	if err := json.Unmarshal([]byte(`{"Records":[`+versitygwRecord+`]}`), &ev); err == nil {
		t.Fatal("events.S3Event decodes versitygw's record as sent; the normalisation is no longer needed")
	}
	n, err := Parse([]byte(`{"Records":[` + versitygwRecord + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := n.Records[0]
	if err := json.Unmarshal(r.Event(), &ev); err != nil {
		t.Fatalf("events.S3Event of the normalised record: %v\n%s", err, r.Event())
	}
	if ev.Records[0].S3.Object.Key != "img-0000.jpg" || ev.Records[0].S3.Object.Size != 23 {
		t.Errorf("decoded %+v", ev.Records[0])
	}
	if want := `ObjectCreated:Put|2026-12-06T02:51:40Z|1|e=4c9bfcb70eeadf32a6c6e95c13a05c31|photos/img-0000.jpg`; r.Key() != want {
		t.Errorf("Key = %q, want %q", r.Key(), want)
	}
	// A restore event's glacierEventData is kept.
	restore := strings.Replace(versitygwRecord, `"lifecycleRestorationExpiryTime":""`, `"lifecycleRestorationExpiryTime":"2026-12-08T00:00:00Z"`, 1)
	n, err = Parse([]byte(`{"Records":[` + restore + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(n.Records[0].Raw), "glacierEventData") {
		t.Errorf("a valid glacierEventData was dropped: %s", n.Records[0].Raw)
	}
}
