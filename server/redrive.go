package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
)

// RedriveRequest is POST /v1/redrive's body: send the records discarded to
// the on-failure stream From back through Mapping (to its source stream),
// or the asynchronous events of Function back to its queue. Exactly one of
// Mapping and Function is set.
type RedriveRequest struct {
	From     string `json:"from"`
	Mapping  string `json:"mapping,omitempty"`
	Function string `json:"function,omitempty"`
	// DryRun reports what would be sent, and sends nothing.
	DryRun bool `json:"dryRun,omitempty"`
	// NewKeys sends records without their original idempotency keys, so
	// that those whose key completed run again.
	NewKeys bool `json:"newKeys,omitempty"`
}

// RedriveResponse is what a redrive did (or, dry, would do). Records
// already redriven by an earlier run are not counted again.
type RedriveResponse struct {
	// WouldSend counts the records to send: sent, or those a dry run
	// would send.
	WouldSend int `json:"wouldSend"`
	// Sent counts the records sent by this run (0 for a dry run).
	Sent int `json:"sent"`
	// Skipped counts the records not sent because their idempotency key
	// is queued or completed (asynchronous events).
	Skipped int `json:"skipped"`
	// Records are the first maxRedriveListed records of WouldSend.
	Records []RedriveRecord `json:"records"`
}

// RedriveRecord names one redriven record as it was discarded.
type RedriveRecord struct {
	Stream         string `json:"stream"`
	Shard          string `json:"shard"`
	SequenceNumber string `json:"sequenceNumber"`
	PartitionKey   string `json:"partitionKey"`
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
	Condition      string `json:"condition"`
}

// maxRedriveListed bounds RedriveResponse.Records.
const maxRedriveListed = 100

// redriveChunk is how many records one atomic send (records and progress)
// carries at most.
const redriveChunk = 200

// redriveCheckpointPrefix names the checkpoints of redrives: one per
// (on-failure stream shard, target), under a mapping name no configured
// mapping can take (mapping names have no ':').
const redriveCheckpointPrefix = "idem:redrive:"

// redriveError is a refused redrive: its HTTP status and why.
type redriveError struct {
	code int
	err  error
}

func (e *redriveError) Error() string { return e.err.Error() }
func (e *redriveError) Unwrap() error { return e.err }

func refuse(code int, format string, args ...any) error {
	return &redriveError{code: code, err: fmt.Errorf(format, args...)}
}

