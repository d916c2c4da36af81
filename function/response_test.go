package function_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/idem-run/idem/function"
)

func TestParseResponse(t *testing.T) {
	const id = "shardId-000000000000:00000000000000000004"
	cases := []struct {
		name     string
		body     string
		failures []string
		invalid  string // substring of Result.Invalid; "" means valid
		err      string // substring of the error; "" means no error
	}{
		// Complete success.
		{name: "empty body", body: ""},
		{name: "whitespace only", body: " \r\n\t "},
		{name: "null", body: "null"},
		{name: "null with whitespace", body: " null\n"},
		{name: "empty object", body: "{}"},
		{name: "empty list", body: `{"batchItemFailures": []}`},
		{name: "null list", body: `{"batchItemFailures": null}`},
		{name: "state ignored", body: `{"state": {"sum": 3}, "batchItemFailures": []}`},
		{name: "unknown keys ignored", body: `{"statusCode": 200, "body": "done"}`},

		// Partial failures.
		{name: "one failure", body: `{"batchItemFailures":[{"itemIdentifier":"` + id + `"}]}`, failures: []string{id}},
		{name: "several in given order with duplicates",
			body:     `{"batchItemFailures":[{"itemIdentifier":"b"},{"itemIdentifier":"a"},{"itemIdentifier":"b"}]}`,
			failures: []string{"b", "a", "b"}},
		{name: "escaped identifier", body: `{"batchItemFailures":[{"itemIdentifier":"a\u00e9\"b"}]}`, failures: []string{"aé\"b"}},
		{name: "escaped key names the right key", body: `{"batch\u0049temFailures":[{"item\u0049dentifier":"x"}]}`, failures: []string{"x"}},
		{name: "extra entry keys ignored", body: `{"batchItemFailures":[{"itemIdentifier":"x","reason":"bad"}]}`, failures: []string{"x"}},
		{name: "with state", body: `{"state":{},"batchItemFailures":[{"itemIdentifier":"x"}]}`, failures: []string{"x"}},
		{name: "sequence number alone", body: `{"batchItemFailures":[{"itemIdentifier":"00000000000000000004"}]}`, failures: []string{"00000000000000000004"}},

		// Complete failure: Invalid, no error.
		{name: "empty identifier", body: `{"batchItemFailures":[{"itemIdentifier":""}]}`, invalid: "batchItemFailures[0]: itemIdentifier is an empty string"},
		{name: "null identifier", body: `{"batchItemFailures":[{"itemIdentifier":null}]}`, invalid: "itemIdentifier is null"},
		{name: "numeric identifier", body: `{"batchItemFailures":[{"itemIdentifier":4}]}`, invalid: "itemIdentifier is a number"},
		{name: "object identifier", body: `{"batchItemFailures":[{"itemIdentifier":{"id":"x"}}]}`, invalid: "itemIdentifier is an object"},
		{name: "missing identifier", body: `{"batchItemFailures":[{}]}`, invalid: "batchItemFailures[0]: has no itemIdentifier"},
		{name: "misspelled key", body: `{"batchItemFailures":[{"itemIdentifer":"x"}]}`, invalid: `wrong key name(s) "itemIdentifer"`},
		{name: "key in wrong case", body: `{"batchItemFailures":[{"ItemIdentifier":"x"}]}`, invalid: `wrong key name(s) "ItemIdentifier"`},
		{name: "short key", body: `{"batchItemFailures":[{"itemId":"x"}]}`, invalid: `"itemId"`},
		{name: "bad entry after good ones", body: `{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":""}]}`, invalid: "batchItemFailures[1]"},
		{name: "identifier twice", body: `{"batchItemFailures":[{"itemIdentifier":"a","itemIdentifier":"b"}]}`, invalid: "itemIdentifier is given twice"},
		{name: "entry is a string", body: `{"batchItemFailures":["x"]}`, invalid: "batchItemFailures[0]: is a JSON string"},
		{name: "entry is null", body: `{"batchItemFailures":[null]}`, invalid: "batchItemFailures[0]: is a JSON null"},
		{name: "list is an object", body: `{"batchItemFailures":{"itemIdentifier":"x"}}`, invalid: "batchItemFailures is a JSON object, not an array"},
		{name: "list is a string", body: `{"batchItemFailures":"x"}`, invalid: "batchItemFailures is a JSON string, not an array"},
		{name: "list is a number", body: `{"batchItemFailures":0}`, invalid: "not an array"},
		{name: "list key in wrong case", body: `{"BatchItemFailures":[{"itemIdentifier":"x"}]}`, invalid: `wrong key name "BatchItemFailures"`},
		{name: "list given twice", body: `{"batchItemFailures":[{"itemIdentifier":"x"}],"batchItemFailures":[]}`, invalid: "batchItemFailures is given twice"},

		// Not a response: Invalid too, which only a mapping that reports
		// batch item failures reads (issue 19: AWS's blueprints answer
		// "Successfully processed 3 records.").
		{name: "HTML", body: "<html>oops</html>", invalid: `response is not JSON`},
		{name: "plain text", body: "OK", invalid: `body "OK"`},
		{name: "truncated object", body: `{"batchItemFailures":[`, invalid: "response is not JSON"},
		{name: "trailing data", body: `{} {}`, invalid: "response is not JSON"},
		{name: "byte order mark", body: "\uFEFF{}", invalid: "response is not JSON"},
		{name: "string", body: `"ok"`, invalid: "response is a JSON string, not an object"},
		{name: "blueprint string", body: `"Successfully processed 3 records."`, invalid: "response is a JSON string, not an object"},
		{name: "number", body: `200`, invalid: "response is a JSON number"},
		{name: "boolean", body: `true`, invalid: "response is a JSON boolean"},
		{name: "array", body: `[{"itemIdentifier":"x"}]`, invalid: "response is a JSON array"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := function.ParseResponse([]byte(c.body))
			if c.err != "" {
				var fe *function.Error
				if !errors.As(err, &fe) || fe.Type != function.TypeInvalidResponse {
					t.Fatalf("err = %v, want a *function.Error of type %s", err, function.TypeInvalidResponse)
				}
				if !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %q, want it to contain %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if c.invalid != "" {
				if !strings.Contains(res.Invalid, c.invalid) {
					t.Fatalf("Invalid = %q, want it to contain %q", res.Invalid, c.invalid)
				}
				return
			}
			if res.Invalid != "" {
				t.Fatalf("Invalid = %q, want a valid result", res.Invalid)
			}
			if !slices.Equal(res.Failures, c.failures) {
				t.Fatalf("Failures = %q, want %q", res.Failures, c.failures)
			}
			if res.Native || res.Err != nil {
				t.Fatalf("Native/Err set on a parsed response: %+v", res)
			}
		})
	}
}

