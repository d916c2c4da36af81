package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// deferIn defers sql as the running record's statement, as Defer does
// with the record's context.
func deferIn(t *testing.T, tx *Tx, sql string, args ...any) {
	t.Helper()
	if err := tx.deferStatement(context.Background(), tx.rec, sql, args); err != nil {
		t.Fatalf("deferring %q: %v", sql, err)
	}
}

// commitTx commits tx with a checkpoint of its own.
func commitTx(t *testing.T, tx *Tx, shard string) {
	t.Helper()
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: shard}
	if err := tx.Commit(context.Background(), &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "1"}}); err != nil {
		t.Fatal(err)
	}
}

// checkTable creates a table whose rows must have v >= 0 and returns its
// name and an INSERT into it.
func checkTable(t *testing.T, s *Store) (table, insert string) {
	t.Helper()
	table = pgx.Identifier{s.Schema(), "deferred"}.Sanitize()
	if _, err := s.pool.Exec(context.Background(), "CREATE TABLE "+table+" (id text PRIMARY KEY, v int NOT NULL CHECK (v >= 0))"); err != nil {
		t.Fatal(err)
	}
	return table, "INSERT INTO " + table + " (id, v) VALUES ($1, $2)"
}

// deferFixture is a Defer test's store, with a check table (checkTable),
// and a transaction in which record index 0 deferred the row "a".
type deferFixture struct {
	s             *Store
	tx            *Tx
	h             pgx.Tx
	table, insert string
}

func newDeferFixture(t *testing.T) *deferFixture {
	t.Helper()
	s, _ := openStore(t)
	table, insert := checkTable(t, s)
	tx, h := begin(t, s)
	f := &deferFixture{s: s, tx: tx, h: h, table: table, insert: insert}
	f.record(t, 0, "a", 1)
	return f
}

// record begins record index i, which defers the row id with v.
func (f *deferFixture) record(t *testing.T, i int, id string, v int) {
	t.Helper()
	f.tx.BeginRecord(context.Background(), i)
	f.row(t, id, v)
}

// row defers the row id with v as the running record's.
func (f *deferFixture) row(t *testing.T, id string, v int) {
	t.Helper()
	deferIn(t, f.tx, f.insert, id, v)
}

// commit commits the transaction and checks the rows it left.
func (f *deferFixture) commit(t *testing.T, want ...string) {
	t.Helper()
	commitTx(t, f.tx, "0")
	wantRows(t, f.s, f.table, want...)
}

// TestDeferThenRead: what a record deferred is sent before its next
// synchronous statement, so the statement sees it, and nothing before:
// another connection sees nothing until the commit.
func TestDeferThenRead(t *testing.T) {
	ctx := context.Background()
	f := newDeferFixture(t)
	s, tx, h, table := f.s, f.tx, f.h, f.table
	f.record(t, 1, "b", 1)
	if len(tx.queue) != 2 {
		t.Fatalf("%d statements held back, want 2", len(tx.queue))
	}
	// Its first Defer on the connection prepares the statement, after
	// sending what is held back.
	deferIn(t, tx, "UPDATE "+table+" SET v = v + 1 WHERE id = $1", "a")
	var n, v int
	if err := h.QueryRow(ctx, "SELECT count(*), sum(v) FROM "+table).Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != 2 || v != 3 {
		t.Fatalf("the record read %d rows summing %d after deferring them, want 2 and 3", n, v)
	}
	if got := rows(t, s, table); len(got) != 0 {
		t.Fatalf("rows visible before the commit: %v", got)
	}
	// Record 2 deferred and read back: its statements came after its own
	// savepoint, so undoing it keeps record 1's row.
	if err := tx.AbortRecord(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.commit(t, "a")
}

// TestDeferFailsEarlierRecord: record 2's deferred statement fails when
// record 3's synchronous statement sends it: the statement returns the
// failure, naming record 2, and so does every later statement; records 2
// and 3 hold nothing, and record 1 commits its row.
func TestDeferFailsEarlierRecord(t *testing.T) {
	ctx := context.Background()
	f := newDeferFixture(t)
	tx, h, insert := f.tx, f.h, f.insert
	f.record(t, 1, "b", 1)
	f.row(t, "b2", -1)
	f.record(t, 2, "c", 1)
	_, err := h.Exec(ctx, insert, "c2", 1)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23514" || !strings.Contains(err.Error(), "record 2 deferred") {
		t.Fatalf("record 3's statement: %v, want record 2's check violation", err)
	}
	if k, ferr := tx.FlushFailure(); k != 1 || ferr == nil {
		t.Fatalf("FlushFailure = %d, %v; want record index 1", k, ferr)
	}
	if k, ferr := tx.Flush(ctx, -1); k != 1 || ferr == nil || ferr.Error() != err.Error() {
		t.Fatalf("Flush after the failure = %d, %v; want the same failure", k, ferr)
	}
	if err := tx.deferStatement(ctx, 2, insert, []any{"c3", 1}); err == nil {
		t.Fatal("Defer after a deferred statement failed: nil")
	}
	if _, err := h.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a statement after a deferred statement failed: nil")
	}
	if err := tx.AbortRecord(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := tx.Check(); err != nil {
		t.Fatalf("Check after the failure: %v; want a transaction that commits the records before it", err)
	}
	f.commit(t, "a")
}

