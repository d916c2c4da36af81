package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/postgres"
)

// sqlEnv is an engine env over the PostgreSQL store, with a schema of the
// test's own for the handler's tables, as a function's database would be.
type sqlEnv struct {
	*env
	st     *postgres.Store
	db     *pgxpool.Pool // the test's own connections, for setup and checks
	schema string        // the handler's schema, quoted
}

func newSQLEnv(t *testing.T) *sqlEnv {
	t.Helper()
	v := newEnv(t)
	for _, k := range storeKinds {
		if k.name == "postgres" {
			v.store = k.open(t, v)
		}
	}
	ctx := context.Background()
	db, err := pgxpool.New(ctx, testsvc.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	schema := pgx.Identifier{"idem_user_" + randomHex(6)}.Sanitize()
	t.Cleanup(func() {
		db.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		db.Close()
	})
	if _, err := db.Exec(ctx, "CREATE SCHEMA "+schema+"; CREATE TABLE "+schema+".effects (id bigserial PRIMARY KEY, rec text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return &sqlEnv{env: v, st: v.store.(*postgres.Store), db: db, schema: schema}
}

// effects counts the handler's rows per record.
func (v *sqlEnv) effects() map[string]int {
	v.t.Helper()
	rows, err := v.db.Query(context.Background(), "SELECT rec FROM "+v.schema+".effects")
	if err != nil {
		v.t.Fatal(err)
	}
	recs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		v.t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range recs {
		n[r]++
	}
	return n
}

// exactlyOnce fails unless records 1 to n each have one row, and no other
// row exists.
func (v *sqlEnv) exactlyOnce(n int) {
	v.t.Helper()
	got := v.effects()
	for i := 1; i <= n; i++ {
		if got[strconv.Itoa(i)] != 1 {
			v.t.Fatalf("rows per record %v; want exactly one for each of 1 to %d", got, n)
		}
	}
	if len(got) != n {
		v.t.Fatalf("rows per record %v; want records 1 to %d only", got, n)
	}
}

// recordThreeDiscarded runs h over records 1 to 5 without retries, and
// fails unless record 3 alone was discarded, its rows undone, and every
// other record kept its row.
func (v *sqlEnv) recordThreeDiscarded(h idem.Handler) {
	v.t.Helper()
	m := v.mapping(h)
	m.RetryAttempts(0)
	e, stop := v.run(m)
	waitFor(v.t, "5 records resolved", func() bool { s := totals(e); return s.Processed+s.Discarded == 5 })
	stop()
	if s := totals(e); s.Processed != 4 || s.Discarded != 1 {
		v.t.Fatalf("processed %d, discarded %d; want 4 and record 3 discarded", s.Processed, s.Discarded)
	}
	if got := fmt.Sprint(v.effects()); got != "map[1:1 2:1 4:1 5:1]" {
		v.t.Fatalf("rows per record %s; want every record's but 3's", got)
	}
}

func (v *sqlEnv) checkpoint(mapping string) idem.Sequence {
	v.t.Helper()
	cp, _, err := v.st.Checkpoint(context.Background(), store.CheckpointKey{Mapping: mapping, Stream: "s", Shard: "shardId-000000000000"})
	if err != nil {
		v.t.Fatal(err)
	}
	return cp.Sequence
}

func (v *sqlEnv) putN(n int) {
	v.stream("s", 1)
	data := make([]string, n)
	for i := range data {
		data[i] = strconv.Itoa(i + 1)
	}
	v.put("s", "k", data...)
}

func (v *sqlEnv) mapping(h idem.Handler) engine.Mapping {
	return engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New(h),
		BatchSize: 10, StartingPosition: source.TrimHorizon, FunctionTimeout: 30 * time.Second,
		RetryBaseDelay: time.Millisecond, RetryMaxDelay: 5 * time.Millisecond}
}

// insert is a RecordFunc's write: one row for its record, in idem's
// transaction.
func (v *sqlEnv) insert(ctx context.Context, r *idem.Record) error {
	tx, err := postgres.TxFrom(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "INSERT INTO "+v.schema+".effects (rec) VALUES ($1)", string(r.Data))
	return err
}

// TestTransactionalSQL: a RecordFunc's rows, written through
// postgres.TxFrom, commit with their records: when record 5 fails once,
// records 1 to 4 commit with the checkpoint at 4 and record 5's row is
// undone; after the retry every record has exactly one row. State read and
// written alongside commits with them.
func TestTransactionalSQL(t *testing.T) {
	v := newSQLEnv(t)
	v.putN(10)
	var fives atomic.Int32
	redelivered, release := make(chan struct{}), make(chan struct{})
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		st := idem.StateFrom(ctx)
		n := 0
		if b, err := st.Get(ctx, "count"); err == nil {
			n, _ = strconv.Atoi(string(b))
		} else if !errors.Is(err, idem.ErrNotFound) {
			return err
		}
		if err := st.Put(ctx, "count", []byte(strconv.Itoa(n+1))); err != nil {
			return err
		}
		if string(r.Data) == "5" && fives.Add(1) == 2 {
			close(redelivered)
			<-release
		}
		if err := v.insert(ctx, r); err != nil {
			return err
		}
		if string(r.Data) == "5" && fives.Load() == 1 {
			return errors.New("record 5 fails once, after its insert")
		}
		return nil
	})
	e, stop := v.run(v.mapping(h))
	select {
	case <-redelivered:
	case <-time.After(30 * time.Second):
		t.Fatal("record 5 was not delivered again")
	}
	// Record 5 is being delivered again: its first attempt ended.
	got := v.effects()
	if fmt.Sprint(got) != "map[1:1 2:1 3:1 4:1]" {
		t.Errorf("rows per record after record 5 failed: %v; want records 1 to 4 once, not 5", got)
	}
	if cp := v.checkpoint("m"); cp != idem.SequenceOf(4) {
		t.Errorf("durable checkpoint %s after record 5 failed; want 4", cp)
	}
	close(release)
	waitFor(t, "10 records", func() bool { return totals(e).Processed == 10 })
	stop()
	v.exactlyOnce(10)
	if b, err := v.st.State(context.Background(), "f", "count"); err != nil || string(b) != "10" {
		t.Fatalf("state count = %q, %v; want 10", b, err)
	}
}

