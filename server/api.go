package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
)

// The HTTP API's JSON shapes. They are what the CLI speaks; keep them
// backward compatible.

// PutRequest appends records to a stream.
type PutRequest struct {
	Records []PutRecord `json:"records"`
}

// PutRecord is one record to append. Data is text; DataBase64, when set,
// carries binary data instead.
type PutRecord struct {
	PartitionKey string `json:"partitionKey"`
	Data         string `json:"data,omitempty"`
	DataBase64   []byte `json:"dataBase64,omitempty"`
}

// PutResponse says where each record landed, in request order.
type PutResponse struct {
	Records []PutResult `json:"records"`
}

// PutResult is one appended record's place.
type PutResult struct {
	ShardID        string `json:"shardId"`
	SequenceNumber string `json:"sequenceNumber"`
}

// RecordJSON is a stored record as `idem records --json` prints it. Data is
// the payload as text when it is UTF-8; otherwise DataBase64 carries it.
type RecordJSON struct {
	Stream                      string `json:"stream"`
	ShardID                     string `json:"shardId"`
	SequenceNumber              string `json:"sequenceNumber"`
	PartitionKey                string `json:"partitionKey"`
	ApproximateArrivalTimestamp string `json:"approximateArrivalTimestamp"`
	Data                        string `json:"data,omitempty"`
	DataBase64                  []byte `json:"dataBase64,omitempty"`
}

// RecordsResponse is one page of a stream's records.
type RecordsResponse struct {
	Records []RecordJSON `json:"records"`
	// Next, when not empty, is the `after` to ask for the next page of the
	// shard.
	Next string `json:"next,omitempty"`
}

// StatusResponse is `idem status --json`. Its lists are JSON arrays even
// when empty (see MarshalJSON).
type StatusResponse struct {
	Shards []engine.ShardStatus `json:"shards"`
	// Functions reports process functions, so a crash loop is visible.
	Functions []FunctionStatus `json:"functions"`
	// Queues reports each function's queue of asynchronous invocations.
	Queues []invoke.QueueStatus `json:"queues"`
	// Mappings reports each mapping's state: enabled, paused or disabled.
	Mappings []MappingStatus `json:"mappings"`
}

// MarshalJSON writes r with every list an array, [] when it is empty or
// nil, never null: a client (jq, a script) can iterate over a list
// without checking it first, whether the server or `idem status --json`,
// which re-encodes what it read, wrote it.
func (r StatusResponse) MarshalJSON() ([]byte, error) {
	type plain StatusResponse // without this method
	p := plain(r)
	if p.Shards == nil {
		p.Shards = []engine.ShardStatus{}
	}
	if p.Functions == nil {
		p.Functions = []FunctionStatus{}
	}
	if p.Queues == nil {
		p.Queues = []invoke.QueueStatus{}
	}
	if p.Mappings == nil {
		p.Mappings = []MappingStatus{}
	}
	return json.Marshal(p)
}

// FunctionStatus is the state of one process function's processes.
type FunctionStatus struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Concurrency int       `json:"concurrency"`
	Running     int       `json:"running"`
	Restarts    int       `json:"restarts"`
	LastExit    string    `json:"lastExit,omitempty"`
	LastExitAt  time.Time `json:"lastExitAt,omitzero"`
	CrashLoop   bool      `json:"crashLoop"`
}

// errorResponse is every error's body, in the shape of AWS's JSON APIs'
// errors (the type in the X-Amzn-ErrorType header, and Type and message in
// the body), so that AWS SDKs report the error's code and text; Error is
// the same text for idem's own clients, which read it.
type errorResponse struct {
	// Type is "User" for a client's error (4xx), "Service" for idem's.
	Type string `json:"Type"`
	// Message and MessageUpper are the same text: Lambda's exceptions
	// spell their message member either way, and each SDK reads the one
	// its shape names.
	Message      string `json:"message"`
	MessageUpper string `json:"Message"`
	Error        string `json:"error"`
}

// maxRequestBytes bounds a request body: Lambda's 6 MB payload limit.
const maxRequestBytes = 6 << 20

