package kinesis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

const (
	// fetchLimit is the Limit of every GetRecords call: Kinesis' maximum,
	// as Lambda asks. Read hands the records out in the caller's batches.
	fetchLimit = 10000
	// maxCursors is how many positions per shard keep their iterator and
	// buffer: one per mapping reading the shard, and a spare.
	maxCursors = 4
	// callsPerRead bounds the GetRecords calls of one Read that find
	// nothing to return (Kinesis answers empty while an iterator crosses a
	// gap), so that Read never hangs.
	callsPerRead = 3
	// iteratorTTL is how long Read uses a shard iterator: Kinesis expires
	// them after five minutes.
	iteratorTTL = 4*time.Minute + 30*time.Second
)

// shard is the state of one shard: its cursors, the newest sequence seen,
// and when the next GetRecords call is allowed.
type shard struct {
	id string

	mu      sync.Mutex // guards the fields below, and each cursor's key
	info    ShardInfo
	cursors []*cursor // least recently used first
	latest  idem.Sequence
	nextGet time.Time
}

func newShard(info ShardInfo) *shard { return &shard{id: info.ID, info: info} }

func (sh *shard) setInfo(info ShardInfo) {
	sh.mu.Lock()
	sh.info = info
	sh.mu.Unlock()
}

func (sh *shard) getInfo() ShardInfo {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.info
}

func (sh *shard) noteLatest(seq idem.Sequence) {
	sh.mu.Lock()
	sh.latest = idem.MaxSequence(sh.latest, seq)
	sh.mu.Unlock()
}

func (sh *shard) getLatest() idem.Sequence {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.latest
}

// reserve returns when the next GetRecords call on the shard may be made,
// and books the slot after it.
func (sh *shard) reserve(interval time.Duration) time.Time {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot := time.Now()
	if sh.nextGet.After(slot) {
		slot = sh.nextGet
	}
	sh.nextGet = slot.Add(interval)
	return slot
}

// cursor is a reader's place in a shard: the records fetched and not yet
// returned, and the iterator after them.
type cursor struct {
	mu sync.Mutex // held by the Read using the cursor, across its calls

	key  idem.Sequence // the position the cursor continues from; guarded by shard.mu
	dead bool          // evicted: not found by positions anymore; guarded by shard.mu

	iter   *string // iterator after buf; nil when none was made yet, or ended
	iterAt time.Time
	ended  bool           // a closed shard read to its end
	buf    []types.Record // fetched, above key, in order
	// fetched is the newest sequence fetched (or the position the iterator
	// was made at): at the tip, the shard's newest record.
	fetched idem.Sequence

	// verify: the next record fetched is checked against expect, the
	// position the iterator was made for, to detect records lost to
	// retention. strict: the iterator was made at TRIM_HORIZON because
	// Kinesis refused expect (refusal is err), so records at or below expect
	// mean expect is not a position of this shard.
	verify   bool
	expect   idem.Sequence
	strict   bool
	refusal  error
	sawBelow bool // records at or below expect were seen: expect is retained
	trimJump bool // the cursor already went to TRIM_HORIZON once
	lost     uint64
	trimmed  idem.Sequence
}

