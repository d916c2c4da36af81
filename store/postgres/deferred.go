package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

var _ store.DeferTx = (*Tx)(nil)

// Defer queues sql, with args, as a write of the record a RecordFunc is
// handling, in the transaction TxFrom returns, and returns at once: the
// statement is sent later, with the other records' of the batch, in one
// round trip. Use it for writes whose result the function does not need
// (an INSERT, an UPDATE whose row count does not matter): each statement
// run with TxFrom waits a round trip for its answer, and a deferred one
// does not wait at all, so records that each INSERT a row run several
// times faster deferred (BENCHMARKS.md).
//
//	func ship(ctx context.Context, r *idem.Record) error {
//		return postgres.Defer(ctx, `INSERT INTO shop.shipments (order_id, body) VALUES ($1, $2)`,
//			r.IdempotencyKey, r.Data)
//	}
//
// A deferred statement is exactly-once as one run with TxFrom is: it
// commits if and only if its record commits. Its rules:
//
//   - Deferred statements are sent in the order deferred, when the
//     batch's records have all run (or one failed), and before any
//     statement the handler waits for: a statement run with TxFrom, or a
//     State read that goes to the database, sends what is deferred first.
//     So what a record reads through the transaction sees what it and the
//     records before it deferred, and that read pays the deferred
//     statements' round trip besides its own. Other connections see
//     nothing before the commit, as with TxFrom.
//   - Defer does not report a statement's failure: a record whose deferred
//     statement fails fails with that error (a *DeferredError naming the
//     record) when the statements are sent, at the batch's end, as if its
//     function had returned it, and the mapping's retry, conflict and
//     on-failure rules apply. Its writes, deferred or
//     not, are undone; the records before it keep theirs; the records
//     after it are delivered again (their functions run again). A
//     statement run with TxFrom after a deferred one failed returns that
//     failure, as does every later statement of the batch.
//   - A record whose function returns an error has its deferred statements
//     dropped, never sent, and the rest of its writes undone.
//   - The batch's deferred statements run under one savepoint, not one
//     each (which would add two statements to each record's): when one
//     fails, the transaction is rolled back to before them and those of
//     the records before the failed one are sent again. So a deferred
//     statement must be one whose effects a rollback undoes: a plain
//     write, not a session-level advisory lock or a call out of the
//     database (a sequence skips the values the undone run took).
//   - Consecutive deferred INSERTs of one SQL text and one VALUES row are
//     sent as one INSERT of their rows, in order (multirow.go says which
//     texts, and what a trigger sees differently; WithoutJoinedInserts
//     turns it off); when it fails, the same statements are sent one by
//     one, so each record's outcome is its own.
//   - The arguments are encoded at Defer (they may be reused at once);
//     pgx.NamedArgs works, per-statement options (a pgx.QueryExecMode,
//     result formats) are refused. Deferred statements, as those run with
//     TxFrom, run with PostgreSQL's default plan_cache_mode (auto), under
//     which a statement run for every record is planned once rather than
//     each time, unless the connection string set plan_cache_mode; idem's
//     own statements are planned at every run.
//   - The first Defer of an SQL text on one of the pool's connections
//     prepares it there, after sending what is deferred and setting the
//     record's savepoint (a few round trips, once per text and
//     connection), so that a statement that cannot be prepared (a syntax
//     error, an unknown table) fails at Defer, as do arguments that do not
//     fit its parameters. Beyond 256 texts on a connection a statement
//     runs at once, as with TxFrom: pass values as parameters rather than
//     building SQL per record.
//
// Defer returns an error only when the statement cannot be queued: ErrNoTx
// where TxFrom returns it (another store, an HTTP or process function, a
// call outside a RecordFunc); otherwise (a statement that cannot be
// prepared or whose arguments do not encode, a transaction that already
// failed) the record fails even if its function then returns nil. A batch
// handler defers its batch's writes with DeferBatch.
func Defer(ctx context.Context, sql string, args ...any) error {
	tx, err := TxFrom(ctx)
	if err != nil {
		return err
	}
	h, ok := tx.(*txHandle)
	if !ok {
		return fmt.Errorf("%w: the store's transaction is a %T", ErrNoTx, tx)
	}
	return h.t.deferStatement(ctx, h.t.rec, sql, args)
}

