package invoke_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/postgres"
)

// TestAsyncRetryAttemptCommittedBeforeNextRun: a failed attempt is durable
// before the next attempt starts, so a crash at any moment of a retry
// finds every earlier attempt counted. Each retry's run reads the
// committed attempts, which is what a restart at that moment would read.
func TestAsyncRetryAttemptCommittedBeforeNextRun(t *testing.T) {
	var db atomic.Pointer[pebbledb.DB]
	var mu sync.Mutex
	var seen []int // committed attempts as each run starts
	var runs atomic.Int64
	fn := goFunction("f", func(context.Context, []byte) ([]byte, error) {
		runs.Add(1)
		var st struct{ Count int }
		if v, err := db.Load().State(context.Background(), invoke.QueueStream("f"), string(idem.SequenceOf(1))); err == nil {
			_ = json.Unmarshal(v, &st)
		} else if !errors.Is(err, idem.ErrNotFound) {
			t.Errorf("reading the attempts: %v", err)
		}
		mu.Lock()
		seen = append(seen, st.Count)
		mu.Unlock()
		return nil, errors.New("down")
	})
	// Retries are due at once: nothing but the commit stands between two
	// attempts.
	fn.Async = invoke.Async{OnFailure: "failed", BaseDelay: time.Nanosecond, MaxDelay: time.Nanosecond}
	fn.Async.RetryAttempts(2)
	dbx, svc := open(t, "", nil, []string{"failed"}, fn)
	db.Store(dbx)
	e := run(t, dbx, svc)
	if _, err := svc.Enqueue(context.Background(), invoke.Request{Function: "f", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the on-failure record", func() bool { return len(records(t, e.db, "failed")) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[0 1 2]" {
		t.Errorf("committed attempts as each run started: %v, want [0 1 2]", seen)
	}
}

// TestEventNotDroppedWhenSyncRunFails: an Event whose key a synchronous
// invocation holds is queued, not answered as a replay, so that it runs
// when that invocation fails.
func TestEventNotDroppedWhenSyncRunFails(t *testing.T) {
	g := newGated()
	defer g.open()
	e := start(t, "", nil, goFunction("f", g.handle))
	url := e.srv.URL + "/2015-03-31/functions/f/invocations"
	syncDone := make(chan response, 1)
	go func() { syncDone <- post(t, url, `{"a":1}`, "Idempotency-Key", "k") }()
	<-g.entered
	if r := post(t, url, `{"a":1}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k"); r.code != http.StatusAccepted {
		t.Fatalf("Event while the synchronous run holds the key = %+v, want 202", r)
	}
	if n := len(records(t, e.db, invoke.QueueStream("f"))); n != 1 {
		t.Fatalf("%d events queued, want 1: an accepted Event must run unless its key is completed", n)
	}
	g.open()
	if r := <-syncDone; r.header.Get("X-Amz-Function-Error") != "Unhandled" {
		t.Fatalf("synchronous run = %+v, want its failure", r)
	}
	waitFor(t, "the event's run", func() bool { return g.runs.Load() == 2 })
	waitFor(t, "the event to be done", func() bool { return e.svc.Status(context.Background())[0].Processed == 1 })
	if r := post(t, url, `{"a":1}`, "X-Amz-Invocation-Type", "Event", "Idempotency-Key", "k"); r.code != 202 || r.header.Get(invoke.HeaderReplayed) != "true" {
		t.Errorf("Event after the key completed = %+v, want 202 replayed", r)
	}
}

// TestEventNotDroppedWhenSyncRunFailsShared is the same across two
// processes sharing a PostgreSQL store: the synchronous run in one, the
// Event in the other.
func TestEventNotDroppedWhenSyncRunFailsShared(t *testing.T) {
	claims := sharedPostgres(t)
	g := newGated()
	defer g.open()
	a := startWith(t, "", claims(), nil, goFunction("f", g.handle))
	b := startWith(t, "", claims(), nil, goFunction("f", g.handle))
	syncDone := make(chan error, 1)
	go func() {
		res, err := a.svc.Invoke(context.Background(), invoke.Request{Function: "f", Payload: []byte(`{"a":1}`), IdempotencyKey: "k"})
		if err == nil && res.Err == nil {
			err = errors.New("the synchronous run succeeded")
		}
		if res.Err != nil {
			err = nil
		}
		syncDone <- err
	}()
	<-g.entered
	dedup, err := b.svc.Enqueue(context.Background(), invoke.Request{Function: "f", Payload: []byte(`{"a":1}`), IdempotencyKey: "k"})
	if err != nil || dedup {
		t.Fatalf("Event in the other process = deduplicated %v, %v; want queued", dedup, err)
	}
	if n := len(records(t, b.db, invoke.QueueStream("f"))); n != 1 {
		t.Fatalf("%d events queued, want 1", n)
	}
	g.open()
	if err := <-syncDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the event's run", func() bool { return g.runs.Load() == 2 })
}

// TestKeyedEventReservationSurvivesRestart: a keyed event still waiting
// in the queue is seen by the Enqueue of a restarted process: a repeat is
// a replay, another payload is refused, and the event runs once.
func TestKeyedEventReservationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := &counted{}
	fn := goFunction("f", c.handle)
	fn.IdempotencyKey = "id"
	ctx := context.Background()
	db, svc := open(t, dir, nil, nil, fn)
	if dedup, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"id":"A","n":1}`)}); err != nil || dedup {
		t.Fatalf("first Enqueue = %v, %v", dedup, err)
	}
	db.Close() // never ran

	db, svc = open(t, dir, nil, nil, fn)
	checkReserved(t, svc, db, 1)
	db.Close()

	start(t, dir, nil, fn)
	waitFor(t, "the run", func() bool { return c.runs.Load() == 1 })
}

