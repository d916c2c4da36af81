package shards

import (
	"errors"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

// Records says how a source's cursors measure and hand out the records
// they buffer, of type R.
type Records[R any] struct {
	// Seq is a record's sequence number.
	Seq func(R) idem.Sequence
	// Size is what a record counts against Read's maxBytes.
	Size func(R) int
	// Record makes a record of shard shardID the idem.Record Read returns.
	Record func(shardID string, r R) idem.Record
}

// Read is a source's Read from after in sh, once the source checked after
// and found sh. It returns up to limit records above after, at most
// maxBytes of data (at least one record when there is one), that fill (the
// source's bounded GetRecords calls) left in the cursor at after, and the
// loss the cursor found; records beyond those stay buffered for the Read
// that continues from the last one. A closed shard read (or lost) to its
// end is not asked again: its service may have dropped it by now. fill
// failing with an error that wraps throttled returns no records and no
// error, since both services throttle routinely and the next poll tries
// again; any other error leaves the cursor's state unknown, and the next
// Read starts afresh.
func (sh *Shard[R]) Read(after idem.Sequence, limit, maxBytes int, throttled error, fill func(*Cursor[R]) error, recs Records[R]) (source.ReadResult, error) {
	if sh.Info().Ended(after) {
		return source.ReadResult{Latest: sh.Latest()}, nil
	}
	c := sh.Cursor(after)
	defer c.Unlock()
	if ok, err := c.fill(throttled, fill); err != nil {
		return source.ReadResult{}, err
	} else if !ok {
		return source.ReadResult{Latest: sh.Latest()}, nil
	}
	var res source.ReadResult
	res.Lost, res.Trimmed = c.Loss()
	if taken := c.Take(sh, limit, maxBytes, recs.Size, recs.Seq); len(taken) > 0 {
		res.Records = make([]idem.Record, len(taken))
		for i, r := range taken {
			res.Records[i] = recs.Record(sh.ID, r)
		}
	}
	res.Latest = sh.Latest()
	return res, nil
}

// ReadToEnd is the end of a source's Finished for the locked cursor c of a
// closed shard: it reports whether, within tries calls of fill, GetRecords
// answered no next iterator with no record above c's position and no loss
// left for a Read to report first (an expired shard). Like Read, it
// answers false, not an error, when fill was throttled.
func (c *Cursor[R]) ReadToEnd(tries int, throttled error, fill func(*Cursor[R]) error) (bool, error) {
	for range tries {
		if ok, err := c.fill(throttled, fill); !ok {
			return false, err
		}
		if len(c.Buf) > 0 || c.PendingLoss() {
			return false, nil
		}
		if c.Ended {
			return true, nil
		}
	}
	return false, nil
}

// fill calls fill for c and reports whether it succeeded: an error that
// wraps throttled is reported as no success and no error, and any other
// drops c's iterator and buffer, whose state is then unknown.
func (c *Cursor[R]) fill(throttled error, fill func(*Cursor[R]) error) (bool, error) {
	err := fill(c)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, throttled):
		return false, nil
	}
	c.Drop()
	return false, err
}
