package function

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// ParseResponse reads a function's response body as Lambda's
// KinesisEventResponse (or any of its siblings: DynamoDBEventResponse,
// SQSEventResponse, the time-window variants), following ESM.md's
// ReportBatchItemFailures rules. Functions that are not written in Go send
// these bytes, so every rule is about what AWS accepts, not what
// encoding/json would.
//
// # Complete success
//
// An empty body (or only JSON whitespace), null, {}, and an object whose
// batchItemFailures is [] or null return a Result without Failures.
//
// # Partial failure
//
// Each entry {"itemIdentifier": "<id>"} of batchItemFailures adds <id> to
// Result.Failures, in the order given, duplicates kept. Keys other than
// batchItemFailures are ignored, except state (for tumbling windows), which
// Result.State keeps unparsed for ParseState; other keys of an entry are
// ignored. ParseResponse does not know the batch: the engine checks that
// each identifier names one of its records.
//
// # Complete failure
//
// A response that is a JSON object but does not say which records failed
// returns a Result whose Invalid gives the reason and a nil error, so that,
// as on AWS, it only counts when the mapping reports batch item failures:
//
//   - an entry whose itemIdentifier is an empty string, null, or not a
//     string;
//   - an entry without the exact key itemIdentifier (JSON keys are case
//     sensitive: "ItemIdentifier" and "itemIdentifer" are wrong key names);
//   - an entry that is not an object, or batchItemFailures that is neither
//     an array nor null;
//   - a key that differs from batchItemFailures only in case, or
//     batchItemFailures given twice. A lax parser would ignore the first
//     or keep only the last; idem refuses to guess, because either guess
//     can turn a reported failure into a silent success.
//
// # A body that is not a response
//
// A body that is not JSON, or JSON that is not an object or null (a string
// such as "Successfully processed 3 records.", which AWS's own blueprints
// return, a number, a boolean, an array), returns a Result whose Invalid
// says what was wrong, quoting at most the first 100 bytes of the body, and
// a nil error. As on Lambda, the engine reads a successful invocation's
// body only when the mapping reports batch item failures: then such a body
// is a complete failure; otherwise the batch succeeded, whatever it says.
//
// ParseResponse never retains body.
func ParseResponse(body []byte) (Result, error) {
	trimmed := trimJSONSpace(body)
	if len(trimmed) == 0 {
		return Result{}, nil
	}
	if !json.Valid(trimmed) {
		// Unmarshal, unlike Valid, says where the syntax breaks.
		var raw json.RawMessage
		err := json.Unmarshal(trimmed, &raw)
		if err == nil { // unreachable: Valid and Unmarshal agree
			err = fmt.Errorf("invalid JSON")
		}
		return Result{Invalid: fmt.Sprintf("response is not JSON (%v); body %s", err, quote(body))}, nil
	}
	switch trimmed[0] {
	case 'n':
		return Result{}, nil
	case '{':
	default:
		return Result{Invalid: fmt.Sprintf("response is a JSON %s, not an object with batchItemFailures; body %s",
			kind(trimmed), quote(body))}, nil
	}

	// The body is valid JSON, so the decoder below cannot fail; its errors
	// are still checked, so that a mistake here fails the batch rather than
	// dropping its failures.
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil { // '{'
		return Result{}, decodeError(err, body)
	}
	// A response that is invalid still gives its state: a tumbling window
	// reads it whether or not the mapping reports batch item failures, so
	// the first reason found is kept and the scan goes on.
	var list, state json.RawMessage
	var invalid string
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Result{}, decodeError(err, body)
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return Result{}, decodeError(err, body)
		}
		switch {
		case key == "state":
			state = bytes.Clone(value)
		case key == "batchItemFailures":
			if found && invalid == "" {
				invalid = "batchItemFailures is given twice"
			}
			found, list = true, value
		case strings.EqualFold(key, "batchItemFailures"):
			if invalid == "" {
				invalid = fmt.Sprintf("wrong key name %s: want batchItemFailures (keys are case sensitive)", quote([]byte(key)))
			}
		}
	}
	if invalid != "" {
		return Result{Invalid: invalid, State: state}, nil
	}
	if !found || list[0] == 'n' {
		return Result{State: state}, nil
	}
	if list[0] != '[' {
		return Result{Invalid: fmt.Sprintf("batchItemFailures is a JSON %s, not an array: %s", kind(list), quote(list)), State: state}, nil
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(list, &entries); err != nil {
		return Result{}, decodeError(err, body)
	}
	var failures []string
	for i, entry := range entries {
		id, invalid, err := parseEntry(entry)
		if err != nil {
			return Result{}, decodeError(err, body)
		}
		if invalid != "" {
			return Result{Invalid: fmt.Sprintf("batchItemFailures[%d]: %s", i, invalid), State: state}, nil
		}
		failures = append(failures, id)
	}
	return Result{Failures: failures, State: state}, nil
}

