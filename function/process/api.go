package process

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/idem-run/idem/function"
)

// Runtime API header names, as aws-lambda-go spells them.
const (
	headerRequestID      = "Lambda-Runtime-Aws-Request-Id"
	headerDeadlineMS     = "Lambda-Runtime-Deadline-Ms"
	headerFunctionARN    = "Lambda-Runtime-Invoked-Function-Arn"
	headerTraceID        = "Lambda-Runtime-Trace-Id"
	headerClientContext  = "Lambda-Runtime-Client-Context"
	headerErrorType      = "Lambda-Runtime-Function-Error-Type"
	trailerErrorBody     = "Lambda-Runtime-Function-Error-Body"
	headerExtensionName  = "Lambda-Extension-Name"
	headerExtensionID    = "Lambda-Extension-Identifier"
	headerExtensionEvent = "Lambda-Extension-Event-Identifier"
)

// maxRequestBody bounds what idem reads of a request that carries no
// response (an extension registration).
const maxRequestBody = 64 << 10

// routes serves the Runtime and Extensions APIs; anything else is 404.
// Every process has a listener of its own (see instanceListener), so the
// paths are Lambda's, without anything naming the process.
func (f *Function) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /2018-06-01/runtime/invocation/next", f.admit(f.next))
	mux.Handle("POST /2018-06-01/runtime/invocation/{id}/response", f.admit(f.response))
	mux.Handle("POST /2018-06-01/runtime/invocation/{id}/error", f.admit(f.invocationError))
	mux.Handle("POST /2018-06-01/runtime/init/error", f.admit(f.initError))
	mux.Handle("POST /2020-01-01/extension/register", f.admit(f.register))
	mux.Handle("GET /2020-01-01/extension/event/next", f.admit(f.extensionNext))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeAPIError(w, http.StatusNotFound, "NotFound", "not found")
	})
	return mux
}

// admit runs h for a live process's request, and counts it so that Close
// can wait for it.
func (f *Function) admit(h func(http.ResponseWriter, *http.Request, *instance)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.gate.Lock()
		if !f.serving {
			f.gate.Unlock()
			writeAPIError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "the function is closing")
			return
		}
		f.handlers.Add(1)
		f.gate.Unlock()
		defer f.handlers.Done()

		inst := instanceOf(r.Context())
		if inst == nil {
			writeAPIError(w, http.StatusNotFound, "NotFound", "not found")
			return
		}
		select {
		case <-inst.exited:
			// A process idem replaced: its connections close with it.
			writeAPIError(w, http.StatusGone, "ProcessExited", "the process has exited")
			return
		default:
		}
		h(w, r, inst)
	})
}

// next hands the process its next invocation, blocking until there is one.
func (f *Function) next(w http.ResponseWriter, r *http.Request, inst *instance) {
	inst.mu.Lock()
	if cur := inst.cur; cur != nil {
		// Asking for more work is the end of the previous invocation; one
		// without an answer has failed.
		inst.cur = nil
		inst.finishLocked(cur, function.Result{}, &function.Error{
			Type:    function.TypeInvalidResponse,
			Message: "the runtime asked for its next invocation without answering request " + cur.id,
		})
	}
	first := !inst.ready
	inst.ready = true
	inst.mu.Unlock()
	if first {
		f.log.Debug("process ready", "pid", inst.cmd.Process.Pid, "process", inst.id)
	}

	var inv *invocation
	select {
	case inv = <-f.work:
	case <-r.Context().Done():
		return
	case <-inst.exited:
		return
	}
	ev := inv.event
	inv.event = nil
	defer f.putEvent(ev)
	if !inst.bind(inv) {
		writeAPIError(w, http.StatusGone, "ProcessExited", "the process has exited")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(ev.b)))
	h.Set(headerRequestID, inv.id)
	h.Set(headerDeadlineMS, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
	h.Set(headerFunctionARN, f.arn)
	h.Set(headerTraceID, cmp.Or(inv.traceID, traceID()))
	if len(inv.clientContext) > 0 {
		h.Set(headerClientContext, string(inv.clientContext))
	}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(ev.b)
	if err == nil {
		err = http.NewResponseController(w).Flush()
	}
	if err != nil {
		// The process did not read the whole event, so its handler has
		// not run: another process may take it.
		inst.undeliver(inv)
	}
}

