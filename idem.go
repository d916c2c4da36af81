// Package idem is what a function author imports to run code on idem.
//
// # Delivery semantics
//
// Sources deliver every record at least once: retries, partial-batch
// retries, crashes between success and checkpoint, producers that send twice
// and new consumers that start at TRIM_HORIZON all cause duplicates. idem
// turns that into exactly-once effects for what it controls: a record whose
// idempotency key is COMPLETED in its mapping's scope is never delivered
// again, and the completion marks, the checkpoint, the on-failure records and
// every State write of a batch commit in one atomic write. Effects a handler
// makes elsewhere (an HTTP call, an e-mail) stay at-least-once: use the
// record's IdempotencyKey downstream. With the PostgreSQL store, an
// in-process handler can also write its own SQL in the transaction that
// commits its record (TxFrom): those writes are exactly-once too.
//
// # Handlers
//
// A RecordHandler sees one record at a time, in shard order; the first error
// ends the batch, records before it commit, and the failed record is retried
// (as Lambda's ReportBatchItemFailures would). A BatchHandler sees the whole
// batch and reports failures itself, with Lambda's rules.
package idem

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Record is one event of a shard, as a handler receives it.
//
// Records are delivered in shard order; records with the same PartitionKey
// are never processed concurrently, whatever the mapping's
// parallelizationFactor.
type Record struct {
	// Stream is the name of the source stream.
	Stream string
	// ShardID names the shard, as Kinesis does: "shardId-000000000000".
	ShardID string
	// Sequence orders records within a shard; it strictly increases.
	Sequence Sequence
	// PartitionKey chose the shard and orders records of one key.
	PartitionKey string
	// Data is the record's payload. Handlers must not retain or modify it
	// after they return.
	Data []byte
	// ArrivalTime is when the source accepted the record (approximate).
	ArrivalTime time.Time
	// Headers are the record's headers, in the order the source keeps them;
	// nil for sources without headers (only Kafka has them). Handlers must
	// not retain or modify the values after they return.
	Headers []Header
	// IdempotencyKey identifies the record within its scope: by default
	// "stream/shardId/sequence", or the value of the mapping's
	// idempotency.key expression. Pass it on to downstream systems so they
	// can deduplicate what idem cannot roll back.
	IdempotencyKey string
}

// Header is one record header. Keys may repeat.
type Header struct {
	Key   string
	Value []byte
}

// EventFormat is the shape of the Lambda event a function driver builds
// from a batch.
type EventFormat string

const (
	// EventFormatKinesis is Lambda's KinesisEvent, the default ("" means
	// it too).
	EventFormatKinesis EventFormat = "kinesis"
	// EventFormatKafka is Lambda's KafkaEvent: records grouped by
	// "topic-partition", with offsets, base64 keys and values, and headers.
	// It expects the records of a Kafka source, whose ShardID is
	// "<topic>-<partition>" and whose Sequence is the offset plus one.
	EventFormatKafka EventFormat = "kafka"
	// EventFormatS3 is S3's S3Event, for streams whose records are the S3
	// event notifications an S3-compatible store (MinIO, Ceph, versitygw)
	// publishes to a broker: a batch is one {"Records":[…]} holding the
	// event records of every notification of the batch, in order, as
	// aws-lambda-go's events.S3Event decodes them. A record whose data is
	// not a notification adds nothing to the event (the engine never sends
	// one).
	EventFormatS3 EventFormat = "s3"
	// EventFormatDynamoDB is Lambda's DynamoDBEvent, for streams whose
	// records are DynamoDB changes: a DynamoDB Streams record (the
	// DynamoDB source's, kept as it is) or a change Kinesis Data Streams
	// for DynamoDB wrote (converted, its Kinesis sequence number as its
	// SequenceNumber). A batch is one {"Records":[…]} of those records, in
	// order; a record whose data is neither adds nothing to the event (the
	// engine never sends one). A batchItemFailures itemIdentifier is a
	// record's SequenceNumber.
	EventFormatDynamoDB EventFormat = "dynamodb"
)

// KafkaPartition is the partition of a Kafka source's record: the number
// its ShardID ("<topic>-<partition>") ends with; 0 for other sources.
func (r *Record) KafkaPartition() int32 {
	dash := strings.LastIndexByte(r.ShardID, '-')
	if dash < 0 {
		return 0
	}
	n, err := strconv.ParseInt(r.ShardID[dash+1:], 10, 32)
	if err != nil || n < 0 {
		return 0
	}
	return int32(n)
}

