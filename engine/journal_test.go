package engine_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
)

// stepNamespace is the journal's namespace of step records
// (engine/journal.go).
const stepNamespace = "\x00step"

// stepClaim returns the claim key and payload hash the journal keeps a
// step under.
func stepClaim(scope, recordKey, step string) (store.MarkKey, store.PayloadHash) {
	key := idem.StepKey(scope, recordKey, step)
	return store.MarkKeyOf(stepNamespace, key), sha256.Sum256([]byte(key))
}

// claimsOf returns the store's Claims with its Takeover: every idem store
// has both.
func claimsOf(t *testing.T, st store.Driver) store.Claims {
	t.Helper()
	c, ok := st.(store.Claims)
	if !ok {
		t.Fatalf("%T keeps no claims", st)
	}
	if _, ok := st.(store.ClaimTaker); !ok {
		t.Fatalf("%T cannot take a claim over (store.ClaimTaker)", st)
	}
	return c
}

// stepMapping is a mapping of stream "in" to function "f" keyed by the
// record's "id", with a lease for steps (the function timeout) far longer
// than the test, and 3 retries before the record goes to "dlq".
func stepMapping(v *env, h idem.RecordFunc) engine.Mapping {
	m := engine.Mapping{Name: "m", Stream: "in", Source: v.source("in"), Function: "f", Invoker: gofunc.New(h),
		StartingPosition: source.TrimHorizon, KeyExpression: "id", OnFailure: "dlq", FunctionTimeout: 10 * time.Minute,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond}
	m.RetryAttempts(3)
	return m
}

// waitResolved waits until n records were processed or discarded, and
// fails unless all were processed.
func waitResolved(t *testing.T, e *engine.Engine, n uint64) {
	t.Helper()
	waitFor(t, "records resolved", func() bool {
		s := totals(e)
		return s.Processed+s.Discarded >= n
	})
	if s := totals(e); s.Processed != n || s.Discarded != 0 {
		t.Fatalf("processed %d, discarded %d; want %d processed", s.Processed, s.Discarded, n)
	}
}

func forEachStore(t *testing.T, test func(t *testing.T, v *env)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			v := newEnv(t)
			v.store = k.open(t, v)
			v.stream("in", 1)
			v.stream("dlq", 1)
			test(t, v)
		})
	}
}

// TestStepPanicReleasesItsClaim: a step that panics releases its claim
// (the panic still fails the invocation), and the record's next attempt
// runs the step at once, rather than failing with ErrStepInProgress until
// the function timeout ends and going to on-failure.
func TestStepPanicReleasesItsClaim(t *testing.T) {
	forEachStore(t, func(t *testing.T, v *env) {
		claims := claimsOf(t, v.store)
		v.put("in", "k", `{"id":"A"}`)
		mk, _ := stepClaim("f", "A", "charge")
		var runs atomic.Int32
		var heldOnRetry atomic.Int32
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if runs.Load() > 0 {
				if c, ok, err := claims.Lookup(ctx, mk, time.Now()); err != nil {
					return err
				} else if ok && c.Status == store.InProgress {
					heldOnRetry.Add(1)
				}
			}
			_, err := idem.Step(ctx, "charge", func(context.Context, string) (string, error) {
				if runs.Add(1) == 1 {
					panic("card reader on fire")
				}
				return "charged", nil
			})
			return err
		})
		e, _ := v.run(stepMapping(v, h))
		waitResolved(t, e, 1)
		if n := heldOnRetry.Load(); n != 0 {
			t.Errorf("the panicked step's claim was still held on %d retries", n)
		}
		if n := runs.Load(); n != 2 {
			t.Errorf("step ran %d times, want 2 (a panic, then a success)", n)
		}
	})
}

// failFirstComplete fails the first Complete of one claim key, as a store
// that lost its connection would: the step ran, its result is not
// journaled.
type failFirstComplete struct {
	store.Driver
	store.Claims
	store.ClaimTaker
	key    store.MarkKey
	failed atomic.Bool
}

func (s *failFirstComplete) Complete(ctx context.Context, c store.Claim, result []byte, expires time.Time) error {
	if c.Key == s.key && s.failed.CompareAndSwap(false, true) {
		return errors.New("connection reset by peer")
	}
	return s.Claims.Complete(ctx, c, result, expires)
}

// TestStepRetriedAfterAFailedJournalWrite: a step whose result could not be
// journaled runs again on the record's next attempt, at once, rather than
// failing with ErrStepInProgress until the function timeout ends.
func TestStepRetriedAfterAFailedJournalWrite(t *testing.T) {
	forEachStore(t, func(t *testing.T, v *env) {
		claims := claimsOf(t, v.store)
		mk, _ := stepClaim("f", "A", "charge")
		v.store = &failFirstComplete{Driver: v.store, Claims: claims, ClaimTaker: v.store.(store.ClaimTaker), key: mk}
		v.put("in", "k", `{"id":"A"}`)
		var runs atomic.Int32
		var journalErrs atomic.Int32
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			_, err := idem.Step(ctx, "charge", func(context.Context, string) (string, error) {
				runs.Add(1)
				return "charged", nil
			})
			if err != nil && !errors.Is(err, idem.ErrStepInProgress) {
				journalErrs.Add(1)
			}
			return err
		})
		e, _ := v.run(stepMapping(v, h))
		waitResolved(t, e, 1)
		if n := journalErrs.Load(); n != 1 {
			t.Errorf("%d attempts failed to journal, want 1", n)
		}
		if n := runs.Load(); n != 2 {
			t.Errorf("step ran %d times, want 2 (its first result was not journaled)", n)
		}
	})
}