// response reads an invocation's answer.
func (f *Function) response(w http.ResponseWriter, r *http.Request, inst *instance) {
	inv := inst.current(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+strconv.Quote(r.PathValue("id"))+" is running in this process")
		return
	}
	buf := f.body()
	defer f.putBody(buf)
	n, err := buf.ReadFrom(io.LimitReader(r.Body, function.MaxResponseSize+1))
	if err != nil {
		// The process went away mid-answer; its exit fails the invocation.
		return
	}
	var res function.Result
	var raw []byte
	var ferr error
	if n > function.MaxResponseSize {
		// Read on, to the trailers and so that the runtime's write ends
		// normally: the process stays usable.
		_, _ = io.Copy(io.Discard, r.Body)
		ferr = &function.Error{Type: function.TypeResponseTooLarge,
			Message: fmt.Sprintf("response exceeds 6 MB (%d bytes)", function.MaxResponseSize)}
	} else if typ := r.Trailer.Get(headerErrorType); typ != "" {
		// aws-lambda-go reports an error met while streaming the response
		// in trailers.
		body, _ := base64.StdEncoding.DecodeString(r.Trailer.Get(trailerErrorBody))
		ferr = parseError(body, typ)
	} else if inv.raw {
		raw = bytes.Clone(buf.Bytes())
	} else {
		res, ferr = function.ParseResponse(buf.Bytes())
	}
	if inv.raw {
		inst.completePayload(inv, raw, ferr)
	} else {
		inst.complete(inv, res, ferr)
	}
	writeAccepted(w)
}

// invocationError reads the error the runtime reports for an invocation.
func (f *Function) invocationError(w http.ResponseWriter, r *http.Request, inst *instance) {
	inv := inst.current(r.PathValue("id"))
	if inv == nil {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+strconv.Quote(r.PathValue("id"))+" is running in this process")
		return
	}
	fe, ok := f.readError(r)
	if !ok {
		return
	}
	inst.complete(inv, function.Result{}, fe)
	writeAccepted(w)
}

// initError records the error a runtime reports when its initialization
// fails: the invocations waiting for a process fail with it once the
// process exits.
func (f *Function) initError(w http.ResponseWriter, r *http.Request, inst *instance) {
	fe, ok := f.readError(r)
	if !ok {
		return
	}
	inst.mu.Lock()
	inst.initErr = fe
	inst.mu.Unlock()
	f.log.Warn("process initialization failed", "pid", inst.cmd.Process.Pid, "process", inst.id, "type", fe.Type, "err", fe.Message)
	writeAccepted(w)
}

// readError reads an error body, at most function.MaxResponseSize bytes of
// it, and parses it.
func (f *Function) readError(r *http.Request) (*function.Error, bool) {
	buf := f.body()
	defer f.putBody(buf)
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, function.MaxResponseSize)); err != nil {
		return nil, false
	}
	_, _ = io.Copy(io.Discard, r.Body)
	return parseError(buf.Bytes(), r.Header.Get(headerErrorType)), true
}

// register registers an extension. idem runs no extensions of its own; the
// registration exists so that a runtime that registers one (aws-lambda-go
// does, for lambda.WithEnableSIGTERM) starts, and gets a SHUTDOWN event.
func (f *Function) register(w http.ResponseWriter, r *http.Request, inst *instance) {
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxRequestBody))
	if r.Header.Get(headerExtensionName) == "" {
		writeAPIError(w, http.StatusBadRequest, "InvalidRequest", "missing "+headerExtensionName+" header")
		return
	}
	id := newUUID()
	inst.mu.Lock()
	inst.extensions[id] = true
	inst.mu.Unlock()
	w.Header().Set(headerExtensionID, id)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"functionName":    f.cfg.Name,
		"functionVersion": "$LATEST",
		"handler":         filepath.Base(f.path),
	})
}

// extensionNext blocks until the function shuts down, then answers a
// SHUTDOWN event: idem sends extensions no INVOKE events.
func (f *Function) extensionNext(w http.ResponseWriter, r *http.Request, inst *instance) {
	inst.mu.Lock()
	known := inst.extensions[r.Header.Get(headerExtensionID)]
	inst.mu.Unlock()
	if !known {
		writeAPIError(w, http.StatusForbidden, "Extension.InvalidExtensionIdentifier", "unknown "+headerExtensionID)
		return
	}
	select {
	case <-inst.shutdown:
	case <-inst.exited:
		return
	case <-r.Context().Done():
		return
	}
	w.Header().Set(headerExtensionEvent, newUUID())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(struct {
		EventType      string `json:"eventType"`
		DeadlineMs     int64  `json:"deadlineMs"`
		ShutdownReason string `json:"shutdownReason"`
	}{"SHUTDOWN", time.Now().Add(stopGrace).UnixMilli(), "spindown"})
}

func writeAccepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"status":"OK"}`)
}

// writeAPIError answers as the Runtime API does, with an error object.
func writeAPIError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Message string `json:"errorMessage"`
		Type    string `json:"errorType"`
	}{msg, typ})
}

// traceID makes an X-Ray trace id of the form Lambda passes: runtimes and
// tracing libraries parse it.
func traceID() string {
	return fmt.Sprintf("Root=1-%08x-%08x%016x;Sampled=0", time.Now().Unix(), rand.Uint32(), rand.Uint64())
}

func (f *Function) body() *bytes.Buffer {
	if b, ok := f.bodies.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (f *Function) putBody(b *bytes.Buffer) {
	if b.Cap() > maxPooled {
		return
	}
	b.Reset()
	f.bodies.Put(b)
}
