package shards

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idem-run/idem"
)

// MaxCursors is how many positions per shard keep their iterator and
// buffer: one per mapping reading the shard, and a spare.
const MaxCursors = 4

// Shard is one shard's reading state: its Info, its Cursors, the newest
// sequence seen, and when the next GetRecords call on it is allowed.
type Shard[R any] struct {
	// ID is the shard's ID.
	ID string

	mu       sync.Mutex // guards the fields below, and each cursor's key and dead
	info     Info
	cursors  []*Cursor[R] // least recently used first
	latest   idem.Sequence
	nextCall time.Time
}

// Info returns the shard's latest listing.
func (sh *Shard[R]) Info() Info {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.info
}

// SetInfo records a new listing of the shard.
func (sh *Shard[R]) SetInfo(info Info) {
	sh.mu.Lock()
	sh.info = info
	sh.mu.Unlock()
}

// NoteLatest records that a record at seq was fetched.
func (sh *Shard[R]) NoteLatest(seq idem.Sequence) {
	sh.mu.Lock()
	sh.latest = idem.MaxSequence(sh.latest, seq)
	sh.mu.Unlock()
}

// Latest is the newest sequence fetched from the shard: its newest record
// whenever a reader was at its tip.
func (sh *Shard[R]) Latest() idem.Sequence {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.latest
}

// Reserve returns when the next GetRecords call on the shard may be made,
// and books the slot interval after it: both services limit the calls a
// shard takes a second, shared by every reader.
func (sh *Shard[R]) Reserve(interval time.Duration) time.Time {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot := time.Now()
	if sh.nextCall.After(slot) {
		slot = sh.nextCall
	}
	sh.nextCall = slot.Add(interval)
	return slot
}

// NextCall is when the next GetRecords call on the shard is allowed.
func (sh *Shard[R]) NextCall() time.Time {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.nextCall
}

// Cursor returns the cursor continuing from after, locked (Unlock it),
// making one when none does.
func (sh *Shard[R]) Cursor(after idem.Sequence) *Cursor[R] {
	for {
		sh.mu.Lock()
		var c *Cursor[R]
		for i, cc := range sh.cursors {
			if cc.key == after {
				c = cc
				sh.cursors = append(append(sh.cursors[:i:i], sh.cursors[i+1:]...), cc)
				break
			}
		}
		if c == nil {
			c = &Cursor[R]{key: after}
			sh.addLocked(c)
		}
		sh.mu.Unlock()

		c.mu.Lock()
		sh.mu.Lock()
		ok := c.key == after && !c.dead
		sh.mu.Unlock()
		if ok {
			return c
		}
		// Another Read moved it on meanwhile.
		c.mu.Unlock()
	}
}

// addLocked adds c as the most recently used cursor, evicting the least
// recently used beyond MaxCursors; sh.mu is held.
func (sh *Shard[R]) addLocked(c *Cursor[R]) {
	for i, cc := range sh.cursors {
		if cc.key == c.key {
			cc.dead = true
			sh.cursors = append(sh.cursors[:i:i], sh.cursors[i+1:]...)
			break
		}
	}
	sh.cursors = append(sh.cursors, c)
	for len(sh.cursors) > MaxCursors {
		sh.cursors[0].dead = true
		sh.cursors = sh.cursors[1:]
	}
}

// Install makes c, which a source prepared (Start read the shard's tail
// with it), the cursor continuing from key.
func (sh *Shard[R]) Install(c *Cursor[R], key idem.Sequence) {
	sh.mu.Lock()
	c.key = key
	sh.addLocked(c)
	sh.mu.Unlock()
}

// Move makes the locked cursor c continue from key: the last record a Read
// handed out.
func (sh *Shard[R]) Move(c *Cursor[R], key idem.Sequence) {
	sh.mu.Lock()
	c.key = key
	sh.mu.Unlock()
}