// DeferBatch is Defer for a batch handler: it queues sql, with args, in the
// transaction of the whole batch (BatchTx), to be sent with the batch's
// other deferred statements in one round trip, before the engine judges the
// invocation, within the function's timeout. Its rules are BatchTx's: a
// deferred statement that fails fails the whole batch, which is retried,
// bisected or discarded as for a function error, its writes undone. It
// returns ErrNoTx where BatchTx does.
func DeferBatch(ctx context.Context, b *idem.Batch, sql string, args ...any) error {
	tx, err := BatchTx(ctx, b)
	if err != nil {
		return err
	}
	h, ok := tx.(*txHandle)
	if !ok {
		return fmt.Errorf("%w: the store's transaction is a %T", ErrNoTx, tx)
	}
	return h.t.deferStatement(ctx, -1, sql, args)
}

// maxPrepared bounds the SQL texts Defer prepares on one connection: each
// holds a plan in the server's session.
const maxPrepared = 256

// preparedKey names, in a connection's CustomData, the statements Defer
// prepared on it: SQL text to preparedStmt.
const preparedKey = "idem.deferred"

// flushSavepoint is the savepoint a flush sends the finished records'
// statements under: rolled back to when one fails.
const flushSavepoint = "idem_deferred"

// deferred is one statement held back, its arguments encoded.
type deferred struct {
	rec     int // the record's index; -1 for the whole batch's
	stmt    *preparedStmt
	values  [][]byte
	formats []int16
}

// preparedStmt is a statement Defer prepared on a connection: its
// description, and its text split around its VALUES row when a flush may
// join runs of it into one INSERT (joinable; multirow.go).
type preparedStmt struct {
	sd       *pgconn.StatementDescription
	row      valuesRow
	joinable bool
	// joined names the joined INSERTs of it prepared on the connection,
	// by their number of rows (joinedName).
	joined map[int]string
}

// DeferredError is the error of a statement deferred with Defer that
// failed: the record that deferred it fails with it (in an
// idem.RecordError), as if its function had returned Err. Its type names
// the failure in the on-failure destination's metadata and in the
// mapping's permanentErrorTypes ("DeferredError"); errors.As finds the
// *pgconn.PgError it wraps, and idem retries a conflict (IsConflict) as
// for a statement run with TxFrom.
type DeferredError struct {
	Record int   // the record's index in its batch (Batch.Records)
	Err    error // the statement's error
}

func (e *DeferredError) Error() string {
	return fmt.Sprintf("postgres: a statement the batch's record %d deferred: %v", e.Record+1, e.Err)
}

func (e *DeferredError) Unwrap() error { return e.Err }

// deferFailure is the first held-back statement that failed.
type deferFailure struct {
	rec int
	err error
}

// deferStatement queues sql as record rec's (-1: the whole batch's). A
// failure fails the record, or the batch, whatever its function returns.
func (t *Tx) deferStatement(ctx context.Context, rec int, sql string, args []any) error {
	err := t.queueStatement(ctx, rec, sql, args)
	if err != nil {
		t.deferErr = err
	}
	return err
}

