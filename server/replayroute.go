package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/source"
)

// ReplayRequest is the body of POST /v1/mappings/{name}/replay, and, as
// query parameters (from, timestamp, scope, first), GET's: what `idem
// replay` asks.
type ReplayRequest struct {
	// From is TRIM_HORIZON, LATEST or AT_TIMESTAMP.
	From string `json:"from"`
	// Timestamp is AT_TIMESTAMP's time, RFC 3339.
	Timestamp string `json:"timestamp,omitempty"`
	// Scope, for a dry run, asks what would run under this idempotency
	// scope instead of the mapping's.
	Scope string `json:"scope,omitempty"`
	// DryRun reports without moving the checkpoints.
	DryRun bool `json:"dryRun"`
	// First is how many of the records that would run are listed (default
	// engine.DefaultReplayFirst; negative: none).
	First int `json:"first,omitempty"`
}

// ReplayProgressContentType is the type of a replay's answer streamed as
// it reads (asked for with an Accept header naming it): one JSON object a
// line, engine.ReplayProgress lines ({"progress": n, "total": m}), then
// the engine.ReplayReport, or {"error": "..."} when it failed after the
// answer began.
const ReplayProgressContentType = "application/x-ndjson"

// replayProgressEvery is the least time between two progress lines.
const replayProgressEvery = 100 * time.Millisecond

// replayRoutes adds the replay routes: GET for dry runs, a read (read
// tokens may ask it), and POST, behind the write guard, for both.
func (s *Server) replayRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/mappings/{name}/replay", s.handleReplay)
	mux.HandleFunc("POST /v1/mappings/{name}/replay", s.handleReplay)
}

// handleReplay serves a replay: a dry run reports what a mapping would run
// and skip if it read again from a starting position; otherwise the
// mapping (paused) has its checkpoints moved there too. The answer is one
// engine.ReplayReport, or a stream of progress lines then the report
// (ReplayProgressContentType) for a client that accepts it.
func (s *Server) handleReplay(w http.ResponseWriter, r *http.Request) {
	var req ReplayRequest
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		req = ReplayRequest{From: q.Get("from"), Timestamp: q.Get("timestamp"), Scope: q.Get("scope"), DryRun: true}
		if d := q.Get("dryRun"); d != "" && d != "true" {
			writeError(w, http.StatusBadRequest, errors.New("dryRun: GET asks only dry runs; move checkpoints with POST"))
			return
		}
		if f := q.Get("first"); f != "" {
			n, err := strconv.Atoi(f)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("first: %q is not a number", f))
				return
			}
			req.First = n
		}
	} else if !readJSON(w, r, 1<<20, &req) {
		return
	}
	er := engine.ReplayRequest{From: source.StartingPosition(strings.ToUpper(req.From)), Scope: req.Scope, DryRun: req.DryRun, First: req.First}
	if req.Timestamp != "" {
		ts, err := time.Parse(time.RFC3339Nano, req.Timestamp)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("timestamp: %q is not RFC 3339: %w", req.Timestamp, err))
			return
		}
		er.Timestamp = ts
	}

	// The answer begins with the first progress: an error found before
	// (an unknown mapping, one not paused) gets its own status. Each
	// progress pushes the write deadline on: reading a day of retention
	// may take longer than one.
	rc := http.NewResponseController(w)
	stream := strings.Contains(r.Header.Get("Accept"), ReplayProgressContentType)
	enc := json.NewEncoder(w)
	started := false
	var last time.Time
	progress := func(p engine.ReplayProgress) {
		_ = rc.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
		if !stream || time.Since(last) < replayProgressEvery {
			return
		}
		last = time.Now()
		if !started {
			started = true
			w.Header().Set("Content-Type", ReplayProgressContentType)
			w.WriteHeader(http.StatusOK)
		}
		_ = enc.Encode(p)
		_ = rc.Flush()
	}
	rep, err := s.engine.Replay(r.Context(), r.PathValue("name"), er, progress)
	switch {
	case err != nil && started:
		_ = enc.Encode(map[string]string{"error": err.Error()})
	case err != nil:
		writeError(w, replayErrorStatus(err), err)
	case started:
		_ = enc.Encode(rep)
	default:
		if stream {
			w.Header().Set("Content-Type", ReplayProgressContentType)
			w.WriteHeader(http.StatusOK)
			_ = enc.Encode(rep)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	}
}

// replayErrorStatus classifies a replay's error.
func replayErrorStatus(err error) int {
	switch {
	case errors.Is(err, engine.ErrUnknownMapping):
		return http.StatusNotFound
	case errors.Is(err, engine.ErrBadReplay):
		return http.StatusBadRequest
	case errors.Is(err, engine.ErrNotPaused):
		return http.StatusConflict
	}
	return storeErrorStatus(err)
}
