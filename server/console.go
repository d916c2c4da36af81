package server

import (
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"net/url"

	"github.com/idem-run/idem/config"
)

// The web console: a page, served at /ui/ from files embedded in the
// binary, that shows the mappings, the functions and the on-failure
// destinations from the API's own routes, and pauses, resumes and
// redrives through them. It has no build step and loads nothing from
// elsewhere, so that it works on a machine without internet.
//
// The page's files hold no data and are served without a token, so that a
// browser, which cannot send one with a navigation, can load them; the
// page then asks for a token and sends it (Authorization: Bearer) with
// every API call, which the tokens guard as they guard any client's.

//go:embed ui
var uiFiles embed.FS

// consoleFS is the ui directory's files at the root.
var consoleFS = func() fs.FS {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the directory is embedded: it exists
	}
	return sub
}()

// ConsoleInfo is GET /v1/console: what the console needs that the status
// does not say, from the config file: each mapping's source and
// on-failure destination, each function's kind and destination, and which
// optional routes this idem has.
type ConsoleInfo struct {
	Mappings  []ConsoleMapping  `json:"mappings"`
	Functions []ConsoleFunction `json:"functions"`
	// Redrive is the route that redrives an on-failure destination, "" if
	// this idem has none.
	Redrive string `json:"redrive"`
	// Replay is the method and route, with {name} for the mapping, that
	// reports what a replay of a mapping would run (GET when this idem
	// serves dry runs as reads), "" if this idem has none.
	Replay string `json:"replay"`
}

// ConsoleMapping is one mapping of the config file, as the console shows
// it.
type ConsoleMapping struct {
	Name     string `json:"name"`
	UUID     string `json:"uuid"`
	Function string `json:"function"`
	// Source is the kind of source (embedded, kafka, kinesis, redis,
	// jetstream, dynamodb) and Stream its stream, topic or table.
	Source string `json:"source"`
	Stream string `json:"stream"`
	// OnFailure is the stream discarded batches go to; "" for none.
	OnFailure string `json:"onFailure,omitempty"`
	// Enabled is the config file's enabled: false is disabled until the
	// file changes; pausing is not this.
	Enabled   bool `json:"enabled"`
	BatchSize int  `json:"batchSize"`
}

// ConsoleFunction is one function of the config file, as the console
// shows it.
type ConsoleFunction struct {
	Name string `json:"name"`
	// Kind is go, http or process.
	Kind string `json:"kind"`
	// OnFailure is the stream discarded asynchronous invocations go to; ""
	// for none.
	OnFailure string `json:"onFailure,omitempty"`
}

// consoleRoutes registers the console's routes on the guarded mux, and
// wraps api (that mux behind the tokens) with the console's page, which
// needs none.
func (s *Server) consoleRoutes(mux *http.ServeMux, api http.Handler) http.Handler {
	mux.HandleFunc("GET /v1/console", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.consoleInfo(mux))
	})
	files := http.StripPrefix("/ui/", http.FileServerFS(consoleFS))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := r.URL.Path == "/" || r.URL.Path == "/ui" || len(r.URL.Path) >= 4 && r.URL.Path[:4] == "/ui/"
		if !page {
			api.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, errMethod)
			return
		}
		if r.URL.Path == "/" || r.URL.Path == "/ui" {
			http.Redirect(w, r, "/ui/", http.StatusFound)
			return
		}
		h := w.Header()
		// The page runs only its own scripts and talks only to this
		// origin; no other site may frame it (its buttons pause and
		// redrive).
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary: a browser checks each load.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// errMethod answers a write to the console's page.
var errMethod = errors.New("the console's page is read-only: use GET")

// consoleInfo describes the config file's mappings and functions, and the
// optional routes mux has.
func (s *Server) consoleInfo(mux *http.ServeMux) ConsoleInfo {
	out := ConsoleInfo{Mappings: []ConsoleMapping{}, Functions: []ConsoleFunction{}}
	for i := range s.cfg.Mappings {
		m := &s.cfg.Mappings[i]
		out.Mappings = append(out.Mappings, ConsoleMapping{Name: m.Name, UUID: MappingUUID(m.Name), Function: m.Function,
			Source: sourceKind(&m.Source), Stream: m.Source.Name(), OnFailure: m.OnFailureStream(), Enabled: m.Enabled, BatchSize: m.BatchSize})
	}
	for i := range s.cfg.Functions {
		f := &s.cfg.Functions[i]
		kind := "go"
		switch {
		case f.Process != nil:
			kind = "process"
		case f.HTTP != nil:
			kind = "http"
		}
		cf := ConsoleFunction{Name: f.Name, Kind: kind}
		if d := f.Async.OnFailure; d != nil {
			cf.OnFailure = d.Stream
		}
		out.Functions = append(out.Functions, cf)
	}
	if route(mux, http.MethodPost, "/v1/redrive") {
		out.Redrive = "/v1/redrive"
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		if route(mux, method, "/v1/mappings/{name}/replay") {
			out.Replay = method + " /v1/mappings/{name}/replay"
			break
		}
	}
	return out
}

// route reports whether mux has a route for method and path, so that the
// console offers only the actions this idem serves.
func route(mux *http.ServeMux, method, path string) bool {
	_, pattern := mux.Handler(&http.Request{Method: method, URL: &url.URL{Path: path}, Host: "localhost"})
	return pattern != "" && pattern != "/"
}

// sourceKind names the kind of a mapping's source.
func sourceKind(r *config.SourceRef) string {
	switch {
	case r.Kafka != nil:
		return "kafka"
	case r.Kinesis != nil:
		return "kinesis"
	case r.Redis != nil:
		return "redis"
	case r.JetStream != nil:
		return "jetstream"
	case r.DynamoDB != nil:
		return "dynamodb"
	}
	return "embedded"
}