func (t *Tx) queueStatement(ctx context.Context, rec int, sql string, args []any) error {
	switch {
	case t.done:
		return fmt.Errorf("postgres: deferring a statement: %w", pgx.ErrTxClosed)
	case t.broken != nil:
		return t.broken
	case t.failure != nil:
		return t.failure.err
	case hasOptions(args):
		return errors.New("postgres: Defer takes no per-statement options (a QueryExecMode, result formats); send such a statement with TxFrom")
	}
	conn := t.conn.Conn()
	sql, args, err := rewrite(ctx, conn, sql, args)
	if err != nil {
		return fmt.Errorf("postgres: deferring a statement: %w", err)
	}
	stmt, err := t.prepared(ctx, rec, conn, sql)
	if err != nil {
		return err
	}
	if stmt == nil {
		// Too many texts prepared on this connection: run it now.
		_, err := t.h.Exec(ctx, sql, args...)
		return err
	}
	// Encoded now, an argument that does not fit fails the record alone;
	// at the flush it would fail the whole pipeline.
	if err := t.eqb.Build(conn.TypeMap(), stmt.sd, args); err != nil {
		return fmt.Errorf("postgres: deferring a statement: %w", err)
	}
	// The encoded values are copied into the queue's arenas, which the
	// next Defer's encoding reuses.
	d := deferred{rec: rec, stmt: stmt}
	if q := len(t.queue); q > 0 && slices.Equal(t.queue[q-1].formats, t.eqb.ParamFormats) {
		d.formats = t.queue[q-1].formats
	} else {
		d.formats = slices.Clone(t.eqb.ParamFormats)
	}
	start := len(t.values)
	for _, v := range t.eqb.ParamValues {
		if v == nil { // NULL
			t.values = append(t.values, nil)
			continue
		}
		t.bytes = append(t.bytes, v...)
		t.values = append(t.values, t.bytes[len(t.bytes)-len(v):len(t.bytes):len(t.bytes)])
	}
	d.values = t.values[start:len(t.values):len(t.values)]
	t.queue = append(t.queue, d)
	return nil
}

// prepared returns sql as prepared on conn, preparing it (and finding
// whether runs of it can be joined) the first time; nil when conn holds maxPrepared of Defer's
// statements already. It prepares after sending what is held back and
// setting the record's savepoint, so that a statement that cannot be
// prepared fails its record alone, as a statement run with TxFrom would.
func (t *Tx) prepared(ctx context.Context, rec int, conn *pgx.Conn, sql string) (*preparedStmt, error) {
	data := conn.PgConn().CustomData()
	set, _ := data[preparedKey].(map[string]*preparedStmt)
	if stmt, ok := set[sql]; ok {
		return stmt, nil
	}
	if len(set) >= maxPrepared {
		return nil, nil
	}
	var err error
	if rec < 0 {
		err = t.flushFirst(ctx)
	} else {
		_, err = t.start(ctx, true)
	}
	if err != nil {
		return nil, err
	}
	// Named after its text, as pgx names a statement prepared with
	// Conn.Prepare(ctx, sql, sql).
	sd, err := conn.Prepare(ctx, sql, sql)
	if err != nil {
		err = fmt.Errorf("postgres: preparing a deferred statement: %w", t.s.dbErr(err))
		if conn.IsClosed() {
			t.broken = err
		}
		return nil, err
	}
	if set == nil {
		set = make(map[string]*preparedStmt)
		data[preparedKey] = set
	}
	stmt := &preparedStmt{sd: sd}
	if t.s.joinInserts {
		stmt.row, stmt.joinable = splitValuesRow(sql, len(sd.ParamOIDs))
	}
	set[sql] = stmt
	return stmt, nil
}

// dropQueued drops what record i holds back, unsent. Its values stay in
// the arenas until the flush.
func (t *Tx) dropQueued(i int) {
	n := len(t.queue)
	t.queue = slices.DeleteFunc(t.queue, func(d deferred) bool { return d.rec == i })
	clear(t.queue[len(t.queue):n])
}

// FlushFailure returns the failure a flush found, without a round trip
// (store.DeferTx).
func (t *Tx) FlushFailure() (int, error) {
	if t.failure == nil {
		return -1, nil
	}
	return t.failure.rec, t.failure.err
}

// Flush sends what Defer held back, in one pipeline, and reports the first
// statement that failed (store.DeferTx).
func (t *Tx) Flush(ctx context.Context, running int) (int, error) {
	if t.failure != nil {
		return t.failure.rec, t.failure.err
	}
	if len(t.queue) == 0 {
		return -1, nil
	}
	if t.done {
		return t.queue[0].rec, fmt.Errorf("postgres: sending the deferred statements: %w", pgx.ErrTxClosed)
	}
	if t.broken != nil {
		return t.queue[0].rec, t.broken
	}
	t.flush(ctx, running)
	return t.FlushFailure()
}

