package pebbledb

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// shardOf returns the stream and shard named.
func (db *DB) shardOf(stream, shardID string) (*stream, *shard, error) {
	st, err := db.stream(stream)
	if err != nil {
		return nil, nil, err
	}
	sh, err := st.shard(shardID)
	if err != nil {
		return nil, nil, fmt.Errorf("pebbledb: %w", err)
	}
	return st, sh, nil
}

// iter returns an iterator over the shard's horizon and its records up to
// and including sequence hi.
func (db *DB) iter(ctx context.Context, sh *shard, hi uint64) (*pebble.Iterator, error) {
	upper := sh.upper
	if hi < math.MaxUint64 {
		upper = seqKey(sh.prefix, hi+1)
	}
	return db.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: sh.lower, UpperBound: upper})
}

// horizon reads the shard's trimmed sequence through it, so that it belongs
// to the same snapshot as the records it reads.
func (sh *shard) horizon(it *pebble.Iterator) (uint64, error) {
	if !it.SeekGE(sh.lower) || !bytes.Equal(it.Key(), sh.lower) {
		return 0, it.Error()
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, err
	}
	return decodeHorizon(v)
}

// firstAtOrAfter returns the smallest s in [lo, hi+1] such that no record of
// it at or above s arrived before ts: reading after s-1 starts at the first
// record that arrived at or after ts. Arrival times never decrease along a
// shard, so a binary search over sequences finds it in O(log n) seeks; it
// works across gaps, since it seeks rather than reads exact keys.
func (sh *shard) firstAtOrAfter(it *pebble.Iterator, lo, hi uint64, ts int64) (uint64, error) {
	key := seqKey(sh.prefix, 0)
	l, r := lo, hi+1
	for l < r {
		m := l + (r-l)/2
		binary.BigEndian.PutUint64(key[len(sh.prefix):], m)
		if !it.SeekGE(key) {
			if err := it.Error(); err != nil {
				return 0, err
			}
			r = m
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return 0, err
		}
		arrival, err := decodeArrival(v)
		if err != nil {
			return 0, err
		}
		if arrival >= ts {
			r = m
		} else {
			l = keySeq(it.Key()) + 1
		}
	}
	return l, nil
}

// Read returns up to limit records of the shard with a sequence above after,
// stopping before the Data would exceed maxBytes (but returning at least one
// record when there is one), as source.Driver's Read. It never returns a
// record above the shard's visible mark, and reports in Lost the records
// between after and the first retained one that retention deleted. The
// records' Data and PartitionKey are copied, into one buffer per call.
//
// Errors: ErrStreamNotFound, ErrShardNotFound, ErrClosed, ctx.Err().
func (db *DB) Read(ctx context.Context, stream, shardID string, afterSeq idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if err := ctx.Err(); err != nil {
		return source.ReadResult{}, err
	}
	after, err := position(stream, shardID, afterSeq)
	if err != nil {
		return source.ReadResult{}, err
	}
	release, err := db.enter()
	if err != nil {
		return source.ReadResult{}, err
	}
	defer release()
	st, sh, err := db.shardOf(stream, shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	if limit < 1 {
		return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: limit %d must be at least 1", stream, shardID, limit)
	}
	visible := sh.visible.Load()
	res := source.ReadResult{}
	if visible > 0 {
		res.Latest = idem.SequenceOf(visible)
	}
	if after >= visible {
		return res, nil
	}
	it, err := db.iter(ctx, sh, visible)
	if err != nil {
		return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: %w", stream, shardID, err)
	}
	defer it.Close()

	n := min(uint64(limit), visible-after, 1024)
	recs := make([]idem.Record, 0, n)
	ends := make([][2]int, 0, n) // end offsets in data and pks
	data := make([]byte, 0, min(max(maxBytes, 0), int(n)*256))
	var pks []byte
	seqs := make([]byte, 0, n*seqWidth)
	size := 0
	for valid := it.SeekGE(seqKey(sh.prefix, after+1)); valid && len(recs) < limit; valid = it.Next() {
		k := it.Key()
		if len(k) != len(sh.lower) {
			return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: %w: record key %x", stream, shardID, errCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: %w", stream, shardID, err)
		}
		arrival, pk, d, err := decodeRecord(v)
		if err != nil {
			return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s sequence %d: %w", stream, shardID, keySeq(k), err)
		}
		if len(recs) > 0 && size+len(d) > maxBytes {
			break
		}
		size += len(d)
		data = append(data, d...)
		pks = append(pks, pk...)
		ends = append(ends, [2]int{len(data), len(pks)})
		seqs = idem.AppendSequence(seqs, keySeq(k))
		recs = append(recs, idem.Record{Stream: st.name, ShardID: sh.id, ArrivalTime: time.Unix(0, arrival)})
	}
	if err := it.Error(); err != nil {
		return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: %w", stream, shardID, err)
	}
	if len(recs) == 0 || keySeqOf(seqs[:seqWidth]) != after+1 {
		trimmed, err := sh.horizon(it)
		if err != nil {
			return source.ReadResult{}, fmt.Errorf("pebbledb: read stream %q shard %s: %w", stream, shardID, err)
		}
		if trimmed > after {
			res.Lost, res.Trimmed = trimmed-after, idem.SequenceOf(trimmed)
		}
	}
	keys, seqStr := string(pks), string(seqs)
	var d0, p0 int
	for i := range recs {
		d1, p1 := ends[i][0], ends[i][1]
		recs[i].Data = data[d0:d1:d1]
		recs[i].PartitionKey = keys[p0:p1]
		recs[i].Sequence = idem.Sequence(seqStr[i*seqWidth : (i+1)*seqWidth])
		d0, p0 = d1, p1
	}
	res.Records = recs
	return res, nil
}