func (s *Server) handleRedrive(w http.ResponseWriter, r *http.Request) {
	var req RedriveRequest
	if !readJSON(w, r, 1<<20, &req) {
		return
	}
	if !s.redriveMu.TryLock() {
		writeError(w, http.StatusConflict, errors.New("another redrive is running in this idem; try again once it has finished"))
		return
	}
	defer s.redriveMu.Unlock()
	// A large redrive may outlast the API's write deadline: its progress
	// commits as it goes, and the answer comes at the end.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	out, err := s.redrive(r.Context(), req)
	if err != nil {
		var re *redriveError
		code := storeErrorStatus(err)
		if errors.As(err, &re) {
			code = re.code
		}
		writeError(w, code, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// redriveTarget is where a redrive sends: a mapping's source stream or a
// function's asynchronous queue.
type redriveTarget struct {
	name     string // the checkpoint's mapping name
	function string // the function whose failures are selected
	async    bool
	stream   string // a mapping's source stream
	// payloadKeyed is set for a mapping keyed by idempotency.key: the
	// completion marks of the redriven records' keys in scope are deleted
	// with each chunk.
	payloadKeyed bool
	scope        string
	legacy       bool // marks may still be held under legacy keys too
}

// redrive runs req: see RedriveRequest.
func (s *Server) redrive(ctx context.Context, req RedriveRequest) (*RedriveResponse, error) {
	if req.From == "" {
		return nil, refuse(http.StatusBadRequest, "from: the on-failure stream to redrive is required")
	}
	shards, err := s.db.Shards(req.From)
	if errors.Is(err, pebbledb.ErrStreamNotFound) {
		return nil, refuse(http.StatusNotFound, "from: on-failure stream %q: %w", req.From, err)
	}
	if err != nil {
		return nil, err
	}
	t, err := s.redriveTarget(req)
	if err != nil {
		return nil, err
	}
	if t.payloadKeyed {
		until, err := s.db.LegacyKeysUntil(ctx)
		if err != nil {
			return nil, err
		}
		t.legacy = time.Now().Before(until)
	}
	out := &RedriveResponse{Records: []RedriveRecord{}}
	for _, sh := range shards {
		if err := s.redriveShard(ctx, req, t, sh, out); err != nil {
			return out, err
		}
	}
	s.log.Info("redrive", "from", req.From, "target", t.name, "dryRun", req.DryRun, "newKeys", req.NewKeys,
		"wouldSend", out.WouldSend, "sent", out.Sent, "skipped", out.Skipped)
	return out, nil
}

// redriveTarget checks req against the configuration and resolves where it
// sends.
func (s *Server) redriveTarget(req RedriveRequest) (*redriveTarget, error) {
	if (req.Mapping == "") == (req.Function == "") {
		return nil, refuse(http.StatusBadRequest, "name exactly one of mapping (records a mapping discarded) and function (asynchronous events a function gave up)")
	}
	if sc := s.cfg.Store; sc.Postgres != nil || sc.Redis != nil || sc.DynamoDB != nil {
		return nil, refuse(http.StatusNotImplemented, "redrive reads on-failure records from embedded streams, which only the embedded store writes: with store.postgres, store.redis or store.dynamodb they are kept in the store (read them with its Failures API) and cannot be sent and checkpointed in one atomic write")
	}
	if req.Function != "" {
		for _, f := range s.cfg.Functions {
			if f.Name != req.Function {
				continue
			}
			if s.invoke == nil {
				return nil, refuse(http.StatusConflict, "function %q: the Invoke API is not running", f.Name)
			}
			return &redriveTarget{name: redriveCheckpointPrefix + "function:" + f.Name, function: f.Name, async: true}, nil
		}
		return nil, refuse(http.StatusNotFound, "function %q: not in the configuration", req.Function)
	}
	var m *config.Mapping
	for i := range s.cfg.Mappings {
		if s.cfg.Mappings[i].Name == req.Mapping {
			m = &s.cfg.Mappings[i]
		}
	}
	if m == nil {
		return nil, refuse(http.StatusNotFound, "mapping %q: not in the configuration", req.Mapping)
	}
	if m.Source.External() {
		return nil, refuse(http.StatusNotImplemented, "mapping %q reads an external source: idem redrives into embedded streams only, where it can append the records and commit its progress in one write; list the records with `idem records --stream %s --json` and produce them back to the source yourself", m.Name, req.From)
	}
	for i := range s.cfg.Mappings {
		o := &s.cfg.Mappings[i]
		if o.Name != m.Name && o.Enabled && o.Source.Stream == m.Source.Stream && !o.Source.External() {
			return nil, refuse(http.StatusConflict, "mapping %q also reads stream %q: records redriven there would run through it too; redrive needs a stream only %q reads", o.Name, m.Source.Stream, m.Name)
		}
	}
	t := &redriveTarget{name: redriveCheckpointPrefix + "mapping:" + m.Name, function: m.Function, stream: m.Source.Stream}
	if m.Idempotency.Key != "" {
		// The engine marks a discarded record's key resolved in the
		// scope, as it does a completed one's: each chunk removes the
		// marks of its keys as it re-appends them (PutCheckpointUnmarking).
		t.payloadKeyed, t.scope = true, m.Idempotency.Scope
	}
	return t, nil
}

// failureBatch is an on-failure metadata record being read, with the
// records that follow it.
type failureBatch struct {
	condition string
	function  string
	async     bool
	ids       []engine.FailedRecord // nil when the metadata has no idemRecords
	stream    string                // the source stream, for metadata without idemRecords
	key       string                // an async event's idempotency key
	keyOnly   bool                  // the key alone identified the event (invoke.Request.KeyOnly)
	left      int                   // records of the batch still to read
	next      int                   // index of the next record
}

// parseFailure reads a record of an on-failure stream as a metadata record:
// nil if it is not one.
func parseFailure(data []byte) *failureBatch {
	var m struct {
		RequestContext *struct {
			FunctionArn string `json:"functionArn"`
			Condition   string `json:"condition"`
		} `json:"requestContext"`
		KinesisBatchInfo *struct {
			BatchSize int    `json:"batchSize"`
			StreamArn string `json:"streamArn"`
		} `json:"KinesisBatchInfo"`
		DDBStreamBatchInfo *struct {
			BatchSize int    `json:"batchSize"`
			StreamArn string `json:"streamArn"`
		} `json:"DDBStreamBatchInfo"`
		KafkaBatchInfo *struct {
			BatchSize      int    `json:"batchSize"`
			EventSourceArn string `json:"eventSourceArn"`
		} `json:"KafkaBatchInfo"`
		RequestPayload     json.RawMessage       `json:"requestPayload"`
		IdemRecords        []engine.FailedRecord `json:"idemRecords"`
		IdemIdempotencyKey string                `json:"idemIdempotencyKey"`
		IdemKeyOnly        bool                  `json:"idemKeyOnly"`
	}
	if json.Unmarshal(data, &m) != nil || m.RequestContext == nil {
		return nil
	}
	b := &failureBatch{condition: m.RequestContext.Condition, ids: m.IdemRecords}
	if i := strings.LastIndex(m.RequestContext.FunctionArn, ":function:"); i >= 0 {
		// An async failure record's ARN is qualified (":$LATEST"), as
		// Lambda's is; function names have no ':'.
		b.function, _, _ = strings.Cut(m.RequestContext.FunctionArn[i+len(":function:"):], ":")
	}
	switch {
	case m.KinesisBatchInfo != nil:
		b.left = m.KinesisBatchInfo.BatchSize
		b.stream = arnName(m.KinesisBatchInfo.StreamArn, ":stream/")
	case m.DDBStreamBatchInfo != nil:
		// A DynamoDBEvent mapping's: its streamArn names a DynamoDB stream
		// (whose records name the table as their stream) or, in Kinesis'
		// form, the stream idem read.
		b.left = m.DDBStreamBatchInfo.BatchSize
		arn := m.DDBStreamBatchInfo.StreamArn
		if strings.Contains(arn, ":dynamodb:") {
			b.stream, _, _ = strings.Cut(arnName(arn, ":table/"), "/stream/")
		} else {
			b.stream = arnName(arn, ":stream/")
		}
	case m.KafkaBatchInfo != nil:
		b.left = m.KafkaBatchInfo.BatchSize
		b.stream = arnName(m.KafkaBatchInfo.EventSourceArn, "/idem/")
	case m.RequestPayload != nil:
		b.async, b.left, b.key, b.keyOnly = true, 1, m.IdemIdempotencyKey, m.IdemKeyOnly
	default:
		return nil
	}
	if b.ids != nil {
		b.left = len(b.ids)
	}
	return b
}

// arnName returns what follows sep in arn.
func arnName(arn, sep string) string {
	if i := strings.LastIndex(arn, sep); i >= 0 {
		return arn[i+len(sep):]
	}
	return ""
}

// redriveShard redrives what one shard of the on-failure stream holds for
// t beyond the redrive's checkpoint. Records are sent in chunks, each with
// the checkpoint that covers it: for a mapping, both in one atomic write
// (PutCheckpoint); for a function, each event is queued under an
// idempotency key fixed by the record (its original key, or one made of
// its place in the on-failure stream), then the checkpoint is committed, so
// that queueing it again after a crash in between is deduplicated.
func (s *Server) redriveShard(ctx context.Context, req RedriveRequest, t *redriveTarget, shard string, out *RedriveResponse) error {
	key := store.CheckpointKey{Mapping: t.name, Stream: req.From, Shard: shard}
	cp, _, err := s.store.Checkpoint(ctx, key)
	if err != nil {
		return fmt.Errorf("reading the redrive's checkpoint: %w", err)
	}
	done := cp.Sequence // already redriven
	if done == "" {
		done = "0"
	}
	prev := cp.Sequence
	var (
		pending []pebbledb.PutRecord
		unmark  []store.MarkKey // marks of pending's keys (payload-keyed mappings)
		events  []invoke.Request
		sent    int
		skipped int
		last    idem.Sequence // the last record the pending chunk covers
		end     idem.Sequence // the shard's newest record when the redrive began
		batch   *failureBatch
	)
	flush := func() error {
		if req.DryRun || last == "" || last.Compare(prev) <= 0 {
			return nil
		}
		for _, ev := range events {
			dup, err := s.invoke.Enqueue(ctx, ev)
			if err != nil {
				return fmt.Errorf("queueing event of function %q again: %w", ev.Function, err)
			}
			if dup {
				// Its key is queued or completed: not sent again.
				sent--
				skipped++
				out.Skipped++
				out.WouldSend--
			}
		}
		next := cp
		next.Sequence, next.Processed, next.Skipped = last, cp.Processed+uint64(sent), cp.Skipped+uint64(skipped)
		stream := t.stream
		if t.async {
			stream = req.From
		}
		if _, err := s.db.PutCheckpointUnmarking(ctx, stream, pending, key, prev, next, unmark); err != nil {
			if errors.Is(err, pebbledb.ErrCheckpointMoved) {
				return refuse(http.StatusConflict, "another redrive moved this one's progress: %w", err)
			}
			return fmt.Errorf("sending redriven records: %w", err)
		}
		cp, prev = next, last
		out.Sent += sent
		pending, unmark, events, sent, skipped = pending[:0], unmark[:0], events[:0], 0, 0
		return nil
	}
	after := idem.Sequence("0")
	for {
		res, err := s.db.Read(ctx, req.From, shard, after, 1000, 16<<20)
		if err != nil {
			return fmt.Errorf("reading on-failure stream %q shard %s: %w", req.From, shard, err)
		}
		if end == "" {
			// Records the redrive sends may fail again and land here:
			// they wait for the next redrive.
			end = res.Latest
		}
		if len(res.Records) == 0 {
			break
		}
		stop := false
		for i := range res.Records {
			r := &res.Records[i]
			if r.Sequence.Compare(end) > 0 {
				stop = true
				break
			}
			after = r.Sequence
			if batch == nil || batch.left == 0 {
				batch = parseFailure(r.Data)
				if r.Sequence.Compare(done) > 0 {
					last = r.Sequence
				}
				continue
			}
			j := batch.next
			batch.next++
			batch.left--
			if r.Sequence.Compare(done) <= 0 {
				continue
			}
			last = r.Sequence
			if batch.async != t.async || batch.function != t.function {
				continue
			}
			rec := RedriveRecord{Stream: batch.stream, PartitionKey: r.PartitionKey, Condition: batch.condition}
			if batch.ids != nil && j < len(batch.ids) {
				id := batch.ids[j]
				rec.Stream, rec.Shard, rec.SequenceNumber, rec.PartitionKey, rec.IdempotencyKey = id.Stream, id.ShardID, id.SequenceNumber, id.PartitionKey, id.IdempotencyKey
			}
			if t.async {
				rec.Stream, rec.Shard, rec.SequenceNumber = req.From, shard, string(r.Sequence)
				rec.IdempotencyKey = batch.key
				if req.NewKeys || rec.IdempotencyKey == "" {
					// Fixed by the record's place, so that queueing it
					// again after a crash is deduplicated.
					rec.IdempotencyKey = "idem-redrive:" + req.From + "/" + shard + "/" + string(r.Sequence)
				}
			} else if rec.Stream != t.stream {
				continue
			}
			out.WouldSend++
			if len(out.Records) < maxRedriveListed {
				out.Records = append(out.Records, rec)
			}
			if req.DryRun {
				continue
			}
			sent++
			if t.async {
				ev := invoke.Request{Function: t.function, Payload: r.Data, IdempotencyKey: rec.IdempotencyKey}
				if batch.keyOnly && !req.NewKeys {
					// An S3 notification's identity: queued again as it
					// was, a repeat with another payload being the same
					// event, and its key not held to a header's rules.
					ev.IdempotencyKey, ev.DefaultKey, ev.KeyOnly = "", rec.IdempotencyKey, true
				}
				events = append(events, ev)
			} else {
				pk := rec.PartitionKey
				if len(pk) < 1 || len(pk) > pebbledb.MaxPartitionKeyBytes {
					pk = r.PartitionKey
				}
				pending = append(pending, pebbledb.PutRecord{PartitionKey: pk, Data: r.Data})
				if t.payloadKeyed && rec.IdempotencyKey != "" {
					// A discarded key's mark only records that it was
					// resolved by discarding: removed in the write that
					// re-appends the record, it lets the copy (whose
					// payload computes the same key) run once.
					unmark = append(unmark, store.MarkKeyOf(t.scope, rec.IdempotencyKey))
					if t.legacy {
						unmark = append(unmark, store.LegacyMarkKeyOf(t.scope, rec.IdempotencyKey))
					}
				}
			}
			if len(pending)+len(events) >= redriveChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if stop {
			break
		}
	}
	return flush()
}