// KafkaOffset is the offset of a Kafka source's record. Its Sequence is
// the offset plus one (so that the zero Sequence is the position before
// offset 0); 0 for a sequence that is not a positive 64-bit number.
func (r *Record) KafkaOffset() uint64 {
	n, ok := r.Sequence.Uint64()
	if !ok || n == 0 {
		return 0
	}
	return n - 1
}

// SequenceNumber returns the sequence as the string Lambda events carry.
func (r *Record) SequenceNumber() string { return string(r.Sequence) }

// EventID returns Kinesis' "shardId-…:sequence" event identifier, the
// itemIdentifier a batch handler reports failures with.
func (r *Record) EventID() string { return r.ShardID + ":" + string(r.Sequence) }

// Sequence is a record's position in its shard as its source numbers it: a
// string of decimal digits. It is a string, not a number, because sources
// number records beyond 64 bits (a Kinesis sequence number has 56 digits,
// a Redis stream ID is two 64-bit numbers); Compare orders it as the number
// it spells.
//
// The zero Sequence is the position before a shard's first record.
type Sequence string

// SequenceOf returns n as a 20-digit Sequence, the form the embedded stream,
// Kafka and NATS positions take: fixed width makes the strings sort as the
// numbers do, for tools that sort them as text.
func SequenceOf(n uint64) Sequence {
	var b [20]byte
	return Sequence(appendPadded(b[:0], n))
}

// AppendSequence appends n to dst as SequenceOf spells it. Sources use it to
// number a whole read with one allocation.
func AppendSequence(dst []byte, n uint64) []byte { return appendPadded(dst, n) }

func appendPadded(dst []byte, n uint64) []byte {
	const zeros = "00000000000000000000"
	var b [20]byte
	d := strconv.AppendUint(b[:0], n, 10)
	dst = append(dst, zeros[len(d):]...)
	return append(dst, d...)
}

