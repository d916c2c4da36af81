package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Checkpoint returns the checkpoint of key, and false if there is none.
func (s *Store) Checkpoint(ctx context.Context, key store.CheckpointKey) (store.Checkpoint, bool, error) {
	if err := s.enter("checkpoint"); err != nil {
		return store.Checkpoint{}, false, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("redis store: checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	m, err := s.client.HGetAll(ctx, s.checkpointKey(key)).Result()
	if err != nil {
		return store.Checkpoint{}, false, wrap(err)
	}
	if len(m) == 0 {
		return store.Checkpoint{}, false, nil
	}
	seq, ok := m["seq"]
	if !ok || !idem.Sequence(seq).Valid() {
		return store.Checkpoint{}, false, wrap(fmt.Errorf("corrupt sequence %q", seq))
	}
	c := store.Checkpoint{Sequence: idem.Sequence(seq)}
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"processed", &c.Processed}, {"skipped", &c.Skipped}, {"discarded", &c.Discarded}, {"lost", &c.Lost}} {
		if *f.dst, err = strconv.ParseUint(m[f.name], 10, 64); err != nil {
			return store.Checkpoint{}, false, wrap(fmt.Errorf("corrupt counter %s: %w", f.name, err))
		}
	}
	return c, true, nil
}

// Progress returns one mapping's completion progress over a shard, the
// zero Progress if there is none. Mapping "" reads the scope-wide progress:
// the hash's field "", or else the string key earlier versions wrote.
func (s *Store) Progress(ctx context.Context, key store.ProgressKey) (store.Progress, error) {
	if err := s.enter("progress"); err != nil {
		return store.Progress{}, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("redis store: progress of scope %q mapping %q stream %q shard %s: %w", key.Scope, key.Mapping, key.Stream, key.Shard, err)
	}
	var v string
	var err error
	if key.Mapping != "" {
		v, err = s.client.HGet(ctx, s.mappingProgressKey(key), key.Mapping).Result()
	} else {
		// One round trip, atomic: a commit of Mapping "" moves the value
		// from the string key to the hash.
		var hget *goredis.StringCmd
		var get *goredis.StringCmd
		_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			hget = p.HGet(ctx, s.mappingProgressKey(key), "")
			get = p.Get(ctx, s.progressKey(key))
			return nil
		})
		if err == nil || errors.Is(err, goredis.Nil) {
			if v, err = hget.Result(); errors.Is(err, goredis.Nil) {
				v, err = get.Result()
			}
		}
	}
	if errors.Is(err, goredis.Nil) {
		return store.Progress{}, nil
	}
	if err != nil {
		return store.Progress{}, wrap(err)
	}
	p, err := decodeProgress(v)
	if err != nil {
		return store.Progress{}, wrap(err)
	}
	return p, nil
}

// appendProgress spells p as its high water, then ",seq" per sequence
// above it, then "|" and the filter when there is one: sequences are
// digits, so neither the commas nor the bar can be mistaken.
func appendProgress(b []byte, p *store.Progress) ([]byte, error) {
	if !p.HighWater.Valid() {
		return nil, fmt.Errorf("progress high water %q is not a decimal number", p.HighWater)
	}
	b = append(b, p.HighWater...)
	for _, q := range p.Above {
		if q == "" || !q.Valid() {
			return nil, fmt.Errorf("progress sequence %q is not a decimal number", q)
		}
		b = append(b, ',')
		b = append(b, q...)
	}
	if p.Filter != "" {
		b = append(b, '|')
		b = append(b, p.Filter...)
	}
	return b, nil
}

// decodeProgress reads what appendProgress wrote (or, without a filter,
// what earlier versions wrote).
func decodeProgress(v string) (store.Progress, error) {
	v, filter, _ := strings.Cut(v, "|")
	hw, rest, more := strings.Cut(v, ",")
	p := store.Progress{HighWater: idem.Sequence(hw), Filter: filter}
	if !p.HighWater.Valid() {
		return store.Progress{}, fmt.Errorf("corrupt progress %q", v)
	}
	if more {
		p.Above = make([]idem.Sequence, 0, strings.Count(rest, ",")+1)
		for q := range strings.SplitSeq(rest, ",") {
			if q == "" || !idem.Sequence(q).Valid() {
				return store.Progress{}, fmt.Errorf("corrupt progress %q", v)
			}
			p.Above = append(p.Above, idem.Sequence(q))
		}
	}
	return p, nil
}

