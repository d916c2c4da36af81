package postgres

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Checkpoint returns the checkpoint of key, and false if there is none.
func (s *Store) Checkpoint(ctx context.Context, key store.CheckpointKey) (store.Checkpoint, bool, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	if err := s.enter(); err != nil {
		return store.Checkpoint{}, false, wrap(err)
	}
	var c store.Checkpoint
	var seq string
	err := s.pool.QueryRow(ctx, s.q.checkpoint, escape(key.Mapping), escape(key.Stream), escape(key.Shard)).
		Scan(&seq, &c.Processed, &c.Skipped, &c.Discarded, &c.Lost)
	if errNoRows(err) {
		return store.Checkpoint{}, false, nil
	}
	if err != nil {
		return store.Checkpoint{}, false, wrap(s.dbErr(err))
	}
	c.Sequence = idem.Sequence(seq)
	return c, true, nil
}

// Progress returns one mapping's completion progress over a shard (Mapping
// "" for the scope-wide row); the zero Progress if there is none.
func (s *Store) Progress(ctx context.Context, key store.ProgressKey) (store.Progress, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: progress of scope %q mapping %q stream %q shard %s: %w", key.Scope, key.Mapping, key.Stream, key.Shard, err)
	}
	if err := s.enter(); err != nil {
		return store.Progress{}, wrap(err)
	}
	var hw, filter string
	var above []string
	err := s.pool.QueryRow(ctx, s.q.progress, escape(key.Scope), escape(key.Stream), escape(key.Shard), escape(key.Mapping)).
		Scan(&hw, &above, &filter)
	if errNoRows(err) {
		return store.Progress{}, nil
	}
	if err != nil {
		return store.Progress{}, wrap(s.dbErr(err))
	}
	p, err := progressOf(hw, above, filter)
	if err != nil {
		return store.Progress{}, wrap(err)
	}
	return p, nil
}

// progressOf builds a Progress from its stored columns.
func progressOf(hw string, above []string, filter string) (store.Progress, error) {
	f, err := unescape(filter)
	if err != nil {
		return store.Progress{}, fmt.Errorf("stored filter: %w", err)
	}
	p := store.Progress{HighWater: idem.Sequence(hw), Filter: f}
	if len(above) > 0 {
		p.Above = make([]idem.Sequence, len(above))
		for i, a := range above {
			p.Above[i] = idem.Sequence(a)
		}
	}
	return p, nil
}

// Completed sets done[i] to whether keys[i] holds a mark that expires after
// now, with one query whatever the number of keys. Expiry is decided from
// now, to the microsecond, never from the purge.
func (s *Store) Completed(ctx context.Context, keys []store.MarkKey, now time.Time, done []bool) error {
	if len(done) != len(keys) {
		return fmt.Errorf("postgres: completed: %d keys but %d results", len(keys), len(done))
	}
	if err := s.enter(); err != nil {
		return fmt.Errorf("postgres: completed: %w", err)
	}
	clear(done)
	if len(keys) == 0 {
		return nil
	}
	args := make([][]byte, len(keys))
	for i := range keys {
		args[i] = keys[i][:]
	}
	wrap := func(err error) error {
		return fmt.Errorf("postgres: completed (%d keys): %w", len(keys), s.dbErr(err))
	}
	rows, err := s.pool.Query(ctx, s.q.completed, args, now)
	if err != nil {
		return wrap(err)
	}
	found := make(map[store.MarkKey]struct{}, len(keys))
	var kb []byte
	_, err = pgx.ForEachRow(rows, []any{&kb}, func() error {
		if len(kb) != len(store.MarkKey{}) {
			return fmt.Errorf("stored mark key of %d bytes, want %d", len(kb), len(store.MarkKey{}))
		}
		found[store.MarkKey(kb)] = struct{}{}
		return nil
	})
	if err != nil {
		return wrap(err)
	}
	for i := range keys {
		_, done[i] = found[keys[i]]
	}
	return nil
}

// State returns the committed value of key in namespace, a copy the caller
// owns, or an error wrapping idem.ErrNotFound.
func (s *Store) State(ctx context.Context, namespace, key string) ([]byte, error) {
	return s.readState(ctx, s.pool, namespace, key)
}

