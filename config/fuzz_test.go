package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no file crashes Parse, that every problem comes back
// as a *FieldError, and that what Parse accepts is valid and survives being
// written back out.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"~",
		"- a",
		"streams: [{name: a, shardz: 1}, {name: b, shardz: 2}]",
		"streams:\n  -\n  - name: a\n",
		"streams:\n  - name: a\n    name: b\n",
		"mappings: [{}]",
		"mappings: [&m {name: a, enabled: false}, {<<: *m, name: b}]",
		"functions: [{name: f, http: , go: }]",
		"a: &a [*a]",
		"mappings:\n  - &m {name: a, source: {<<: *m}}\n",
		mappingDoc("    idempotency: {key: \"order.[\", retention: 1h}\n"),
		mappingDoc("    maximumRecordAge: 60\n    batchSize: 1.5\n    tumblingWindow: 1s\n"),
		mappingDoc("    startingPositionTimestamp: \"2026-01-01T00:00:00Z\"\n"),
		mappingDoc("    filterCriteria: {filters: [{pattern: '{\"data\": {\"a\": [{\"numeric\": [\">\", 1]}, {\"prefix\": \"x\"}]}}'}]}\n"),
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if file != nil {
				t.Fatalf("Parse returned a File and an error")
			}
			joined, ok := err.(interface{ Unwrap() []error })
			if !ok {
				t.Fatalf("error %T is not joined", err)
			}
			for _, e := range joined.Unwrap() {
				var fe *FieldError
				if !errors.As(e, &fe) || e.Error() == "" {
					t.Fatalf("problem %q (%T) is not a *FieldError", e, e)
				}
			}
			return
		}
		if err := file.Validate(); err != nil {
			t.Fatalf("Parse accepted a File that Validate refuses: %v", err)
		}
		out := dump(t, file)
		again, err := Parse([]byte(out))
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(data))): %v\n%s", err, out)
		}
		if got := dump(t, again); got != out {
			t.Fatalf("round trip changed the file:\n%s\nthen\n%s", out, got)
		}
	})
}
