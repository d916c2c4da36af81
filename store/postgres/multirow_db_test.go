package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem"
)

// TestDeferJoinsInserts: a batch's deferred INSERTs of one text reach
// PostgreSQL as one statement (a statement-level trigger counts them), the
// rows in the order deferred; a failing row is found and fails its record
// alone, the records before it keep theirs; an INSERT that cannot be joined
// (a function call in its row), and every INSERT under WithoutJoinedInserts,
// runs once per record.
func TestDeferJoinsInserts(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, opts ...Option) (*Store, string, func() int) {
		s, _ := openStore(t, opts...)
		table := pgx.Identifier{s.Schema(), "joined"}.Sanitize()
		count := pgx.Identifier{s.Schema(), "statements"}.Sanitize()
		fn := pgx.Identifier{s.Schema(), "count_statement"}.Sanitize()
		if _, err := s.pool.Exec(ctx, fmt.Sprintf(`
CREATE TABLE %[1]s (n serial, id text PRIMARY KEY, v int NOT NULL CHECK (v >= 0));
CREATE TABLE %[2]s (n int);
CREATE FUNCTION %[3]s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO %[2]s VALUES (1); RETURN NULL; END $$;
CREATE TRIGGER count_statements AFTER INSERT ON %[1]s FOR EACH STATEMENT EXECUTE FUNCTION %[3]s();`, table, count, fn)); err != nil {
			t.Fatal(err)
		}
		statements := func() int {
			var n int
			if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM "+count).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		return s, table, statements
	}
	// run defers, for records 0 to n-1, the row "r<i>" with v (-1 at
	// record failAt), flushes, and returns the record that failed.
	run := func(t *testing.T, s *Store, sql string, n, failAt int) (*Tx, int) {
		tx, _ := begin(t, s)
		for i := range n {
			tx.BeginRecord(ctx, i)
			v := i
			if i == failAt {
				v = -1
			}
			deferIn(t, tx, sql, "r"+strconv.Itoa(i), v)
		}
		k, _ := tx.Flush(ctx, -1)
		return tx, k
	}
	// ordered: the table holds rows r0 to r<n-1>, inserted in that order.
	ordered := func(t *testing.T, s *Store, table string, n int) {
		t.Helper()
		rows, err := s.pool.Query(ctx, "SELECT id FROM "+table+" ORDER BY n")
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("%d rows, want %d: %v", len(got), n, got)
		}
		for i, id := range got {
			if id != "r"+strconv.Itoa(i) {
				t.Fatalf("row %d is %q: %v", i, id, got)
			}
		}
	}

	t.Run("Joined", func(t *testing.T) {
		s, table, statements := setup(t)
		n := 2*maxJoinedRows + 100
		tx, k := run(t, s, "INSERT INTO "+table+" (id, v) VALUES ($1, $2)", n, -1)
		if k != -1 {
			t.Fatalf("record %d failed", k)
		}
		commitTx(t, tx, "0")
		ordered(t, s, table, n)
		if got := statements(); got != 3 {
			t.Fatalf("%d INSERT statements for %d deferred rows, want 3", got, n)
		}
	})
	t.Run("FailingRow", func(t *testing.T) {
		s, table, _ := setup(t)
		tx, k := run(t, s, "INSERT INTO "+table+" (id, v) VALUES ($1, $2)", 50, 37)
		if k != 37 {
			t.Fatalf("record %d failed, want 37", k)
		}
		commitTx(t, tx, "0")
		ordered(t, s, table, 37)
	})
	t.Run("RepeatedKeyOnConflictUpdate", func(t *testing.T) {
		// One INSERT cannot update a row twice: joined, it fails, and
		// the statements then run one by one, as deferred.
		s, table, _ := setup(t)
		tx, _ := begin(t, s)
		for i, id := range []string{"a", "b", "a"} {
			tx.BeginRecord(ctx, i)
			deferIn(t, tx, "INSERT INTO "+table+" (id, v) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v", id, i)
		}
		if k, err := tx.Flush(ctx, -1); k != -1 {
			t.Fatalf("record %d failed: %v", k, err)
		}
		commitTx(t, tx, "0")
		var v int
		if err := s.pool.QueryRow(ctx, "SELECT v FROM "+table+" WHERE id = 'a'").Scan(&v); err != nil || v != 2 {
			t.Fatalf("row a holds %d, %v; want 2, the last record's", v, err)
		}
	})
	t.Run("Runs", func(t *testing.T) {
		// Two texts in runs, one text in two runs of one flush, then the
		// same texts in later transactions (their statements prepared
		// already): one INSERT a run, the rows in order.
		s, table, statements := setup(t)
		a := "INSERT INTO " + table + " (id, v) VALUES ($1, $2)"
		b := "INSERT INTO " + table + " (v, id) VALUES ($2, $1)"
		id := 0
		for round := range 3 {
			tx, _ := begin(t, s)
			for i, sql := range []string{a, a, b, b, b, a, a} {
				tx.BeginRecord(ctx, i)
				v := id
				if round == 2 && i == 5 {
					v = -1 // the second run of a fails at its first row
				}
				deferIn(t, tx, sql, "r"+strconv.Itoa(id), v)
				id++
			}
			k, err := tx.Flush(ctx, -1)
			if round < 2 && k != -1 || round == 2 && k != 5 {
				t.Fatalf("round %d: record %d failed: %v", round, k, err)
			}
			commitTx(t, tx, strconv.Itoa(round))
			if n := statements(); round < 2 && n != 3*(round+1) {
				t.Fatalf("round %d: %d INSERT statements in all, want %d", round, n, 3*(round+1))
			}
		}
		ordered(t, s, table, id-2) // round 2's records 5 and 6 hold nothing
	})
	t.Run("SelfReference", func(t *testing.T) {
		// A row naming a row of its own table deferred after it: joined,
		// the foreign key is checked once both are in (as documented);
		// alone, the first statement fails.
		for _, joined := range []bool{true, false} {
			var opts []Option
			if !joined {
				opts = append(opts, WithoutJoinedInserts())
			}
			s, _ := openStore(t, opts...)
			tree := pgx.Identifier{s.Schema(), "tree"}.Sanitize()
			if _, err := s.pool.Exec(ctx, "CREATE TABLE "+tree+" (id text PRIMARY KEY, parent text REFERENCES "+tree+" (id))"); err != nil {
				t.Fatal(err)
			}
			tx, _ := begin(t, s)
			for i, row := range [][]any{{"child", "root"}, {"root", nil}} {
				tx.BeginRecord(ctx, i)
				deferIn(t, tx, "INSERT INTO "+tree+" (id, parent) VALUES ($1, $2)", row...)
			}
			k, err := tx.Flush(ctx, -1)
			if joined && k != -1 || !joined && k != 0 {
				t.Fatalf("joined %v: record %d failed (%v)", joined, k, err)
			}
		}
	})
	t.Run("NotJoinable", func(t *testing.T) {
		s, table, statements := setup(t)
		tx, _ := run(t, s, "INSERT INTO "+table+" (id, v) VALUES (lower($1), $2)", 20, -1)
		commitTx(t, tx, "0")
		ordered(t, s, table, 20)
		if n := statements(); n != 20 {
			t.Fatalf("%d INSERT statements for 20 rows with a function call, want 20", n)
		}
	})
	t.Run("WithoutJoinedInserts", func(t *testing.T) {
		s, table, statements := setup(t, WithoutJoinedInserts())
		tx, _ := run(t, s, "INSERT INTO "+table+" (id, v) VALUES ($1, $2)", 20, -1)
		commitTx(t, tx, "0")
		ordered(t, s, table, 20)
		if n := statements(); n != 20 {
			t.Fatalf("%d INSERT statements for 20 rows, want 20", n)
		}
	})
}

