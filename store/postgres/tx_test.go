package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
	"github.com/idem-run/idem/store/storetest"
)

// txCommits is the Store with every Commit made through a Tx, for the
// conformance suite: Tx.Commit keeps Driver.Commit's rules.
type txCommits struct{ *Store }

func (s txCommits) Commit(ctx context.Context, w *store.Write) error {
	tx, err := s.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	return tx.Commit(ctx, w)
}

type txHarness struct{ *harness }

func (h txHarness) Open(ctx context.Context, tb testing.TB) (store.Driver, error) {
	d, err := h.harness.Open(ctx, tb)
	if err != nil {
		return nil, err
	}
	return txCommits{d.(*Store)}, nil
}

func (h txHarness) Reopen(ctx context.Context, tb testing.TB, crashed store.Driver) (store.Driver, error) {
	d, err := h.harness.Reopen(ctx, tb, crashed.(txCommits).Store)
	if err != nil {
		return nil, err
	}
	return txCommits{d.(*Store)}, nil
}

// TestConformanceThroughTx runs the store suite with commits made by
// Tx.Commit.
func TestConformanceThroughTx(t *testing.T) {
	if testing.Short() {
		t.Skip("the conformance suite again, through transactions")
	}
	storetest.RunConformance(t, txHarness{newHarness(t)})
}

// userTable creates a table of the test's own in the store's schema (which
// the test drops when it ends) and returns its quoted name.
func userTable(t *testing.T, s *Store) string {
	t.Helper()
	name := pgx.Identifier{s.Schema(), "shipments"}.Sanitize()
	if _, err := s.pool.Exec(context.Background(), "CREATE TABLE "+name+" (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return name
}

func rows(t *testing.T, s *Store, table string) []string {
	t.Helper()
	r, err := s.pool.Query(context.Background(), "SELECT id FROM "+table+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// wantRows checks that table holds the rows want, by id.
func wantRows(t *testing.T, s *Store, table string, want ...string) {
	t.Helper()
	if got := rows(t, s, table); !slices.Equal(got, want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
}

func begin(t *testing.T, s *Store) (*Tx, pgx.Tx) {
	t.Helper()
	tx, err := s.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) })
	return tx.(*Tx), tx.Handle().(pgx.Tx)
}

func insert(t *testing.T, h pgx.Tx, table, id string) {
	t.Helper()
	if _, err := h.Exec(context.Background(), "INSERT INTO "+table+" (id) VALUES ($1)", id); err != nil {
		t.Fatal(err)
	}
}

// TestTxRecordsCommitWithTheWrite: records' writes commit with the Write,
// in one transaction; an aborted record's writes do not, and the records
// before it keep theirs. Nothing is visible before the commit.
func TestTxRecordsCommitWithTheWrite(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	tx, h := begin(t, s)
	for i, id := range []string{"a", "b", "c"} {
		if err := tx.BeginRecord(ctx, i); err != nil {
			t.Fatal(err)
		}
		insert(t, h, table, id)
	}
	tx.AbortRecord(ctx, 2)
	if got := rows(t, s, table); len(got) != 0 {
		t.Fatalf("rows visible before the commit: %v", got)
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	cp := store.Checkpoint{Sequence: idem.SequenceOf(2), Processed: 2}
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: cp,
		State: []store.StateOp{{Namespace: "ns", Key: "k", Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
	wantRows(t, s, table, "a", "b")
	if c, _, err := s.Checkpoint(ctx, key); err != nil || c != cp {
		t.Fatalf("checkpoint %+v, %v; want %+v", c, err, cp)
	}
	if v, err := s.State(ctx, "ns", "k"); err != nil || string(v) != "v" {
		t.Fatalf("state %q, %v", v, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("Rollback after Commit: %v, want nil", err)
	}
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: cp}); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("second Commit: %v, want ErrTxClosed", err)
	}
	// COMMIT went with the Write, and the connection back to the pool: a
	// handle kept past the commit sends nothing on it.
	if _, err := h.Exec(ctx, "INSERT INTO "+table+" (id) VALUES ('late')"); !errors.Is(err, pgx.ErrTxClosed) {
		t.Fatalf("a statement after the commit: %v, want ErrTxClosed", err)
	}
	if got := rows(t, s, table); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("rows %v after a late statement, want [a b]", got)
	}
	if st := s.pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired after the commit", st.AcquiredConns())
	}
}