// flushFirst sends what is held back before a statement the running
// record waits for, so that statements run in the order it sent them;
// after a held-back statement failed, it refuses the statement.
func (t *Tx) flushFirst(ctx context.Context) error {
	if t.done {
		// Its connection went back to the pool when it ended: nothing may
		// be sent on it any more.
		return pgx.ErrTxClosed
	}
	if t.failure != nil {
		return t.failure.err
	}
	if len(t.queue) == 0 {
		return nil
	}
	_, err := t.Flush(ctx, t.rec)
	return err
}

// direct readies the transaction for the handler's direct use of its
// connection (Conn, LargeObjects), which nothing can refuse: what is
// deferred is sent first and the record's savepoint set. After a deferred
// statement failed, the connection could write for a record that is to
// run again: the transaction can no longer commit, and the batch runs
// again from the checkpoint.
func (t *Tx) direct() {
	if err := t.flushFirst(t.engineCtx()); err != nil {
		if t.broken == nil {
			t.broken = fmt.Errorf("postgres: the connection was used directly after a deferred statement failed: %w", err)
		}
		return
	}
	_ = t.setOpening() // a failure breaks the transaction, which fails the record
}

// request is one statement of a flush's pipeline: a deferred statement
// (d), deferred statements joined as one INSERT of their rows (rows, with
// sql and its parameters), or one of the flush's own (sql).
type request struct {
	d   *deferred
	sql string
	cur bool // d is the running record's, after its savepoint

	rows    []deferred
	oids    []uint32
	values  [][]byte
	formats []int16
	// name is the joined INSERT's prepared statement ("": unnamed), to
	// be prepared first in the pipeline when prepare.
	name    string
	prepare bool
}