// TestDeferFailureReplay: the batch's statements share one savepoint, so
// the records before a failed one are sent again; when one of them fails
// then (here: a function that fails when run a second time), it is the
// failed record.
func TestDeferFailureReplay(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table, insert := checkTable(t, s)
	seq := pgx.Identifier{s.Schema(), "runs"}.Sanitize()
	fn := pgx.Identifier{s.Schema(), "once"}.Sanitize()
	if _, err := s.pool.Exec(ctx, "CREATE SEQUENCE "+seq+"; CREATE FUNCTION "+fn+"() RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF nextval('"+seq+"') > 1 THEN RAISE EXCEPTION 'run again'; END IF; RETURN 1; END $$"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		once   int // the record (index) whose statement fails when run again; -1 none
		failed int // the failed record's index
		want   []string
	}{
		{"the records before it are sent again", -1, 2, []string{"a", "b"}},
		{"one of them fails then", 1, 1, []string{"a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.pool.Exec(ctx, "TRUNCATE "+table+"; SELECT setval('"+seq+"', 1, false)"); err != nil {
				t.Fatal(err)
			}
			tx, _ := begin(t, s)
			for i, id := range []string{"a", "b", "c", "d"} {
				tx.BeginRecord(ctx, i)
				v := 1
				if id == "c" {
					v = -1
				}
				deferIn(t, tx, insert, id, v)
				if i == c.once {
					deferIn(t, tx, "SELECT "+fn+"()")
				}
			}
			if k, err := tx.Flush(ctx, -1); k != c.failed || err == nil {
				t.Fatalf("Flush = %d, %v; want the failure at record index %d", k, err, c.failed)
			}
			commitTx(t, tx, c.name)
			wantRows(t, s, table, c.want...)
		})
	}
}

// TestDeferOwnSavepoint: a record that ran a statement with TxFrom before
// its deferred one failed has that statement undone too, by its own
// savepoint, and the records before it keep theirs.
func TestDeferOwnSavepoint(t *testing.T) {
	ctx := context.Background()
	f := newDeferFixture(t)
	f.tx.BeginRecord(ctx, 1)
	if _, err := f.h.Exec(ctx, f.insert, "b", 1); err != nil {
		t.Fatal(err)
	}
	f.row(t, "b2", -1)
	f.record(t, 2, "c", 1)
	if k, err := f.tx.Flush(ctx, -1); k != 1 || err == nil {
		t.Fatalf("Flush = %d, %v; want the failure at record index 1", k, err)
	}
	f.commit(t, "a")
}

// TestDeferAbortRecord: a record that fails has its deferred statements
// dropped unsent, or undone when a statement of its own sent them.
func TestDeferAbortRecord(t *testing.T) {
	ctx := context.Background()
	f := newDeferFixture(t)
	tx := f.tx
	f.record(t, 1, "b", 1)
	if err := tx.AbortRecord(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.record(t, 2, "c", 1)
	if _, err := f.h.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	f.row(t, "c2", 1)
	if err := tx.AbortRecord(ctx, 2); err != nil {
		t.Fatal(err)
	}
	f.record(t, 3, "d", 1)
	if k, err := tx.Flush(ctx, -1); err != nil {
		t.Fatalf("Flush = %d, %v", k, err)
	}
	f.commit(t, "a", "d")
}

// TestDeferRefused: a statement that cannot be prepared, arguments that
// do not fit it, and per-statement options fail at Defer and fail the
// record (Check), without touching the records before it.
func TestDeferRefused(t *testing.T) {
	ctx := context.Background()
	f := newDeferFixture(t)
	tx, table, insert := f.tx, f.table, f.insert
	for i, c := range []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO " + table + "_missing (id) VALUES ($1)", []any{"x"}},
		{insert, []any{"x", []string{"not a number"}}},
		{insert, []any{"x"}},
		{insert, []any{pgx.QueryExecModeSimpleProtocol, "x", 1}},
	} {
		tx.BeginRecord(ctx, i+1)
		if err := tx.deferStatement(ctx, i+1, c.sql, c.args); err == nil {
			t.Fatalf("Defer(%q, %v): nil", c.sql, c.args)
		}
		if err := tx.Check(); err == nil {
			t.Fatalf("Check after Defer(%q, %v) failed: nil", c.sql, c.args)
		}
		if err := tx.AbortRecord(ctx, i+1); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Check(); err != nil {
		t.Fatal(err)
	}
	if k, err := tx.Flush(ctx, -1); err != nil {
		t.Fatalf("Flush = %d, %v", k, err)
	}
	f.commit(t, "a")
}

// TestDeferNoTx: Defer and DeferBatch say ErrNoTx outside an idem
// transaction, as TxFrom does.
func TestDeferNoTx(t *testing.T) {
	if err := Defer(context.Background(), "SELECT 1"); !errors.Is(err, ErrNoTx) || !errors.Is(err, idem.ErrNoTx) {
		t.Fatalf("Defer without a transaction: %v", err)
	}
	b := idem.NewBatch("m", "f", "id", []idem.Record{{}}, nil)
	if err := DeferBatch(context.Background(), b, "SELECT 1"); !errors.Is(err, ErrNoTx) {
		t.Fatalf("DeferBatch without a transaction: %v", err)
	}
}