// TestTxFailedStatement: a failed statement leaves the transaction unable
// to commit (Check says so) until its record is aborted.
func TestTxFailedStatement(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	tx, h := begin(t, s)
	tx.BeginRecord(ctx, 0)
	insert(t, h, table, "a")
	tx.BeginRecord(ctx, 1)
	insert(t, h, table, "b")
	if _, err := h.Exec(ctx, "INSERT INTO "+table+" (id) VALUES ('a')"); err == nil {
		t.Fatal("duplicate insert succeeded")
	}
	if err := tx.Check(); err == nil {
		t.Fatal("Check after a failed statement: nil")
	}
	if err := tx.AbortRecord(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Check(); err != nil {
		t.Fatalf("Check after AbortRecord: %v", err)
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "1"}}); err != nil {
		t.Fatal(err)
	}
	wantRows(t, s, table, "a")
}

// TestTxCommitFailures: a Write refused for its checkpoint, or a
// connection killed before the commit, undoes the handler's rows too, and
// the connection goes back: Close does not wait for it.
func TestTxCommitFailures(t *testing.T) {
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	for _, c := range []struct {
		name    string
		breakTx func(t *testing.T, s *Store, h pgx.Tx)
		want    error
	}{
		{"checkpoint backwards", func(t *testing.T, s *Store, _ pgx.Tx) {
			if err := s.Commit(context.Background(), &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "10"}}); err != nil {
				t.Fatal(err)
			}
		}, store.ErrCheckpointBackwards},
		{"terminated backend", func(t *testing.T, s *Store, h pgx.Tx) {
			ctx := context.Background()
			var pid int
			if err := h.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			if _, err := s.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, _ := openStore(t)
			ctx := context.Background()
			table := userTable(t, s)
			tx, h := begin(t, s)
			tx.BeginRecord(ctx, 0)
			insert(t, h, table, "a")
			c.breakTx(t, s, h)
			err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "5"},
				State: []store.StateOp{{Namespace: "ns", Key: "k", Value: []byte("v")}}})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("Commit: %v, want an error (%v)", err, c.want)
			}
			if got := rows(t, s, table); len(got) != 0 {
				t.Fatalf("rows %v after a failed commit, want none", got)
			}
			if _, err := s.State(ctx, "ns", "k"); !errors.Is(err, idem.ErrNotFound) {
				t.Fatalf("state after a failed commit: %v, want ErrNotFound", err)
			}
			closed := make(chan struct{})
			go func() { s.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close waits for the failed transaction's connection")
			}
		})
	}
}

// TestTxCommitAfterClose: a Tx ended after Close returns ErrClosed and
// gives its connection back, so the Close waiting for it returns.
func TestTxCommitAfterClose(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	tx, _ := begin(t, s)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	for !s.closed.Load() {
		time.Sleep(time.Millisecond)
	}
	err := tx.Commit(ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}, NewCheckpoint: store.Checkpoint{Sequence: "1"}})
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits for the transaction's connection")
	}
}