// TestTransactionalSQLFailures: a handler's SQL error fails only its
// record, its writes undone, whether it returns the error or swallows it;
// a record that times out is undone alone; a commit that fails (the
// connection killed, the checkpoint moved backwards) undoes the handler's
// rows, and the records run again.
func TestTransactionalSQLFailures(t *testing.T) {
	// Record 3 conflicts with a row that exists: a unique violation.
	conflict := func(t *testing.T, v *sqlEnv, swallow bool) {
		ctx := context.Background()
		if _, err := v.db.Exec(ctx, "CREATE TABLE "+v.schema+".orders (rec text PRIMARY KEY); INSERT INTO "+v.schema+".orders VALUES ('3')"); err != nil {
			t.Fatal(err)
		}
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if err := v.insert(ctx, r); err != nil {
				return err
			}
			tx, _ := postgres.TxFrom(ctx)
			_, err := tx.Exec(ctx, "INSERT INTO "+v.schema+".orders (rec) VALUES ($1)", string(r.Data))
			if swallow {
				return nil
			}
			return err
		})
		v.recordThreeDiscarded(h)
	}
	t.Run("a returned SQL error fails its record only", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		conflict(t, v, false)
	})
	t.Run("a swallowed SQL error fails its record only", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		conflict(t, v, true)
	})

	for _, inQuery := range []bool{false, true} {
		t.Run(fmt.Sprintf("a record that times out, in a query %v", inQuery), func(t *testing.T) {
			v := newSQLEnv(t)
			v.putN(5)
			var once atomic.Bool
			h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
				if err := v.insert(ctx, r); err != nil {
					return err
				}
				if string(r.Data) == "3" && once.CompareAndSwap(false, true) {
					if inQuery {
						tx, _ := postgres.TxFrom(ctx)
						_, err := tx.Exec(ctx, "SELECT pg_sleep(30)")
						return err
					}
					<-ctx.Done()
					return ctx.Err()
				}
				return nil
			})
			m := v.mapping(h)
			m.FunctionTimeout = 300 * time.Millisecond
			e, stop := v.run(m)
			waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
			stop()
			v.exactlyOnce(5)
		})
	}

	t.Run("a killed connection undoes the rows, which run again", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		var once atomic.Bool
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if err := v.insert(ctx, r); err != nil {
				return err
			}
			if string(r.Data) == "5" && once.CompareAndSwap(false, true) {
				tx, _ := postgres.TxFrom(ctx)
				var pid int
				if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
					return err
				}
				if _, err := v.db.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
					return err
				}
			}
			return nil
		})
		e, stop := v.run(v.mapping(h))
		waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
		stop()
		if !once.Load() {
			t.Fatal("the connection was never killed")
		}
		v.exactlyOnce(5)
	})

	t.Run("a checkpoint moved backwards undoes the rows", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		ahead := idem.SequenceOf(1000)
		idemSchema := pgx.Identifier{v.st.Schema()}.Sanitize()
		var calls atomic.Int32
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			calls.Add(1)
			if err := v.insert(ctx, r); err != nil {
				return err
			}
			if string(r.Data) == "5" {
				// Another owner of the shard moved the checkpoint on.
				_, err := v.db.Exec(ctx, "UPDATE "+idemSchema+".checkpoints SET sequence = $1", string(ahead))
				return err
			}
			return nil
		})
		_, stop := v.run(v.mapping(h))
		waitFor(t, "the invocation", func() bool { return calls.Load() == 5 })
		stop() // after its commit failed
		if got := v.effects(); len(got) != 0 {
			t.Fatalf("rows per record %v after the refused commit; want none", got)
		}
		if cp := v.checkpoint("m"); cp != ahead {
			t.Fatalf("checkpoint %s, want the one ahead, %s", cp, ahead)
		}
	})
}

