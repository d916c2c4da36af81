package pattern

import (
	"strings"
	"testing"
)

// TestCompileFilterS3: a mapping that sends S3Events filters the
// notification document: a pattern on its Records matches when one record
// of the list matches the whole nested pattern, and a pattern on a
// KinesisEvent's data is refused.
func TestCompileFilterS3(t *testing.T) {
	p, err := CompileFilter(`{"Records": {"eventName": [{"prefix": "ObjectCreated:"}], "s3": {"object": {"key": [{"prefix": "photos/"}]}}}}`, "s3")
	if err != nil {
		t.Fatal(err)
	}
	rec := func(name, key string) string {
		return `{"eventName": "` + name + `", "s3": {"bucket": {"name": "b"}, "object": {"key": "` + key + `", "size": 5}}}`
	}
	for _, c := range []struct {
		doc  string
		want bool
	}{
		{`{"Records": [` + rec("ObjectCreated:Put", "photos/a.jpg") + `]}`, true},
		{`{"Records": [` + rec("ObjectRemoved:Delete", "photos/a.jpg") + `, ` + rec("ObjectCreated:Copy", "photos/b.jpg") + `]}`, true},
		// One record matches the name, another the key: no record matches.
		{`{"Records": [` + rec("ObjectRemoved:Delete", "photos/a.jpg") + `, ` + rec("ObjectCreated:Put", "docs/b.txt") + `]}`, false},
		{`{"Records": []}`, false},
		{`{"Event": "s3:TestEvent"}`, false},
	} {
		v, err := Decode([]byte(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(v.(map[string]any)); got != c.want {
			t.Errorf("%s: match %v, want %v", c.doc, got, c.want)
		}
	}
	if _, err := CompileFilter(`{"EventName": [{"prefix": "s3:ObjectCreated:"}], "Key": [{"prefix": "photos/"}]}`, "s3"); err != nil {
		t.Errorf("MinIO's top-level fields: %v", err)
	}
	if _, err := CompileFilter(`{"data": {"Records": [1]}}`, "s3"); err == nil || !strings.Contains(err.Error(), "data: s3 events are filtered on EventName, Key, Records only") {
		t.Errorf("a KinesisEvent pattern: %v", err)
	}
}