// cursorFor returns the cursor continuing from after, locked, making one
// when none does.
func (sh *shard) cursorFor(after idem.Sequence) *cursor {
	for {
		sh.mu.Lock()
		var c *cursor
		for i, cc := range sh.cursors {
			if cc.key == after {
				c = cc
				sh.cursors = append(append(sh.cursors[:i:i], sh.cursors[i+1:]...), cc)
				break
			}
		}
		if c == nil {
			c = &cursor{key: after}
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
// recently used beyond maxCursors; sh.mu is held.
func (sh *shard) addLocked(c *cursor) {
	for i, cc := range sh.cursors {
		if cc.key == c.key {
			cc.dead = true
			sh.cursors = append(sh.cursors[:i:i], sh.cursors[i+1:]...)
			break
		}
	}
	sh.cursors = append(sh.cursors, c)
	for len(sh.cursors) > maxCursors {
		sh.cursors[0].dead = true
		sh.cursors = sh.cursors[1:]
	}
}

// install makes c the cursor for key (Start prepared it).
func (sh *shard) install(c *cursor, key idem.Sequence) {
	sh.mu.Lock()
	c.key = key
	sh.addLocked(c)
	sh.mu.Unlock()
}

func (sh *shard) setKey(c *cursor, key idem.Sequence) {
	sh.mu.Lock()
	c.key = key
	sh.mu.Unlock()
}

// buffered reports whether a cursor at after holds records to return.
func (sh *shard) buffered(after idem.Sequence) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, c := range sh.cursors {
		if c.key == after && c.mu.TryLock() {
			n := len(c.buf)
			c.mu.Unlock()
			if n > 0 {
				return true
			}
		}
	}
	return false
}

// Read returns up to limit records of shard above after, at most maxBytes
// of data (at least one record when there is one). Records fetched beyond
// those stay buffered for the Read that continues from the last record
// returned. Throttling that outlasts a few retries returns no records and no
// error. The records' Data belongs to the SDK's response and is not reused.
func (s *Source) Read(ctx context.Context, shardID string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	if !after.Valid() {
		return source.ReadResult{}, fmt.Errorf("kinesis: stream %q shard %s: position %q is not a sequence number", s.stream, shardID, after)
	}
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	if pastEnd(sh.getInfo(), after) {
		// A closed shard read (or lost) to its end: nothing to ask Kinesis,
		// which may have expired the shard by now.
		return source.ReadResult{Latest: sh.getLatest()}, nil
	}
	c := sh.cursorFor(after)
	defer c.mu.Unlock()

	if err := s.fill(ctx, sh, c, after); err != nil {
		if errors.Is(err, errThrottled) {
			return source.ReadResult{Latest: sh.getLatest()}, nil
		}
		// The cursor's state is unknown: start afresh next time.
		c.iter, c.buf = nil, nil
		return source.ReadResult{}, err
	}

	if limit < 1 {
		limit = 1
	}
	n, size := 0, 0
	for n < len(c.buf) && n < limit {
		d := len(c.buf[n].Data)
		if n > 0 && size+d > maxBytes {
			break
		}
		size += d
		n++
	}
	res := source.ReadResult{Lost: c.lost, Trimmed: c.trimmed}
	c.lost, c.trimmed = 0, ""
	if n > 0 {
		res.Records = make([]idem.Record, n)
		for i, r := range c.buf[:n] {
			res.Records[i] = idem.Record{
				Stream:       s.stream,
				ShardID:      sh.id,
				Sequence:     idem.Sequence(aws.ToString(r.SequenceNumber)),
				PartitionKey: aws.ToString(r.PartitionKey),
				Data:         r.Data,
				ArrivalTime:  aws.ToTime(r.ApproximateArrivalTimestamp),
			}
		}
		clear(c.buf[:n])
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
		}
		sh.setKey(c, res.Records[n-1].Sequence)
	}
	res.Latest = sh.getLatest()
	return res, nil
}

// errThrottled: Kinesis kept throttling; Read returns nothing this time.
var errThrottled = errors.New("kinesis: throttled")

// fill makes sure c holds records to return, fetching with a bounded number
// of GetRecords calls; c may still be empty when the shard has nothing new.
func (s *Source) fill(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	calls := 0
	for len(c.buf) == 0 && !c.ended && calls < callsPerRead {
		if c.iter == nil || time.Since(c.iterAt) > iteratorTTL {
			if err := s.open(ctx, sh, c, after); err != nil {
				return err
			}
			if c.iter == nil {
				return nil // the shard expired: c reports the loss
			}
		}
		calls++
		out, err := s.getRecords(ctx, sh, *c.iter)
		if err != nil {
			if s.expired(sh, c, after, err) {
				return nil
			}
			if expiredIterator(err) {
				s.log.Debug("kinesis: shard iterator expired, getting another", "shard", sh.id)
				c.iter = nil
				continue
			}
			return err
		}
		if err := s.take(sh, c, out); err != nil {
			return err
		}
		if len(c.buf) > 0 {
			break
		}
		if caughtUp(out) {
			// At the tip: nothing is above what was fetched. When nothing
			// at all was, records appended from now on are new, not lost.
			sh.noteLatest(c.fetched)
			if len(out.Records) == 0 {
				c.verify = false
			}
			return nil
		}
		if len(out.Records) > 0 {
			// All at or below the position: read on.
			continue
		}
		behind := aws.ToInt64(out.MillisBehindLatest)
		if retention := s.Retention(); !c.trimJump && !c.ended && retention > 0 && time.Duration(behind)*time.Millisecond >= retention {
			// The iterator is older than the retention period: it is
			// walking through trimmed data, one empty answer at a time.
			// Jump to the oldest record kept, and check for loss there.
			s.log.Debug("kinesis: iterator behind the retention period, moving to TRIM_HORIZON", "shard", sh.id, "millisBehindLatest", behind)
			it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
			if err != nil {
				return err
			}
			c.iter, c.iterAt, c.trimJump = it, time.Now(), true
			if !c.verify {
				c.verify, c.expect, c.sawBelow, c.strict = true, c.fetched, false, false
			}
		}
	}
	return nil
}

// pastEnd reports whether after is at or beyond the ending sequence number
// of a closed shard: no record of the shard is above it.
func pastEnd(info ShardInfo, after idem.Sequence) bool {
	return info.Closed() && after.Compare(info.EndingSequence) >= 0
}

// expired handles a ResourceNotFoundException for the iterator of a shard
// listed earlier as closed: Kinesis dropped the shard at the end of its
// retention, with whatever a reader at after had not read yet. That is a
// loss, never the shard's normal end: c reports one lost record (Kinesis
// no longer says how many) with Trimmed at the shard's ending sequence
// number, from which Read returns nothing and Finished is true. It reports
// whether it handled err.
func (s *Source) expired(sh *shard, c *cursor, after idem.Sequence, err error) bool {
	info := sh.getInfo()
	if !errors.Is(err, source.ErrShardNotFound) || !info.Closed() {
		return false
	}
	s.log.Warn("kinesis: closed shard expired before it was read to its end; records may have been lost to retention", "shard", sh.id, "after", after, "ending", info.EndingSequence)
	// No iterator: a Read from after again (its loss not committed) asks
	// Kinesis again, and reports the loss again.
	c.iter, c.buf, c.ended, c.verify = nil, nil, false, false
	c.lost, c.trimmed = 1, info.EndingSequence
	return true
}

// open gets an iterator for c at after: TRIM_HORIZON for "", otherwise
// AT_SEQUENCE_NUMBER after, so that the first record tells whether after
// is still retained. A closed shard that Kinesis no longer knows has
// expired: see expired.
func (s *Source) open(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	err := s.openIter(ctx, sh, c, after)
	if err != nil && s.expired(sh, c, after, err) {
		return nil
	}
	return err
}

func (s *Source) openIter(ctx context.Context, sh *shard, c *cursor, after idem.Sequence) error {
	c.buf, c.ended, c.fetched = nil, false, after
	c.verify, c.expect, c.strict, c.refusal, c.sawBelow, c.trimJump = false, "", false, nil, false, false
	if after == "" {
		it, err := s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
		if err != nil && invalidArgument(err) {
			return s.wrap(err, sh.id, "getting an iterator")
		}
		if err != nil {
			return err
		}
		c.iter, c.iterAt = it, time.Now()
		return nil
	}
	c.verify, c.expect = true, after
	it, err := s.iterator(ctx, sh, types.ShardIteratorTypeAtSequenceNumber, after)
	if err != nil && invalidArgument(err) {
		// A position one below a record (AT_TIMESTAMP, Trimmed) need not
		// be a number Kinesis accepts; the record's own is.
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeAtSequenceNumber, increment(after))
	}
	if err != nil && invalidArgument(err) {
		// Kinesis refuses the position: it may have been trimmed. Start at
		// the oldest record kept, which must be above it.
		s.log.Debug("kinesis: position refused, reading from TRIM_HORIZON", "shard", sh.id, "after", after, "err", err)
		c.strict, c.refusal = true, err
		it, err = s.iterator(ctx, sh, types.ShardIteratorTypeTrimHorizon, "")
	}
	if err != nil && invalidArgument(err) {
		return s.wrap(err, sh.id, "getting an iterator")
	}
	if err != nil {
		return err
	}
	c.iter, c.iterAt = it, time.Now()
	return nil
}