// TestTransactionalBatchHandler: a batch handler's writes through
// postgres.BatchTx commit with its whole batch; when it reports a partial
// failure they are undone, and the whole batch runs again.
func TestTransactionalBatchHandler(t *testing.T) {
	v := newSQLEnv(t)
	v.putN(5)
	var mu sync.Mutex
	var sizes []int
	h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		sizes = append(sizes, len(b.Records))
		first := len(sizes) == 1
		mu.Unlock()
		tx, err := postgres.BatchTx(ctx, b)
		if err != nil {
			return idem.BatchResult{}, err
		}
		for i := range b.Records {
			if _, err := tx.Exec(ctx, "INSERT INTO "+v.schema+".effects (rec) VALUES ($1)", string(b.Records[i].Data)); err != nil {
				return idem.BatchResult{}, err
			}
		}
		if first {
			return idem.BatchResult{BatchItemFailures: []idem.BatchItemFailure{{ItemIdentifier: b.Records[3].EventID()}}}, nil
		}
		return idem.BatchResult{}, nil
	})
	m := v.mapping(h)
	m.ReportBatchItemFailures = true
	e, stop := v.run(m)
	waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[5 5]" {
		t.Fatalf("batch sizes %v; want the whole batch twice", sizes)
	}
	v.exactlyOnce(5)
}