// TestParseResponseQuotesLittle: a huge bad body is quoted, not copied, into
// the error that ends up in logs and on-failure records.
func TestParseResponseQuotesLittle(t *testing.T) {
	body := "<html>" + strings.Repeat("x", 1<<20)
	res, err := function.ParseResponse([]byte(body))
	if err != nil || res.Invalid == "" {
		t.Fatalf("ParseResponse = %+v, %v; want Invalid", res, err)
	}
	if len(res.Invalid) > 300 {
		t.Fatalf("Invalid is %d bytes: %.400s", len(res.Invalid), res.Invalid)
	}
	if !strings.Contains(res.Invalid, "(1048582 bytes)") {
		t.Fatalf("Invalid %q does not give the body's size", res.Invalid)
	}
}

// TestParseResponseMatchesLambdaEvents: what aws-lambda-go's response types
// encode reads back as the same identifiers.
func TestParseResponseMatchesLambdaEvents(t *testing.T) {
	type item struct {
		ItemIdentifier string `json:"itemIdentifier"`
	}
	type response struct {
		BatchItemFailures []item `json:"batchItemFailures"`
		State             map[string]string
	}
	for _, ids := range [][]string{nil, {}, {"a"}, {"shardId-1:1", "shardId-1:2"}} {
		r := response{State: map[string]string{"k": "v"}}
		if ids != nil {
			r.BatchItemFailures = []item{}
		}
		for _, id := range ids {
			r.BatchItemFailures = append(r.BatchItemFailures, item{id})
		}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		res, err := function.ParseResponse(body)
		if err != nil || res.Invalid != "" || len(res.Failures) != len(ids) || (len(ids) > 0 && !slices.Equal(res.Failures, ids)) {
			t.Fatalf("%s: got %+v, %v; want failures %q", body, res, err, ids)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, seed := range []string{
		"", "null", "{}", `{"batchItemFailures":[]}`, `{"batchItemFailures":null}`,
		`{"batchItemFailures":[{"itemIdentifier":"shardId-000000000000:00000000000000000001"}]}`,
		`{"batchItemFailures":[{"itemIdentifier":""}]}`, `{"batchItemFailures":[{"itemIdentifier":null}]}`,
		`{"batchItemFailures":[{"itemIdentifer":"x"}]}`, `{"BatchItemFailures":[]}`,
		`{"batchItemFailures":[{"itemIdentifier":"a"}],"batchItemFailures":[]}`,
		`{"state":{"a":1},"batchItemFailures":[{"itemIdentifier":"x","other":[1,2]}]}`,
		`"ok"`, `[]`, `1e400`, `<html>`, "\xff\xfe", `{"batchItemFailures":[[[[[]]]]]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := string(body)
		res, err := function.ParseResponse(body)
		if string(body) != orig {
			t.Fatal("ParseResponse modified its input")
		}
		if err != nil {
			var fe *function.Error
			if !errors.As(err, &fe) || fe.Type != function.TypeInvalidResponse {
				t.Fatalf("err = %#v, want a *function.Error of type %s", err, function.TypeInvalidResponse)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("error message is %d bytes", len(err.Error()))
			}
			if json.Valid(body) && len(body) > 0 && (body[0] == '{' || body[0] == 'n') {
				t.Fatalf("a JSON object or null is a function error: %v", err)
			}
			return
		}
		if st, err := function.ParseState(res.State); err == nil && res.State != nil && st == nil && string(res.State) != "null" {
			t.Fatalf("state %s parsed as none", res.State)
		}
		if res.Invalid != "" {
			if len(res.Invalid) > 600 {
				t.Fatalf("Invalid is %d bytes", len(res.Invalid))
			}
			return
		}
		for _, id := range res.Failures {
			if id == "" {
				t.Fatal("an empty identifier was accepted")
			}
		}
		// A valid result agrees with encoding/json on how many failures
		// there are (encoding/json is laxer about keys, never stricter).
		var v struct {
			BatchItemFailures []json.RawMessage `json:"batchItemFailures"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			if len(trim(body)) == 0 {
				return
			}
			t.Fatalf("accepted %q, which encoding/json rejects: %v", body, err)
		}
		if len(v.BatchItemFailures) != len(res.Failures) {
			t.Fatalf("%d failures, encoding/json sees %d entries", len(res.Failures), len(v.BatchItemFailures))
		}
	})
}

