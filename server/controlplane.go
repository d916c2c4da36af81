package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/invoke"
)

// The Lambda control plane, read-only but for pausing and resuming a
// mapping: what `aws lambda list-functions`, `get-function`,
// `get-function-configuration`, `list-event-source-mappings`,
// `get-event-source-mapping` and `update-event-source-mapping --enabled |
// --no-enabled` call, in Lambda's REST paths and JSON shapes, so that the
// AWS CLI and SDKs (with --endpoint-url) see idem's functions and mappings
// as Lambda's. The config file owns every other setting: an update of one
// is refused and names the file. The routes sit behind the tokens as every
// route does (routes); an update is a write, which needs a full token.

// ARNs idem presents for what it has no AWS account for: the account is
// 000000000000 and the region the config's (config.File.Region). An
// embedded stream, a JetStream stream and a Redis stream are named in
// Kinesis' form, arn:aws:kinesis:REGION:000000000000:stream/NAME, as the
// KinesisEvents their functions get name them (eventSourceARN); a Kafka
// topic in Amazon MSK's, arn:aws:kafka:REGION:000000000000:cluster/idem/TOPIC,
// as its KafkaEvents do.

// Runtime values of FunctionConfiguration: a process function runs a
// Lambda custom runtime's bootstrap (provided.al2023); the other kinds are
// idem's own.
const (
	runtimeProcess = "provided.al2023"
	runtimeHTTP    = "idem.http"
	runtimeGo      = "idem.go"
)

// LastProcessingResult values, as Lambda writes them.
const (
	resultOK        = "OK"
	resultNone      = "No records processed"
	resultFnFailed  = "PROBLEM: Function call failed"
	resultProblemOf = "PROBLEM: "
)

// controlRoutes registers the control plane's routes. Lambda's SDKs ask
// for the lists without a trailing slash, the AWS CLI v1 with one.
func (s *Server) controlRoutes(mux *http.ServeMux) {
	s.started = time.Now()
	mux.HandleFunc("GET /2015-03-31/functions", s.handleListFunctions)
	mux.HandleFunc("GET /2015-03-31/functions/{$}", s.handleListFunctions)
	mux.HandleFunc("GET /2015-03-31/functions/{name}", s.handleGetFunction)
	mux.HandleFunc("GET /2015-03-31/functions/{name}/configuration", s.handleGetFunctionConfiguration)
	mux.HandleFunc("GET /2015-03-31/event-source-mappings", s.handleListMappings)
	mux.HandleFunc("GET /2015-03-31/event-source-mappings/{$}", s.handleListMappings)
	mux.HandleFunc("GET /2015-03-31/event-source-mappings/{uuid}", s.handleGetMapping)
	mux.HandleFunc("PUT /2015-03-31/event-source-mappings/{uuid}", s.handleUpdateMapping)
}

