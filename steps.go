package idem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Journal keeps the results of journaled steps, so that a record delivered
// again does not repeat a step that already succeeded. The engine puts one
// in the context of every Go handler call, backed by the mapping's store;
// handlers use it through Step and StepFor.
type Journal interface {
	// Run runs fn once to success per (scope, recordKey, step) and returns
	// its result; later calls return the journaled result without running
	// fn. fn receives the step's deterministic idempotency key,
	// "scope/recordKey/step".
	Run(ctx context.Context, recordKey, step string, fn func(ctx context.Context, key string) ([]byte, error)) ([]byte, error)
}

// ErrStepInProgress is returned by Step when another attempt of the same
// step holds it: typically an attempt that crashed, whose lease has not yet
// expired. The record fails and is retried after a backoff.
var ErrStepInProgress = errors.New("idem: step is in progress in another attempt")

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
// fn. fn receives a deterministic key, "scope/recordKey/name": pass it on
// as the downstream idempotency key.
//
// What a crash means: if idem dies while fn runs, or after fn returned but
// before its result was journaled, fn runs again on the next delivery with
// the same key. A downstream that deduplicates by key therefore sees every
// effect once; one that does not may see it twice. A failed fn (an error)
// is not journaled and runs again on the next delivery.
//
// Outside idem (a handler called by hand, a store without journaling) Step
// just calls fn, with the key "recordKey/name".
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
		return fn(ctx, r.IdempotencyKey+"/"+name)
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
