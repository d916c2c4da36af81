package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
	"github.com/idem-run/idem/store/postgres"
)

// hotTransfer is a record of TestHotAccountTransfers.
type hotTransfer struct {
	From, To string
	Amount   int64
}

// TestHotAccountTransfers runs transfers between a few hot accounts over
// 4 shards with batches of 50, each transfer debiting one account and then
// crediting the other in idem's transaction (TxFrom), in that order rather
// than by key, so that concurrent batches deadlock again and again (a
// batch holds every row it wrote until it commits). Every record must
// complete, none be discarded, and every balance be exact: a deadlock is a
// conflict between transactions, which the engine retries without counting
// it against maximumRetryAttempts (set to 2 here, which deadlocks would
// exhaust otherwise). The numbers of deadlocks the handler saw and of the
// engine's conflict retries are logged, with the throughput; nothing about
// timing is asserted.
func TestHotAccountTransfers(t *testing.T) {
	const (
		accounts  = 50
		total     = 2000
		shards    = 4
		batchSize = 50
		opening   = int64(1_000_000)
		stream    = "transfers"
	)
	// A deadlock is found after deadlock_timeout, a second by default:
	// shorten it for this test's sessions, to keep the test short.
	dsn := testsvc.PostgresDSN(t) + "&deadlock_timeout=100ms"
	ctx := context.Background()
	var b [6]byte
	rand.Read(b[:])
	schema := "idem_hot_" + hex.EncodeToString(b[:])
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		admin.Close(context.Background())
	})
	st, err := postgres.New(ctx, dsn, postgres.WithSchema(schema), postgres.WithLeaseTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	table := pgx.Identifier{schema, "accounts"}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE TABLE "+table+` (id text PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO `+table+` SELECT 'acc-' || i, `+fmt.Sprint(opening)+` FROM generate_series(0, `+fmt.Sprint(accounts-1)+`) AS i`); err != nil {
		t.Fatal(err)
	}

	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateStream(stream, shards, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(15, 4))
	want := make(map[string]int64, accounts)
	recs := make([]pebbledb.PutRecord, total)
	for i := range recs {
		from := rng.IntN(accounts)
		to := (from + 1 + rng.IntN(accounts-1)) % accounts
		tr := hotTransfer{From: fmt.Sprintf("acc-%d", from), To: fmt.Sprintf("acc-%d", to), Amount: 1 + rng.Int64N(100)}
		want[tr.From] -= tr.Amount
		want[tr.To] += tr.Amount
		data, _ := json.Marshal(tr)
		recs[i] = pebbledb.PutRecord{PartitionKey: fmt.Sprint(i), Data: data}
	}
	if _, err := db.Put(ctx, stream, recs); err != nil {
		t.Fatal(err)
	}
	src, err := srcembedded.New(db, stream)
	if err != nil {
		t.Fatal(err)
	}

	var deadlocks, lockTimeouts, serialization atomic.Int64
	handler := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		var tr hotTransfer
		if err := json.Unmarshal(r.Data, &tr); err != nil {
			return idem.Permanent(err)
		}
		tx, err := postgres.TxFrom(ctx)
		if err != nil {
			return err
		}
		for _, u := range []struct {
			id    string
			delta int64
		}{{tr.From, -tr.Amount}, {tr.To, tr.Amount}} {
			if _, err := tx.Exec(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", u.delta, u.id); err != nil {
				if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
					switch pe.Code {
					case "40P01":
						deadlocks.Add(1)
					case "55P03":
						lockTimeouts.Add(1)
					case "40001":
						serialization.Add(1)
					}
				}
				return fmt.Errorf("transfer %s: %w", r.IdempotencyKey, err)
			}
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	e := engine.New(st, engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), engine.WithRegisterer(reg))
	m := engine.Mapping{
		Name: "hot", Stream: stream, Source: src, Function: "transfer", Invoker: gofunc.New(handler),
		FunctionTimeout: 30 * time.Second, BatchSize: batchSize, StartingPosition: source.TrimHorizon,
		RetryBaseDelay: 50 * time.Millisecond, RetryMaxDelay: time.Second,
	}
	m.RetryAttempts(2)
	if err := e.Add(m); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- e.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	var processed, discarded uint64
	deadline := time.Now().Add(3 * time.Minute)
	for {
		processed, discarded = 0, 0
		for _, s := range e.Status() {
			processed += s.Processed
			discarded += s.Discarded
		}
		if processed+discarded >= total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3 minutes %d of %d transfers processed, %d discarded (%d deadlocks, %d lock timeouts seen)",
				processed, total, discarded, deadlocks.Load(), lockTimeouts.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if processed != total || discarded != 0 {
		t.Errorf("%d transfers processed, %d discarded; want %d and 0", processed, discarded, total)
	}

	rows, err := admin.Query(ctx, "SELECT id, balance FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var balance, sum int64
	n := 0
	if _, err := pgx.ForEachRow(rows, []any{&id, &balance}, func() error {
		n++
		sum += balance
		if balance != opening+want[id] {
			t.Errorf("account %s: balance %d, want %d", id, balance, opening+want[id])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != accounts || sum != accounts*opening {
		t.Errorf("%d accounts summing to %d, want %d summing to %d", n, sum, accounts, accounts*opening)
	}
	t.Logf("%d transfers over %d accounts, %d shards, batches of %d: %v (%.0f records/s); the handler saw %d deadlocks, %d lock timeouts, %d serialization failures; the engine ran batches again %v times for conflicts, retried %v times",
		total, accounts, shards, batchSize, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(),
		deadlocks.Load(), lockTimeouts.Load(), serialization.Load(), counter(t, reg, "idem_store_conflicts_total"), counter(t, reg, "idem_retries_total"))
}

// counter returns the sum of a counter's series in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