// take adds a GetRecords answer to c: it advances the iterator, and while
// c.verify drops records at or below c.expect and decides whether records
// were lost before the first one above.
func (s *Source) take(sh *shard, c *cursor, out *kinesis.GetRecordsOutput) error {
	c.iter, c.iterAt = out.NextShardIterator, time.Now()
	if c.iter == nil {
		c.ended = true
	}
	recs := out.Records
	if len(recs) == 0 {
		return nil
	}
	last := idem.Sequence(aws.ToString(recs[len(recs)-1].SequenceNumber))
	c.fetched = idem.MaxSequence(c.fetched, last)
	sh.noteLatest(last)
	if c.verify {
		i := 0
		for i < len(recs) && idem.Sequence(aws.ToString(recs[i].SequenceNumber)).Compare(c.expect) <= 0 {
			i++
		}
		if i > 0 {
			if c.strict {
				c.ended, c.iter = false, nil
				return fmt.Errorf("kinesis: stream %q shard %s: position %q is not a sequence number of the shard: %w", s.stream, sh.id, c.expect, c.refusal)
			}
			c.sawBelow = true
		}
		recs = recs[i:]
		if len(recs) == 0 {
			return nil
		}
		c.verify = false
		first := idem.Sequence(aws.ToString(recs[0].SequenceNumber))
		if !c.sawBelow && first.Compare(increment(c.expect)) != 0 {
			c.lost, c.trimmed = 1, decrement(first)
			s.log.Warn("kinesis: records may have been lost to retention", "shard", sh.id, "after", c.expect, "firstKept", first)
		}
	}
	c.buf = append(c.buf, recs...)
	return nil
}