// Wait returns nil when the shard's visible mark is above after, when the
// poll interval passed, or ctx.Err() when ctx is done; ErrClosed once the DB
// is closed. It starts no goroutine: waiters share a channel per shard that
// every advance closes and replaces.
//
// Errors: ErrStreamNotFound, ErrShardNotFound, ErrClosed, ctx.Err().
func (db *DB) Wait(ctx context.Context, stream, shardID string, afterSeq idem.Sequence) error {
	after, err := position(stream, shardID, afterSeq)
	if err != nil {
		return err
	}
	st, sh, err := db.shardOf(stream, shardID)
	if err != nil {
		return err
	}
	st.mu.Lock()
	ch := sh.notify
	st.mu.Unlock()
	// Read visible after taking the channel: an advance in between closed
	// it, one before is seen here.
	if sh.visible.Load() > after {
		return nil
	}
	t := time.NewTimer(db.opts.pollInterval)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-db.done:
		return ErrClosed
	}
}

// Start returns where a reader without a checkpoint starts: after the last
// record retention deleted (TrimHorizon), after the newest visible record
// (Latest), or just before the first record that arrived at or after ts
// (AtTimestamp; after the newest if none did).
//
// Errors: ErrStreamNotFound, ErrShardNotFound, ErrClosed, ctx.Err(), and an
// error for an unknown position.
func (db *DB) Start(ctx context.Context, stream, shardID string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	n, err := db.start(ctx, stream, shardID, pos, ts)
	if err != nil || n == 0 {
		return "", err
	}
	return idem.SequenceOf(n), nil
}

func (db *DB) start(ctx context.Context, stream, shardID string, pos source.StartingPosition, ts time.Time) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	release, err := db.enter()
	if err != nil {
		return 0, err
	}
	defer release()
	_, sh, err := db.shardOf(stream, shardID)
	if err != nil {
		return 0, err
	}
	switch pos {
	case source.TrimHorizon:
		return sh.trimmed.Load(), nil
	case source.Latest:
		return sh.visible.Load(), nil
	case source.AtTimestamp:
	default:
		return 0, fmt.Errorf("pebbledb: stream %q shard %s: unknown starting position %q", stream, shardID, pos)
	}
	visible := sh.visible.Load()
	it, err := db.iter(ctx, sh, visible)
	if err != nil {
		return 0, fmt.Errorf("pebbledb: stream %q shard %s: %w", stream, shardID, err)
	}
	defer it.Close()
	trimmed, err := sh.horizon(it)
	if err != nil {
		return 0, fmt.Errorf("pebbledb: stream %q shard %s: %w", stream, shardID, err)
	}
	s, err := sh.firstAtOrAfter(it, trimmed+1, visible, ts.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("pebbledb: stream %q shard %s: %w", stream, shardID, err)
	}
	return s - 1, nil
}

// seqWidth is the length of the embedded stream's sequences: 20 digits.
const seqWidth = 20

// keySeqOf parses one 20-digit sequence that AppendSequence wrote.
func keySeqOf(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		n = n*10 + uint64(c-'0')
	}
	return n
}

// position converts a reader's position to the embedded stream's numbering.
func position(stream, shardID string, s idem.Sequence) (uint64, error) {
	n, ok := s.Uint64()
	if !ok {
		return 0, fmt.Errorf("pebbledb: stream %q shard %s: position %q is not a sequence of this stream", stream, shardID, s)
	}
	return n, nil
}
