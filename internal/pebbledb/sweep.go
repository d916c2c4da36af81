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

// markChunk is how many expired marks a sweep handles while it holds
// markMu, which delays commits that write marks.
const markChunk = 1024

// SweepInterval is how often the background sweeper deletes the records
// past their stream's retention: a record can still be read up to this long
// after its retention ran out (longer if a sweep fails or the DB is
// closed), which completion marks must allow for.
func (db *DB) SweepInterval() time.Duration { return db.opts.sweepInterval }

// sweeper runs Sweep every sweep interval, and spills the mark journal
// when a commit asks, until Close.
func (db *DB) sweeper() {
	defer db.wg.Done()
	t := time.NewTicker(db.opts.sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-db.done:
			return
		case <-t.C:
			err := db.Sweep(context.Background(), time.Now())
			if err != nil && !errors.Is(err, ErrClosed) && db.opts.logger != nil {
				db.opts.logger.Error("pebbledb: sweep failed; the next one retries", "err", err)
			}
		case <-db.spillCh:
			err := db.spillMarks()
			if err != nil && !errors.Is(err, ErrClosed) && db.opts.logger != nil {
				db.opts.logger.Error("pebbledb: spilling the mark journal failed; the next sweep retries", "err", err)
			}
		}
	}
}

// Sweep does at once what the background sweeper does every sweep interval,
// as of now: it deletes, in each shard, the records that arrived before now
// minus the stream's retention, advancing the shard's lowest retained
// sequence. Then it spills the mark journal into a run (merging runs as
// they accumulate) and deletes the completion marks expired at now: each
// run whose marks have all expired, whole, and the mark keys of earlier
// versions expired, reading only those. Expired marks are already treated
// as absent by Completed, so purging them only reclaims space. Tests call
// Sweep to decide time themselves.
//
// Errors: ErrClosed, ctx.Err(), and Pebble's errors with the stream and
// shard.
func (db *DB) Sweep(ctx context.Context, now time.Time) error {
	db.sweepMu.Lock()
	defer db.sweepMu.Unlock()
	db.streamsMu.RLock()
	streams := make([]*stream, 0, len(db.streams))
	for _, st := range db.streams {
		streams = append(streams, st)
	}
	db.streamsMu.RUnlock()
	for _, st := range streams {
		cutoff := now.UnixNano() - st.retention.Load()
		for _, sh := range st.shards {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := db.trim(ctx, sh, cutoff); err != nil {
				return fmt.Errorf("pebbledb: retention of stream %q shard %s: %w", st.name, sh.id, err)
			}
		}
	}
	// The journal's marks first, so that the purge finds each expired
	// mark's entry.
	if err := db.spillMarks(); err != nil {
		return err
	}
	if err := db.purgeMarks(ctx, now.UnixNano()); err != nil {
		return err
	}
	return db.purgeRuns(now.UnixNano())
}

// trim deletes the shard's visible records that arrived before cutoff.
// Only Sweep, under sweepMu, changes a shard's horizon.
func (db *DB) trim(ctx context.Context, sh *shard, cutoff int64) error {
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	trimmed, visible := sh.trimmed.Load(), sh.visible.Load()
	if trimmed >= visible {
		return nil
	}
	it, err := db.iter(ctx, sh, visible)
	if err != nil {
		return err
	}
	s, err := sh.firstAtOrAfter(it, trimmed+1, visible, cutoff)
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil || s-1 <= trimmed {
		return err
	}
	return db.trimThrough(sh, trimmed, s-1)
}

// trimThrough deletes the shard's records above trimmed up to and including
// through, and moves its horizon there. Callers hold sweepMu.
func (db *DB) trimThrough(sh *shard, trimmed, through uint64) error {
	s := through + 1
	if err := db.admitMaintenance(); err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(seqKey(sh.prefix, trimmed+1), seqKey(sh.prefix, s), nil); err != nil {
		return err
	}
	if err := b.Set(sh.lower, encodeHorizon(s-1), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return noSpace(err)
	}
	sh.trimmed.Store(s - 1)
	return nil
}