// Completed sets done[i] to whether keys[i] holds a mark that expires after
// now, in one MGET. The marks' Redis TTLs play no part: a mark past its
// expiry is not completed even while its key is still there.
func (s *Store) Completed(ctx context.Context, keys []store.MarkKey, now time.Time, done []bool) error {
	if err := s.enter("completed"); err != nil {
		return err
	}
	if len(done) != len(keys) {
		return fmt.Errorf("redis store: completed: %d keys but %d results", len(keys), len(done))
	}
	if len(keys) == 0 {
		return nil
	}
	rkeys := make([]string, len(keys))
	for i, k := range keys {
		rkeys[i] = s.markKey(k)
	}
	vals, err := s.client.MGet(ctx, rkeys...).Result()
	if err != nil {
		return fmt.Errorf("redis store: completed: %d marks: %w", len(keys), err)
	}
	if len(vals) != len(keys) {
		return fmt.Errorf("redis store: completed: %d values for %d marks", len(vals), len(keys))
	}
	t := now.UnixNano()
	for i, v := range vals {
		if v == nil {
			done[i] = false
			continue
		}
		sv, ok := v.(string)
		exp, err := strconv.ParseInt(sv, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("redis store: mark %x: corrupt expiry %v", keys[i][:], v)
		}
		done[i] = exp > t
	}
	return nil
}