// routes returns the API: every route behind the tokens (see
// authenticator.open for the few that are not), under the deadlines that
// bound slow clients.
func (s *Server) routes(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/streams/{stream}/records", s.guardPut(s.handlePut))
	s.invokeRoutes(mux)
	s.s3EventRoutes(mux, reg)
	s.controlRoutes(mux)
	s.replayRoutes(mux)
	mux.HandleFunc("POST /v1/redrive", s.handleRedrive)
	mux.HandleFunc("GET /v1/streams/{stream}/records", s.handleRecords)
	mux.HandleFunc("GET /v1/streams", s.handleStreams)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/state/{scope}/{key}", s.handleState)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s.deadlines(s.consoleRoutes(mux, s.auth.guard(mux)))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers err with status code, as errorResponse says, with
// the error type errorType names for code.
func writeError(w http.ResponseWriter, code int, err error) {
	writeTypedError(w, code, errorType(code), err)
}

// writeTypedError answers err with status code and the AWS error type
// errType, as errorResponse says.
func writeTypedError(w http.ResponseWriter, code int, errType string, err error) {
	msg, typ := err.Error(), "User"
	if code >= 500 {
		typ = "Service"
	}
	w.Header().Set("X-Amzn-Errortype", errType)
	writeJSON(w, code, errorResponse{Type: typ, Message: msg, MessageUpper: msg, Error: msg})
}

// readJSON reads r's body, at most limit bytes, into v. When it cannot,
// it answers the request itself and returns false: 413 for a body over
// limit, 400 (errContentType) for one that cannot be read or is not the
// JSON v takes.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", limit))
			return false
		}
		writeTypedError(w, http.StatusBadRequest, errContentType, fmt.Errorf("reading request: %w", err))
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		writeTypedError(w, http.StatusBadRequest, errContentType, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

// errContentType is the error type of a request body that cannot be read
// or is not the JSON the route takes, as Lambda names it.
const errContentType = "InvalidRequestContentException"

// errorType is the AWS error type (X-Amzn-ErrorType) of an answer with
// status code: the name Lambda's API gives the error of that status.
func errorType(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "InvalidParameterValueException"
	case http.StatusUnauthorized, http.StatusForbidden:
		return "AccessDeniedException"
	case http.StatusNotFound:
		return "ResourceNotFoundException"
	case http.StatusConflict:
		return "ResourceConflictException"
	case http.StatusRequestEntityTooLarge:
		return "RequestTooLargeException"
	case http.StatusTooManyRequests:
		return "TooManyRequestsException"
	}
	if code >= 500 {
		// 503 (not ready, busy) and 507 (the disk is full) included:
		// Lambda's API has one type for its own failures.
		return "ServiceException"
	}
	return "InvalidParameterValueException"
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	var req PutRequest
	if !readJSON(w, r, maxRequestBytes, &req) {
		return
	}
	if len(req.Records) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("records: at least one record is required"))
		return
	}
	recs := make([]pebbledb.PutRecord, len(req.Records))
	for i, pr := range req.Records {
		data := pr.DataBase64
		if data == nil {
			data = []byte(pr.Data)
		}
		recs[i] = pebbledb.PutRecord{PartitionKey: pr.PartitionKey, Data: data}
	}
	res, err := s.db.Put(r.Context(), stream, recs)
	if err != nil {
		code := putErrorStatus(err)
		if code == http.StatusInsufficientStorage {
			err = fmt.Errorf("the disk holding idem's data is full; nothing was written (retry once space is freed): %w", err)
		}
		writeError(w, code, err)
		return
	}
	out := PutResponse{Records: make([]PutResult, len(res))}
	for i, pr := range res {
		out.Records[i] = PutResult{ShardID: pr.Shard, SequenceNumber: string(idem.SequenceOf(pr.Sequence))}
	}
	writeJSON(w, http.StatusOK, out)
}

// putErrorStatus classifies a put's error: the request's mistakes are 400
// and 404, a full disk 507, a store that is closing or a client that left
// 503, anything else 500 (a server's failure is never blamed on the
// request).
func putErrorStatus(err error) int {
	switch {
	case errors.Is(err, pebbledb.ErrStreamNotFound):
		return http.StatusNotFound
	case errors.Is(err, pebbledb.ErrInvalidPartitionKey), errors.Is(err, pebbledb.ErrRecordTooLarge):
		return http.StatusBadRequest
	}
	return storeErrorStatus(err)
}

// storeErrorStatus classifies a failed store operation: 507 for a full
// disk, 503 for a store that is closing (or a request given up), 500
// otherwise.
func storeErrorStatus(err error) int {
	switch {
	case errors.Is(err, store.ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	q := r.URL.Query()
	shard := q.Get("shard")
	if shard == "" {
		writeError(w, http.StatusBadRequest, errors.New("shard: required"))
		return
	}
	after := idem.Sequence(q.Get("after"))
	if _, ok := after.Uint64(); !ok {
		writeError(w, http.StatusBadRequest, fmt.Errorf("after: %q is not a sequence number", after))
		return
	}
	limit := 1000
	if l := q.Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 || v > 10000 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("limit: %q is outside 1 to 10000", l))
			return
		}
		limit = v
	}
	res, err := s.db.Read(r.Context(), stream, shard, after, limit, 64<<20)
	if err != nil {
		code := storeErrorStatus(err)
		if errors.Is(err, pebbledb.ErrStreamNotFound) || errors.Is(err, pebbledb.ErrShardNotFound) {
			code = http.StatusNotFound
		}
		writeError(w, code, err)
		return
	}
	out := RecordsResponse{Records: make([]RecordJSON, len(res.Records))}
	for i := range res.Records {
		out.Records[i] = recordJSON(&res.Records[i])
	}
	if len(res.Records) == limit {
		out.Next = string(res.Records[len(res.Records)-1].Sequence)
	}
	writeJSON(w, http.StatusOK, out)
}

func recordJSON(rec *idem.Record) RecordJSON {
	j := RecordJSON{
		Stream: rec.Stream, ShardID: rec.ShardID, SequenceNumber: rec.SequenceNumber(), PartitionKey: rec.PartitionKey,
		ApproximateArrivalTimestamp: rec.ArrivalTime.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	}
	if utf8.Valid(rec.Data) {
		j.Data = string(rec.Data)
	} else {
		j.DataBase64 = append([]byte(nil), rec.Data...)
	}
	return j
}

func (s *Server) handleStreams(w http.ResponseWriter, r *http.Request) {
	infos, err := s.db.Streams(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, infos)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	out := StatusResponse{Shards: s.engine.Status(), Mappings: s.statusMappings(r.Context())}
	if s.invoke != nil {
		out.Queues = s.invoke.Status(r.Context())
	}
	for _, p := range s.procs {
		st := p.fn.Status()
		out.Functions = append(out.Functions, FunctionStatus{Name: p.name, Kind: "process", Concurrency: st.Concurrency,
			Running: st.Running, Restarts: st.Restarts, LastExit: st.LastExit, LastExitAt: st.LastExitAt, CrashLoop: st.CrashLoop})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	v, err := s.store.State(r.Context(), r.PathValue("scope"), r.PathValue("key"))
	if errors.Is(err, idem.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Errorf("state key %q of scope %q: not found", r.PathValue("key"), r.PathValue("scope")))
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(v)
}