// Buffered reports whether a cursor at after holds records to return.
func (sh *Shard[R]) Buffered(after idem.Sequence) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, c := range sh.cursors {
		if c.key == after && c.mu.TryLock() {
			n := len(c.Buf)
			c.mu.Unlock()
			if n > 0 {
				return true
			}
		}
	}
	return false
}

// Cursor is a reader's place in a shard: the records fetched and not yet
// handed out, and the iterator after them. The Read holding it (Shard.Cursor
// locks it) owns its fields.
type Cursor[R any] struct {
	mu sync.Mutex

	key  idem.Sequence // the position the cursor continues from; guarded by Shard.mu
	dead bool          // evicted: not found by positions anymore; guarded by Shard.mu

	// Iter is the iterator after Buf; nil when none was made yet, it
	// expired, or the shard ended.
	Iter *string
	// IterAt is when Iter was made: services expire iterators.
	IterAt time.Time
	// Ended: a closed shard was read to its end (GetRecords returned no
	// next iterator).
	Ended bool
	// Buf holds the records fetched above the cursor's position, in order.
	Buf []R
	// Fetched is the newest sequence fetched, or the position the
	// iterator was made at.
	Fetched idem.Sequence
	// Jumped: the cursor moved to TRIM_HORIZON once since it was opened,
	// because its position was behind the retention period; it does not
	// jump again.
	Jumped bool

	// The next records fetched are checked against expect, the position
	// the iterator was made for, to detect records lost to retention.
	// strict: the iterator was made at TRIM_HORIZON because the service
	// refused expect (refusal is why), so records at or below expect mean
	// expect is not a position of this shard.
	verify   bool
	expect   idem.Sequence
	strict   bool
	refusal  error
	sawBelow bool // records at or below expect were seen: expect is retained

	lost    uint64
	trimmed idem.Sequence
}

// Unlock lets other Reads use the cursor.
func (c *Cursor[R]) Unlock() { c.mu.Unlock() }

// Open prepares the cursor for an iterator made at after: nothing buffered,
// no check pending.
func (c *Cursor[R]) Open(after idem.Sequence) {
	c.Iter, c.Buf, c.Ended, c.Fetched, c.Jumped = nil, nil, false, after, false
	c.verify, c.expect, c.strict, c.refusal, c.sawBelow = false, "", false, nil, false
}

// SetIter makes it, just returned by the service, the cursor's iterator.
func (c *Cursor[R]) SetIter(it *string) { c.Iter, c.IterAt = it, time.Now() }

// Stale reports whether the cursor needs a new iterator before it reads:
// it has none, or its iterator is older than ttl (a little less than the
// service's expiry, so that a call in flight never carries an expired one).
// A stale cursor is opened again at its position, the checkpoint.
func (c *Cursor[R]) Stale(ttl time.Duration) bool {
	return !c.Ended && (c.Iter == nil || time.Since(c.IterAt) > ttl)
}

// Drop forgets the cursor's iterator and buffer after an error: its state
// is unknown, and the next Read starts afresh.
func (c *Cursor[R]) Drop() { c.Iter, c.Buf = nil, nil }

// Expect makes the next records fetched be checked against pos, the
// position the iterator was asked for: if the first record above it is
// not the next sequence number, records may have been lost.
func (c *Cursor[R]) Expect(pos idem.Sequence) {
	c.verify, c.expect, c.sawBelow, c.strict, c.refusal = true, pos, false, false, nil
}

// ExpectStrict is Expect for an iterator made at TRIM_HORIZON because the
// service refused pos (refusal): records at or below pos then mean pos is
// no position of the shard, an error.
func (c *Cursor[R]) ExpectStrict(pos idem.Sequence, refusal error) {
	c.Expect(pos)
	c.strict, c.refusal = true, refusal
}

// Verifying reports whether a check set by Expect is pending.
func (c *Cursor[R]) Verifying() bool { return c.verify }