// TestJoinedInsertsSurviveKilledConnections: records that each defer an
// INSERT, sent joined, while another session terminates the store's
// connections every 20 to 120 milliseconds (in a flush, in a commit, between
// them): every record's row commits exactly once, and no record is
// discarded.
func TestJoinedInsertsSurviveKilledConnections(t *testing.T) {
	const n, app = 20000, "idem_join_kill"
	ctx := context.Background()
	dsn := testDSN(t)
	schema := freshSchema(t, dsn)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	table := pgx.Identifier{schema, "effects"}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+table+" (id text PRIMARY KEY, body bytea NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	db := effectsStream(t, 2, n)
	appDSN := dsn + " application_name=" + app
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", app)
		u.RawQuery = q.Encode()
		appDSN = u.String()
	}
	insert := "INSERT INTO " + table + " (id, body) VALUES ($1, $2)"
	e := startIdem(t, appDSN, schema, db, 100, idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		return Defer(ctx, insert, r.EventID(), r.Data)
	}))
	kills := 0
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var processed, discarded uint64
		for _, s := range e.Status() {
			processed, discarded = processed+s.Processed, discarded+s.Discarded
		}
		if discarded > 0 {
			t.Fatalf("%d records discarded", discarded)
		}
		if processed >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records processed in 3 minutes", processed, n)
		}
		time.Sleep(time.Duration(20+rand.IntN(100)) * time.Millisecond)
		var k int
		if err := admin.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&k); err != nil {
			t.Fatal(err)
		}
		kills += k
	}
	var rows, distinct int
	if err := admin.QueryRow(ctx, "SELECT count(*), count(DISTINCT body) FROM "+table).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connections terminated", kills)
	if rows != n || distinct != n {
		t.Fatalf("%d rows, %d distinct, want %d", rows, distinct, n)
	}
	if kills == 0 {
		t.Fatal("no connection was terminated: the test tested nothing")
	}
}
