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
	"strings"
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
	ID    string `json:"id"`
	I     int    `json:"i"`     // its index in its batch
	Fail  int    `json:"fail"`  // how it fails; -1: it does not
	Defer bool   `json:"defer"` // it defers its writes (Defer)
}

// How the failing record of a batch fails.
const (
	failCheck     = iota // its INSERT breaks the table's CHECK constraint
	failSecond           // a first INSERT succeeds, then a second breaks the CHECK
	failAfterRows        // its INSERT succeeds, then the function returns an error
	failModes
)

// recordPath is one way TestRecordFailsAloneEveryBatchSize's records
// write: each has a stream and a mapping of its own.
type recordPath struct {
	name     string // the stream and mapping
	deferred bool
	prefix   string // of its rows' ids
}

// TestRecordFailsAloneEveryBatchSize runs, for every batch size from 1 to
// 500, one batch of that many records through a RecordFunc that INSERTs
// each record's row in the record's transaction, one record of the batch
// failing: its INSERT breaks a CHECK constraint, or a second INSERT does
// after a first succeeded, or the function fails after its INSERT
// succeeded. Which record fails moves with the size. Every size runs two
// ways, side by side on two mappings:
//
//   - sync: the statements run with TxFrom, by each path the handle
//     pipelines a record's savepoint with (Exec with and without
//     arguments, QueryRow, SendBatch);
//   - deferred: the INSERTs are deferred (Defer, with and without
//     pgx.NamedArgs); some records read their row back through TxFrom
//     after deferring it (it must be there), some run a statement with
//     TxFrom before deferring. A failing deferred INSERT surfaces when the
//     batch's statements are sent, at its end or at a later record's
//     synchronous statement, which then fails too.
//
// The mapping retries a failed record once, then sends it to its
// on-failure destination. Every other record's row must commit, none of
// the failed record's; the failed record must have run twice and reached
// the destination alone; the records before it ran once; the records
// after it ran again as many times as the failure was found after them
// (deferred: each failed invocation ran them up to the first one with a
// synchronous statement). Each run of a record also writes a State key
// of its own: only the run that committed the record may have committed
// it.
func TestRecordFailsAloneEveryBatchSize(t *testing.T) {
	const maxSize = 500
	s, _ := openStore(t)
	ctx := context.Background()
	table := pgx.Identifier{s.Schema(), "effects"}.Sanitize()
	if _, err := s.pool.Exec(ctx, "CREATE TABLE "+table+" (id text PRIMARY KEY, v int NOT NULL CHECK (v >= 0))"); err != nil {
		t.Fatal(err)
	}
	insert := "INSERT INTO " + table + " (id, v) VALUES ($1, $2)"
	paths := []recordPath{{"sync", false, ""}, {"deferred", true, "d"}}

	var mu sync.Mutex
	invocations := map[string][]int{} // path/size -> the sizes of its invocations
	runs := map[string]int{}          // record id -> times its function ran
	var problems []string             // what a handler saw wrong
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
	deferInsert := func(ctx context.Context, kind int, id string, v int) error {
		if kind == 1 {
			return Defer(ctx, "INSERT INTO "+table+" (id, v) VALUES (@id, @v)", pgx.NamedArgs{"id": id, "v": v})
		}
		return Defer(ctx, insert, id, v)
	}
	// deferred is a record of the deferred path: kind 2 reads its row
	// back after deferring it, kind 3 runs a statement before.
	deferred := func(ctx context.Context, fr failRecord) error {
		kind := fr.I % 4
		tx, err := TxFrom(ctx)
		if err != nil {
			return err
		}
		if kind == 3 {
			var one int
			if err := tx.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				return err
			}
		}
		switch fr.Fail {
		case failCheck:
			err = deferInsert(ctx, kind, fr.ID, -1)
		case failSecond:
			if err = deferInsert(ctx, kind, fr.ID, 1); err == nil {
				err = deferInsert(ctx, kind, fr.ID+"/second", -1)
			}
		default:
			err = deferInsert(ctx, kind, fr.ID, 1)
		}
		if err != nil {
			return err
		}
		if kind == 2 {
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", fr.ID).Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("record %s read %d rows of its own after deferring its INSERT, want 1", fr.ID, n))
				mu.Unlock()
			}
		}
		if fr.Fail == failAfterRows {
			return errors.New("the function refuses the record")
		}
		return nil
	}
	fn := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		var fr failRecord
		if err := json.Unmarshal(r.Data, &fr); err != nil {
			return idem.Permanent(err)
		}
		mu.Lock()
		runs[fr.ID]++
		run := runs[fr.ID]
		mu.Unlock()
		if err := idem.StateFrom(ctx).Put(ctx, fmt.Sprintf("%s/%d", fr.ID, run), []byte{1}); err != nil {
			return err
		}
		if fr.Defer {
			return deferred(ctx, fr)
		}
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
		key := fmt.Sprintf("%s/%d", b.Mapping, size)
		invocations[key] = append(invocations[key], len(b.Records))
		mu.Unlock()
		return fn.HandleBatch(ctx, b)
	})

	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := engine.New(s, engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	for _, p := range paths {
		if err := db.CreateStream(p.name, 1, 24*time.Hour); err != nil {
			t.Fatal(err)
		}
		src, err := srcembedded.New(db, p.name)
		if err != nil {
			t.Fatal(err)
		}
		m := engine.Mapping{
			Name: p.name, Stream: p.name, Source: src, Function: "insert", Invoker: gofunc.New(h),
			FunctionTimeout: time.Minute, BatchSize: maxSize, StartingPosition: source.TrimHorizon,
			OnFailure: p.name + "-failed", RetryBaseDelay: time.Millisecond, RetryMaxDelay: time.Millisecond,
		}
		m.RetryAttempts(1)
		if err := e.Add(m); err != nil {
			t.Fatal(err)
		}
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

	failed := map[string][]string{} // path -> the failing record of each size, in order
	var processed, discarded uint64
	for n := 1; n <= maxSize; n++ {
		mu.Lock()
		size = n
		mu.Unlock()
		f := (n*37 + n/3) % n // the failing record moves around the batch
		mode := n % failModes
		for _, p := range paths {
			recs := make([]pebbledb.PutRecord, n)
			for i := range recs {
				fr := failRecord{ID: fmt.Sprintf("%s%d-%d", p.prefix, n, i), I: i, Fail: -1, Defer: p.deferred}
				if i == f {
					fr.Fail = mode
					failed[p.name] = append(failed[p.name], fr.ID)
				}
				data, _ := json.Marshal(fr)
				recs[i] = pebbledb.PutRecord{PartitionKey: strconv.Itoa(i), Data: data}
			}
			if _, err := db.Put(ctx, p.name, recs); err != nil {
				t.Fatal(err)
			}
			processed += uint64(n - 1)
			discarded++
		}
		waitResolved(t, e, processed, discarded)

		for _, p := range paths {
			id := func(i int) string { return fmt.Sprintf("%s%d-%d", p.prefix, n, i) }
			var rows []string
			r, err := s.pool.Query(ctx, "SELECT id FROM "+table+" WHERE id LIKE $1", p.prefix+strconv.Itoa(n)+"-%")
			if err != nil {
				t.Fatal(err)
			}
			if rows, err = pgx.CollectRows(r, pgx.RowTo[string]); err != nil {
				t.Fatal(err)
			}
			want := make([]string, 0, n-1)
			for i := range n {
				if i != f {
					want = append(want, id(i))
				}
			}
			slices.Sort(rows)
			slices.Sort(want)
			if !slices.Equal(rows, want) {
				t.Fatalf("%s, batch size %d, record %d failing (mode %d): rows %v, want %v", p.name, n, f, mode, rows, want)
			}

			// The last record whose function a failed invocation ran: a
			// deferred INSERT's failure is found at the end of the batch,
			// or at the first synchronous statement after it.
			last := f
			if p.deferred && mode != failAfterRows && f%4 != 2 {
				last = n - 1
				for i := f + 1; i < n; i++ {
					if i%4 == 2 || i%4 == 3 {
						last = i
						break
					}
				}
			}
			r, err = s.pool.Query(ctx, "SELECT key FROM "+pgx.Identifier{s.Schema(), "state"}.Sanitize()+" WHERE namespace = 'insert' AND key LIKE $1",
				p.prefix+strconv.Itoa(n)+"-%")
			if err != nil {
				t.Fatal(err)
			}
			keys, err := pgx.CollectRows(r, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			inv, probs := invocations[fmt.Sprintf("%s/%d", p.name, n)], problems
			got := make([]int, n)
			for i := range n {
				got[i] = runs[id(i)]
			}
			mu.Unlock()
			if len(probs) > 0 {
				t.Fatalf("%s, batch size %d: %s", p.name, n, strings.Join(probs, "; "))
			}
			if inv[0] != n {
				t.Fatalf("%s, batch size %d: the first invocation had %d records (%v)", p.name, n, inv[0], inv)
			}
			for i := range n {
				want := 1 // a retry, then the on-failure destination
				switch {
				case i == f:
					want = 2
				case i > f && i <= last:
					want = 3 // in both failed invocations, and the last
				}
				if got[i] != want {
					t.Fatalf("%s, batch size %d, record %d failing (mode %d): record %d ran %d times, want %d (runs %v)", p.name, n, f, mode, i, got[i], want, got)
				}
			}
			// Only the run that committed a record committed its state:
			// its last one, and none of the failed record's.
			wantKeys := make([]string, 0, n-1)
			for i := range n {
				if i != f {
					wantKeys = append(wantKeys, fmt.Sprintf("%s/%d", id(i), got[i]))
				}
			}
			slices.Sort(keys)
			slices.Sort(wantKeys)
			if !slices.Equal(keys, wantKeys) {
				t.Fatalf("%s, batch size %d, record %d failing (mode %d): state keys %v, want %v (runs %v)", p.name, n, f, mode, keys, wantKeys, got)
			}
		}
	}

	for _, p := range paths {
		var got []string
		for after := int64(0); ; {
			rows, err := s.Failures(ctx, p.name+"-failed", after, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) == 0 {
				break
			}
			for _, row := range rows {
				if len(row.Records) != 1 {
					t.Fatalf("%s: an on-failure batch of %d records, want 1", p.name, len(row.Records))
				}
				var fr failRecord
				if err := json.Unmarshal(row.Records[0].Data, &fr); err != nil {
					t.Fatal(err)
				}
				got = append(got, fr.ID)
				after = row.ID
			}
		}
		if !slices.Equal(got, failed[p.name]) {
			t.Fatalf("%s: on-failure records %v, want %v", p.name, got, failed[p.name])
		}
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