// TrimThrough deletes the records of a shard up to and including through
// at once, as retention would once they expired: readers behind it learn of
// the loss from ReadResult.Lost. It never deletes a record that is not yet
// visible.
//
// Errors: ErrStreamNotFound, ErrShardNotFound, ErrClosed, ctx.Err(), and an
// error for a position that is not a sequence of this stream.
func (db *DB) TrimThrough(ctx context.Context, stream, shardID string, through idem.Sequence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := position(stream, shardID, through)
	if err != nil {
		return err
	}
	_, sh, err := db.shardOf(stream, shardID)
	if err != nil {
		return err
	}
	db.sweepMu.Lock()
	defer db.sweepMu.Unlock()
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()
	n = min(n, sh.visible.Load())
	trimmed := sh.trimmed.Load()
	if n <= trimmed {
		return nil
	}
	if err := db.trimThrough(sh, trimmed, n); err != nil {
		return fmt.Errorf("pebbledb: trim stream %q shard %s through %d: %w", stream, shardID, n, err)
	}
	return nil
}

// purgeMarks deletes the marks expired at now, reading only their expiry
// entries, a chunk at a time.
func (db *DB) purgeMarks(ctx context.Context, now int64) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		more, err := db.purgeChunk(now)
		if err != nil {
			return fmt.Errorf("pebbledb: purging expired marks: %w", err)
		}
		if !more {
			return nil
		}
	}
}

// purgeChunk handles expiry entries at or before now until it has looked
// at markChunk marks or more: it deletes each entry, and each of its marks
// that itself expired (a renewed mark has a later entry and stays). It holds markMu exclusively, so no
// Commit writing marks is in flight: what it reads is what it deletes. It
// reports whether expired entries remain. The chunk that finds none left
// has seen every mark expired at now deleted, with no commit since, and
// drops the mark filter's segments whose keys all expired at now: without
// that, a filter that cannot forget would fill with the keys of marks long
// gone, and answer "maybe" for ever more absent keys.
func (db *DB) purgeChunk(now int64) (more bool, err error) {
	release, err := db.enter()
	if err != nil {
		return false, err
	}
	defer release()
	db.markMu.Lock()
	defer db.markMu.Unlock()
	bound := expiryBound(now)
	it, err := db.pdb.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixExpiry}, UpperBound: bound})
	if err != nil {
		return false, err
	}
	defer it.Close()
	b := db.pdb.NewBatch()
	defer b.Close()
	var kb [17]byte
	n := 0
	// purge deletes the mark mk if it expired: a renewed mark has a later
	// entry and stays.
	purge := func(mk []byte) error {
		n++
		var expires int64
		found, err := db.get(markKey(&kb, store.MarkKey(mk)), func(v []byte) (err error) {
			expires, err = decodeMark(v)
			return err
		})
		if err != nil {
			return fmt.Errorf("mark %x: %w", mk, err)
		}
		if found && expires <= now {
			return b.Delete(markKey(&kb, store.MarkKey(mk)), nil)
		}
		return nil
	}
	valid := it.First()
	for ; valid && n < markChunk; valid = it.Next() {
		k := it.Key()
		if len(k) != expiryKeyLen {
			return false, fmt.Errorf("%w: expiry key %x", errCorrupt, k)
		}
		others, err := it.ValueAndErr()
		if err != nil {
			return false, err
		}
		if len(others)%len(store.MarkKey{}) != 0 {
			return false, fmt.Errorf("%w: expiry entry %x lists %d bytes of mark keys", errCorrupt, k, len(others))
		}
		// The entry's marks: the one in its key, then those its value lists.
		if err := purge(k[9:]); err != nil {
			return false, err
		}
		for ; len(others) > 0; others = others[len(store.MarkKey{}):] {
			if err := purge(others[:len(store.MarkKey{})]); err != nil {
				return false, err
			}
		}
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	if n == 0 {
		db.marks.drop(now)
		return false, nil
	}
	if err := db.admitMaintenance(); err != nil {
		return false, err
	}
	end := bound
	if valid {
		end = append([]byte(nil), it.Key()...)
	}
	if err := b.DeleteRange([]byte{prefixExpiry}, end, nil); err != nil {
		return false, err
	}
	// Losing a purge to a crash only brings back expired marks, which
	// Completed ignores: no need to wait for a sync.
	if err := b.Commit(pebble.NoSync); err != nil {
		return false, noSpace(err)
	}
	if !valid {
		db.marks.drop(now)
	}
	return valid, nil
}
