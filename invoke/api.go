package invoke

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/idem-run/idem/function"
)

// Route is the Invoke API's route, as Lambda serves it, in net/http
// ServeMux syntax.
const Route = "POST /2015-03-31/functions/{name}/invocations"

// Headers of the Invoke API.
const (
	headerInvocationType  = "X-Amz-Invocation-Type"
	headerLogType         = "X-Amz-Log-Type"
	headerClientContext   = "X-Amz-Client-Context"
	headerExecutedVersion = "X-Amz-Executed-Version"
	headerFunctionError   = "X-Amz-Function-Error"
	headerLogResult       = "X-Amz-Log-Result"
	headerRequestID       = "X-Amzn-Requestid"
	headerErrorType       = "X-Amzn-Errortype"
	// HeaderIdempotencyKey makes repeats of an invocation return its first
	// result (IETF draft "The Idempotency-Key HTTP Header Field").
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotencyWait: false makes a repeat of a running invocation
	// fail at once with 409 instead of waiting for its result.
	HeaderIdempotencyWait = "Idempotency-Wait"
	// HeaderReplayed marks an answer that is an earlier invocation's result
	// (or, for Event, an event that was not queued again).
	HeaderReplayed = "Idempotent-Replayed"
)

// ServeHTTP serves Lambda's Invoke API for the route Route:
//
//   - X-Amz-Invocation-Type RequestResponse (the default) runs the function
//     and answers 200 with its result; a function error is 200 too, with
//     X-Amz-Function-Error: Unhandled and Lambda's error object as the
//     body: the one the function's runtime posted, as posted (with its
//     stackTrace or trace, and any other member), or {"errorMessage",
//     "errorType"} for an error idem met (a timeout, an exit);
//   - Event queues the event durably and answers 202 (payloads up to 1 MB);
//   - DryRun checks the request and answers 204.
//
// The function may be named by name, name:qualifier, or ARN; the qualifier
// (or the Qualifier query parameter) may only be $LATEST. Errors of the API
// itself are answered as Lambda does, with X-Amzn-ErrorType and a JSON
// body: 404 ResourceNotFoundException, 400 InvalidRequestContentException
// (a payload that is not JSON), 400 InvalidParameterValueException, 413
// RequestTooLargeException (over 6 MB), 409 ResourceConflictException (a
// repeat that chose not to wait), and 422 IdempotencyPayloadMismatchException.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := NewRequestID()
	w.Header().Set(headerRequestID, id)
	name, qualifier := parseFunctionName(r.PathValue("name"))
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		qualifier = q
	}
	if qualifier != "" && qualifier != "$LATEST" {
		writeError(w, apiError(http.StatusNotFound, codeNotFound, "Function not found: %s:%s (idem runs $LATEST only)",
			strings.TrimSuffix(FunctionArn(s.region, name), ":$LATEST"), qualifier))
		return
	}
	typ := r.Header.Get(headerInvocationType)
	switch typ {
	case "", "RequestResponse", "Event", "DryRun":
	default:
		writeError(w, apiError(http.StatusBadRequest, codeInvalidParam, "%s %q: want RequestResponse, Event or DryRun", headerInvocationType, typ))
		return
	}
	logType := r.Header.Get(headerLogType)
	if logType != "" && logType != "None" && logType != "Tail" {
		writeError(w, apiError(http.StatusBadRequest, codeInvalidParam, "%s %q: want None or Tail", headerLogType, logType))
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, function.MaxPayloadSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, apiError(http.StatusRequestEntityTooLarge, codeTooLarge,
				"Request must be smaller than %d bytes for the InvokeFunction operation", function.MaxPayloadSize+1))
			return
		}
		writeError(w, apiError(http.StatusBadRequest, codeInvalidContent, "reading the request body: %v", err))
		return
	}
	if typ == "Event" && len(payload) > MaxAsyncPayload {
		writeError(w, apiError(http.StatusRequestEntityTooLarge, codeTooLarge,
			"Request must be smaller than %d bytes for the Event invocation type", MaxAsyncPayload+1))
		return
	}
	if len(payload) > 0 && !json.Valid(payload) {
		var v any
		jerr := json.Unmarshal(payload, &v)
		writeError(w, apiError(http.StatusBadRequest, codeInvalidContent, "Could not parse request body into json: %v", jerr))
		return
	}
	req := Request{Function: name, Payload: payload, RequestID: id,
		IdempotencyKey: r.Header.Get(HeaderIdempotencyKey),
		NoWait:         strings.EqualFold(r.Header.Get(HeaderIdempotencyWait), "false"),
		Report:         logType == "Tail"}
	if cc := r.Header.Get(headerClientContext); cc != "" {
		b, err := base64.StdEncoding.DecodeString(cc)
		if err != nil || len(cc) > maxClientContext || !json.Valid(b) {
			writeError(w, apiError(http.StatusBadRequest, codeInvalidParam,
				"%s must be a JSON object, base64-encoded, of at most %d characters", headerClientContext, maxClientContext))
			return
		}
		req.ClientContext = b
	}

	switch typ {
	case "DryRun":
		if err := s.Check(req); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "Event":
		dedup, err := s.Enqueue(r.Context(), req)
		if err != nil {
			writeError(w, err)
			return
		}
		if dedup {
			w.Header().Set(HeaderReplayed, "true")
		}
		w.WriteHeader(http.StatusAccepted)
	default:
		start := time.Now()
		res, err := s.Invoke(r.Context(), req)
		if err != nil {
			writeError(w, err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set(headerExecutedVersion, "$LATEST")
		if logType == "Tail" {
			h.Set(headerLogResult, logTail(id, time.Since(start), res.Report))
		}
		if res.Replayed {
			h.Set(HeaderReplayed, "true")
		}
		body := res.Payload
		if res.Err != nil {
			h.Set(headerFunctionError, "Unhandled")
			body = errorBody(res.Err)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}
}

// parseFunctionName reads Lambda's FunctionName forms: name, name:qualifier,
// 123456789012:function:name[:qualifier] and
// arn:aws:lambda:region:account:function:name[:qualifier].
func parseFunctionName(s string) (name, qualifier string) {
	if i := strings.Index(s, ":function:"); i >= 0 {
		s = s[i+len(":function:"):]
	}
	name, qualifier, _ = strings.Cut(s, ":")
	return name, qualifier
}

// logTail is the X-Amz-Log-Result of a Tail invocation: idem does not
// capture a function's own log lines (they are in idem's log, tagged with
// the request id), so it sends Lambda's platform lines. The REPORT line
// has the driver's measures where it reports them (rep), and otherwise the
// Invoke API's own duration (d, which includes any wait for an idle
// runtime) and no memory figures.
func logTail(id string, d time.Duration, rep function.Report) string {
	if rep.Duration > 0 {
		d = rep.Duration
	}
	ms := float64(d.Microseconds()) / 1000
	billed := (d + time.Millisecond - 1) / time.Millisecond // Lambda bills each started millisecond
	s := fmt.Sprintf("START RequestId: %s Version: $LATEST\nEND RequestId: %s\nREPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\t",
		id, id, id, ms, max(billed, 1))
	if rep.MemorySize > 0 {
		s += fmt.Sprintf("Memory Size: %d MB\t", rep.MemorySize)
	}
	if rep.MaxMemoryUsed > 0 {
		s += fmt.Sprintf("Max Memory Used: %d MB\t", (rep.MaxMemoryUsed+1<<20-1)>>20)
	}
	return base64.StdEncoding.EncodeToString([]byte(s + "\n"))
}

// errorBody is the body of a synchronous invocation that failed: the error
// object the runtime posted, as posted, where it kept one (a process
// function's *process.RuntimeError has ErrorObject), and otherwise
// Lambda's {"errorMessage", "errorType"} built from fe.
func errorBody(fe *function.Error) []byte {
	var posted interface{ ErrorObject() []byte }
	if errors.As(fe, &posted) {
		if obj := posted.ErrorObject(); obj != nil {
			return obj
		}
	}
	body, _ := json.Marshal(errorPayload{ErrorMessage: fe.Message, ErrorType: fe.Type})
	return body
}

// WriteError answers err as Lambda's API does: the error type in
// X-Amzn-ErrorType and a JSON body. An error that is not an *Error is a 500
// ServiceException.
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }

func writeError(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{Status: http.StatusInternalServerError, Code: codeService, Message: err.Error()}
	}
	typ := "User"
	if ae.Status >= 500 {
		typ = "Service"
	}
	// Lambda's exceptions spell their message member either way; the SDKs
	// read the one their shape names. "error" is the same text, where
	// idem's own API has it for idem's clients.
	body, _ := json.Marshal(map[string]string{"Type": typ, "Message": ae.Message, "message": ae.Message, "error": ae.Message})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(headerErrorType, ae.Code)
	w.WriteHeader(ae.Status)
	_, _ = w.Write(body)
}