// MappingUUID is the UUID the control plane gives the mapping name: an
// RFC 9562 version 8 UUID from the SHA-256 of the name, so that it is the
// same across restarts and in every process that runs the config, and
// `idem mappings pause NAME` can find it without asking.
func MappingUUID(name string) string {
	sum := sha256.Sum256([]byte("idem event source mapping\x00" + name))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(u)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// MappingStatus is one mapping's state as a whole, in `idem status`.
type MappingStatus struct {
	Name     string `json:"name"`
	UUID     string `json:"uuid"`
	Function string `json:"function"`
	Stream   string `json:"stream"`
	// State is "enabled"; "paused", by UpdateEventSourceMapping Enabled
	// false or `idem mappings pause` (its shards show "paused" once the
	// batch in flight is committed); or "disabled", by enabled: false in
	// the config file.
	State string `json:"state"`
	// LastProcessingResult is Lambda's: OK, No records processed, or
	// PROBLEM: and why.
	LastProcessingResult string `json:"lastProcessingResult"`
}

// functionConfiguration is Lambda's FunctionConfiguration, as far as idem
// has its fields.
type functionConfiguration struct {
	FunctionName     string
	FunctionArn      string
	Runtime          string
	Handler          string `json:",omitempty"`
	Description      string
	Timeout          int
	MemorySize       int          `json:",omitempty"`
	Environment      *environment `json:",omitempty"`
	PackageType      string
	Version          string
	State            string
	LastUpdateStatus string
	LastModified     string
	CodeSize         int64
	Architectures    []string
}

// environment is Lambda's EnvironmentResponse.
type environment struct {
	Variables map[string]string
}

// listFunctionsResponse is Lambda's ListFunctions output.
type listFunctionsResponse struct {
	Functions  []functionConfiguration
	NextMarker string `json:",omitempty"`
}

// getFunctionResponse is Lambda's GetFunction output (idem has no code
// location to give).
type getFunctionResponse struct {
	Configuration functionConfiguration
}

// eventSourceMapping is Lambda's EventSourceMappingConfiguration, as far
// as idem has its settings.
type eventSourceMapping struct {
	UUID                                string
	EventSourceMappingArn               string
	FunctionArn                         string
	EventSourceArn                      string
	Topics                              []string     `json:",omitempty"`
	AmazonManagedKafkaEventSourceConfig *kafkaConfig `json:",omitempty"`
	StartingPosition                    string
	StartingPositionTimestamp           *float64 `json:",omitempty"`
	BatchSize                           int
	MaximumBatchingWindowInSeconds      int
	MaximumRetryAttempts                int
	MaximumRecordAgeInSeconds           int
	BisectBatchOnFunctionError          bool
	ParallelizationFactor               int
	FunctionResponseTypes               []string
	TumblingWindowInSeconds             int
	DestinationConfig                   destinationConfig
	FilterCriteria                      *filterCriteria `json:",omitempty"`
	State                               string
	StateTransitionReason               string
	LastProcessingResult                string
	LastModified                        float64
}

type kafkaConfig struct {
	ConsumerGroupId string
}

type destinationConfig struct {
	OnFailure onFailure
}

type onFailure struct {
	Destination string `json:",omitempty"`
}

type filterCriteria struct {
	Filters []filterPattern
}

type filterPattern struct {
	Pattern string
}

// listMappingsResponse is Lambda's ListEventSourceMappings output.
type listMappingsResponse struct {
	EventSourceMappings []eventSourceMapping
	NextMarker          string `json:",omitempty"`
}

// lambdaTime is how Lambda writes FunctionConfiguration.LastModified.
const lambdaTime = "2006-01-02T15:04:05.000-0700"

func (s *Server) handleListFunctions(w http.ResponseWriter, r *http.Request) {
	from, n, ok := page(w, r, 50)
	if !ok {
		return
	}
	out := listFunctionsResponse{Functions: []functionConfiguration{}}
	fns := s.cfg.Functions
	end := min(from+n, len(fns))
	for i := from; i < end; i++ {
		out.Functions = append(out.Functions, s.functionConfiguration(&fns[i]))
	}
	if end < len(fns) {
		out.NextMarker = strconv.Itoa(end)
	}
	writeLambda(w, http.StatusOK, out)
}

func (s *Server) handleGetFunction(w http.ResponseWriter, r *http.Request) {
	if f := s.lookupFunction(w, r); f != nil {
		writeLambda(w, http.StatusOK, getFunctionResponse{Configuration: s.functionConfiguration(f)})
	}
}

func (s *Server) handleGetFunctionConfiguration(w http.ResponseWriter, r *http.Request) {
	if f := s.lookupFunction(w, r); f != nil {
		writeLambda(w, http.StatusOK, s.functionConfiguration(f))
	}
}

// lookupFunction returns the function the path names (by name, name:$LATEST
// or ARN), or answers 404 and returns nil.
func (s *Server) lookupFunction(w http.ResponseWriter, r *http.Request) *config.Function {
	name, qualifier := functionName(r.PathValue("name"))
	if q := r.URL.Query().Get("Qualifier"); q != "" {
		qualifier = q
	}
	f := s.cfg.Function(name)
	if f == nil || (qualifier != "" && qualifier != "$LATEST") {
		arn := engine.FunctionArn(s.region(), name)
		if qualifier != "" {
			arn += ":" + qualifier
		}
		writeError(w, http.StatusNotFound, fmt.Errorf("function not found: %s", arn))
		return nil
	}
	return f
}

// functionName splits a FunctionName, which is a name, a partial ARN
// (ACCOUNT:function:NAME) or an ARN, with an optional :QUALIFIER, into the
// name and the qualifier.
func functionName(s string) (name, qualifier string) {
	if i := strings.Index(s, ":function:"); i >= 0 {
		s = s[i+len(":function:"):]
	}
	name, qualifier, _ = strings.Cut(s, ":")
	return name, qualifier
}

// functionConfiguration describes f as Lambda would. Environment holds the
// variables of the function's own configuration (a process function's
// env), never idem's environment.
func (s *Server) functionConfiguration(f *config.Function) functionConfiguration {
	c := functionConfiguration{
		FunctionName: f.Name, FunctionArn: engine.FunctionArn(s.region(), f.Name),
		Timeout:     int(math.Ceil(f.Timeout.D().Seconds())),
		PackageType: "Zip", Version: "$LATEST", State: "Active", LastUpdateStatus: "Successful",
		LastModified:  s.started.UTC().Format(lambdaTime),
		Architectures: []string{architecture()},
	}
	switch {
	case f.Process != nil:
		c.Runtime, c.Description = runtimeProcess, "idem process function: Lambda's Runtime API served to child processes"
		c.Handler = f.Process.Command
		c.MemorySize = f.Process.MemorySize
		if len(f.Process.Env) > 0 {
			c.Environment = &environment{Variables: f.Process.Env}
		}
	case f.HTTP != nil:
		c.Runtime, c.Description = runtimeHTTP, "idem HTTP function: each invocation is POSTed to its URL"
	default:
		c.Runtime, c.Description = runtimeGo, "idem in-process Go function"
	}
	return c
}

// architecture is Lambda's name for the machine's architecture, which a
// process function's executable runs on.
func architecture() string {
	if runtime.GOARCH == "arm64" {
		return "arm64"
	}
	return "x86_64"
}

func (s *Server) handleListMappings(w http.ResponseWriter, r *http.Request) {
	from, n, ok := page(w, r, 100)
	if !ok {
		return
	}
	q := r.URL.Query()
	fn, _ := functionName(q.Get("FunctionName"))
	arn := q.Get("EventSourceArn")
	all, err := s.eventSourceMappings(r.Context())
	if err != nil {
		writeError(w, storeErrorStatus(err), err)
		return
	}
	var matched []eventSourceMapping
	for i, m := range all {
		if (fn == "" || s.cfg.Mappings[i].Function == fn) && (arn == "" || m.EventSourceArn == arn) {
			matched = append(matched, m)
		}
	}
	out := listMappingsResponse{EventSourceMappings: []eventSourceMapping{}}
	if from < len(matched) {
		end := min(from+n, len(matched))
		out.EventSourceMappings = matched[from:end]
		if end < len(matched) {
			out.NextMarker = strconv.Itoa(end)
		}
	}
	writeLambda(w, http.StatusOK, out)
}

func (s *Server) handleGetMapping(w http.ResponseWriter, r *http.Request) {
	i := s.mappingIndex(w, r)
	if i < 0 {
		return
	}
	all, err := s.eventSourceMappings(r.Context())
	if err != nil {
		writeError(w, storeErrorStatus(err), err)
		return
	}
	writeLambda(w, http.StatusOK, all[i])
}

// handleUpdateMapping serves UpdateEventSourceMapping for Enabled alone:
// false pauses the mapping, true resumes it. Every other setting belongs
// to the config file.
func (s *Server) handleUpdateMapping(w http.ResponseWriter, r *http.Request) {
	i := s.mappingIndex(w, r)
	if i < 0 {
		return
	}
	m := &s.cfg.Mappings[i]
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("reading request: %w", err))
		return
	}
	var req map[string]json.RawMessage
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
			return
		}
	}
	var owned []string
	for k := range req {
		if k != "Enabled" {
			owned = append(owned, k)
		}
	}
	if len(owned) > 0 {
		sort.Strings(owned)
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s of event source mapping %q: idem's config file sets them (mappings[%d]): change the file and restart idem; UpdateEventSourceMapping changes only Enabled (pause and resume)",
			strings.Join(owned, ", "), m.Name, i))
		return
	}
	if raw, ok := req["Enabled"]; ok {
		var enabled bool
		if err := json.Unmarshal(raw, &enabled); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("enabled: %w", err))
			return
		}
		switch {
		case !m.Enabled && enabled:
			writeError(w, http.StatusBadRequest, fmt.Errorf("event source mapping %q is disabled in idem's config file (mappings[%d].enabled: false): set enabled: true there and restart idem", m.Name, i))
			return
		case m.Enabled:
			if err := s.engine.SetPaused(r.Context(), m.Name, !enabled); err != nil {
				writeError(w, storeErrorStatus(err), err)
				return
			}
		}
	}
	all, err := s.eventSourceMappings(r.Context())
	if err != nil {
		writeError(w, storeErrorStatus(err), err)
		return
	}
	writeLambda(w, http.StatusAccepted, all[i])
}

