package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	srcembedded "github.com/idem-run/idem/source/embedded"
)

// failRecord is a record of TestRecordFailsAloneEveryBatchSize.
type failRecord struct {
	ID   string `json:"id"`
	I    int    `json:"i"`    // its index in its batch
	Fail int    `json:"fail"` // how it fails; -1: it does not
}

// How the failing record of a batch fails.
const (
	failCheck     = iota // its INSERT breaks the table's CHECK constraint
	failSecond           // a first INSERT succeeds, then a second breaks the CHECK
	failAfterRows        // its INSERT succeeds, then the function returns an error
	failModes
)

// TestRecordFailsAloneEveryBatchSize runs, for every batch size from 1 to
// 500, one batch of that many records through a RecordFunc that INSERTs
// each record's row in the record's transaction (TxFrom), one record of
// the batch failing: its INSERT breaks a CHECK constraint, or a second
// INSERT does after a first succeeded, or the function fails after its
// INSERT succeeded. Which record fails moves with the size, and the
// records' statements go by each path the handle pipelines a record's
// savepoint with (Exec with and without arguments, QueryRow, SendBatch).
// The mapping retries a failed record once, then sends it to its
// on-failure destination. Every other record's row must commit; none of
// the failed record's rows may; the failed record must have run twice
// and reached the destination alone. One store, stream and table serve
// every size.
func TestRecordFailsAloneEveryBatchSize(t *testing.T) {
	const maxSize = 500
	s, _ := openStore(t)
	ctx := context.Background()
	table := pgx.Identifier{s.Schema(), "effects"}.Sanitize()
	if _, err := s.pool.Exec(ctx, "CREATE TABLE "+table+" (id text PRIMARY KEY, v int NOT NULL CHECK (v >= 0))"); err != nil {
		t.Fatal(err)
	}
	insert := "INSERT INTO " + table + " (id, v) VALUES ($1, $2)"

	var mu sync.Mutex
	invocations := map[int][]int{} // batch size -> the sizes of its invocations
	runs := map[string]int{}       // record id -> times its function ran
	write := func(ctx context.Context, tx pgx.Tx, kind int, id string, v int) error {
		var err error
		switch kind {
		case 0:
			_, err = tx.Exec(ctx, insert, id, v)
		case 1: // no arguments: pgx's simple protocol
			_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, v) VALUES ('%s', %d)", table, id, v))
		case 2:
			var got string
			if err = tx.QueryRow(ctx, insert+" RETURNING id", id, v).Scan(&got); err == nil && got != id {
				err = fmt.Errorf("RETURNING %q, want %q", got, id)
			}
		case 3:
			b := &pgx.Batch{}
			b.Queue(insert, id, v)
			err = tx.SendBatch(ctx, b).Close()
		}
		return err
	}
	fn := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		var fr failRecord
		if err := json.Unmarshal(r.Data, &fr); err != nil {
			return idem.Permanent(err)
		}
		mu.Lock()
		runs[fr.ID]++
		mu.Unlock()
		tx, err := TxFrom(ctx)
		if err != nil {
			return err
		}
		kind := fr.I % 4
		switch fr.Fail {
		case failCheck:
			return write(ctx, tx, kind, fr.ID, -1)
		case failSecond:
			if err := write(ctx, tx, kind, fr.ID, 1); err != nil {
				return err
			}
			return write(ctx, tx, (kind+1)%4, fr.ID+"/second", -1)
		case failAfterRows:
			if err := write(ctx, tx, kind, fr.ID, 1); err != nil {
				return err
			}
			return errors.New("the function refuses the record")
		}
		return write(ctx, tx, kind, fr.ID, 1)
	})
	var size int // the batch size being run; read under mu
	h := idem.HandlerFunc(func(ctx context.Context, b *idem.Batch) (idem.BatchResult, error) {
		mu.Lock()
		invocations[size] = append(invocations[size], len(b.Records))
		mu.Unlock()
		return fn.HandleBatch(ctx, b)
	})

	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateStream("effects", 1, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	src, err := srcembedded.New(db, "effects")
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(s, engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	m := engine.Mapping{
		Name: "effects", Stream: "effects", Source: src, Function: "insert", Invoker: gofunc.New(h),
		FunctionTimeout: time.Minute, BatchSize: maxSize, StartingPosition: source.TrimHorizon,
		OnFailure: "effects-failed", RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond,
	}
	m.RetryAttempts(1)
	if err := e.Add(m); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	var failed []string // the failing record of each size, in order
	var processed, discarded uint64
	for n := 1; n <= maxSize; n++ {
		mu.Lock()
		size = n
		mu.Unlock()
		f := (n*37 + n/3) % n // the failing record moves around the batch
		mode := n % failModes
		recs := make([]pebbledb.PutRecord, n)
		for i := range recs {
			fr := failRecord{ID: fmt.Sprintf("%d-%d", n, i), I: i, Fail: -1}
			if i == f {
				fr.Fail = mode
				failed = append(failed, fr.ID)
			}
			data, _ := json.Marshal(fr)
			recs[i] = pebbledb.PutRecord{PartitionKey: strconv.Itoa(i), Data: data}
		}
		if _, err := db.Put(ctx, "effects", recs); err != nil {
			t.Fatal(err)
		}
		processed += uint64(n - 1)
		discarded++
		waitResolved(t, e, processed, discarded)

		var rows []string
		r, err := s.pool.Query(ctx, "SELECT id FROM "+table+" WHERE id LIKE $1", strconv.Itoa(n)+"-%")
		if err != nil {
			t.Fatal(err)
		}
		if rows, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		want := make([]string, 0, n-1)
		for i := range n {
			if i != f {
				want = append(want, fmt.Sprintf("%d-%d", n, i))
			}
		}
		slices.Sort(rows)
		slices.Sort(want)
		if !slices.Equal(rows, want) {
			t.Fatalf("batch size %d, record %d failing (mode %d): rows %v, want %v", n, f, mode, rows, want)
		}
		mu.Lock()
		first, fruns := invocations[n][0], runs[fmt.Sprintf("%d-%d", n, f)]
		mu.Unlock()
		if first != n {
			t.Fatalf("batch size %d: the first invocation had %d records (%v)", n, first, invocations[n])
		}
		if fruns != 2 {
			t.Fatalf("batch size %d: the failing record ran %d times, want 2 (a retry, then the on-failure destination)", n, fruns)
		}
	}

	var got []string
	for after := int64(0); ; {
		rows, err := s.Failures(ctx, "effects-failed", after, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			break
		}
		for _, row := range rows {
			if len(row.Records) != 1 {
				t.Fatalf("an on-failure batch of %d records, want 1", len(row.Records))
			}
			var fr failRecord
			if err := json.Unmarshal(row.Records[0].Data, &fr); err != nil {
				t.Fatal(err)
			}
			got = append(got, fr.ID)
			after = row.ID
		}
	}
	if !slices.Equal(got, failed) {
		t.Fatalf("on-failure records %v, want %v", got, failed)
	}
}

// waitResolved waits until the engine's shards processed and discarded
// the given numbers of records, and fails on more or on a shard error.
func waitResolved(t *testing.T, e *engine.Engine, processed, discarded uint64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var p, d uint64
		for _, st := range e.Status() {
			p += st.Processed
			d += st.Discarded
			if st.LastError != "" {
				t.Fatalf("shard %s: %s", st.Shard, st.LastError)
			}
		}
		if p > processed || d > discarded {
			t.Fatalf("%d records processed and %d discarded, want %d and %d", p, d, processed, discarded)
		}
		if p == processed && d == discarded {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute, %d records processed and %d discarded, want %d and %d", p, d, processed, discarded)
		}
		time.Sleep(time.Millisecond)
	}
}