// TestDeferredSQL: statements deferred with postgres.Defer commit with
// their records. When record 3's fails (a unique violation, found when
// the batch's statements are sent at its end), records 1 and 2 commit
// with their state, record 3 is discarded, and records 4 and 5, which ran
// already, run again and commit once, with their state. A deferred
// statement that conflicts (lock_not_available) runs its record again
// without counting a retry. A batch handler's statement deferred with
// postgres.DeferBatch that fails fails its whole batch, which runs again.
func TestDeferredSQL(t *testing.T) {
	t.Run("a failed deferred statement fails its record only", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		ctx := context.Background()
		if _, err := v.db.Exec(ctx, "CREATE TABLE "+v.schema+".orders (rec text PRIMARY KEY); INSERT INTO "+v.schema+".orders VALUES ('3')"); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		runs := map[string]int{}
		failures := make(chan error, 1)
		fn := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			mu.Lock()
			runs[string(r.Data)]++
			mu.Unlock()
			st := idem.StateFrom(ctx)
			n := 0
			if b, err := st.Get(ctx, "count"); err == nil {
				n, _ = strconv.Atoi(string(b))
			} else if !errors.Is(err, idem.ErrNotFound) {
				return err
			}
			if err := st.Put(ctx, "count", []byte(strconv.Itoa(n+1))); err != nil {
				return err
			}
			if err := postgres.Defer(ctx, "INSERT INTO "+v.schema+".effects (rec) VALUES ($1)", string(r.Data)); err != nil {
				return err
			}
			return postgres.Defer(ctx, "INSERT INTO "+v.schema+".orders (rec) VALUES ($1)", string(r.Data))
		})
		h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
			res, err := fn.HandleBatch(ctx, b)
			if err != nil {
				select {
				case failures <- err:
				default:
				}
			}
			return res, err
		})
		v.recordThreeDiscarded(h)
		mu.Lock()
		got := fmt.Sprint(runs)
		mu.Unlock()
		if got != "map[1:1 2:1 3:1 4:2 5:2]" {
			t.Fatalf("runs per record %s; want records 4 and 5 twice", got)
		}
		var de *postgres.DeferredError
		if err := <-failures; !errors.As(err, &de) || de.Record != 2 || !strings.Contains(err.Error(), "record 3") {
			t.Fatalf("the failed record's error %v; want a DeferredError of record 3", err)
		}
		if b, err := v.st.State(ctx, "f", "count"); err != nil || string(b) != "4" {
			t.Fatalf("state count = %q, %v; want 4", b, err)
		}
	})

	t.Run("a deferred statement's conflict runs its record again", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		ctx := context.Background()
		if _, err := v.db.Exec(ctx, "CREATE TABLE "+v.schema+".locks (id int PRIMARY KEY); INSERT INTO "+v.schema+".locks VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		lock, err := v.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Rollback(ctx)
		if _, err := lock.Exec(ctx, "SELECT 1 FROM "+v.schema+".locks WHERE id = 1 FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		var threes atomic.Int32
		h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			if err := postgres.Defer(ctx, "INSERT INTO "+v.schema+".effects (rec) VALUES ($1)", string(r.Data)); err != nil {
				return err
			}
			if string(r.Data) != "3" {
				return nil
			}
			if threes.Add(1) == 2 {
				// The first attempt's NOWAIT failed: lock_not_available.
				if err := lock.Rollback(ctx); err != nil {
					return err
				}
			}
			return postgres.Defer(ctx, "SELECT 1 FROM "+v.schema+".locks WHERE id = 1 FOR UPDATE NOWAIT")
		})
		m := v.mapping(h)
		m.RetryAttempts(0) // a conflict is no failure: nothing is discarded
		e, stop := v.run(m)
		waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
		stop()
		if s := totals(e); s.Discarded != 0 || threes.Load() != 2 {
			t.Fatalf("discarded %d, record 3 ran %d times; want none discarded, and 3 run again once", s.Discarded, threes.Load())
		}
		v.exactlyOnce(5)
	})

	t.Run("a batch handler's failed deferred statement fails its batch", func(t *testing.T) {
		v := newSQLEnv(t)
		v.putN(5)
		var mu sync.Mutex
		var sizes []int
		h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
			mu.Lock()
			sizes = append(sizes, len(b.Records))
			first := len(sizes) == 1
			mu.Unlock()
			for i := range b.Records {
				if err := postgres.DeferBatch(ctx, b, "INSERT INTO "+v.schema+".effects (rec) VALUES ($1)", string(b.Records[i].Data)); err != nil {
					return idem.BatchResult{}, err
				}
			}
			if first {
				if err := postgres.DeferBatch(ctx, b, "INSERT INTO "+v.schema+".effects (id, rec) VALUES (1, 'duplicate id')"); err != nil {
					return idem.BatchResult{}, err
				}
			}
			return idem.BatchResult{}, nil
		})
		e, stop := v.run(v.mapping(h))
		waitFor(t, "5 records", func() bool { return totals(e).Processed == 5 })
		stop()
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(sizes) != "[5 5]" {
			t.Fatalf("batch sizes %v; want the whole batch twice", sizes)
		}
		v.exactlyOnce(5)
	})
}

// TestNoTransactionWithoutSQLStore: with the embedded store, or an HTTP
// function, a handler gets idem.ErrNoTx.
func TestNoTransactionWithoutSQLStore(t *testing.T) {
	v := newEnv(t)
	v.stream("s", 1)
	v.put("s", "k", "1")
	errs := make(chan error, 2)
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		_, err := postgres.TxFrom(ctx)
		derr := postgres.Defer(ctx, "SELECT 1")
		select {
		case errs <- err:
			errs <- derr
		default:
		}
		return nil
	})
	v.run(engine.Mapping{Name: "m", Stream: "s", Source: v.source("s"), Function: "f", Invoker: gofunc.New(h), StartingPosition: source.TrimHorizon})
	select {
	case err := <-errs:
		if !errors.Is(err, postgres.ErrNoTx) || !strings.Contains(err.Error(), "no store transaction") {
			t.Fatalf("TxFrom with the embedded store: %v, want ErrNoTx", err)
		}
		if err := <-errs; !errors.Is(err, postgres.ErrNoTx) {
			t.Fatalf("Defer with the embedded store: %v, want ErrNoTx", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never ran")
	}
}