// StopVerifying cancels a pending check: the reader is at the tip, and
// records appended from now on are new, not lost.
func (c *Cursor[R]) StopVerifying() { c.verify = false }

// ErrNotInShard is returned by Add when a position the service refused
// turns out to be below records of the shard: it is no position of it.
var ErrNotInShard = errors.New("position is not a sequence number of the shard")

// Add takes a GetRecords answer: next, the iterator after it (nil at the
// end of a closed shard), and its records, in order, whose sequences seq
// gives. It notes the newest record in sh, and while a check is pending
// drops records at or below the expected position and decides whether
// records were lost before the first one above: then lost is true, and
// Loss reports one lost record below that one. The error wraps
// ErrNotInShard.
func (c *Cursor[R]) Add(sh *Shard[R], next *string, recs []R, seq func(R) idem.Sequence) (lost bool, err error) {
	c.SetIter(next)
	if next == nil {
		c.Ended = true
	}
	if len(recs) == 0 {
		return false, nil
	}
	last := seq(recs[len(recs)-1])
	c.Fetched = idem.MaxSequence(c.Fetched, last)
	sh.NoteLatest(last)
	if c.verify {
		i := 0
		for i < len(recs) && seq(recs[i]).Compare(c.expect) <= 0 {
			i++
		}
		if i > 0 {
			if c.strict {
				c.Ended, c.Iter = false, nil
				return false, fmt.Errorf("position %q: %w: %w", c.expect, ErrNotInShard, c.refusal)
			}
			c.sawBelow = true
		}
		recs = recs[i:]
		if len(recs) == 0 {
			return false, nil
		}
		c.verify = false
		first := seq(recs[0])
		if !c.sawBelow && first.Compare(Increment(c.expect)) != 0 {
			c.lost, c.trimmed = 1, Decrement(first)
			lost = true
		}
	}
	c.Buf = append(c.Buf, recs...)
	return lost, nil
}

// ShardExpired records that the closed shard info was dropped by its
// service at the end of its retention, with whatever a reader at the
// cursor's position had not read yet: one lost record (the service no
// longer says how many) with Trimmed at the shard's ending sequence
// number, from which Read returns nothing and Finished is true. The
// cursor keeps no iterator: a Read from the position again (its loss not
// committed) asks the service again, and reports the loss again.
func (c *Cursor[R]) ShardExpired(info Info) {
	c.Iter, c.Buf, c.Ended, c.verify = nil, nil, false, false
	c.lost, c.trimmed = 1, info.EndingSequence
}

// Loss returns, once, the loss found since the last call: how many records
// (0 or 1: the services do not say how many) and the sequence of the last
// one lost, for source.ReadResult.
func (c *Cursor[R]) Loss() (uint64, idem.Sequence) {
	n, t := c.lost, c.trimmed
	c.lost, c.trimmed = 0, ""
	return n, t
}

// PendingLoss reports whether a loss waits to be reported by a Read.
func (c *Cursor[R]) PendingLoss() bool { return c.lost > 0 }

// Take hands out up to limit buffered records, stopping before their sizes
// exceed maxBytes but taking at least one, and moves the cursor (in sh) to
// the last one taken, whose sequence seq gives.
func (c *Cursor[R]) Take(sh *Shard[R], limit, maxBytes int, size func(R) int, seq func(R) idem.Sequence) []R {
	if limit < 1 {
		limit = 1
	}
	n, total := 0, 0
	for n < len(c.Buf) && n < limit {
		d := size(c.Buf[n])
		if n > 0 && total+d > maxBytes {
			break
		}
		total += d
		n++
	}
	if n == 0 {
		return nil
	}
	out := make([]R, n)
	copy(out, c.Buf[:n])
	clear(c.Buf[:n])
	c.Buf = c.Buf[n:]
	if len(c.Buf) == 0 {
		c.Buf = nil
	}
	sh.Move(c, seq(out[n-1]))
	return out
}
