package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// errOwned is what a handler's Commit or Rollback of idem's transaction
// returns.
var errOwned = errors.New("postgres: idem commits and rolls back this transaction itself; return an error to undo the record's writes")

// txHandle is the pgx.Tx a handler gets: the transaction without its Commit
// and Rollback, whose statements set the running record's savepoint on the
// way. BeginRecord only notes that the record needs one; the savepoint's
// statements then travel in the same pipeline as the record's first
// statement (one round trip, where sending them alone cost a second one
// per record). Every statement path sets the savepoint before its
// statement runs, so that a record's failed statement is always undone by
// rolling back to a savepoint of its own, never to the previous record's.
// Nested transactions (Begin, a savepoint) are the handler's to commit or
// roll back.
type txHandle struct{ t *Tx }

var _ pgx.Tx = (*txHandle)(nil)

func (*txHandle) Commit(context.Context) error   { return errOwned }
func (*txHandle) Rollback(context.Context) error { return errOwned }

// Begin starts a nested transaction (a savepoint of the handler's own)
// inside the record's.
func (h *txHandle) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := h.t.flushFirst(ctx); err != nil {
		return nil, err
	}
	tx, err := h.t.pgxTx(ctx) // after the record's savepoint
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

// CopyFrom runs COPY after the record's savepoint is set: COPY cannot share
// its round trip.
func (h *txHandle) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if _, err := h.t.start(ctx, true); err != nil {
		return 0, err
	}
	return h.t.conn.CopyFrom(ctx, table, columns, src)
}

// LargeObjects sends what is deferred and sets the record's savepoint
// first: its calls go to the connection directly.
//
// Its calls need pgx's own transaction, made here with a round trip of
// its own (pgxTx); if the connection is lost before it is made, the large
// objects returned have no transaction, and their calls panic, which
// fails the record.
func (h *txHandle) LargeObjects() pgx.LargeObjects {
	h.t.direct()
	tx, err := h.t.pgxTx(h.t.engineCtx())
	if err != nil {
		return pgx.LargeObjects{}
	}
	return tx.LargeObjects()
}

// Conn sends what is deferred and sets the record's savepoint first: what
// the handler sends through the connection directly must come after it,
// and be undone with the record too.
func (h *txHandle) Conn() *pgx.Conn {
	h.t.direct()
	return h.t.conn.Conn()
}

// Prepare sets the record's savepoint first: a statement that fails to
// prepare fails the transaction.
func (h *txHandle) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if _, err := h.t.start(ctx, true); err != nil {
		return nil, err
	}
	return h.t.conn.Conn().Prepare(ctx, name, sql)
}

// Exec runs sql, with the record's savepoint in the same round trip when
// it is not set yet, after what is deferred.
func (h *txHandle) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t := h.t
	with, err := t.start(ctx, hasOptions(args))
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if !with {
		return t.conn.Exec(ctx, sql, args...)
	}
	sql, args, err = rewrite(ctx, t.conn.Conn(), sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if len(args) == 0 {
		return t.execSimple(ctx, sql)
	}
	br, err := t.sendOpening(ctx, statement(sql, args))
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs sql, with the record's savepoint in the same round trip when
// it is not set yet, after what is deferred.
func (h *txHandle) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t := h.t
	with, err := t.start(ctx, hasOptions(args))
	if err != nil {
		return errRows{err}, err
	}
	if !with {
		return t.conn.Query(ctx, sql, args...)
	}
	sql, args, err = rewrite(ctx, t.conn.Conn(), sql, args)
	if err != nil {
		return errRows{err}, err
	}
	br, err := t.sendOpening(ctx, statement(sql, args))
	if err != nil {
		return errRows{err}, err
	}
	rows, err := br.Query()
	if err != nil {
		if rows != nil {
			rows.Close()
		}
		br.Close()
		return errRows{err}, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs sql as Query does and returns its first row, as pgx's
// QueryRow does.
func (h *txHandle) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, _ := h.Query(ctx, sql, args...)
	return row{rows}
}

// SendBatch sends b, after the record's savepoint in the same round trip
// when it is not set yet, after what is deferred.
func (h *txHandle) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	t := h.t
	if b.Len() == 0 {
		if err := t.flushFirst(ctx); err != nil {
			return errBatch{err}
		}
		return t.conn.SendBatch(ctx, b)
	}
	with, err := t.start(ctx, false)
	if err != nil {
		return errBatch{err}
	}
	if !with {
		return t.conn.SendBatch(ctx, b)
	}
	br, err := t.sendOpening(ctx, b)
	if err != nil {
		return errBatch{err}
	}
	return br
}

