package process

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseError(t *testing.T) {
	cases := []struct {
		name, body, header string
		typ, msg           string
		stack              []string
	}{
		{name: "aws-lambda-go panic",
			body: `{"errorMessage":"runtime error: index out of range [3] with length 1","errorType":"boundsError","stackTrace":[{"path":"github.com/aws/aws-lambda-go/lambda/errors.go","line":39,"label":"lambdaPanicResponse"},{"path":"main.go","line":17,"label":"handler"}]}`,
			typ:  "boundsError", msg: "runtime error: index out of range [3] with length 1",
			stack: []string{"github.com/aws/aws-lambda-go/lambda/errors.go:39 lambdaPanicResponse", "main.go:17 handler"}},
		{name: "python", body: `{"errorMessage": "'id'", "errorType": "KeyError", "requestId": "r", "stackTrace": ["  File \"/var/task/app.py\", line 3, in handler\n"]}`,
			typ: "KeyError", msg: "'id'", stack: []string{"  File \"/var/task/app.py\", line 3, in handler\n"}},
		{name: "node", body: `{"errorType":"Error","errorMessage":"boom","trace":["Error: boom","    at Runtime.handler (file:///var/task/index.mjs:2:9)"]}`,
			typ: "Error", msg: "boom", stack: []string{"Error: boom", "    at Runtime.handler (file:///var/task/index.mjs:2:9)"}},
		{name: "type in the header only", body: `{"errorMessage":"boom"}`, header: "Custom.Error", typ: "Custom.Error", msg: "boom"},
		{name: "body type wins", body: `{"errorType":"A","errorMessage":"m"}`, header: "B", typ: "A", msg: "m"},
		{name: "not JSON", body: "segfault", header: "Runtime.Crash", typ: "Runtime.Crash",
			msg: `the runtime reported an error that is not an error object: "segfault"`},
		{name: "nothing", typ: typeUnnamed, msg: "the runtime reported an error without a body"},
		{name: "a JSON string", body: `"boom"`, typ: typeUnnamed, msg: "boom"},
		{name: "message is an object", body: `{"errorType":"E","errorMessage":{"code":7}}`, typ: "E", msg: `{"code":7}`},
		{name: "type not a string", body: `{"errorType":7,"errorMessage":"m"}`, header: "H", typ: "H", msg: "m"},
		{name: "no message", body: `{"errorType":"E"}`, typ: "E", msg: "the runtime reported an error without an errorMessage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fe := parseError([]byte(c.body), c.header)
			if fe.Type != c.typ || fe.Message != c.msg {
				t.Fatalf("got %q %q, want %q %q", fe.Type, fe.Message, c.typ, c.msg)
			}
			var re *RuntimeError
			if !errors.As(fe, &re) || !slices.Equal(re.StackTrace, c.stack) {
				t.Fatalf("stack %q, want %q", re.StackTrace, c.stack)
			}
		})
	}
	long := parseError([]byte(`{"errorType":"`+strings.Repeat("é", maxErrorType)+`","errorMessage":"m"}`), "")
	if len(long.Type) > maxErrorType+len("…") || !utf8.ValidString(long.Type) {
		t.Fatalf("type of %d bytes not truncated on a rune boundary", len(long.Type))
	}
}

func TestParseErrorKeepsObject(t *testing.T) {
	// The object as posted, every member and its spacing kept, for the
	// Invoke API's caller.
	posted := `{"errorType": "KeyError", "errorMessage": "'id'", "requestId": "r", "stackTrace": ["a"], "extra": {"n": 1}}`
	var re *RuntimeError
	if !errors.As(parseError([]byte(" "+posted+"\n"), ""), &re) || string(re.ErrorObject()) != posted {
		t.Fatalf("object %q, want %q", re.ErrorObject(), posted)
	}
	// Nothing but an error object is kept, nor one over the bound.
	for _, body := range []string{`"boom"`, `segfault`, `{"errorType":"E"} trailing`,
		`{"errorType":"E","errorMessage":"` + strings.Repeat("x", maxErrorObject) + `"}`} {
		if !errors.As(parseError([]byte(body), "H"), &re) || re.ErrorObject() != nil {
			t.Errorf("body %.40q kept as the error object", body)
		}
	}
}

// FuzzParseError checks that no error report a process posts can crash
// idem or leak past the bounds on what it logs, and that a well-formed one
// reads back as sent.
func FuzzParseError(f *testing.F) {
	f.Add([]byte(`{"errorMessage":"boom","errorType":"errorString"}`), "")
	f.Add([]byte(`{"errorMessage":"x","errorType":"boundsError","stackTrace":[{"path":"a.go","line":1,"label":"f"}]}`), "")
	f.Add([]byte(`{"errorMessage":"x","stackTrace":["a","b"]}`), "Custom.Type")
	f.Add([]byte(`{"errorType":null,"errorMessage":null,"stackTrace":{}}`), "\xff")
	f.Add([]byte(`<html>502</html>`), "")
	f.Add([]byte(`"string"`), "")
	f.Add([]byte(`{"stackTrace":[1,null,{"path":5},[]]}`), "")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		fe := parseError(body, header)
		if fe.Type == "" || !utf8.ValidString(fe.Type) || len(fe.Type) > maxErrorType+len("…") {
			t.Fatalf("type %q", fe.Type)
		}
		if fe.Message == "" || len(fe.Message) > maxErrorMessage+len("…") {
			t.Fatalf("message of %d bytes", len(fe.Message))
		}
		var re *RuntimeError
		if !errors.As(fe, &re) || re.Type != fe.Type || re.Message != fe.Message {
			t.Fatalf("Err %#v does not match %#v", fe.Err, fe)
		}
		if len(re.StackTrace) > maxStackFrames+1 {
			t.Fatalf("%d stack frames", len(re.StackTrace))
		}
		for _, s := range re.StackTrace {
			if len(s) > maxStackFrame+len("…") {
				t.Fatalf("stack frame of %d bytes", len(s))
			}
		}
		// The object kept for the Invoke API's caller is an object, valid
		// JSON (the caller's body), and bounded.
		if obj := re.ErrorObject(); obj != nil && (len(obj) > maxErrorObject || obj[0] != '{' || !json.Valid(obj)) {
			t.Fatalf("error object %q", obj)
		}

		// What a runtime means, it gets: a valid error object reads back.
		typ, msg := strings.TrimSpace(string(body)), header
		if typ == "" || len(typ) > maxErrorType || msg == "" || len(msg) > maxErrorMessage ||
			!utf8.ValidString(typ) || !utf8.ValidString(msg) {
			return
		}
		sent, _ := json.Marshal(map[string]string{"errorType": typ, "errorMessage": msg})
		back := parseError(sent, "")
		if back.Type != typ || back.Message != msg {
			t.Fatalf("%q %q read back as %q %q", typ, msg, back.Type, back.Message)
		}
	})
}