// mappingIndex returns the index of the mapping the path's UUID names, or
// answers 404 and returns -1.
func (s *Server) mappingIndex(w http.ResponseWriter, r *http.Request) int {
	u := strings.ToLower(r.PathValue("uuid"))
	for i := range s.cfg.Mappings {
		if MappingUUID(s.cfg.Mappings[i].Name) == u {
			return i
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("event source mapping not found: none has UUID %q", r.PathValue("uuid")))
	return -1
}

// page reads Marker and MaxItems (1 to 10000; default def): the index to
// list from, and how many. A bad one is answered 400, and ok is false.
func page(w http.ResponseWriter, r *http.Request, def int) (from, n int, ok bool) {
	q := r.URL.Query()
	n = def
	if v := q.Get("MaxItems"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 1 || m > 10000 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("MaxItems: %q is outside 1 to 10000", v))
			return 0, 0, false
		}
		n = m
	}
	if v := q.Get("Marker"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("Marker: %q is not a marker this API returned", v))
			return 0, 0, false
		}
		from = m
	}
	return from, n, true
}

// writeLambda answers v as Lambda's API does, with a request id.
func writeLambda(w http.ResponseWriter, code int, v any) {
	w.Header().Set("X-Amzn-Requestid", invoke.NewRequestID())
	writeJSON(w, code, v)
}