// flush sends the queue in one pipeline:
//
//	SAVEPOINT idem_deferred; the finished records' statements;
//	RELEASE SAVEPOINT idem_deferred;
//	the running record's savepoint, unless set; its statements
//
// The finished records share the flush's savepoint rather than have one
// each, which costs as much as their statements: when the statement of
// record k among them fails, PostgreSQL skips the rest, the transaction
// is rolled back to the flush's savepoint, and the statements of the
// records before k are sent again, until they hold (a concurrent
// transaction can make one of them fail in turn: it is then the failed
// record). The running record's statements come after its own savepoint,
// which AbortRecord rolls back to if it fails later; so is a finished
// record whose savepoint is set (it ran a statement with TxFrom) when its
// statement fails. Anything but a statement's own error (a connection
// lost, a savepoint that failed) leaves the transaction unable to commit.
func (t *Tx) flush(ctx context.Context, running int) {
	queue := t.queue
	t.queue = nil
	clear(t.preparing)
	defer func() {
		// Sent: the queue and its arenas are free again. A slice
		// that outgrew its arena holds its values in an array of its
		// own, which the queue's arenas no longer use.
		clear(queue)
		clear(t.values)
		t.queue, t.values, t.bytes = queue[:0], t.values[:0], t.bytes[:0]
	}()
	cut := len(queue) // queue[:cut] are finished records', queue[cut:] the running one's
	if running >= 0 {
		if i := slices.IndexFunc(queue, func(d deferred) bool { return d.rec == running }); i >= 0 {
			cut = i
		}
	}
	done, cur := queue[:cut], queue[cut:]

	// The opening statements, split: BEGIN first, the running record's
	// savepoint just before its statements.
	reqs := appendSQL(nil, t.beginning()...)
	begins := len(reqs) > 0
	if len(done) > 0 {
		reqs = appendSQL(reqs, "SAVEPOINT "+flushSavepoint)
		reqs = t.appendJoined(reqs, done)
		reqs = appendSQL(reqs, "RELEASE SAVEPOINT "+flushSavepoint)
	}
	var sp []string
	if len(cur) > 0 {
		sp = t.recordSavepoint()
	}
	reqs = appendRunning(reqs, sp, cur)

	r, err := t.send(ctx, reqs)
	if err != nil && isStatementErr(err) && reqs[r].rows != nil {
		// A joined INSERT failed, for a row unknown: back to the
		// flush's savepoint, and the same statements one by one, so that
		// the failure is found as if they had never been joined. BEGIN
		// ran before it. Recovery: under the engine's context.
		if begins {
			t.noteOpening(nil, false)
			begins = false
		}
		reqs = appendSQL(reqs[:0], "ROLLBACK TO SAVEPOINT "+flushSavepoint)
		reqs = appendDeferred(reqs, done, false)
		reqs = appendSQL(reqs, "RELEASE SAVEPOINT "+flushSavepoint)
		reqs = appendRunning(reqs, sp, cur)
		r, err = t.send(t.engineCtx(), reqs)
	}
	// BEGIN ran when the pipeline got past it; the running record's
	// savepoint, when it succeeded or one of its statements failed.
	spSet := len(sp) > 0 && (err == nil || isStatementErr(err) && reqs[r].cur)
	if begins && (err == nil || r > 0) || spSet {
		t.noteOpening(nil, spSet)
	}
	if err == nil {
		return
	}
	if pgconn.SafeToRetry(err) {
		// Nothing was sent (the handler's context ended, or its rows hold
		// the connection): the first record with statements fails.
		t.fail(queue[0].rec, err)
		return
	}
	if !isStatementErr(err) || reqs[r].d == nil {
		t.breaks(err) // not a statement's own error, or one of the flush's
		return
	}
	k := reqs[r].d.rec
	if reqs[r].cur {
		// The running record's statement: its savepoint, sent before it,
		// is set.
		t.fail(k, err)
		return
	}
	// A finished record's statement: the records before it are sent
	// again, unless its own savepoint undoes it (it is then the first).
	// This is recovery, which a handler's deadline must not interrupt: it
	// runs under the engine's context.
	for k >= 0 && k != t.spRec {
		m := slices.IndexFunc(done, func(d deferred) bool { return d.rec == k })
		reqs = appendSQL(reqs[:0], "ROLLBACK TO SAVEPOINT "+flushSavepoint)
		reqs = appendDeferred(reqs, done[:m], false)
		reqs = appendSQL(reqs, "RELEASE SAVEPOINT "+flushSavepoint)
		r, rerr := t.send(t.engineCtx(), reqs)
		if rerr == nil {
			break
		}
		if !isStatementErr(rerr) || reqs[r].d == nil {
			t.breaks(rerr)
			return
		}
		k, err = reqs[r].d.rec, rerr
	}
	t.fail(k, err)
}

// appendDeferred appends ds to reqs (cur: the running record's). They run
// with the plan_cache_mode the transaction's beginning set.
func appendDeferred(reqs []request, ds []deferred, cur bool) []request {
	for i := range ds {
		reqs = append(reqs, request{d: &ds[i], cur: cur})
	}
	return reqs
}

// appendRunning appends the running record's savepoint sp, when it is to
// be set, and its statements cur.
func appendRunning(reqs []request, sp []string, cur []deferred) []request {
	return appendDeferred(appendSQL(reqs, sp...), cur, true)
}

// appendJoined appends ds to reqs, each run of two or more statements of
// one SQL text that splitValuesRow can join as one INSERT of their rows
// (multirow.go), up to maxJoinedRows a statement.
func (t *Tx) appendJoined(reqs []request, ds []deferred) []request {
	for i := 0; i < len(ds); {
		j := i + 1
		for j < len(ds) && ds[j].stmt == ds[i].stmt {
			j++
		}
		stmt := ds[i].stmt
		if !stmt.joinable || j-i < 2 {
			reqs = appendDeferred(reqs, ds[i:j], false)
			i = j
			continue
		}
		params := len(stmt.sd.ParamOIDs)
		per := maxJoinedRows
		if params > 0 {
			per = min(per, math.MaxUint16/params)
		}
		for k := i; k < j; k += per {
			reqs = append(reqs, t.joinRows(ds[k:min(k+per, j)]))
		}
		i = j
	}
	return reqs
}

