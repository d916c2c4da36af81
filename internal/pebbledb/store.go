package pebbledb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// FailurePartitionKey is the partition key of an on-failure metadata record
// whose batch names no shard; otherwise the key is the batch's shard ID, so
// that one source shard's failures stay in order in the destination.
const FailurePartitionKey = "failure"

// get returns a copy-free view of key's value to f, or found false.
func (db *DB) get(key []byte, f func(v []byte) error) (found bool, err error) {
	v, closer, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	return true, f(v)
}

// Checkpoint returns the checkpoint of key, and false if there is none.
//
// Errors: ErrClosed, ctx.Err().
func (db *DB) Checkpoint(ctx context.Context, key store.CheckpointKey) (store.Checkpoint, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Checkpoint{}, false, err
	}
	release, err := db.enter()
	if err != nil {
		return store.Checkpoint{}, false, err
	}
	defer release()
	var c store.Checkpoint
	found, err := db.get(checkpointKey(key), func(v []byte) (err error) {
		c, err = decodeCheckpoint(v)
		return err
	})
	if err != nil {
		return store.Checkpoint{}, false, fmt.Errorf("pebbledb: checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	return c, found, nil
}

// Progress returns a scope's completion progress over a shard, the zero
// Progress if there is none.
//
// Errors: ErrClosed, ctx.Err().
func (db *DB) Progress(ctx context.Context, key store.ProgressKey) (store.Progress, error) {
	if err := ctx.Err(); err != nil {
		return store.Progress{}, err
	}
	release, err := db.enter()
	if err != nil {
		return store.Progress{}, err
	}
	defer release()
	var p store.Progress
	_, err = db.get(progressKey(key), func(v []byte) (err error) {
		p, err = decodeProgress(v)
		return err
	})
	if err != nil {
		return store.Progress{}, fmt.Errorf("pebbledb: progress of scope %q stream %q shard %s: %w", key.Scope, key.Stream, key.Shard, err)
	}
	return p, nil
}

// Completed sets done[i] to whether keys[i] holds a mark that expires after
// now. The mark filter answers for most keys never marked without reading
// Pebble; the rest are looked up there, a batch of them with one iterator.
//
// Errors: ErrClosed, ctx.Err(), and an error if done and keys differ in
// length.
func (db *DB) Completed(ctx context.Context, keys []store.MarkKey, now time.Time, done []bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(done) != len(keys) {
		return fmt.Errorf("pebbledb: completed: %d keys but %d results", len(keys), len(done))
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	return db.lookupMarks(keys, now.UnixNano(), done)
}

// State returns the committed value of key in namespace, a copy the caller
// owns, or an error wrapping idem.ErrNotFound.
//
// Errors: idem.ErrNotFound, ErrClosed, ctx.Err().
func (db *DB) State(ctx context.Context, namespace, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	release, err := db.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	var val []byte
	found, err := db.get(stateKey(namespace, key), func(v []byte) error {
		s, err := decodeState(v)
		val = append(make([]byte, 0, len(s)), s...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pebbledb: state %q in namespace %q: %w", key, namespace, err)
	}
	if !found {
		return nil, fmt.Errorf("pebbledb: state %q in namespace %q: %w", key, namespace, idem.ErrNotFound)
	}
	return val, nil
}

// DeleteCheckpoint removes a mapping's checkpoint, durably. Deleting a
// missing checkpoint is not an error.
//
// Errors: ErrClosed, ctx.Err().
func (db *DB) DeleteCheckpoint(ctx context.Context, key store.CheckpointKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	err = db.admit(64)
	if err == nil {
		err = noSpace(db.pdb.Delete(checkpointKey(key), pebble.Sync))
	}
	if err != nil {
		return fmt.Errorf("pebbledb: delete checkpoint of mapping %q stream %q shard %s: %w", key.Mapping, key.Stream, key.Shard, err)
	}
	return nil
}

// Commit applies w in one Pebble batch committed with pebble.Sync: the
// checkpoint, the progress, the marks, the state writes, and for each
// failure its metadata record and then its records appended to the
// destination stream. Either all of it survives a crash or none of it does.
// Concurrent Commits (and Puts) share fsyncs. Commit does not keep w.
//
// A failure's metadata record has the batch's shard ID as partition key
// (FailurePartitionKey when there is no record); each discarded record keeps
// its partition key and data, except that a key Put would refuse (empty or
// longer than MaxPartitionKeyBytes) is replaced by the metadata's. The
// records land in the metadata record's shard, right after it, whatever
// their partition keys: a batch reads back whole from one shard. Put's
// size limit does not apply: the records already passed a source's own, and
// refusing them would stop the shard for good.
//
// A w.Fence is checked against the claims record of its key under the
// lock Claim takes, and the batch committed under it too.
//
// Once applied, w ends the claims it replaces (ClaimRecords): the record
// claims of the keys it marks, whoever's, those of w.Release that
// w.ReleaseOwner holds, and with w.EndRange its range claim. With a
// w.MarkOwner, the record claims of the keys it marks are checked first
// (each MarkOwner's, whatever its lease, or neither claimed nor marked)
// and pinned: no other owner can take one over until w has landed and
// ended them, so that a record whose claim was taken over after a stall
// never has its mark, and effects, committed twice.
//
// Errors: ErrStreamNotFound for a missing destination (nothing is written),
// store.ErrFenced (nothing is written), store.ErrRecordClaimLost (nothing
// is written), store.ErrNoSpace (nothing is written), ErrFatal, ErrClosed,
// ctx.Err().
func (db *DB) Commit(ctx context.Context, w *store.Write) error {
	_, err := db.commit(ctx, w, false)
	return err
}

// CommitPipelined is Commit without waiting for the write-ahead log's sync
// (store.Pipeliner): the write is applied, and visible, when it returns;
// synced waits for the sync. A sync that fails makes every later use of db
// fail with that error, for what readers saw may be lost. A w with Failures
// is synced before it returns, as Commit does: its records become visible
// to the destination's readers only once durable.
func (db *DB) CommitPipelined(ctx context.Context, w *store.Write) (synced func() error, err error) {
	return db.commit(ctx, w, len(w.Failures) == 0)
}

// commit is Commit, or with pipelined CommitPipelined.
func (db *DB) commit(ctx context.Context, w *store.Write, pipelined bool) (synced func() error, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	release, err := db.enter()
	if err != nil {
		return nil, err
	}
	defer release()
	cp := w.Checkpoint
	wrap := func(err error) error {
		return fmt.Errorf("pebbledb: commit for mapping %q stream %q shard %s: %w", cp.Mapping, cp.Stream, cp.Shard, err)
	}
	done := func() error { return nil }
	// Refuse what decodeCheckpoint would call corrupt: written, it would
	// make the checkpoint unreadable for good.
	if !w.NewCheckpoint.Sequence.Valid() {
		return nil, wrap(fmt.Errorf("checkpoint sequence %q is not a decimal number", w.NewCheckpoint.Sequence))
	}
	dests := make([]*stream, len(w.Failures))
	for i := range w.Failures {
		if dests[i], err = db.stream(w.Failures[i].Destination); err != nil {
			return nil, wrap(fmt.Errorf("on-failure destination: %w", err))
		}
	}

	var stored store.Checkpoint
	if _, err := db.get(checkpointKey(cp), func(v []byte) (err error) {
		stored, err = decodeCheckpoint(v)
		return err
	}); err != nil {
		return nil, wrap(err)
	}
	if w.NewCheckpoint.Sequence.Compare(stored.Sequence) < 0 {
		return nil, wrap(fmt.Errorf("%w: from %q to %q", store.ErrCheckpointBackwards, stored.Sequence, w.NewCheckpoint.Sequence))
	}

	b := db.pdb.NewBatch()
	defer func() {
		if b != nil {
			b.Close()
		}
	}()
	var scratch [64]byte
	if err := b.Set(checkpointKey(cp), appendCheckpoint(scratch[:0], w.NewCheckpoint), nil); err != nil {
		return nil, wrap(err)
	}
	if w.HasProgress {
		v, err := appendProgress(nil, &w.Progress)
		if err != nil {
			return nil, wrap(err)
		}
		if err := b.Set(progressKey(w.ProgressKey), v, nil); err != nil {
			return nil, wrap(err)
		}
	}
	toJournal := len(w.Marks) > 0 && !db.opts.directMarks
	if !toJournal {
		if err := setMarks(b, w.Marks); err != nil {
			return nil, wrap(err)
		}
	}
	for i := range w.State {
		op := &w.State[i]
		k := stateKey(op.Namespace, op.Key)
		if op.Delete {
			err = b.Delete(k, nil)
		} else {
			d := b.SetDeferred(len(k), 1+len(op.Value))
			copy(d.Key, k)
			appendState(d.Value[:0], op.Value)
			err = d.Finish()
		}
		if err != nil {
			return nil, wrap(err)
		}
	}

	// Admit the write before any sequence of a destination is allocated:
	// a refused write leaves no gap.
	size := b.Len()
	if toJournal {
		size += 16 + journalValueLen(w.Marks)
	}
	for i := range w.Failures {
		size += 64 + len(w.Failures[i].Metadata)
		for _, r := range w.Failures[i].Records {
			size += 64 + len(r.PartitionKey) + len(r.Data)
		}
	}
	if err := db.admit(size); err != nil {
		return nil, wrap(err)
	}

	// The claims w's marks replace are checked, and pinned until they are
	// ended below or, if the commit fails, unpinned: no other owner can
	// take one over meanwhile.
	var claimsEnded bool
	if w.MarkOwner != (store.MarkKey{}) && len(w.Marks) > 0 {
		if err := db.pinClaims(w); err != nil {
			return nil, wrap(err)
		}
		defer func() {
			if !claimsEnded {
				db.claimMu.Lock()
				defer db.claimMu.Unlock()
				db.unpin(w.Marks)
			}
		}()
		if db.opts.afterPin != nil {
			db.opts.afterPin(w)
		}
	}

	var ps []*pending
	defer func() {
		for _, p := range ps {
			p.finish()
		}
	}()
	now := time.Now()
	for i := range w.Failures {
		recs := failureRecords(&w.Failures[i])
		ps = append(ps, dests[i].append(b, recs, make([]PutResult, len(recs)), now))
	}

	var seq uint64 // the journal entry's
	if len(w.Marks) > 0 {
		db.markMu.RLock()
		defer db.markMu.RUnlock()
		// Into the filter before the batch is applied: a lookup that
		// could see a mark finds it in the filter first. If the
		// commit fails, they are false positives.
		if !db.opts.noMarkFilter {
			for i := range w.Marks {
				db.marks.add(&w.Marks[i].Key, w.Marks[i].Expires.UnixNano())
			}
		}
		if toJournal {
			seq = db.journal.seq.Add(1)
			if err := appendJournal(b, seq, w.Marks); err != nil {
				return nil, wrap(err)
			}
		}
	}
	endsClaims := len(w.Release) > 0 || len(w.Marks) > 0 || w.EndRange
	if w.Fence != nil {
		// Check and write under claimMu: a Claim that takes the key over
		// comes entirely before (and fences this Write) or after it.
		db.claimMu.Lock()
		defer db.claimMu.Unlock()
		if err := db.checkFence(w.Fence); err != nil {
			return nil, wrap(err)
		}
	}
	// The record claims w ends are ended once it is applied, and its
	// journaled marks filed: a claimer that still finds one waits, and
	// then finds what w wrote.
	endClaims := func() {
		if toJournal && db.journal.file(w.Marks) >= db.spillMarksAt() {
			select {
			case db.spillCh <- struct{}{}:
			default:
			}
		}
		if !endsClaims {
			return
		}
		if w.Fence == nil {
			db.claimMu.Lock()
			defer db.claimMu.Unlock()
		}
		db.endClaims(w)
		claimsEnded = true
	}
	if !pipelined {
		if err := b.Commit(pebble.Sync); err != nil {
			return nil, wrap(noSpace(err))
		}
		endClaims()
		return done, nil
	}
	if err := db.pdb.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return nil, wrap(noSpace(err))
	}
	endClaims()
	pb := b
	b = nil // closed once synced
	return func() error {
		defer pb.Close()
		if err := pb.SyncWait(); err != nil {
			err = wrap(fmt.Errorf("syncing the write-ahead log: %w; the write was applied and may or may not survive a restart", noSpace(err)))
			db.fail(err)
			return err
		}
		return nil
	}, nil
}

// failureRecords lays out one failure as the records to append.
func failureRecords(f *store.Failure) []PutRecord {
	pk := FailurePartitionKey
	if len(f.Records) > 0 {
		if id := f.Records[0].ShardID; id != "" && len(id) <= MaxPartitionKeyBytes {
			pk = id
		}
	}
	recs := make([]PutRecord, 0, 1+len(f.Records))
	recs = append(recs, PutRecord{PartitionKey: pk, Data: f.Metadata})
	for i := range f.Records {
		r := &f.Records[i]
		k := r.PartitionKey
		if len(k) < 1 || len(k) > MaxPartitionKeyBytes {
			k = pk
		}
		recs = append(recs, PutRecord{PartitionKey: k, Data: r.Data, routeKey: pk})
	}
	return recs
}

// setMarks writes marks to b: each mark under its key, with its expiry,
// and for each run of marks with one expiry a single expiry entry, keyed
// by the run's first mark and listing the others in its value. One entry
// a run rather than one a mark halves what a payload-keyed batch inserts
// into the memtable and later flushes and compacts: a batch's marks share
// their expiry. The sweep reads an entry's marks from its key and value;
// two runs whose entries coincide (the same first mark, expiring in the
// same nanosecond, in two commits) would leave the earlier run's other
// marks without an entry, never purged: only a mark renewed within the
// nanosecond it was written could do that.
func setMarks(b *pebble.Batch, marks []store.Mark) error {
	var kb [17]byte
	var scratch [16]byte
	for i := 0; i < len(marks); {
		exp := marks[i].Expires.UnixNano()
		j := i + 1
		for j < len(marks) && marks[j].Expires.UnixNano() == exp {
			j++
		}
		for _, m := range marks[i:j] {
			if err := b.Set(markKey(&kb, m.Key), appendMark(scratch[:0], exp), nil); err != nil {
				return err
			}
		}
		d := b.SetDeferred(expiryKeyLen, len(store.MarkKey{})*(j-i-1))
		var xb [expiryKeyLen]byte
		copy(d.Key, expiryKey(&xb, exp, marks[i].Key))
		v := d.Value[:0]
		for _, m := range marks[i+1 : j] {
			v = append(v, m.Key[:]...)
		}
		if err := d.Finish(); err != nil {
			return err
		}
		i = j
	}
	return nil
}