// eventSourceMappings describes every mapping of the config, in its order.
func (s *Server) eventSourceMappings(ctx context.Context) ([]eventSourceMapping, error) {
	sts, err := s.mappingStatuses(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]eventSourceMapping, len(s.cfg.Mappings))
	for i := range s.cfg.Mappings {
		out[i] = s.eventSourceMapping(&s.cfg.Mappings[i], sts[i])
	}
	return out, nil
}

// mappingState is what the engine knows of one mapping of the config.
type mappingState struct {
	running bool // the engine runs it (it is enabled in the file)
	engine.MappingStatus
	problem string // a shard's error, if any shard has one
}

// mappingStatuses returns the engine's state of each mapping of the config,
// in its order.
func (s *Server) mappingStatuses(ctx context.Context) ([]mappingState, error) {
	ms, err := s.engine.Mappings(ctx)
	if err != nil {
		return nil, err
	}
	shards := s.engine.Status()
	out := make([]mappingState, len(s.cfg.Mappings))
	for i := range s.cfg.Mappings {
		name := s.cfg.Mappings[i].Name
		if j := slices.IndexFunc(ms, func(m engine.MappingStatus) bool { return m.Name == name }); j >= 0 {
			out[i] = mappingState{running: true, MappingStatus: ms[j]}
		}
		for _, sh := range shards {
			if sh.Mapping == name && sh.State == "error" && sh.LastError != "" {
				out[i].problem = sh.LastError
			}
		}
	}
	return out, nil
}

// lastProcessingResult is Lambda's LastProcessingResult of a mapping.
func (st *mappingState) lastProcessingResult() string {
	switch {
	case st.problem != "":
		return resultProblemOf + st.problem
	case st.LastResult == "error":
		return resultFnFailed
	case st.LastResult != "":
		return resultOK
	}
	return resultNone
}