// joinedData names, in a connection's CustomData, its joinedStatements.
// maxJoinedPrepared bounds the joined INSERTs prepared on a connection.
const (
	joinedData        = "idem.deferred.joined"
	maxJoinedPrepared = 64
)

// joinedStatements counts the joined INSERTs prepared on a connection.
type joinedStatements struct {
	prepared int // the server said so (joinedPrepared)
	next     int // the number of the next name
}

// joinedKey is one joined INSERT: rows rows of stmt.
type joinedKey struct {
	stmt *preparedStmt
	rows int
}

// joinedName returns the name of the prepared statement of the INSERT of
// rows rows of stmt on the transaction's connection, and whether the
// flush is to prepare it (its first use there); "" when the connection
// holds maxJoinedPrepared of them already, and the INSERT is sent
// unnamed, parsed each time. A batch's runs are mostly of its size, so a
// few serve a mapping, and preparing one saves PostgreSQL parsing and
// planning its rows at every batch. A name is taken for good when given
// (a statement whose preparation the server skipped never exists; its
// name is not given again), and counts as prepared once the server said
// so (joinedPrepared).
func (t *Tx) joinedName(stmt *preparedStmt, rows int) (name string, prepare bool) {
	if n, ok := stmt.joined[rows]; ok {
		return n, false
	}
	key := joinedKey{stmt, rows}
	if n, ok := t.preparing[key]; ok {
		return n, false // prepared earlier in the same pipeline
	}
	data := t.conn.Conn().PgConn().CustomData()
	js, _ := data[joinedData].(*joinedStatements)
	if js == nil {
		js = &joinedStatements{}
		data[joinedData] = js
	}
	if js.prepared+len(t.preparing) >= maxJoinedPrepared {
		return "", false
	}
	js.next++
	name = "idem_joined_" + strconv.Itoa(js.next)
	if t.preparing == nil {
		t.preparing = make(map[joinedKey]string)
	}
	t.preparing[key] = name
	return name, true
}

// joinedPrepared records that the server prepared the joined INSERT of r.
func (t *Tx) joinedPrepared(r *request) {
	stmt := r.rows[0].stmt
	if stmt.joined == nil {
		stmt.joined = make(map[int]string)
	}
	stmt.joined[len(r.rows)] = r.name
	t.conn.Conn().PgConn().CustomData()[joinedData].(*joinedStatements).prepared++
}

// joinRows is the one INSERT of the rows of ds, statements of one
// joinable text: their arguments one after the other, in order. Its SQL
// is written only when it is to be prepared or sent unnamed.
func (t *Tx) joinRows(ds []deferred) request {
	stmt := ds[0].stmt
	sd := stmt.sd
	params := len(sd.ParamOIDs)
	r := request{rows: ds}
	r.name, r.prepare = t.joinedName(stmt, len(ds))
	if r.name == "" || r.prepare {
		r.sql = stmt.row.joined(len(ds), params)
	}
	r.oids = make([]uint32, 0, len(ds)*params)
	r.values = make([][]byte, 0, len(ds)*params)
	r.formats = make([]int16, 0, len(ds)*params)
	for i := range ds {
		r.oids = append(r.oids, sd.ParamOIDs...)
		r.values = append(r.values, ds[i].values...)
		r.formats = append(r.formats, ds[i].formats...)
	}
	return r
}

// appendSQL appends the flush's own statements sqls to reqs.
func appendSQL(reqs []request, sqls ...string) []request {
	for _, sql := range sqls {
		reqs = append(reqs, request{sql: sql})
	}
	return reqs
}