// State returns the committed value of key in namespace, a copy the caller
// owns, or an error wrapping idem.ErrNotFound.
func (s *Store) State(ctx context.Context, namespace, key string) ([]byte, error) {
	if err := s.enter("state"); err != nil {
		return nil, err
	}
	v, err := s.client.Get(ctx, s.stateKey(namespace, key)).Bytes()
	if errors.Is(err, goredis.Nil) {
		err = idem.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redis store: state %q in namespace %q: %w", key, namespace, err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// DeleteCheckpoint removes a mapping's checkpoint. Deleting a missing
// checkpoint is not an error.
func (s *Store) DeleteCheckpoint(ctx context.Context, key store.CheckpointKey) error {
	if err := s.enter("delete checkpoint"); err != nil {
		return err
	}
	if err := s.client.Del(ctx, s.checkpointKey(key)).Err(); err != nil {
		return fmt.Errorf("redis store: delete checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	return nil
}

// Commit applies w in one Lua script (EVALSHA, EVAL the first time the
// server sees it): the checkpoint, unless it would move backwards (an
// error wrapping store.ErrCheckpointBackwards, and nothing written);
// with w.MarkOwner, unless each key marked is still the owner's record
// claim, whatever its lease, or is neither claimed nor marked, an error
// wrapping store.ErrRecordClaimLost naming the key, and nothing written;
// the progress of w.ProgressKey's mapping; the marks, each stored with its
// expiry and a PEXPIREAT one grace later, each deleting the key's record
// claim; the state writes in order; for each failure, entries appended to
// the destination's stream (see Store.Failures); and the deletion of the
// record claims of w.Release that w.ReleaseOwner holds; with w.EndRange,
// the deletion of the range claim of w.ProgressKey's mapping. The server
// runs the script alone, so the Write is applied whole or not at all; it
// is durable as far as the server's persistence settings make it (see
// Store.Durable). Commit does not keep w.
//
// A w.Fence is checked first, in the script: unless the claim of its key
// holds its token, Commit returns an error wrapping store.ErrFenced and
// nothing is written.
//
// w.MarkOwner's check is in the script too, before anything is written,
// so it costs no round trip of its own: a GET of each mark's record claim,
// and an EXISTS of the mark only when there is no claim. It keeps a run
// that stalled past its claims' lease from committing a record another
// owner took over, and may have run: the other owner's claim is still
// there, or, once it committed, its mark (a mark deletes the claim it
// replaces). A key with neither lost no race: its claim only outlived its
// grace (the key's TTL) with nobody taking it over.
//
// An error from the connection (a timeout, ctx ended) leaves the outcome
// unknown: the script may have run. A later Commit of the same shard
// moves the checkpoint on either way.
func (s *Store) Commit(ctx context.Context, w *store.Write) error {
	cp := w.Checkpoint
	wrap := func(err error) error {
		return fmt.Errorf("redis store: commit for mapping %q stream %q shard %s: %w", cp.Mapping, cp.Stream, cp.Shard, err)
	}
	if err := s.enter("commit"); err != nil {
		return err
	}
	if !w.NewCheckpoint.Sequence.Valid() {
		return wrap(fmt.Errorf("checkpoint sequence %q is not a decimal number", w.NewCheckpoint.Sequence))
	}
	nkeys := 5 + 2*len(w.Marks) + len(w.State) + len(w.Failures) + len(w.Release)
	keys := make([]string, 0, nkeys)
	keys = append(keys, s.checkpointKey(cp), s.mappingProgressKey(w.ProgressKey), s.progressKey(w.ProgressKey), s.rangeKey(w.ProgressKey))
	nargs := 16 + 2*len(w.Marks) + 2*len(w.State)
	for i := range w.Failures {
		nargs += 1 + 9 + 17*len(w.Failures[i].Records)
	}
	args := make([]any, 0, nargs)
	c := &w.NewCheckpoint
	hasProgress, progress := "0", ""
	if w.HasProgress {
		b, err := appendProgress(nil, &w.Progress)
		if err != nil {
			return wrap(err)
		}
		hasProgress, progress = "1", string(b)
	}
	args = append(args, string(c.Sequence),
		strconv.FormatUint(c.Processed, 10), strconv.FormatUint(c.Skipped, 10),
		strconv.FormatUint(c.Discarded, 10), strconv.FormatUint(c.Lost, 10),
		hasProgress, progress, len(w.Marks), len(w.State), len(w.Failures), fenceToken(w.Fence),
		w.ProgressKey.Mapping, len(w.Release), hex.EncodeToString(w.ReleaseOwner[:]), flag(w.EndRange),
		markOwner(w.MarkOwner))
	for _, m := range w.Marks {
		keys = append(keys, s.markKey(m.Key))
		args = append(args, strconv.FormatInt(m.Expires.UnixNano(), 10), strconv.FormatInt(s.gcAt(m.Expires), 10))
	}
	for _, m := range w.Marks {
		keys = append(keys, s.recordClaimKey(m.Key))
	}
	for i := range w.State {
		op := &w.State[i]
		keys = append(keys, s.stateKey(op.Namespace, op.Key))
		if op.Delete {
			args = append(args, "d", "")
		} else {
			args = append(args, "s", op.Value)
		}
	}
	for i := range w.Failures {
		f := &w.Failures[i]
		keys = append(keys, s.failureKey(f.Destination))
		args = appendFailure(args, f)
	}
	for _, k := range w.Release {
		keys = append(keys, s.recordClaimKey(k))
	}
	if w.Fence != nil {
		keys = append(keys, s.claimKey(w.Fence.Key))
	}
	res, err := commitScript.Run(ctx, s.client, keys, args...).Result()
	if err != nil {
		return wrap(err)
	}
	code, rest, err := scriptResult(res)
	if err != nil {
		return wrap(err)
	}
	switch code {
	case "ok":
		return nil
	case "backwards":
		stored, _ := str(rest, 0)
		return wrap(fmt.Errorf("%w: from %q to %q", store.ErrCheckpointBackwards, stored, c.Sequence))
	case "fenced":
		held, _ := str(rest, 0)
		return wrap(fmt.Errorf("%w: fence %x token %d (held: %s)", store.ErrFenced, w.Fence.Key[:], w.Fence.Token, held))
	case "lost":
		is, _ := str(rest, 0)
		i, err := strconv.Atoi(is)
		if err != nil || i < 1 || i > len(w.Marks) {
			return wrap(fmt.Errorf("%w: mark %q of %d (owner %x)", store.ErrRecordClaimLost, is, len(w.Marks), w.MarkOwner[:]))
		}
		held := "marked"
		if c, _ := str(rest, 1); c != "" {
			held = "claimed: " + c
		}
		return wrap(fmt.Errorf("%w: record %x of owner %x (%s)", store.ErrRecordClaimLost, w.Marks[i-1].Key[:], w.MarkOwner[:], held))
	}
	return wrap(fmt.Errorf("unexpected script reply %q", code))
}

// markOwner is the commit script's mark owner argument: k in hex, as
// record claims spell their owner, or the empty string for the zero
// MarkKey (no check).
func markOwner(k store.MarkKey) string {
	if k == (store.MarkKey{}) {
		return ""
	}
	return hex.EncodeToString(k[:])
}

// flag is a script's boolean argument.
func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// fenceToken is the commit script's fence argument: f's token, or the empty string for
// none.
func fenceToken(f *store.Fence) string {
	if f == nil {
		return ""
	}
	return strconv.FormatUint(f.Token, 10)
}