// eventSourceMapping describes m, whose state is st, as Lambda would.
func (s *Server) eventSourceMapping(m *config.Mapping, st mappingState) eventSourceMapping {
	region := s.region()
	u := MappingUUID(m.Name)
	e := eventSourceMapping{
		UUID:                           u,
		EventSourceMappingArn:          "arn:aws:lambda:" + region + ":000000000000:event-source-mapping:" + u,
		FunctionArn:                    engine.FunctionArn(region, m.Function),
		EventSourceArn:                 eventSourceArn(region, &m.Source),
		StartingPosition:               m.StartingPosition,
		BatchSize:                      m.BatchSize,
		MaximumBatchingWindowInSeconds: seconds(m.MaximumBatchingWindow.D()),
		MaximumRetryAttempts:           m.MaximumRetryAttempts,
		MaximumRecordAgeInSeconds:      -1,
		BisectBatchOnFunctionError:     m.BisectBatchOnFunctionError,
		ParallelizationFactor:          m.ParallelizationFactor,
		FunctionResponseTypes:          append([]string{}, m.FunctionResponseTypes...),
		TumblingWindowInSeconds:        seconds(m.TumblingWindow.D()),
		LastProcessingResult:           st.lastProcessingResult(),
		LastModified:                   epochSeconds(s.started),
	}
	if m.MaximumRecordAge > 0 {
		e.MaximumRecordAgeInSeconds = seconds(m.MaximumRecordAge.D())
	}
	if t := m.StartingPositionTime(); m.StartingPosition == "AT_TIMESTAMP" && !t.IsZero() {
		ts := epochSeconds(t)
		e.StartingPositionTimestamp = &ts
	}
	if k := m.Source.Kafka; k != nil {
		e.Topics = []string{k.Topic}
		if k.Group != "" {
			e.AmazonManagedKafkaEventSourceConfig = &kafkaConfig{ConsumerGroupId: k.Group}
		}
	}
	if d := m.OnFailureStream(); d != "" {
		e.DestinationConfig.OnFailure.Destination = engine.StreamArn(region, d)
	}
	if ps := m.Patterns(); len(ps) > 0 {
		e.FilterCriteria = &filterCriteria{}
		for _, p := range ps {
			e.FilterCriteria.Filters = append(e.FilterCriteria.Filters, filterPattern{Pattern: p})
		}
	}
	switch {
	case !st.running:
		e.State, e.StateTransitionReason = "Disabled", "idem config file: enabled: false"
	case st.Paused:
		e.State, e.StateTransitionReason = "Disabled", "USER_INITIATED"
	default:
		e.State, e.StateTransitionReason = "Enabled", "USER_INITIATED"
	}
	if !st.Modified.IsZero() {
		e.LastModified = epochSeconds(st.Modified)
	}
	return e
}

// eventSourceArn is the ARN idem presents for a mapping's source (see the
// ARNs above).
func eventSourceArn(region string, r *config.SourceRef) string {
	if r.Kafka != nil {
		return engine.KafkaClusterArn(region, r.Kafka.Topic)
	}
	return engine.StreamArn(region, r.Name())
}

// seconds is d in whole seconds, rounded up: Lambda's settings are whole
// seconds, idem's may be finer.
func seconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// epochSeconds is t as Lambda's JSON writes a timestamp: seconds since the
// epoch, with milliseconds.
func epochSeconds(t time.Time) float64 {
	return float64(t.UnixMilli()) / 1000
}

// statusMappings is the mappings' part of `idem status`; a failure to
// read the paused states is logged and leaves it empty.
func (s *Server) statusMappings(ctx context.Context) []MappingStatus {
	sts, err := s.mappingStatuses(ctx)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Warn("status: reading the mappings' paused states", "err", err)
		}
		return nil
	}
	out := make([]MappingStatus, len(sts))
	for i, st := range sts {
		m := &s.cfg.Mappings[i]
		state := "enabled"
		switch {
		case !st.running:
			state = "disabled"
		case st.Paused:
			state = "paused"
		}
		out[i] = MappingStatus{Name: m.Name, UUID: MappingUUID(m.Name), Function: m.Function, Stream: m.Source.Name(),
			State: state, LastProcessingResult: st.lastProcessingResult()}
	}
	return out
}