// iterator gets a shard iterator, retrying when throttled.
func (s *Source) iterator(ctx context.Context, sh *shard, typ types.ShardIteratorType, seq idem.Sequence) (*string, error) {
	in := &kinesis.GetShardIteratorInput{
		StreamName:        aws.String(s.stream),
		ShardId:           aws.String(sh.id),
		ShardIteratorType: typ,
	}
	if seq != "" {
		in.StartingSequenceNumber = aws.String(string(seq))
	}
	return s.iteratorFor(ctx, sh, in)
}

func (s *Source) iteratorFor(ctx context.Context, sh *shard, in *kinesis.GetShardIteratorInput) (*string, error) {
	var out *kinesis.GetShardIteratorOutput
	err := s.retry(ctx, sh.id, "GetShardIterator", func() error {
		var err error
		out, err = s.api.GetShardIterator(ctx, in)
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && invalidArgument(err):
		return nil, err // open decides; wrapped by its caller
	case err != nil:
		return nil, s.wrap(err, sh.id, "getting a "+string(in.ShardIteratorType)+" iterator")
	case out.ShardIterator == nil:
		return nil, fmt.Errorf("kinesis: stream %q shard %s: GetShardIterator returned no iterator", s.stream, sh.id)
	}
	return out.ShardIterator, nil
}

// getRecords makes one GetRecords call in the shard's next free slot,
// retrying when throttled.
func (s *Source) getRecords(ctx context.Context, sh *shard, iter string) (*kinesis.GetRecordsOutput, error) {
	var out *kinesis.GetRecordsOutput
	err := s.retry(ctx, sh.id, "GetRecords", func() error {
		if err := s.sleep(ctx, time.Until(sh.reserve(s.poll))); err != nil {
			return err
		}
		var err error
		out, err = s.api.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(iter), Limit: aws.Int32(fetchLimit)})
		return err
	})
	switch {
	case err != nil && throttled(err):
		return nil, fmt.Errorf("%w: %w", errThrottled, err)
	case err != nil && expiredIterator(err):
		return nil, err
	case err != nil:
		return nil, s.wrap(err, sh.id, "getting records")
	}
	return out, nil
}

// Wait returns at once when a record above after is known (fetched, or
// buffered for a Read from after); otherwise it sleeps until the shard's
// next GetRecords call is allowed (the poll interval), ctx is done, or the
// Source is closed. Kinesis cannot notify a poller of new records.
func (s *Source) Wait(ctx context.Context, shardID string, after idem.Sequence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	s.mu.Lock()
	sh := s.shards[shardID]
	s.mu.Unlock()
	if sh == nil {
		return s.sleep(ctx, s.poll)
	}
	if sh.getLatest().Compare(after) > 0 || sh.buffered(after) {
		return nil
	}
	sh.mu.Lock()
	d := time.Until(sh.nextGet)
	sh.mu.Unlock()
	if d <= 0 {
		d = s.poll
	}
	return s.sleep(ctx, d)
}

// Finished reports whether a reader at after has read all of shard: the
// shard is closed (a reshard replaced it by its children) and holds no
// record above after, or after is at or beyond its ending sequence number
// (where a Read that reported the shard expired leaves its reader). A
// shard that expired with records above after is not finished until a
// Read reported the loss. The engine then starts reading the children. It
// makes the same calls as Read, and like Read returns false, not an error,
// when throttled.
func (s *Source) Finished(ctx context.Context, shardID string, after idem.Sequence) (bool, error) {
	sh, err := s.shard(ctx, shardID)
	if err != nil {
		return false, err
	}
	if pastEnd(sh.getInfo(), after) {
		return true, nil
	}
	if !sh.getInfo().Closed() {
		if _, err := s.ShardInfos(ctx); err != nil {
			return false, err
		}
		if !sh.getInfo().Closed() {
			return false, nil
		}
	}
	c := sh.cursorFor(after)
	defer c.mu.Unlock()
	for range callsPerRead {
		if err := s.fill(ctx, sh, c, after); err != nil {
			if errors.Is(err, errThrottled) {
				return false, nil
			}
			c.iter, c.buf = nil, nil
			return false, err
		}
		if len(c.buf) > 0 || c.lost > 0 {
			// Records to read, or a loss (an expired shard) that a Read
			// must report first.
			return false, nil
		}
		if c.ended {
			return true, nil
		}
	}
	return false, nil
}