// TestTxHandle: the handle refuses Commit and Rollback, reads state in the
// transaction, and keeps nested savepoints working.
func TestTxHandle(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	if err := s.Commit(ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}, NewCheckpoint: store.Checkpoint{Sequence: "1"},
		State: []store.StateOp{{Namespace: "ns", Key: "k", Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
	tx, h := begin(t, s)
	if err := h.Commit(ctx); !errors.Is(err, errOwned) {
		t.Fatalf("handle Commit: %v, want errOwned", err)
	}
	if err := h.Rollback(ctx); !errors.Is(err, errOwned) {
		t.Fatalf("handle Rollback: %v, want errOwned", err)
	}
	if v, err := tx.State(ctx, "ns", "k"); err != nil || string(v) != "v" {
		t.Fatalf("State in the tx = %q, %v", v, err)
	}
	if _, err := tx.State(ctx, "ns", "missing"); !errors.Is(err, idem.ErrNotFound) {
		t.Fatalf("State of a missing key: %v", err)
	}
	tx.BeginRecord(ctx, 0)
	nested, err := h.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insert(t, nested, table, "x")
	if err := nested.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	insert(t, h, table, "y")
	if err := tx.Commit(ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m"}, NewCheckpoint: store.Checkpoint{Sequence: "2"}}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(rows(t, s, table)); got != "[y]" {
		t.Fatalf("rows %s, want [y]", got)
	}
}

// TestTxFrom: the typed accessors say ErrNoTx outside an idem
// transaction.
func TestTxFrom(t *testing.T) {
	if _, err := TxFrom(context.Background()); !errors.Is(err, ErrNoTx) || !errors.Is(err, idem.ErrNoTx) {
		t.Fatalf("TxFrom without a transaction: %v", err)
	}
	b := idem.NewBatch("m", "f", "id", []idem.Record{{}}, nil)
	if _, err := BatchTx(context.Background(), b); !errors.Is(err, ErrNoTx) {
		t.Fatalf("BatchTx without a transaction: %v", err)
	}
}

// TestTxRecordPaths: whichever way a record sends its first statement
// (the savepoint travels with it, or goes first when it cannot), a record
// that fails is undone alone: the record before it keeps its row, and so
// does the record after it. A record that asked for the handle and sent
// nothing has nothing to undo, and undoing it keeps the record before it.
func TestTxRecordPaths(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	ins := "INSERT INTO " + table + " (id) VALUES ($1)"
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	paths := []struct {
		name string
		// write inserts id through h, and fails when the row exists.
		write func(ctx context.Context, h pgx.Tx, id string) error
	}{
		{"Exec", func(ctx context.Context, h pgx.Tx, id string) error { _, err := h.Exec(ctx, ins, id); return err }},
		{"Exec without arguments, two statements", func(ctx context.Context, h pgx.Tx, id string) error {
			tag, err := h.Exec(ctx, "SELECT 1; INSERT INTO "+table+" (id) VALUES ('"+id+"')")
			if err == nil && tag.String() != "INSERT 0 1" {
				err = fmt.Errorf("command tag %q, want the INSERT's", tag)
			}
			return err
		}},
		{"Exec with NamedArgs", func(ctx context.Context, h pgx.Tx, id string) error {
			_, err := h.Exec(ctx, "INSERT INTO "+table+" (id) VALUES (@id)", pgx.NamedArgs{"id": id})
			return err
		}},
		{"Exec with a QueryExecMode", func(ctx context.Context, h pgx.Tx, id string) error {
			_, err := h.Exec(ctx, ins, pgx.QueryExecModeSimpleProtocol, id)
			return err
		}},
		{"Query", func(ctx context.Context, h pgx.Tx, id string) error {
			rows, err := h.Query(ctx, ins+" RETURNING id", id)
			if err != nil {
				return err
			}
			for rows.Next() { // not closed: reading to the end frees the connection
			}
			return rows.Err()
		}},
		{"QueryRow", func(ctx context.Context, h pgx.Tx, id string) error {
			var got string
			if err := h.QueryRow(ctx, ins+" RETURNING id", id).Scan(&got); err != nil {
				return err
			}
			if got != id {
				return fmt.Errorf("RETURNING %q, want %q", got, id)
			}
			return nil
		}},
		{"SendBatch", func(ctx context.Context, h pgx.Tx, id string) error {
			b := &pgx.Batch{}
			var tag string
			b.Queue("SELECT 1")
			b.Queue(ins, id).Exec(func(ct pgconn.CommandTag) error { tag = ct.String(); return nil })
			if err := h.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
			if tag != "INSERT 0 1" {
				return fmt.Errorf("the batch's callback saw %q", tag)
			}
			return nil
		}},
		{"CopyFrom", func(ctx context.Context, h pgx.Tx, id string) error {
			_, err := h.CopyFrom(ctx, pgx.Identifier{s.Schema(), "shipments"}, []string{"id"}, pgx.CopyFromRows([][]any{{id}}))
			return err
		}},
		{"nested transaction", func(ctx context.Context, h pgx.Tx, id string) error {
			n, err := h.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := n.Exec(ctx, ins, id); err != nil {
				return err // undone with the record
			}
			return n.Commit(ctx)
		}},
		{"LargeObjects", func(ctx context.Context, h pgx.Tx, id string) error {
			lo := h.LargeObjects()
			if _, err := lo.Create(ctx, 0); err != nil {
				return err
			}
			_, err := h.Exec(ctx, ins, id)
			return err
		}},
		{"Prepare", func(ctx context.Context, h pgx.Tx, id string) error {
			if _, err := h.Prepare(ctx, "ins", ins); err != nil {
				return err
			}
			_, err := h.Exec(ctx, "ins", id)
			return err
		}},
	}
	for i, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if _, err := s.pool.Exec(ctx, "TRUNCATE "+table); err != nil {
				t.Fatal(err)
			}
			tx, h := begin(t, s)
			if err := tx.BeginRecord(ctx, 0); err != nil {
				t.Fatal(err)
			}
			if err := p.write(ctx, h, "a"); err != nil {
				t.Fatalf("record 1: %v", err)
			}
			// Record 2 asks for the transaction, sends nothing, and fails.
			if err := tx.BeginRecord(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if err := tx.AbortRecord(ctx, 1); err != nil {
				t.Fatalf("undoing a record that sent nothing: %v", err)
			}
			// Record 3 writes a row, then fails on a duplicate.
			if err := tx.BeginRecord(ctx, 2); err != nil {
				t.Fatal(err)
			}
			if err := p.write(ctx, h, "b"); err != nil {
				t.Fatalf("record 3: %v", err)
			}
			if err := p.write(ctx, h, "a"); err == nil {
				t.Fatal("record 3: a duplicate row was inserted")
			}
			if err := tx.Check(); err == nil {
				t.Fatal("Check after a failed statement: nil")
			}
			if err := tx.AbortRecord(ctx, 2); err != nil {
				t.Fatal(err)
			}
			// Record 4 sends its first statement after its context ended:
			// it fails, and the record is undone alone all the same.
			if err := tx.BeginRecord(ctx, 3); err != nil {
				t.Fatal(err)
			}
			if err := p.write(cancelled, h, "c"); err == nil {
				t.Fatal("record 4: a statement with an ended context succeeded")
			}
			if err := tx.AbortRecord(ctx, 3); err != nil {
				t.Fatalf("undoing record 4: %v", err)
			}
			if err := tx.BeginRecord(ctx, 4); err != nil {
				t.Fatal(err)
			}
			if err := p.write(ctx, h, "d"); err != nil {
				t.Fatalf("record 5: %v", err)
			}
			key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: strconv.Itoa(i)}
			if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "5"}}); err != nil {
				t.Fatal(err)
			}
			wantRows(t, s, table, "a", "d")
		})
	}
}