// ParseState reads a tumbling window's state, the "state" of a response
// (Result.State): any JSON object, as Lambda's TimeWindowEventResponse has
// ({"state": {"1": 282, "2": 715}} is AWS's own example; its values need
// not be strings). It returns the object as the function wrote it, without
// the whitespace around it, for the window's next invocation. null is the
// empty state: a nil RawMessage. A response without state (raw is nil) is
// also nil here: telling the two apart is the caller's (Lambda fails an
// invocation whose response has no state). Anything else is an error that
// names what was wrong.
func ParseState(raw json.RawMessage) (json.RawMessage, error) {
	raw = trimJSONSpace(raw)
	if len(raw) == 0 || raw[0] == 'n' {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, fmt.Errorf("state is a JSON %s, not an object: %s", kind(raw), quote(raw))
	}
	if !json.Valid(raw) { // ParseResponse's state is valid; another caller's may not be
		return nil, fmt.Errorf("state is not valid JSON: %s", quote(raw))
	}
	return raw, nil
}

// parseEntry reads one batchItemFailures entry: its identifier, or why it
// makes the response a complete failure.
func parseEntry(entry json.RawMessage) (id, invalid string, err error) {
	if entry[0] != '{' {
		return "", fmt.Sprintf("is a JSON %s, not an object with itemIdentifier: %s", kind(entry), quote(entry)), nil
	}
	dec := json.NewDecoder(bytes.NewReader(entry))
	if _, err := dec.Token(); err != nil {
		return "", "", err
	}
	var value json.RawMessage
	var others []string
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", "", err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", "", err
		}
		if key != "itemIdentifier" {
			if len(others) < 3 { // enough to spot the typo
				others = append(others, key)
			}
			continue
		}
		if found {
			return "", "itemIdentifier is given twice", nil
		}
		found, value = true, v
	}
	if !found {
		if len(others) == 0 {
			return "", "has no itemIdentifier", nil
		}
		q := make([]string, len(others))
		for i, k := range others {
			q[i] = quote([]byte(k))
		}
		return "", fmt.Sprintf("has no itemIdentifier, only the wrong key name(s) %s (keys are case sensitive)", strings.Join(q, ", ")), nil
	}
	if value[0] != '"' {
		return "", fmt.Sprintf("itemIdentifier is %s, not a string", kindWithArticle(value)), nil
	}
	if err := json.Unmarshal(value, &id); err != nil {
		return "", "", err
	}
	if id == "" {
		return "", "itemIdentifier is an empty string", nil
	}
	return id, "", nil
}

func decodeError(err error, body []byte) error {
	return &Error{
		Type:    TypeInvalidResponse,
		Message: fmt.Sprintf("reading response: %v; body %s", err, quote(body)),
		Err:     err,
	}
}

// trimJSONSpace removes the whitespace JSON allows around a value, and no
// other: a byte order mark or a non-breaking space makes the body invalid.
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// kind names the type of a valid JSON value from its first byte.
func kind(v []byte) string {
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

func kindWithArticle(v []byte) string {
	switch k := kind(v); k {
	case "null":
		return "null"
	case "array", "object":
		return "an " + k
	default:
		return "a " + k
	}
}

// maxQuoted bounds how much of a response an error message repeats: enough
// to recognise an HTML error page or a stack trace, not enough to flood logs
// and on-failure records.
const maxQuoted = 100

// quote renders at most maxQuoted bytes of b as a Go string literal, noting
// how much was left out.
func quote(b []byte) string {
	if len(b) <= maxQuoted {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(b[:maxQuoted])), len(b))
}