// send sends reqs in one pipeline and returns the index of the first that
// failed and its error; PostgreSQL skipped the rest.
func (t *Tx) send(ctx context.Context, reqs []request) (int, error) {
	p := t.conn.Conn().PgConn().StartPipeline(ctx)
	for _, r := range reqs {
		switch {
		case r.d != nil:
			p.SendQueryStatement(r.d.stmt.sd, r.d.values, r.d.formats, nil)
		case r.rows != nil && r.name == "":
			p.SendQueryParams(r.sql, r.values, r.oids, r.formats, nil)
		case r.rows != nil:
			if r.prepare {
				p.SendPrepare(r.name, r.sql, r.oids)
			}
			p.SendQueryPrepared(r.name, r.values, r.formats, nil)
		default:
			p.SendQueryParams(r.sql, nil, nil, nil, nil)
		}
	}
	if err := p.Sync(); err != nil {
		p.Close()
		return 0, err
	}
	failed, ferr := -1, error(nil)
	for i := range reqs {
		if reqs[i].prepare {
			res, err := p.GetResults()
			if _, ok := res.(*pgconn.StatementDescription); err == nil && !ok {
				err = fmt.Errorf("postgres: preparing a joined INSERT answered a %T", res)
			}
			if err != nil {
				failed, ferr = i, err
				break
			}
			t.joinedPrepared(&reqs[i])
		}
		res, err := p.GetResults()
		if err == nil {
			if rr, ok := res.(*pgconn.ResultReader); ok {
				_, err = rr.Close()
			} else {
				err = fmt.Errorf("postgres: a deferred statement's answer is a %T", res)
			}
		}
		if err != nil {
			failed, ferr = i, err
			break
		}
	}
	if failed < 0 {
		if res, err := p.GetResults(); err != nil {
			failed, ferr = len(reqs)-1, err
		} else if _, ok := res.(*pgconn.PipelineSync); !ok {
			failed, ferr = len(reqs)-1, fmt.Errorf("postgres: the deferred statements ended with a %T", res)
		}
	}
	if err := p.Close(); err != nil && ferr == nil {
		failed, ferr = len(reqs)-1, err
	}
	return failed, ferr
}

// isStatementErr reports whether err is the server's error for one
// statement, which leaves the transaction usable once rolled back to a
// savepoint.
func isStatementErr(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Severity != "FATAL" && pe.Severity != "PANIC"
}

// fail records that record k's deferred statement failed with err. The
// transaction holds none of k's writes: k's statements failed or were
// rolled back with the flush's savepoint, or never sent; and when k's own
// savepoint is set, rolling back to it undoes the rest of k's writes, and
// anything sent after them. A failure of a statement of the whole batch
// (k < 0) leaves the transaction unable to commit.
func (t *Tx) fail(k int, err error) {
	if k < 0 {
		t.broken = fmt.Errorf("postgres: a statement the batch handler deferred: %w", err)
		t.failure = &deferFailure{rec: -1, err: t.broken}
		return
	}
	err = &DeferredError{Record: k, Err: err}
	if k == t.spRec {
		// Under the engine's context: a handler's deadline must not leave
		// a record half undone.
		if rerr := t.rollbackToSavepoint(t.engineCtx()); rerr != nil {
			t.breaks(rerr)
			return
		}
	}
	if t.failed() {
		t.breaks(err)
		return
	}
	t.failure = &deferFailure{rec: k, err: err}
}

// rollbackToSavepoint rolls back to the records' savepoint (spRec's).
func (t *Tx) rollbackToSavepoint(ctx context.Context) error {
	_, err := t.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint)
	return err
}

// engineCtx is BeginRecord's context, the engine's, which outlives a
// handler's deadline; the background for a batch handler's transaction.
func (t *Tx) engineCtx() context.Context {
	if t.ctx == nil {
		return context.Background()
	}
	return t.ctx
}

// breaks records that the transaction can no longer commit: what it
// holds is unknown.
func (t *Tx) breaks(err error) {
	t.broken = fmt.Errorf("postgres: sending the deferred statements: %w", t.s.dbErr(err))
	t.failure = &deferFailure{rec: -1, err: t.broken}
}