// querier is what runs a query: the pool, or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// readState reads a state value through q.
func (s *Store) readState(ctx context.Context, q querier, namespace, key string) ([]byte, error) {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: state %q in namespace %q: %w", key, namespace, err)
	}
	if err := s.enter(); err != nil {
		return nil, wrap(err)
	}
	var v []byte
	err := q.QueryRow(ctx, s.q.state, escape(namespace), escape(key)).Scan(&v)
	if errNoRows(err) {
		return nil, wrap(idem.ErrNotFound)
	}
	if err != nil {
		return nil, wrap(s.dbErr(err))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// DeleteCheckpoint removes a mapping's checkpoint. Deleting a missing
// checkpoint is not an error.
func (s *Store) DeleteCheckpoint(ctx context.Context, key store.CheckpointKey) error {
	wrap := func(err error) error {
		return fmt.Errorf("postgres: delete checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	if err := s.enter(); err != nil {
		return wrap(err)
	}
	if _, err := s.pool.Exec(ctx, s.q.deleteCheckpoint, escape(key.Mapping), escape(key.Stream), escape(key.Shard)); err != nil {
		return wrap(s.dbErr(err))
	}
	return nil
}

// Commit applies w in one transaction and one round trip: its statements
// go as one pipelined batch, which PostgreSQL runs as an implicit
// transaction committed at the batch's end. Before any is sent, w is
// refused (store.ErrRecordClaimLost) if it marks a key whose record claim
// was lost, or, with w.MarkOwner, a key another owner of this Store claims
// or holds in a commit in flight: decided in memory (lockSession.gate,
// locks.go), since a takeover between owners of one Store happens there.
// In order: w.Fence's check, if any (which raises, aborting the rest,
// unless the claims record holds its token, and locks that record until
// the commit); with w.MarkOwner, when w marks keys no claim of this Store
// holds, check_unclaimed over them, each once (which raises IDM03,
// aborting the rest, if another session holds a key's lock or any mark row
// of it exists, expired or not, and otherwise holds their locks until the
// commit; the engine's commits, whose marks are all their owner's claims,
// never send it, and pay only the look at the table); the checkpoint
// (which raises, aborting the rest, if it would move backwards as a
// number); the progress; the marks (one multi-row insert over unnest
// arrays; of keys repeated in w the last wins, and a key an earlier commit
// marked gets a row of its own, lookups asking whether any row of it is
// live); the state writes (one upsert and one delete over unnest arrays;
// of repeated keys the last op wins); one statement per on-failure batch
// with its records; and, last, when w marks keys whose record claims this
// Store holds, the gate of its lock session (commit_gate, locks.go), which
// raises, aborting the commit, if that session has ended. While the
// commit is in flight, no other owner of this Store takes over the claims
// of w.MarkOwner that w marks, so those checked are still its own when the
// marks land, whatever their leases. Once it committed, the record claims
// that the marks replace (whoever's) and that w.Release ends
// (w.ReleaseOwner's only) end, and their locks are let go soon after, off
// the commit's path (locks.go). With w.EndRange, the range claim of
// w.ProgressKey's mapping is deleted after the progress, in the same
// transaction, so a claimer that finds the range ended finds the progress
// that ended it. Rows are written in key order, so concurrent Commits lock
// shared rows in one order. Commit does not keep w.
//
// Errors: store.ErrCheckpointBackwards, store.ErrFenced and
// store.ErrRecordClaimLost (nothing written), store.ErrClosed, an invalid
// sequence, and PostgreSQL's errors; all name the checkpoint.
func (s *Store) Commit(ctx context.Context, w *store.Write) error {
	if err := s.enter(); err != nil {
		return commitErr(w, err)
	}
	b, g, err := s.writeBatch(w)
	if err != nil {
		return commitErr(w, err)
	}
	err = s.pool.SendBatch(ctx, b).Close()
	s.locks.done(g, w, err == nil)
	if err != nil {
		return commitErr(w, s.batchErr(w, err))
	}
	return nil
}

// commitErr names the checkpoint a failed commit was for.
func commitErr(w *store.Write, err error) error {
	cp := &w.Checkpoint
	return fmt.Errorf("postgres: commit for mapping %q stream %q shard %s: %w", cp.Mapping, cp.Stream, cp.Shard, err)
}

// batchErr turns the error of w's batch into store.ErrCheckpointBackwards
// when put_checkpoint refused to move the checkpoint backwards, and into
// store.ErrFenced when check_fence refused w's fence, and into
// store.ErrRecordClaimLost when commit_gate found the lock session gone
// or check_unclaimed found a key claimed elsewhere or marked.
func (s *Store) batchErr(w *store.Write, err error) error {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == codeBackwards {
		return fmt.Errorf("%w: from %q to %q", store.ErrCheckpointBackwards, pe.Detail, w.NewCheckpoint.Sequence)
	}
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == codeFenced && w.Fence != nil {
		return fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, w.Fence.Key[:], w.Fence.Token, pe.Detail)
	}
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.Code == codeSessionLost {
		return fmt.Errorf("%w: %s: the records may have run elsewhere since, so this commit is refused and their keys must be claimed again",
			store.ErrRecordClaimLost, pe.Message)
	}
	return s.dbErr(err)
}

// writeBatch returns w's statements, in the order Commit documents, for
// Commit (an implicit transaction) and Tx.Commit (inside the handler's
// transaction) alike. It refuses a w that marks a key whose record claim
// was lost, or, under w.MarkOwner, that another owner claims, and gates a
// w that marks keys whose claims this Store holds, or, under w.MarkOwner,
// keys no claim of it holds (lockSession.gate): the caller passes the
// gate it returns to lockSession.done once the commit ended.
func (s *Store) writeBatch(w *store.Write) (*pgx.Batch, *commitGate, error) {
	if err := validate(w); err != nil {
		return nil, nil, err
	}
	g, err := s.locks.gate(w)
	if err != nil {
		return nil, nil, err
	}
	cp := &w.Checkpoint
	nc := &w.NewCheckpoint
	b := &pgx.Batch{}
	if f := w.Fence; f != nil {
		b.Queue(s.q.checkFence, f.Key[:], int64(f.Token))
	}
	if g != nil && len(g.free) > 0 {
		b.Queue(s.q.checkUnclaimed, keyArgs(g.free), g.freeLocks)
	}
	b.Queue(s.q.putCheckpoint, append([]any{escape(cp.Mapping), escape(cp.Stream), escape(cp.Shard), string(nc.Sequence),
		nc.Processed, nc.Skipped, nc.Discarded, nc.Lost}, progressArgs(w)...)...)
	if w.EndRange {
		pk := &w.ProgressKey
		b.Queue(s.q.endRange, escape(pk.Scope), escape(pk.Stream), escape(pk.Shard), escape(pk.Mapping))
	}
	if len(w.Marks) > 0 {
		marked, expires := markArgs(w.Marks)
		b.Queue(s.q.putMarks, marked, expires)
	}
	if len(w.State) > 0 {
		put, del := stateArgs(w.State)
		if len(put.ns) > 0 {
			b.Queue(s.q.putState, put.ns, put.keys, put.values)
		}
		if len(del.ns) > 0 {
			b.Queue(s.q.deleteState, del.ns, del.keys)
		}
	}
	for i := range w.Failures {
		f := &w.Failures[i]
		a := failureArgs(f.Records)
		meta := f.Metadata
		if meta == nil {
			meta = []byte{}
		}
		b.Queue(s.q.putFailure, escape(f.Destination), meta, a.streams, a.shards, a.seqs, a.keys, a.data, a.arrivals)
	}
	if g != nil && len(g.keys) > 0 {
		b.Queue(s.q.commitGate, g.gate, g.live)
	}
	return b, g, nil
}

// progressArgs are put_checkpoint_progress's arguments for w's progress:
// scope, stream, shard, mapping, high water, above and filter, all NULL
// when w has none.
func progressArgs(w *store.Write) []any {
	if !w.HasProgress {
		return make([]any, 7)
	}
	pk := &w.ProgressKey
	above := make([]string, len(w.Progress.Above))
	for i, a := range w.Progress.Above {
		above[i] = string(a)
	}
	return []any{escape(pk.Scope), escape(pk.Stream), escape(pk.Shard), escape(pk.Mapping),
		string(w.Progress.HighWater), above, escape(w.Progress.Filter)}
}

// validate refuses sequences PostgreSQL could not compare as numbers.
func validate(w *store.Write) error {
	if !w.NewCheckpoint.Sequence.Valid() {
		return fmt.Errorf("checkpoint sequence %q is not a decimal number", w.NewCheckpoint.Sequence)
	}
	if w.HasProgress {
		if !w.Progress.HighWater.Valid() {
			return fmt.Errorf("progress high water %q is not a decimal number", w.Progress.HighWater)
		}
		for _, a := range w.Progress.Above {
			if !a.Valid() {
				return fmt.Errorf("progress sequence %q is not a decimal number", a)
			}
		}
	}
	return nil
}

// markArgs returns the marks as unnest arrays sorted by key, keeping the
// last of repeated keys: a commit writes one row a key.
func markArgs(marks []store.Mark) (keys [][]byte, expires []time.Time) {
	order := make([]int, len(marks))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(marks[a].Key[:], marks[b].Key[:]) })
	// One buffer for every key, allocated at its final size: the slices
	// into it stay valid.
	buf := make([]byte, 0, len(marks)*len(store.MarkKey{}))
	keys = make([][]byte, 0, len(marks))
	expires = make([]time.Time, 0, len(marks))
	for j, i := range order {
		if j+1 < len(order) && marks[order[j+1]].Key == marks[i].Key {
			continue // a later occurrence of the key follows: it wins
		}
		buf = append(buf, marks[i].Key[:]...)
		keys = append(keys, buf[len(buf)-len(store.MarkKey{}):])
		expires = append(expires, marks[i].Expires)
	}
	return keys, expires
}