// TestTxBeginTravelsWithFirstStatement: a transaction sends BEGIN with its
// first statement, not alone when it starts (the server sees its session
// idle, not idle in a transaction, until then), and one that sends
// nothing still commits its Write (BEGIN, the write and COMMIT in one
// round trip) or rolls back, handing its connection back either way.
func TestTxBeginTravelsWithFirstStatement(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	state := func(tx store.Tx) string {
		t.Helper()
		var st string
		pid := tx.(*Tx).conn.Conn().PgConn().PID()
		if err := s.pool.QueryRow(ctx, "SELECT state FROM pg_stat_activity WHERE pid = $1", pid).Scan(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	tx, h := begin(t, s)
	if st := state(tx); st != "idle" {
		t.Fatalf("session %q before the first statement, want idle", st)
	}
	insert(t, h, table, "a")
	if st := state(tx); st != "idle in transaction" {
		t.Fatalf("session %q after the first statement, want idle in transaction", st)
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "1"}}); err != nil {
		t.Fatal(err)
	}

	// Nothing sent: the commit begins, writes and commits at once.
	tx, _ = begin(t, s)
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "2"}}); err != nil {
		t.Fatal(err)
	}
	if c, _, err := s.Checkpoint(ctx, key); err != nil || c.Sequence != "2" {
		t.Fatalf("checkpoint %+v, %v after a commit with nothing else sent", c, err)
	}
	tx, _ = begin(t, s)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rolling back a transaction that sent nothing: %v", err)
	}
	wantRows(t, s, table, "a")
	if st := s.pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// TestTxBadFirstStatement: a batch handler's first statement, sent with
// BEGIN, that PostgreSQL cannot even prepare returns its error, leaves
// the transaction unable to commit (the batch fails as a whole, and runs
// again by the mapping's rules), and rolls back cleanly.
func TestTxBadFirstStatement(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	tx, h := begin(t, s)
	_, err := h.Exec(ctx, "INSERT INTO nowhere_at_all (id) VALUES ($1)", "a")
	if err == nil || !strings.Contains(err.Error(), "nowhere_at_all") {
		t.Fatalf("a statement on a missing table: %v", err)
	}
	if err := tx.Check(); err == nil {
		t.Fatal("Check after the failed first statement: nil")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.pool.Stat(); st.AcquiredConns() != 0 {
		t.Fatalf("%d connections still acquired", st.AcquiredConns())
	}
}

// TestTxPlanMode: a handler's statements run with PostgreSQL's default
// plan_cache_mode, as they would outside idem, where idem's own run with
// custom plans; the setting ends with the transaction, so the pool's
// connections keep the store's.
func TestTxPlanMode(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	mode := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		t.Helper()
		var m string
		if err := q.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for i := range 2 {
		tx, h := begin(t, s)
		if m := mode(h); m != "auto" {
			t.Fatalf("the handler's plan_cache_mode %q, want auto", m)
		}
		key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
		if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: idem.Sequence(strconv.Itoa(i + 1))}}); err != nil {
			t.Fatal(err)
		}
		if m := mode(s.pool); m != "force_custom_plan" {
			t.Fatalf("the pool's plan_cache_mode %q after a commit, want force_custom_plan", m)
		}
	}
}
