package idem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Journal keeps the results of journaled steps, so that a record delivered
// again does not repeat a step that already succeeded. The engine puts one
// in the context of every Go handler call, backed by the mapping's store;
// handlers use it through Step and StepFor.
type Journal interface {
	// Run runs fn once to success per (scope, recordKey, step) and returns
	// its result; later calls return the journaled result without running
	// fn. fn receives the step's deterministic idempotency key,
	// StepKey(scope, recordKey, step).
	Run(ctx context.Context, recordKey, step string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error)
}

// ErrStepInProgress is returned by Step when another attempt of the same
// step holds it and the store cannot take a step over (it lacks
// store.ClaimTaker): typically an attempt that crashed, whose lease has
// not yet expired. The record fails and is retried after a backoff. With
// idem's stores the next attempt of a record takes its steps over at
// once, since only one attempt of a record runs at a time.
var ErrStepInProgress = errors.New("idem: step is in progress in another attempt")

// StepKey returns the idempotency key of step name of the record with
// recordKey in scope: "scope/recordKey/name", with '%' written "%25" and
// '/' written "%2F" in scope and name. Escaping gives each step of each
// record a key of its own: without it, record "A"'s step "b/c" and record "A/b"'s step
// "c" would share a key, and one would get the other's result. The record
// key is left as it is (identity keys, "stream/shardId/sequence", hold
// slashes): the first '/' ends the scope and the last begins the name, so
// the parts are still told apart. Where scope and name hold neither '/'
// nor '%', the key is plainly "scope/recordKey/name".
//
// Step passes this key to its fn; use StepKey to compute it elsewhere,
// for example to look a step up downstream.
func StepKey(scope, recordKey, name string) string {
	return escapeKeyPart(scope) + "/" + recordKey + "/" + escapeKeyPart(name)
}

// escapeKeyPart writes '%' as "%25" and '/' as "%2F" in s, so that the
// result holds no '/' and tells apart every s.
func escapeKeyPart(s string) string {
	if !strings.ContainsAny(s, "%/") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

type journalKey struct{}
type recordKey struct{}

// WithJournal returns a context that carries j, for Step.
func WithJournal(ctx context.Context, j Journal) context.Context {
	return context.WithValue(ctx, journalKey{}, j)
}

// RecordFrom returns the record a RecordFunc is handling, or nil.
func RecordFrom(ctx context.Context) *Record {
	r, _ := ctx.Value(recordKey{}).(*Record)
	return r
}

func withRecord(ctx context.Context, r *Record) context.Context {
	return context.WithValue(ctx, recordKey{}, r)
}

// Step runs fn, a call to the outside world (a payment, an e-mail, another
// API), at most once to success for the record a RecordFunc is handling:
// when the record is delivered again after a later failure, Step returns
// the result fn returned the first time, decoded from JSON, without calling
// fn. fn receives a deterministic key, "scope/recordKey/name" (StepKey,
// which escapes '%' and '/' in scope and name, so that each step of each
// record has a key of its own): pass it on as the downstream idempotency
// key.
//
// What a crash means: if idem dies while fn runs, or after fn returned but
// before its result was journaled, fn runs again on the next delivery with
// the same key. A downstream that deduplicates by key therefore sees every
// effect once; one that does not may see it twice. A failed fn (an error
// or a panic), or one whose result could not be journaled, is not
// journaled and runs again on the next delivery: the next attempt of the
// record takes the step over at once, without waiting for the failed
// attempt's lease.
//
// Outside idem (a handler called by hand, a store without journaling) Step
// just calls fn, with the key "recordKey/name" (name escaped as StepKey
// escapes it).
func Step[T any](ctx context.Context, name string, fn func(ctx context.Context, key string) (T, error)) (T, error) {
	r := RecordFrom(ctx)
	if r == nil {
		var zero T
		return zero, fmt.Errorf("idem: step %q: no record in context (use StepFor in a batch handler)", name)
	}
	return StepFor(ctx, r, name, fn)
}

// StepFor is Step for a batch handler, which names the record itself.
func StepFor[T any](ctx context.Context, r *Record, name string, fn func(ctx context.Context, key string) (T, error)) (T, error) {
	var out T
	j, _ := ctx.Value(journalKey{}).(Journal)
	if j == nil {
		return fn(ctx, r.IdempotencyKey+"/"+escapeKeyPart(name))
	}
	raw, err := j.Run(ctx, r.IdempotencyKey, name, func(ctx context.Context, key string) ([]byte, error) {
		v, err := fn(ctx, key)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encoding the result: %w", err)
		}
		return b, nil
	})
	if err != nil {
		return out, fmt.Errorf("idem: step %q of record %s: %w", name, r.EventID(), err)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("idem: step %q of record %s: decoding the journaled result: %w", name, r.EventID(), err)
	}
	return out, nil
}
