package postgres

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
)

// sqlEffectsScenario is one way of running TestSQLEffects' records: each
// record INSERTs one row exactly once, committed with what says it is done.
type sqlEffectsScenario struct {
	name   string
	shards int
	run    func(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int) // to the last record
}

// envInt reads a positive integer setting of TestSQLEffects.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestSQLEffects measures what exactly-once SQL effects cost against the
// loop a user would write by hand: records INSERTing one row each,
// committed with their dedupe record. Side by side, in interleaved rounds
// (every scenario once per round, in turn), it reports each scenario's
// records/s as min / median / max, and each median's ratio to the
// hand-written loop's at the same partition count:
//
//   - hand-written: read batchSize records, one transaction with one
//     multi-row INSERT and the partition's offset, commit; one goroutine
//     per partition;
//   - RecordFunc + TxFrom: idem, a record function doing one INSERT in
//     the record's transaction;
//   - RecordFunc + Defer: the same INSERT deferred (Defer), sent with the
//     batch's other records' in one round trip;
//   - HandlerFunc + BatchTx: idem, a batch handler doing the batch's
//     INSERT as one statement in the batch's transaction.
//
// It is a benchmark, not a test: it runs only with IDEM_BENCH=1 (records
// IDEM_BENCH_RECORDS, default 100,000; rounds IDEM_BENCH_ROUNDS, default 3;
// batch size IDEM_BENCH_BATCH, default 100), and asserts nothing about
// timing. BENCHMARKS.md, "PostgreSQL: SQL effects per record", has its
// figures.
func TestSQLEffects(t *testing.T) {
	if os.Getenv("IDEM_BENCH") != "1" {
		t.Skip("a benchmark: set IDEM_BENCH=1")
	}
	dsn := testDSN(t)
	records := envInt(t, "IDEM_BENCH_RECORDS", 100_000)
	rounds := envInt(t, "IDEM_BENCH_ROUNDS", 3)
	batch := envInt(t, "IDEM_BENCH_BATCH", 100)
	scenarios := []sqlEffectsScenario{
		{"hand-written", 1, runHandWritten},
		{"hand-written", 4, runHandWritten},
		{"RecordFunc + TxFrom", 1, runRecordFunc(records)},
		{"RecordFunc + TxFrom", 4, runRecordFunc(records)},
		{"RecordFunc + Defer", 1, runRecordDefer(records)},
		{"RecordFunc + Defer", 4, runRecordDefer(records)},
		{"HandlerFunc + BatchTx", 1, runBatchTx(records)},
		{"HandlerFunc + BatchTx", 4, runBatchTx(records)},
	}
	if only := os.Getenv("IDEM_BENCH_ONLY"); only != "" {
		scenarios = slices.DeleteFunc(scenarios, func(s sqlEffectsScenario) bool { return !strings.Contains(s.name, only) })
	}
	rates := make([][]float64, len(scenarios))
	for round := range rounds {
		for i, sc := range scenarios {
			r := runSQLEffects(t, dsn, sc, records, batch)
			rates[i] = append(rates[i], r)
			t.Logf("round %d: %s, %d partition(s): %.0f records/s", round+1, sc.name, sc.shards, r)
		}
	}
	medians := make(map[int]float64)
	for i, sc := range scenarios {
		if sc.name == "hand-written" {
			medians[sc.shards] = median(rates[i])
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%d records, batch %d, %d rounds\n", records, batch, rounds)
	fmt.Fprintf(&out, "| scenario | partitions | min | median | max | vs hand-written |\n|---|---:|---:|---:|---:|---:|\n")
	for i, sc := range scenarios {
		rs := slices.Sorted(slices.Values(rates[i]))
		ratio := ""
		if h := medians[sc.shards]; h > 0 {
			ratio = fmt.Sprintf("%.2f", median(rs)/h)
		}
		fmt.Fprintf(&out, "| %s | %d | %.0f | %.0f | %.0f | %s |\n", sc.name, sc.shards, rs[0], median(rs), rs[len(rs)-1], ratio)
	}
	t.Log("\n" + out.String())
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runSQLEffects runs one scenario over a fresh stream of n records and a
// fresh schema, and returns its records/s from the first read to the last
// commit.
func runSQLEffects(t *testing.T, dsn string, sc sqlEffectsScenario, n, batch int) float64 {
	t.Helper()
	ctx := context.Background()
	schema := freshSchema(t, dsn)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+
		"; CREATE TABLE "+pgx.Identifier{schema, "effects"}.Sanitize()+" (id text PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	db := effectsStream(t, sc.shards, n)
	start := time.Now()
	sc.run(t, dsn, schema, db, batch)
	rate := float64(n) / time.Since(start).Seconds()
	var got int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "effects"}.Sanitize()).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("%s: %d rows, want %d", sc.name, got, n)
	}
	return rate
}

