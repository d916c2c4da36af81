package pattern

import (
	"strings"
	"testing"
)

// TestCompileFilterDynamoDB: a mapping that sends DynamoDBEvents filters
// each DynamoDB stream record on its own fields, as Lambda does (typed
// attribute values included), and refuses a pattern on a field such a
// record does not have, naming it.
func TestCompileFilterDynamoDB(t *testing.T) {
	p, err := CompileFilter(`{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}`, "dynamodb")
	if err != nil {
		t.Fatal(err)
	}
	rec := func(name, status string) string {
		return `{"eventID": "e", "eventName": "` + name + `", "eventSource": "aws:dynamodb", "awsRegion": "eu-west-1",
			"dynamodb": {"Keys": {"id": {"S": "1"}}, "NewImage": {"id": {"S": "1"}, "status": {"S": "` + status + `"}}, "SequenceNumber": "1"}}`
	}
	for _, c := range []struct {
		doc  string
		want bool
	}{
		{rec("INSERT", "paid"), true},
		{rec("MODIFY", "paid"), true},
		{rec("REMOVE", "paid"), false},
		{rec("INSERT", "new"), false},
		{`{"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": "1"}}}}`, false},
	} {
		v, err := Decode([]byte(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(v.(map[string]any)); got != c.want {
			t.Errorf("%s: match %v, want %v", c.doc, got, c.want)
		}
	}
	for _, f := range []string{"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb", "eventSourceARN", "userIdentity"} {
		if _, err := CompileFilter(`{"`+f+`": [{"exists": true}]}`, "dynamodb"); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	const want = "data: dynamodb events are filtered on awsRegion, dynamodb, eventID, eventName, eventSource, eventSourceARN, eventVersion, userIdentity only"
	if _, err := CompileFilter(`{"data": {"eventName": ["INSERT"]}}`, "dynamodb"); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a KinesisEvent pattern: %v, want %q", err, want)
	}
}