// Compare returns -1, 0 or +1 as s is below, equal to or above t, as
// numbers: leading zeros do not count, and the zero Sequence equals "0".
func (s Sequence) Compare(t Sequence) int {
	if len(s) == len(t) {
		// Equal widths (a source's fixed-width numbering) compare as text.
		return strings.Compare(string(s), string(t))
	}
	a, b := trimZeros(string(s)), trimZeros(string(t))
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Less reports whether s is below t.
func (s Sequence) Less(t Sequence) bool { return s.Compare(t) < 0 }

// Uint64 returns s as a number, and false when it does not fit 64 bits or is
// not a decimal number.
func (s Sequence) Uint64() (uint64, bool) {
	d := trimZeros(string(s))
	if d == "" {
		return 0, s == "" || validDigits(string(s))
	}
	n, err := strconv.ParseUint(d, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// Valid reports whether s is empty or a string of decimal digits.
func (s Sequence) Valid() bool { return validDigits(string(s)) }

func validDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func trimZeros(s string) string {
	for len(s) > 0 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

// MaxSequence returns the greater of a and b.
func MaxSequence(a, b Sequence) Sequence {
	if a.Compare(b) >= 0 {
		return a
	}
	return b
}

// Batch is what a BatchHandler receives: records of one shard, in order.
type Batch struct {
	// Mapping is the name of the event source mapping.
	Mapping string
	// Function is the name of the function invoked.
	Function string
	// InvocationID identifies this invocation in logs and headers.
	InvocationID string
	// Records are in shard order, at least one; none in the final
	// invocation of a tumbling window (Window.Final).
	Records []Record
	// Window is set for a mapping with a tumblingWindow: the window the
	// records arrived in and the state its previous invocation returned.
	// nil otherwise.
	Window *Window
	// Format is the Lambda event shape function drivers build for the
	// batch: "" or EventFormatKinesis for KinesisEvent, EventFormatKafka
	// for KafkaEvent, EventFormatS3 for S3Event. The engine sets it from
	// the mapping.
	Format EventFormat

	// states holds each record's view of the mapping's state; set by the
	// engine, nil in a Batch made by hand.
	states []State
	// tx is the store transaction the batch's effects commit in; nil
	// without one.
	tx Transaction
}

// Window is a tumbling window, Lambda's way of aggregating over a stream:
// a shard's records are grouped by arrival time into windows of the
// mapping's tumblingWindow, a batch never spans two, and each invocation
// gets the state the previous invocation of its window returned
// (BatchResult.State), committed with the checkpoint. When the window ends
// the function is invoked once more, with no records and Final set, to act
// on the aggregate; the state is then dropped.
type Window struct {
	// Start and End bound the window: records that arrived at or after
	// Start and before End.
	Start, End time.Time
	// StateJSON is the state the window's previous invocation returned,
	// exactly as it returned it: a JSON object, whose values may be of any
	// JSON type ({"1": 282, "2": 715} is AWS's own example). It is nil at
	// the window's first invocation and whenever the state is empty (null,
	// or a Go handler that returned none); an empty object ({}) stays {}.
	// Function drivers send it as the event's "state"; a Window made by
	// hand may leave it nil, and then State is sent.
	StateJSON json.RawMessage
	// State is StateJSON as strings, for Go handlers (Lambda's Go and
	// Java libraries type the state map[string]string): each key of
	// StateJSON maps to its value if the value is a JSON string, and to
	// the value's JSON text otherwise (282 becomes "282", null "null", an
	// object its JSON). A handler that returned only strings gets them
	// back unchanged; read StateJSON to tell "282" from 282. nil when
	// StateJSON is nil.
	State map[string]string
	// Final marks the window's last invocation, with no records.
	Final bool
	// TerminatedEarly, with Final, says the window is not over: the state
	// outgrew its limit (1 MB), so this aggregate ends here and the window
	// goes on with an empty state.
	TerminatedEarly bool
	// Stream and ShardID name the shard the window is of (a final
	// invocation has no records to tell).
	Stream, ShardID string
}

// NewBatch makes a Batch whose records see the given per-record states. The
// engine and function drivers call it; a handler never needs to.
func NewBatch(mapping, function, invocationID string, records []Record, states []State) *Batch {
	return &Batch{Mapping: mapping, Function: function, InvocationID: invocationID, Records: records, states: states}
}

// NewBatchWithTx is NewBatch for a batch whose effects commit in a store
// transaction the handler can write in (TxFrom, Batch.Tx). The engine calls
// it for in-process functions over a store that has transactions.
func NewBatchWithTx(mapping, function, invocationID string, records []Record, states []State, tx Transaction) *Batch {
	b := NewBatch(mapping, function, invocationID, records, states)
	b.tx = tx
	return b
}

// Tx returns the store transaction of the whole batch, for a batch handler
// (a RecordFunc uses TxFrom): a pgx.Tx with the PostgreSQL store
// (postgres.BatchTx returns it typed). Its writes commit if and only if the
// whole invocation succeeds: a batch handler that writes in it and reports
// batchItemFailures fails its whole batch, which is then retried, bisected
// or discarded as for a function error, its writes undone. It returns
// ErrNoTx when the batch has no transaction.
func (b *Batch) Tx(ctx context.Context) (any, error) {
	if b.tx == nil {
		return nil, ErrNoTx
	}
	return b.tx.Handle(ctx, -1)
}

// State returns the state view of record i: its writes commit if and only if
// record i commits (it succeeded and no earlier record of the batch failed).
// It returns nil for a Batch without state.
func (b *Batch) State(i int) State {
	if i < 0 || i >= len(b.states) {
		return nil
	}
	return b.states[i]
}

// BatchResult is a batch handler's answer, the shape of Lambda's
// KinesisEventResponse.
type BatchResult struct {
	// BatchItemFailures names the records that failed by EventID. The
	// checkpoint moves to just before the lowest one; every later record is
	// delivered again, even one that succeeded. Empty means success.
	BatchItemFailures []BatchItemFailure `json:"batchItemFailures"`
	// State is the tumbling window's state after this batch (Batch.Window),
	// handed to the window's next invocation (as Window.State, and as
	// Window.StateJSON: the map's JSON); ignored without a window and in
	// the final invocation. Ignored when StateJSON is set.
	State map[string]string `json:"state,omitempty"`
	// StateJSON, when not nil, is the state as JSON instead of State: an
	// object whose values may be of any type, or null for the empty state.
	// It comes back exactly as given (without the whitespace around it) in
	// Window.StateJSON. Anything but an object or null fails the batch
	// (Function.InvalidState); a state above 1 MB terminates the window
	// early, as for any function.
	//
	// A Go handler that sets neither State nor StateJSON returns the empty
	// state: Go's zero value cannot tell "no state" from "empty", and a
	// RecordFunc returns none. This is the one difference from the other
	// kinds of function, for which a response without "state" fails the
	// batch (Function.MissingState), as on Lambda.
	StateJSON json.RawMessage `json:"-"`
}

// BatchItemFailure names one failed record.
type BatchItemFailure struct {
	ItemIdentifier string `json:"itemIdentifier"`
}

// Handler is the contract between idem and a function: invoke with a batch,
// get a result.
//
// HandleBatch is called for one batch at a time per shard (or per
// partition-key group under parallelization), possibly concurrently for
// different shards. A returned error is a function error: the batch is
// retried, bisected or discarded as the mapping says, and BatchResult is
// ignored. A panic is recovered and counted as a function error.
type Handler interface {
	HandleBatch(ctx context.Context, b *Batch) (BatchResult, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, b *Batch) (BatchResult, error)

// HandleBatch calls f.
func (f HandlerFunc) HandleBatch(ctx context.Context, b *Batch) (BatchResult, error) {
	return f(ctx, b)
}

// RecordFunc is the simplest handler: one record at a time. State reads and
// writes go through StateFrom(ctx).
type RecordFunc func(ctx context.Context, r *Record) error

// HandleBatch runs f over the records in order. The first error ends the
// batch: records before it commit (with their state), the failed record and
// those after it are delivered again. An error that wraps a PermanentError
// stops retries at once.
//
// With a store transaction (TxFrom), each record's writes in it are undone
// when the record fails, and the records before it keep theirs; a record
// that leaves the transaction failed (an SQL error it did not return) fails.
// When the transaction holds statements back (a Flusher: postgres.Defer),
// HandleBatch sends them once the records have run, or once one has
// failed, before it answers: a record whose held-back statement fails is
// the batch's failed record, as if its function had returned the error,
// unless an earlier record failed.
func (f RecordFunc) HandleBatch(ctx context.Context, b *Batch) (BatchResult, error) {
	for i := range b.Records {
		r := &b.Records[i]
		rctx := withRecord(ctx, r)
		if st := b.State(i); st != nil {
			rctx = WithState(rctx, st)
		}
		if err := f.handle(ctx, rctx, b, i); err != nil {
			// The records before i commit: what they held back is sent
			// now, and one of them whose statement fails is the batch's
			// failure instead of i.
			if k, ferr := b.flush(ctx); ferr != nil && k < i {
				return recordFailed(b, k, ferr)
			}
			return recordFailed(b, i, err)
		}
	}
	if k, err := b.flush(ctx); err != nil {
		return recordFailed(b, k, err)
	}
	return BatchResult{}, nil
}

// recordFailed is RecordFunc's answer when record i failed with err: a
// RecordError, or for i < 0 (a failure of no single record) a failure of
// the whole batch.
func recordFailed(b *Batch, i int, err error) (BatchResult, error) {
	if i < 0 || i >= len(b.Records) {
		return BatchResult{}, err
	}
	id := b.Records[i].EventID()
	return BatchResult{BatchItemFailures: []BatchItemFailure{{ItemIdentifier: id}}}, &RecordError{Record: id, Err: err}
}

// flush sends the statements the batch's transaction holds back, when it
// is a Flusher, and reports the first that failed.
func (b *Batch) flush(ctx context.Context) (int, error) {
	if f, ok := b.tx.(Flusher); ok {
		return f.Flush(ctx)
	}
	return -1, nil
}

// handle runs f over record i, within the record's part of the batch's
// transaction when there is one.
func (f RecordFunc) handle(ctx, rctx context.Context, b *Batch, i int) error {
	r := &b.Records[i]
	if b.tx == nil {
		return f(rctx, r)
	}
	if err := b.tx.BeginRecord(ctx, i); err != nil {
		return err
	}
	err := f(context.WithValue(rctx, txKey{}, recordTx{b.tx, i}), r)
	if err == nil {
		err = b.tx.EndRecord(ctx, i)
	}
	if err != nil {
		b.tx.AbortRecord(ctx, i)
	}
	return err
}

// RecordError reports that a RecordFunc failed at one record; the records
// before it succeeded. The engine treats it as a partial result:
// the checkpoint moves to just before Record, whatever the mapping's
// functionResponseTypes.
type RecordError struct {
	Record string // EventID of the failed record
	Err    error
}

func (e *RecordError) Error() string { return "record " + e.Record + ": " + e.Err.Error() }
func (e *RecordError) Unwrap() error { return e.Err }

// PermanentError marks a failure caused by the record's data: retrying cannot
// help, so the engine sends the batch to the on-failure destination at once
// instead of retrying until the record expires. Mappings can also list error
// types in permanentErrorTypes.
type PermanentError struct {
	Err error
}

// Permanent wraps err as a PermanentError.
func Permanent(err error) error { return &PermanentError{Err: err} }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err wraps a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// ErrNotFound is returned by State.Get for a key that has no value.
var ErrNotFound = errors.New("idem: state key not found")

// State is a mapping's key-value state, shared by the mappings of one
// idempotency scope. A handler reads its own writes at once; the writes
// commit in the same atomic write as the record's completion mark and the
// checkpoint, if and only if the record commits. Values must not be retained
// by the caller after Put; values returned by Get belong to the caller.
//
// A State is used by one handler call at a time; it is not safe for
// concurrent use.
type State interface {
	// Get returns the value of key, or ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put sets key to value.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

type stateKey struct{}

// WithState returns a context that carries st, for StateFrom.
func WithState(ctx context.Context, st State) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

// StateFrom returns the State of the record a RecordFunc is handling. It
// returns nil outside a handler invoked by idem.
func StateFrom(ctx context.Context) State {
	st, _ := ctx.Value(stateKey{}).(State)
	return st
}

// ErrNoTx is returned by TxFrom and Batch.Tx where there is no store
// transaction: the store has none (only PostgreSQL's does), the function is
// not in-process, or the call is outside a handler invoked by idem.
var ErrNoTx = errors.New("idem: no store transaction (it needs the PostgreSQL store and an in-process function)")

// Transaction is the store transaction an invocation's effects commit in,
// as the engine offers it to an in-process handler. The engine implements
// it and RecordFunc drives it; function authors use TxFrom or Batch.Tx
// (postgres.TxFrom, postgres.BatchTx, postgres.Defer) instead.
//
// Record i is one of the batch's records; -1 stands for the whole batch.
type Transaction interface {
	// Handle returns the driver's handle (a pgx.Tx for PostgreSQL) for
	// writing on behalf of record i, beginning the transaction on the
	// first call.
	Handle(ctx context.Context, i int) (any, error)
	// BeginRecord is called before record i runs: from there on, the
	// transaction's writes are record i's.
	BeginRecord(ctx context.Context, i int) error
	// EndRecord is called after record i returned success; an error (the
	// record left the transaction unable to commit) fails the record.
	EndRecord(ctx context.Context, i int) error
	// AbortRecord undoes record i's writes after it failed. When it cannot,
	// the implementation commits none of the transaction.
	AbortRecord(ctx context.Context, i int)
}

// Flusher is implemented by a Transaction that can hold statements back
// and send many records' at once, in one round trip (postgres.Defer): a
// record's held-back statements are its writes as much as those it waited
// for, so their errors must be known before the batch's outcome is. The
// engine's transactions implement it; RecordFunc flushes when its records
// have run, or when one failed, and the engine again before it judges an
// invocation, for batch handlers.
type Flusher interface {
	// Flush sends the statements held back, in order, and returns the
	// first failure: the index of the record whose statement failed, and
	// its error. The records before that record keep their writes; it and
	// the records after it hold none in the transaction, and it must be
	// reported failed (the records after it run again). The index is -1
	// when the failure is the whole batch's (a statement written for the
	// whole batch, or a transaction that can no longer commit), and
	// (-1, nil) means every statement succeeded, or none was held back.
	// Once a flush failed, every later Flush returns the same failure.
	Flush(ctx context.Context) (rec int, err error)
}

type txKey struct{}

// recordTx is record i's access to the batch's transaction.
type recordTx struct {
	tx Transaction
	i  int
}

// TxFrom returns the store transaction of the record a RecordFunc is
// handling: a pgx.Tx with the PostgreSQL store (postgres.TxFrom returns it
// typed). What the handler writes in it commits if and only if the record
// commits, in the same transaction as the record's completion, its State
// writes and the checkpoint; a failed record's writes are undone, and the
// records before it keep theirs. It returns ErrNoTx when there is no
// transaction (another store, a function that is not in-process, a call
// outside a RecordFunc).
func TxFrom(ctx context.Context) (any, error) {
	rt, ok := ctx.Value(txKey{}).(recordTx)
	if !ok {
		return nil, ErrNoTx
	}
	return rt.tx.Handle(ctx, rt.i)
}