// stateCols are state writes as unnest arrays.
type stateCols struct {
	ns     []string
	keys   []string
	values [][]byte
}

// stateArgs splits the ops into upserts and deletes, sorted by namespace
// and key, keeping only the last op of each key.
func stateArgs(ops []store.StateOp) (put, del stateCols) {
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(ops[a].Namespace, ops[b].Namespace), cmp.Compare(ops[a].Key, ops[b].Key))
	})
	for j, i := range order {
		op := &ops[i]
		if j+1 < len(order) {
			if next := &ops[order[j+1]]; next.Namespace == op.Namespace && next.Key == op.Key {
				continue
			}
		}
		if op.Delete {
			del.ns = append(del.ns, escape(op.Namespace))
			del.keys = append(del.keys, escape(op.Key))
			continue
		}
		v := op.Value
		if v == nil {
			v = []byte{}
		}
		put.ns = append(put.ns, escape(op.Namespace))
		put.keys = append(put.keys, escape(op.Key))
		put.values = append(put.values, v)
	}
	return put, del
}

// failureCols are an on-failure batch's records as unnest arrays.
type failureCols struct {
	streams, shards, seqs, keys []string
	data                        [][]byte
	arrivals                    []pgtype.Timestamptz
}

func failureArgs(recs []idem.Record) failureCols {
	a := failureCols{
		streams:  make([]string, len(recs)),
		shards:   make([]string, len(recs)),
		seqs:     make([]string, len(recs)),
		keys:     make([]string, len(recs)),
		data:     make([][]byte, len(recs)),
		arrivals: make([]pgtype.Timestamptz, len(recs)),
	}
	for i := range recs {
		r := &recs[i]
		a.streams[i], a.shards[i], a.seqs[i] = escape(r.Stream), escape(r.ShardID), escape(string(r.Sequence))
		a.keys[i] = escape(r.PartitionKey)
		a.data[i] = r.Data
		if a.data[i] == nil {
			a.data[i] = []byte{}
		}
		if !r.ArrivalTime.IsZero() {
			a.arrivals[i] = pgtype.Timestamptz{Time: r.ArrivalTime, Valid: true}
		}
	}
	return a
}