func trim(b []byte) string { return strings.Trim(string(b), " \t\r\n") }

// TestParseState: a tumbling window's state is any JSON object, kept as
// the function wrote it (AWS's own example has numbers); absent and null
// are the empty state; anything else is an error naming what was wrong.
// ParseResponse keeps it unparsed.
func TestParseState(t *testing.T) {
	for body, want := range map[string]string{
		`{"state": {"sum": "15", "n": "3"}, "batchItemFailures": []}`: `{"sum": "15", "n": "3"}`,
		`{"state": {"1": 282, "2": 715}, "batchItemFailures": []}`:    `{"1": 282, "2": 715}`,
		`{"state": {"n": null, "o": {"a": [1, true]}, "s": "<&>"}}`:   `{"n": null, "o": {"a": [1, true]}, "s": "<&>"}`,
		`{"state": {}}`: `{}`,
	} {
		res, err := function.ParseResponse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		st, err := function.ParseState(res.State)
		if err != nil || string(st) != want {
			t.Errorf("%s: state %s, %v; want %s", body, st, err, want)
		}
	}
	for _, body := range []string{`{}`, `{"state": null}`, ``, `null`} {
		res, err := function.ParseResponse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if st, err := function.ParseState(res.State); err != nil || st != nil {
			t.Errorf("%s: state %s, %v; want none", body, st, err)
		}
	}
	for body, want := range map[string]string{
		`{"state": [1]}`:     "state is a JSON array, not an object",
		`{"state": "sum=1"}`: "state is a JSON string",
		`{"state": 3}`:       "state is a JSON number",
	} {
		res, err := function.ParseResponse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		_, err = function.ParseState(res.State)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	if _, err := function.ParseState(json.RawMessage(`{"a":`)); err == nil {
		t.Error("invalid JSON accepted")
	}
}

// TestParseResponseInvalidKeepsState: a tumbling window reads a response's
// state whether or not the mapping reports batch item failures, so a
// response whose batchItemFailures is wrong (which only counts under
// ReportBatchItemFailures) still gives its state, wherever it stands.
func TestParseResponseInvalidKeepsState(t *testing.T) {
	for _, body := range []string{
		`{"BatchItemFailures": [], "state": {"sum": 3}}`,
		`{"state": {"sum": 3}, "batchItemFailures": [], "batchItemFailures": []}`,
		`{"batchItemFailures": [], "batchItemFailures": [], "state": {"sum": 3}}`,
		`{"batchItemFailures": "x", "state": {"sum": 3}}`,
		`{"batchItemFailures": [{"itemId": "x"}], "state": {"sum": 3}}`,
		`{"batchItemFailures": [{"itemIdentifier": ""}], "state": {"sum": 3}}`,
	} {
		res, err := function.ParseResponse([]byte(body))
		if err != nil || res.Invalid == "" {
			t.Errorf("%s: %+v, %v; want Invalid", body, res, err)
			continue
		}
		if st, err := function.ParseState(res.State); err != nil || string(st) != `{"sum": 3}` {
			t.Errorf("%s: state %s, %v; want {\"sum\": 3}", body, st, err)
		}
	}
}
