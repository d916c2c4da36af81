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

// ErrCheckpointMoved is returned by PutCheckpoint when the stored checkpoint
// is not the one the caller read: someone else moved it (another redrive of
// the same records), and the records were not appended.
var ErrCheckpointMoved = errors.New("pebbledb: checkpoint moved since it was read")

// PutCheckpoint appends recs to stream and sets the checkpoint of key to cp
// in one synced batch, provided the stored checkpoint's sequence is still
// prev ("" or "0": none yet). It is how a redrive sends records and commits
// its progress at once: after a crash either both landed or neither did, so
// running the redrive again never sends a record twice. Records are
// validated as Put validates them, and land where Put would put them;
// recs may be empty (the checkpoint alone moves).
//
// The compare and the write are not one atomic step against a concurrent
// PutCheckpoint of the same key: callers serialize their writers of a key
// (a server runs one redrive at a time).
//
// Errors: ErrCheckpointMoved, ErrStreamNotFound, ErrInvalidPartitionKey,
// ErrRecordTooLarge, store.ErrNoSpace (nothing was written), ErrFatal,
// ErrClosed, ctx.Err().
func (db *DB) PutCheckpoint(ctx context.Context, stream string, recs []PutRecord, key store.CheckpointKey, prev idem.Sequence, cp store.Checkpoint) ([]PutResult, error) {
	return db.PutCheckpointUnmarking(ctx, stream, recs, key, prev, cp, nil)
}

// PutCheckpointUnmarking is PutCheckpoint that, in the same synced batch,
// also deletes the completion marks under unmark (with their expiry
// entries; a key without a mark is passed over). It is how a redrive sends
// back records a payload-keyed mapping discarded, under their original
// idempotency keys: the engine marks a discarded record's key as it marks
// a completed one's, so a copy under that key would be skipped.
//
// A discarded key's mark only records that the key was resolved by
// discarding: no record can complete under that key afterwards except
// through a redrive (any other record with that key is skipped as
// resolved). Removing the mark in the same write that re-appends the
// record is what lets the copy run once; the redrive's progress,
// committed in that write too, makes the removal and the append happen
// once. Payload keys come from the data, so the re-appended copy computes
// the same key.
//
// It holds spillMu and markMu exclusively while it reads the marks and
// commits, so that neither the sweeper nor a Commit writing marks
// interleaves with it, and spills the mark journal in its batch as a run,
// leaving the unmarked keys out, so that no journal entry brings one back
// at Open. It deletes each key from every run that holds it (runs.go),
// and from the mark keys of earlier versions, whose expiry entries stay:
// the purge finds their marks gone.
func (db *DB) PutCheckpointUnmarking(ctx context.Context, stream string, recs []PutRecord, key store.CheckpointKey, prev idem.Sequence, cp store.Checkpoint, unmark []store.MarkKey) ([]PutResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wrap := func(err error) error {
		return fmt.Errorf("pebbledb: put to stream %q with checkpoint of %q: %w", stream, key.Mapping, err)
	}
	if !cp.Sequence.Valid() {
		return nil, wrap(fmt.Errorf("checkpoint sequence %q is not a decimal number", cp.Sequence))
	}
	st, release, err := db.enterPut(stream, recs)
	if err != nil {
		return nil, err
	}
	defer release()
	var stored store.Checkpoint
	if _, err := db.get(checkpointKey(key), func(v []byte) (err error) {
		stored, err = decodeCheckpoint(v)
		return err
	}); err != nil {
		return nil, wrap(err)
	}
	if stored.Sequence.Compare(prev) != 0 {
		return nil, wrap(fmt.Errorf("%w: it is %q, expected %q", ErrCheckpointMoved, stored.Sequence, prev))
	}
	// The journal's marks are spilled in the same batch, leaving out the
	// marks unmarked, so that no journal entry brings one back at Open.
	// Under markMu exclusive no commit is filing marks meanwhile.
	var plan *spillPlan
	var upTo uint64
	if len(unmark) > 0 {
		db.spillMu.Lock()
		defer db.spillMu.Unlock()
		db.markMu.Lock()
		defer db.markMu.Unlock()
		upTo = db.journal.seq.Load()
		skip := make(map[store.MarkKey]bool, len(unmark))
		for _, mk := range unmark {
			skip[mk] = true
		}
		plan = planSpill(db.journal.freeze(newMarkTable(0)), func(k *store.MarkKey) bool { return skip[*k] })
	}
	size := 64 + len(unmark)*(17+expiryKeyLen+8) + st.batchSize(recs)
	if plan != nil {
		size += plan.size + len(unmark)*len(db.listedRuns())*(runKeyLen+8)
	}
	if err := db.admit(size); err != nil {
		return nil, wrap(err)
	}
	b := db.pdb.NewBatchWithSize(size)
	defer b.Close()
	var scratch [64]byte
	if err := b.Set(checkpointKey(key), appendCheckpoint(scratch[:0], cp), nil); err != nil {
		return nil, wrap(err)
	}
	// The journal goes into a run without the keys unmarked, which go
	// from the runs that hold them; and from the mark keys of earlier
	// versions, whose expiry entries stay until their time, when the
	// sweep finds the marks gone (or renewed, with a later expiry): an
	// entry can name the other marks of its commit too.
	var run markRun
	if plan != nil {
		if run, err = plan.appendTo(b, db.lastRun.Add(1), upTo); err != nil {
			return nil, wrap(err)
		}
		if err := db.unmarkRuns(b, unmark); err != nil {
			return nil, wrap(err)
		}
	}
	var kb [17]byte
	for _, mk := range unmark {
		if !db.legacyMarks.Load() {
			break // Pebble holds no mark key
		}
		if err := b.Delete(markKey(&kb, mk), nil); err != nil {
			return nil, wrap(err)
		}
	}
	res := make([]PutResult, len(recs))
	var p *pending
	if len(recs) > 0 {
		p = st.append(b, recs, res, time.Now())
	}
	err = b.Commit(pebble.Sync)
	if err == nil && len(unmark) > 0 {
		// The frozen journal still holds the marks unmarked, and lookups
		// believe it over Pebble: it goes before the records appended
		// become visible, or a shard could read one and skip it as
		// marked. (The run listed here holds its other marks.)
		if run.id != 0 {
			db.listRuns(nil, run)
		}
		db.runEdits++ // a merge that read the keys unmarked is stale
		db.journal.thaw()
	}
	p.finish()
	if err != nil {
		return nil, wrap(noSpace(err))
	}
	return res, nil
}
