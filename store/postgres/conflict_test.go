package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idem-run/idem/store"
)

// lockRow inserts id into table and keeps it locked, in a transaction of a
// connection of the test's own, idle until the test ends.
func lockRow(t *testing.T, dsn, table, id string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "BEGIN; INSERT INTO "+table+" (id) VALUES ('"+id+"')"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestTxStatementCancelledKeepsTransaction: a handler's statement whose
// context ends while it waits for a lock (the function's deadline) is
// cancelled by the server; the connection and its transaction survive, so
// the record's savepoint undoes it alone and the records before it commit.
// With pgx's default of closing the connection instead, undoing the record
// failed with "failed to deallocate cached statement(s): conn closed" (an
// error invalidated the statement the record prepared) and the whole
// batch's transaction was lost: the shard restarted.
func TestTxStatementCancelledKeepsTransaction(t *testing.T) {
	s, h := openStore(t)
	ctx := context.Background()
	table := userTable(t, s)
	lockRow(t, h.dsn, table, "held")
	tx, hd := begin(t, s)
	if err := tx.BeginRecord(ctx, 0); err != nil {
		t.Fatal(err)
	}
	insert(t, hd, table, "a")
	if err := tx.BeginRecord(ctx, 1); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := hd.Exec(sctx, "INSERT INTO "+table+" (id) VALUES ($1)", "held")
	cancel()
	if err == nil {
		t.Fatal("an insert waiting for a locked row succeeded")
	}
	if err := tx.AbortRecord(ctx, 1); err != nil {
		t.Fatalf("undoing the record whose statement was cancelled: %v", err)
	}
	if err := tx.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	if err := tx.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "1", Processed: 1}}); err != nil {
		t.Fatalf("committing the record before the cancelled one: %v", err)
	}
	if got := rows(t, s, table); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("rows %v, want [a]", got)
	}
}

// TestLeaseTTLBoundsLockWaits: with WithLeaseTTL, a statement waiting for
// a lock gives up after the ttl with an error IsConflict reports, and the
// transaction survives it; a session left idle in a transaction for the
// ttl (a paused owner) is ended by the server, which releases its locks.
// Without the option, the waiter would wait for as long as the holder
// sleeps.
func TestLeaseTTLBoundsLockWaits(t *testing.T) {
	const ttl = 500 * time.Millisecond
	s, h := openStore(t, WithLeaseTTL(ttl))
	ctx := context.Background()
	table := userTable(t, s)

	// A waiter gives up: the holder is not the store's, so it stays.
	lockRow(t, h.dsn, table, "held")
	tx, hd := begin(t, s)
	if err := tx.BeginRecord(ctx, 0); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := hd.Exec(wctx, "INSERT INTO "+table+" (id) VALUES ($1)", "held")
	cancel()
	if !IsConflict(err) {
		t.Fatalf("insert waiting for a row locked longer than the ttl: %v; want a conflict (lock_timeout)", err)
	}
	if pe, ok := errors.AsType[*pgconn.PgError](err); !ok || pe.Code != codeLockTimeout {
		t.Fatalf("error %v, want SQLSTATE %s", err, codeLockTimeout)
	}
	if err := tx.AbortRecord(ctx, 0); err != nil {
		t.Fatalf("undoing the record after the lock timeout: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// A zombie: the store's own transaction, locking a row, then idle.
	zombie, zh := begin(t, s)
	if err := zombie.BeginRecord(ctx, 0); err != nil {
		t.Fatal(err)
	}
	insert(t, zh, table, "z")
	var pid uint32 = zh.Conn().PgConn().PID()
	// The new owner's statement on the zombie's row succeeds once the
	// server ended the zombie's session, within about a ttl (or fails
	// with a lock timeout first, and succeeds when run again).
	deadline := time.Now().Add(20 * ttl)
	for {
		_, err := s.pool.Exec(ctx, "INSERT INTO "+table+" (id) VALUES ($1)", "z")
		if err == nil {
			break
		}
		if !IsConflict(err) || time.Now().After(deadline) {
			t.Fatalf("insert of the zombie's row: %v", err)
		}
	}
	var alive bool
	if err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)", int32(pid)).Scan(&alive); err != nil {
		t.Fatal(err)
	}
	if alive {
		t.Errorf("the zombie's session %d is still there", pid)
	}
	key := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	if err := zombie.Commit(ctx, &store.Write{Checkpoint: key, NewCheckpoint: store.Checkpoint{Sequence: "1"}}); err == nil {
		t.Fatal("the zombie's transaction committed after its session was ended")
	}
	if got := rows(t, s, table); !slices.Equal(got, []string{"z"}) {
		t.Fatalf("rows %v, want [z] (the new owner's only)", got)
	}
}

// TestIsConflict: deadlocks, serialization failures and lock timeouts are
// conflicts, wrapped or not; other errors are not.
func TestIsConflict(t *testing.T) {
	for code, want := range map[string]bool{"40P01": true, "40001": true, "55P03": true, "23505": false, "57014": false} {
		err := fmt.Errorf("record: %w", &pgconn.PgError{Code: code})
		if got := IsConflict(err); got != want {
			t.Errorf("IsConflict(SQLSTATE %s) = %v, want %v", code, got, want)
		}
	}
	if IsConflict(errors.New("deadlock detected")) || IsConflict(nil) {
		t.Error("IsConflict of an error without a SQLSTATE is true")
	}
}