// statement is a batch of sql alone.
func statement(sql string, args []any) *pgx.Batch {
	return &pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: sql, Arguments: args}}}
}

// hasOptions reports whether args begins with one of pgx's per-query
// options that a batch does not take: such a statement is sent after its
// savepoint rather than with it. A query rewriter (pgx.NamedArgs) alone is
// applied by rewrite instead.
func hasOptions(args []any) bool {
	for i, a := range args {
		switch a.(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return true
		case pgx.QueryRewriter:
			if i > 0 {
				return true
			}
			continue
		}
		return false
	}
	return false
}

// rewrite applies a leading query rewriter (pgx.NamedArgs) to sql and its
// arguments, as pgx's Exec and Query do, so that the statement can join a
// batch with its savepoint.
func rewrite(ctx context.Context, conn *pgx.Conn, sql string, args []any) (string, []any, error) {
	if len(args) == 0 {
		return sql, args, nil
	}
	rw, ok := args[0].(pgx.QueryRewriter)
	if !ok {
		return sql, args, nil
	}
	sql, args, err := rw.RewriteQuery(ctx, conn, sql, args[1:])
	if err != nil {
		return "", nil, fmt.Errorf("rewrite query failed: %w", err)
	}
	return sql, args, nil
}

// batchRows are a query's rows read from a batch, which they close with
// themselves: the connection is free again once the rows are read or
// closed, as with Query.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	err    error
	closed bool
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if r.closed {
		return
	}
	r.closed = true
	r.err = r.br.Close()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// row is QueryRow's answer, with pgx's rules: no row is pgx.ErrNoRows.
type row struct{ rows pgx.Rows }

func (r row) Scan(dest ...any) error {
	if err := r.rows.Err(); err != nil {
		r.rows.Close()
		return err
	}
	for _, d := range dest {
		if _, ok := d.(*pgtype.DriverBytes); ok {
			r.rows.Close()
			return errors.New("cannot scan into *pgtype.DriverBytes from QueryRow")
		}
	}
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	r.rows.Scan(dest...)
	r.rows.Close()
	return r.rows.Err()
}

// errRows are the rows of a query that was never sent.
type errRows struct{ err error }

func (errRows) Close()                                       {}
func (r errRows) Err() error                                 { return r.err }
func (errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                          { return r.err }
func (r errRows) Values() ([]any, error)                     { return nil, r.err }
func (errRows) RawValues() [][]byte                          { return nil }
func (errRows) Conn() *pgx.Conn                              { return nil }
func (errRows) TypeMap() *pgtype.Map                         { return nil }

// errBatch is the results of a batch whose savepoint failed: its
// statements did not run.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return errRows{b.err}, b.err }
func (b errBatch) QueryRow() pgx.Row                { return row{errRows{b.err}} }
func (b errBatch) Close() error                     { return b.err }
func (errBatch) Tx() pgx.Tx                         { return nil }

// errSavepoint wraps what failed in a round trip that began the
// transaction or set a record's savepoint: one of those, or the statement
// sent with them, which pgx prepares first (a syntax error fails there).
func errSavepoint(err error) error {
	return fmt.Errorf("postgres: beginning the transaction or setting the record's savepoint, with the statement sent alongside: %w", err)
}
