package process

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/idem-run/idem/function"
)

// Bounds on what a runtime's error report puts into idem's logs, metrics
// and on-failure records.
const (
	maxErrorType    = 256
	maxErrorMessage = 64 << 10
	maxStackFrames  = 128
	maxStackFrame   = 1 << 10
	// maxErrorObject bounds the error object kept as posted, for the
	// Invoke API's caller (RuntimeError.Object).
	maxErrorObject = 1 << 20
	// typeUnnamed is the type of an error the runtime did not name, the
	// type the engine gives errors it cannot name.
	typeUnnamed = "Function.Error"
)

// RuntimeError is what a runtime posted to report an error: the Err of the
// *function.Error an invocation (or an initialization) fails with. The
// stack trace is kept here, out of the message, because the message
// travels into logs and on-failure records while the stack is for whoever
// debugs with errors.As; and so is the error object as posted, which
// Lambda hands to a synchronous caller as it is.
type RuntimeError struct {
	// Type is the reported errorType (or the Lambda-Runtime-Function-Error-Type
	// header when the body names none).
	Type string
	// Message is the reported errorMessage.
	Message string
	// StackTrace holds the reported frames (stackTrace, or Node.js's
	// trace), one string each: as sent when the runtime sends strings
	// (Node.js, Python, Java), "path:line label" for aws-lambda-go's frame
	// objects.
	StackTrace []string
	// Object is the error object as the runtime posted it, a JSON object
	// with errorMessage, errorType, the stack trace and whatever else the
	// runtime put in it; nil when the runtime posted something else, or
	// more than 1 MB.
	Object []byte
}

// ErrorObject returns the error object as posted (Object), for the Invoke
// API, which answers a synchronous caller with it as Lambda does; nil when
// there is none and the caller gets idem's {errorMessage, errorType}.
func (e *RuntimeError) ErrorObject() []byte { return e.Object }

// Error renders the error as Lambda logs it, "Type: Message".
func (e *RuntimeError) Error() string { return e.Type + ": " + e.Message }

// parseError reads an error a runtime posted: Lambda's error object
// {"errorMessage": "…", "errorType": "…", "stackTrace": […]} (Node.js's
// client names the frames "trace"), with the
// Lambda-Runtime-Function-Error-Type header as the type when the body has
// none. The object is kept as posted (RuntimeError.Object). It accepts anything: a body that is not an error object still
// fails the invocation, with what it says quoted in the message.
func parseError(body []byte, headerType string) *function.Error {
	re := &RuntimeError{}
	trimmed := bytes.TrimSpace(body)
	var obj struct {
		Type    json.RawMessage `json:"errorType"`
		Message json.RawMessage `json:"errorMessage"`
		Stack   json.RawMessage `json:"stackTrace"`
		Trace   json.RawMessage `json:"trace"` // Node.js's name for it
	}
	switch {
	case len(trimmed) == 0:
		re.Message = "the runtime reported an error without a body"
	case trimmed[0] == '{' && json.Unmarshal(trimmed, &obj) == nil:
		re.Type = jsonString(obj.Type)
		re.Message = jsonText(obj.Message)
		if re.Message == "" {
			re.Message = "the runtime reported an error without an errorMessage"
		}
		re.StackTrace = stackTrace(obj.Stack)
		if re.StackTrace == nil {
			re.StackTrace = stackTrace(obj.Trace)
		}
		if len(trimmed) <= maxErrorObject {
			re.Object = bytes.Clone(trimmed)
		}
	case trimmed[0] == '"' && json.Unmarshal(trimmed, &re.Message) == nil:
	default:
		re.Message = "the runtime reported an error that is not an error object: " + quote(trimmed)
	}
	if strings.TrimSpace(re.Type) == "" {
		re.Type = strings.ToValidUTF8(strings.TrimSpace(headerType), "\uFFFD")
	}
	if re.Type == "" {
		re.Type = typeUnnamed
	}
	re.Type = truncate(re.Type, maxErrorType)
	re.Message = truncate(re.Message, maxErrorMessage)
	return &function.Error{Type: re.Type, Message: re.Message, Err: re}
}

// jsonString returns v if it is a JSON string, and "" otherwise.
func jsonString(v json.RawMessage) string {
	var s string
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return ""
	}
	return s
}

// jsonText returns v as a string if it is one, its JSON text if it is
// another value, and "" for null or nothing: a runtime that reports an
// object as its message still says something.
func jsonText(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	if s := jsonString(v); s != "" || v[0] == '"' {
		return s
	}
	return string(v)
}

// stackTrace renders the reported frames, at most maxStackFrames of them.
func stackTrace(v json.RawMessage) []string {
	var frames []json.RawMessage
	if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &frames) != nil {
		return nil
	}
	out := make([]string, 0, min(len(frames), maxStackFrames))
	for _, fr := range frames {
		if len(out) == maxStackFrames {
			out = append(out, fmt.Sprintf("… %d more frames", len(frames)-maxStackFrames))
			break
		}
		var s string
		var obj struct {
			Path  *string      `json:"path"`
			Line  *json.Number `json:"line"`
			Label *string      `json:"label"`
		}
		switch {
		case fr[0] == '"' && json.Unmarshal(fr, &s) == nil:
		case fr[0] == '{' && json.Unmarshal(fr, &obj) == nil && obj.Path != nil:
			s = *obj.Path
			if obj.Line != nil {
				s += ":" + obj.Line.String()
			}
			if obj.Label != nil {
				s += " " + *obj.Label
			}
		default:
			s = string(fr)
		}
		out = append(out, truncate(s, maxStackFrame))
	}
	return out
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// quote renders at most 100 bytes of b for an error message.
func quote(b []byte) string {
	if len(b) <= 100 {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(string(b[:100])), len(b))
}