// effectsStream returns an embedded database, closed when t ends, whose
// stream "effects" of the given shards holds n records, each a distinct
// JSON id, spread over 1,024 partition keys.
func effectsStream(t *testing.T, shards, n int) *pebbledb.DB {
	t.Helper()
	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateStream("effects", shards, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	const chunk = 5000
	recs := make([]pebbledb.PutRecord, 0, chunk)
	for i := range n {
		recs = append(recs, pebbledb.PutRecord{PartitionKey: "key-" + strconv.Itoa(i%1024), Data: fmt.Appendf(nil, `{"id":"%012d"}`, i)})
		if len(recs) == chunk || i == n-1 {
			if _, err := db.Put(context.Background(), "effects", recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return db
}

// runHandWritten is the loop a user writes without idem: per partition,
// read a batch, INSERT its rows in one statement and upsert the offset, in
// one transaction.
func runHandWritten(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	offsets := pgx.Identifier{schema, "offsets"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+offsets+" (part text PRIMARY KEY, seq text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	src, err := srcembedded.New(db, "effects")
	if err != nil {
		t.Fatal(err)
	}
	shards, err := src.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(shards))
	for _, shard := range shards {
		wg.Go(func() {
			var after idem.Sequence
			ids := make([]string, 0, batch)
			bodies := make([][]byte, 0, batch)
			for {
				res, err := src.Read(ctx, shard, after, batch, 6<<20)
				if err != nil {
					errs <- err
					return
				}
				if len(res.Records) == 0 {
					return
				}
				ids, bodies = ids[:0], bodies[:0]
				for i := range res.Records {
					ids = append(ids, res.Records[i].EventID())
					bodies = append(bodies, res.Records[i].Data)
				}
				after = res.Records[len(res.Records)-1].Sequence
				err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					b := &pgx.Batch{}
					b.Queue("INSERT INTO "+effects+" (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])", ids, bodies)
					b.Queue("INSERT INTO "+offsets+" (part, seq) VALUES ($1, $2) ON CONFLICT (part) DO UPDATE SET seq = excluded.seq", shard, string(after))
					return tx.SendBatch(ctx, b).Close()
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// runIdem runs a mapping of h over the stream until n records are
// processed.
func runIdem(t *testing.T, dsn, schema string, db *pebbledb.DB, batch, n int, h idem.Handler) {
	e := startIdem(t, dsn, schema, db, batch, h)
	for {
		var processed uint64
		for _, s := range e.Status() {
			processed += s.Processed
			if s.LastError != "" {
				t.Fatalf("shard %s: %s", s.Shard, s.LastError)
			}
		}
		if processed >= uint64(n) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// startIdem runs a mapping of h, in batches of batch, over the stream
// "effects" of db, on a PostgreSQL store of schema, until t ends.
func startIdem(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int, h idem.Handler) *engine.Engine {
	t.Helper()
	ctx := context.Background()
	st, err := New(ctx, dsn, WithSchema(schema), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	src, err := srcembedded.New(db, "effects")
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	e := engine.New(st, engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := e.Add(engine.Mapping{Name: "effects", Stream: "effects", Source: src, Function: "insert", Invoker: gofunc.New(h),
		BatchSize: batch, StartingPosition: source.TrimHorizon, FunctionTimeout: time.Minute}); err != nil {
		st.Close()
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return e
}

func runRecordFunc(n int) func(*testing.T, string, string, *pebbledb.DB, int) {
	return func(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int) {
		q := "INSERT INTO " + pgx.Identifier{schema, "effects"}.Sanitize() + " (id, body) VALUES ($1, $2)"
		runIdem(t, dsn, schema, db, batch, n, idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			tx, err := TxFrom(ctx)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, q, r.EventID(), r.Data)
			return err
		}))
	}
}

func runRecordDefer(n int) func(*testing.T, string, string, *pebbledb.DB, int) {
	return func(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int) {
		q := "INSERT INTO " + pgx.Identifier{schema, "effects"}.Sanitize() + " (id, body) VALUES ($1, $2)"
		runIdem(t, dsn, schema, db, batch, n, idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
			return Defer(ctx, q, r.EventID(), r.Data)
		}))
	}
}

func runBatchTx(n int) func(*testing.T, string, string, *pebbledb.DB, int) {
	return func(t *testing.T, dsn, schema string, db *pebbledb.DB, batch int) {
		q := "INSERT INTO " + pgx.Identifier{schema, "effects"}.Sanitize() + " (id, body) SELECT * FROM unnest($1::text[], $2::bytea[])"
		runIdem(t, dsn, schema, db, batch, n, idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
			tx, err := BatchTx(ctx, b)
			if err != nil {
				return idem.BatchResult{}, err
			}
			ids := make([]string, len(b.Records))
			bodies := make([][]byte, len(b.Records))
			for i := range b.Records {
				ids[i], bodies[i] = b.Records[i].EventID(), b.Records[i].Data
			}
			_, err = tx.Exec(ctx, q, ids, bodies)
			return idem.BatchResult{}, err
		}))
	}
}