// TestStepOfADeadAttemptIsTakenOver: a step claim left in progress by an
// attempt that died (a crashed process: nothing released it) is taken over
// by the record's next attempt at once, and the dead attempt's claim is
// fenced: its late Complete is refused.
func TestStepOfADeadAttemptIsTakenOver(t *testing.T) {
	forEachStore(t, func(t *testing.T, v *env) {
		claims := claimsOf(t, v.store)
		mk, ph := stepClaim("f", "A", "charge")
		dead, err := claims.Claim(context.Background(), mk, ph, 10*time.Minute, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		v.put("in", "k", `{"id":"A"}`)
		var runs atomic.Int32
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			_, err := idem.Step(ctx, "charge", func(context.Context, string) (string, error) {
				runs.Add(1)
				return "charged", nil
			})
			return err
		})
		e, _ := v.run(stepMapping(v, h))
		waitResolved(t, e, 1)
		if n := runs.Load(); n != 1 {
			t.Errorf("step ran %d times, want 1", n)
		}
		if err := claims.Complete(context.Background(), dead, []byte(`"stale"`), time.Now().Add(time.Hour)); !errors.Is(err, store.ErrFenced) {
			t.Errorf("the dead attempt's Complete: %v, want ErrFenced", err)
		}
		got, ok, err := claims.Lookup(context.Background(), mk, time.Now())
		if err != nil || !ok || got.Status != store.Completed || string(got.Result) != `"charged"` {
			t.Errorf("journaled step = %+v, %v, %v; want the new attempt's result", got, ok, err)
		}
	})
}

// TestStepKeysOfSlashedNamesDoNotCollide: record "A"'s step "b/c" and
// record "A/b"'s step "c" are two steps, with two keys: each runs, and
// each record gets its own result.
func TestStepKeysOfSlashedNamesDoNotCollide(t *testing.T) {
	forEachStore(t, func(t *testing.T, v *env) {
		v.put("in", "k", `{"id":"A","step":"b/c"}`, `{"id":"A/b","step":"c"}`)
		var mu sync.Mutex
		var keys []string
		results := make(map[string]string)
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			step := map[string]string{"A": "b/c", "A/b": "c"}[r.IdempotencyKey]
			got, err := idem.Step(ctx, step, func(_ context.Context, key string) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				keys = append(keys, key)
				return "result of " + r.IdempotencyKey, nil
			})
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			results[r.IdempotencyKey] = got
			return nil
		})
		e, _ := v.run(stepMapping(v, h))
		waitResolved(t, e, 2)
		mu.Lock()
		defer mu.Unlock()
		sort.Strings(keys)
		if len(keys) != 2 || keys[0] != "f/A/b%2Fc" || keys[1] != "f/A/b/c" {
			t.Errorf("steps ran with keys %q; want f/A/b%%2Fc and f/A/b/c", keys)
		}
		for _, k := range []string{"A", "A/b"} {
			if results[k] != "result of "+k {
				t.Errorf("record %s got %q, want its own step's result", k, results[k])
			}
		}
	})
}

// TestStepKeyEscapesScopeAndName: StepKey escapes '%' and '/' in the scope
// and the step name, leaves keys without them as they were, and tells
// apart every (scope, record key, name), the record key unescaped.
func TestStepKeyEscapesScopeAndName(t *testing.T) {
	for _, c := range []struct{ scope, record, name, want string }{
		{"f", "in/shardId-000000000000/1", "charge", "f/in/shardId-000000000000/1/charge"},
		{"f", "A", "b/c", "f/A/b%2Fc"},
		{"f", "A/b", "c", "f/A/b/c"},
		{"s/x", "k", "50%", "s%2Fx/k/50%25"},
		{"f", "k%2F", "a%2Fb", "f/k%2F/a%252Fb"},
	} {
		if got := idem.StepKey(c.scope, c.record, c.name); got != c.want {
			t.Errorf("StepKey(%q, %q, %q) = %q, want %q", c.scope, c.record, c.name, got, c.want)
		}
	}
	parts := []string{"", "a", "/", "a/b", "b/c", "%", "%2F", "a%2Fb", "/a/", "%25"}
	seen := make(map[string][3]string)
	for _, s := range parts {
		for _, r := range parts {
			for _, n := range parts {
				k := idem.StepKey(s, r, n)
				if o, ok := seen[k]; ok {
					t.Fatalf("StepKey%q and StepKey%q are both %q", o, [3]string{s, r, n}, k)
				}
				seen[k] = [3]string{s, r, n}
			}
		}
	}
	// Without a journal, Step calls fn with "recordKey/name", name escaped.
	var key string
	_, err := idem.StepFor(context.Background(), &idem.Record{IdempotencyKey: "A"}, "b/c", func(_ context.Context, k string) (int, error) {
		key = k
		return 0, nil
	})
	if err != nil || key != "A/b%2Fc" {
		t.Errorf("StepFor without a journal ran with key %q, %v; want A/b%%2Fc", key, err)
	}
}