// TestKeyedEventReservationShared: a keyed event waiting in one process's
// queue is seen by the Enqueue of another process sharing its PostgreSQL
// store.
func TestKeyedEventReservationShared(t *testing.T) {
	claims := sharedPostgres(t)
	c := &counted{}
	fn := goFunction("f", c.handle)
	fn.IdempotencyKey = "id"
	ctx := context.Background()
	dbA, svcA := open(t, "", claims(), nil, fn)
	if dedup, err := svcA.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"id":"A","n":1}`)}); err != nil || dedup {
		t.Fatalf("first Enqueue = %v, %v", dedup, err)
	}
	dbB, svcB := open(t, "", claims(), nil, fn)
	defer dbB.Close()
	checkReserved(t, svcB, dbB, 0)

	// A runs its queue: the event runs once; a repeat in B is a replay.
	a := run(t, dbA, svcA)
	waitFor(t, "the run", func() bool { return a.svc.Status(ctx)[0].Processed == 1 })
	if dedup, err := svcB.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"id":"A","n":1}`)}); err != nil || !dedup {
		t.Errorf("repeat after the run = %v, %v; want deduplicated", dedup, err)
	}
	if n := c.runs.Load(); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

// checkReserved enqueues repeats of {"id":"A","n":1}, queued elsewhere or
// earlier: the same payload is deduplicated, another refused with 422,
// and db's queue holds want events.
func checkReserved(t *testing.T, svc *invoke.Service, db *pebbledb.DB, want int) {
	t.Helper()
	ctx := context.Background()
	if dedup, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"id":"A","n":1}`)}); err != nil || !dedup {
		t.Errorf("repeat = deduplicated %v, %v; want deduplicated", dedup, err)
	}
	var ie *invoke.Error
	_, err := svc.Enqueue(ctx, invoke.Request{Function: "f", Payload: []byte(`{"id":"A","n":2}`)})
	if !errors.As(err, &ie) || ie.Status != http.StatusUnprocessableEntity || ie.Code != "IdempotencyPayloadMismatchException" {
		t.Errorf("repeat with another payload = %v, want 422 IdempotencyPayloadMismatchException", err)
	}
	if n := len(records(t, db, invoke.QueueStream("f"))); n != want {
		t.Errorf("%d events in this queue, want %d", n, want)
	}
}

// gated is a function whose first run waits for release and fails; later
// runs succeed.
type gated struct {
	runs             atomic.Int64
	entered, release chan struct{}
	once             sync.Once
}

func newGated() *gated { return &gated{entered: make(chan struct{}), release: make(chan struct{})} }

// open releases the first run; tests defer it, so that a failed test does
// not leave the run waiting.
func (g *gated) open() { g.once.Do(func() { close(g.release) }) }

func (g *gated) handle(_ context.Context, p []byte) ([]byte, error) {
	if g.runs.Add(1) == 1 {
		close(g.entered)
		<-g.release
		return nil, errors.New("flaky")
	}
	return p, nil
}

// run runs svc's queues (over db) until the test ends, then closes db.
func run(t *testing.T, db *pebbledb.DB, svc *invoke.Service) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	e := &env{db: db, svc: svc}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			db.Close()
		})
	}
	t.Cleanup(e.stop)
	return e
}

// pgSkipNotice prints the reason for skipping once, where go test without
// -v shows it.
var pgSkipNotice sync.Once

// sharedPostgres returns a func that opens a PostgreSQL store, as one
// more idem process would, over one fresh schema (dropped when t ends).
// Without a server at IDEM_TEST_POSTGRES_DSN (default: 127.0.0.1:5432,
// database test) t is skipped, or fails under CI=true.
func sharedPostgres(t *testing.T) func() store.Claims {
	t.Helper()
	dsn := os.Getenv("IDEM_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		err = conn.Ping(ctx)
		conn.Close(ctx)
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is not reachable (set IDEM_TEST_POSTGRES_DSN to test against another server): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		pgSkipNotice.Do(func() { fmt.Println("SKIP invoke:", msg) })
		t.Skip(msg)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "idem_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return func() store.Claims {
		t.Helper()
		s, err := postgres.New(context.Background(), dsn, postgres.WithSchema(schema), postgres.WithPurgeInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
}
