package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/source"
)

const (
	// maxTokenPulls bounds the pulls of one Read of a token-partitioned
	// shard that finds none of its messages: a Read returns in bounded time
	// and Wait returns at once while the scan has more to do.
	maxTokenPulls = 16
	// perMessageOverhead is what a pull's max_bytes allows per message
	// beyond its data: the server counts the subject it delivers to, the
	// ack reply subject and the headers.
	perMessageOverhead = 512
	tailBatch          = 4096
	// raceWait is how long a second pull lets the server wait for a
	// message the stream holds but the consumer has not counted yet.
	raceWait     = 250 * time.Millisecond
	maxTailPulls = 8
)

// cursor is a shard's read position: a consumer delivering the stream from
// scanned+1, and what it delivered that no Read has returned yet.
//
// Invariant: every message of the shard with a sequence in (pos, scanned]
// is in queue, or lies in a gap of queue (sequences the consumer skipped
// because they were gone, or for a filtered shard, not the shard's). A Read
// after a position in [pos, scanned] continues from the cursor; any other
// position starts a new one.
type cursor struct {
	valid   bool
	cons    string // consumer name; "" when it must be created at scanned+1
	cseq    uint64 // consumer sequence of the last delivery: a jump means a lost delivery
	pos     uint64
	scanned uint64
	more    bool // the last pull stopped before the consumer ran out
	queue   []entry
	maxRec  uint64 // the highest sequence of the shard's records seen
	// tip is a lower bound of the stream's last sequence from the last
	// delivery: its sequence plus the messages pending after it.
	tip uint64

	need, needBytes int // the last Read's limits, for Wait's prefetch
}

// entry is a record, or a gap: sequences from lo (to hi, or open-ended while
// hi is 0) that the consumer skipped. The next stream Info resolves a gap:
// the part below the stream's first sequence was removed unread, and is
// reported as lost (trimmed is its last sequence); a gap with no such part
// is dropped.
type entry struct {
	seq uint64 // a record's stream sequence; 0 for a gap
	msg *nats.Msg
	ts  int64

	lo, hi   uint64
	resolved bool
	trimmed  uint64
}

func (c *cursor) covers(after uint64) bool {
	return c.valid && after >= c.pos && after <= c.scanned
}

// advance moves pos to after, which covers holds, dropping what lies at or
// below it.
func (c *cursor) advance(after uint64) {
	c.pos = after
	q := c.queue[:0]
	for _, e := range c.queue {
		switch {
		case e.seq != 0:
			if e.seq <= after {
				continue
			}
		case e.resolved && e.trimmed <= after:
			continue
		default:
			e.lo = max(e.lo, after+1)
			if e.hi != 0 && e.lo > e.hi {
				continue
			}
		}
		q = append(q, e)
	}
	clear(c.queue[len(q):])
	c.queue = q
}

func (c *cursor) openGap(lo uint64) {
	if n := len(c.queue); n > 0 {
		if e := c.queue[n-1]; e.seq == 0 && !e.resolved && e.hi == 0 {
			return
		}
	}
	c.queue = append(c.queue, entry{lo: lo})
}

// closeGap ends an open gap before a record at hi+1.
func (c *cursor) closeGap(hi uint64) {
	n := len(c.queue)
	if n == 0 {
		return
	}
	e := &c.queue[n-1]
	if e.seq != 0 || e.resolved || e.hi != 0 {
		return
	}
	if hi < e.lo {
		c.queue = c.queue[:n-1]
		return
	}
	e.hi = hi
}

func (c *cursor) unresolved() bool {
	for _, e := range c.queue {
		if e.seq == 0 && !e.resolved {
			return true
		}
	}
	return false
}

func (c *cursor) recordAbove(after uint64) bool {
	for _, e := range c.queue {
		if e.seq > after {
			return true
		}
	}
	return false
}

// resolve decides the gaps with the stream's first retained sequence.
func (c *cursor) resolve(first uint64) {
	var bound uint64
	if first > 0 {
		bound = first - 1
	}
	q := c.queue[:0]
	for _, e := range c.queue {
		if e.seq == 0 && !e.resolved {
			b := bound
			if e.hi != 0 && e.hi < b {
				b = e.hi
			}
			if e.lo > b {
				continue
			}
			e.resolved, e.trimmed = true, b
			c.scanned = max(c.scanned, b)
		}
		q = append(q, e)
	}
	clear(c.queue[len(q):])
	c.queue = q
}

// position makes sh's cursor continue from after, or starts a new one.
func (s *Source) position(ctx context.Context, sh *shard, after uint64) {
	c := &sh.cur
	if c.covers(after) {
		c.advance(after)
		return
	}
	if c.cons != "" && s.deleteConsumer(ctx, c.cons) != nil {
		s.abandon(c.cons)
	}
	*c = cursor{valid: true, pos: after, scanned: after, maxRec: c.maxRec, tip: c.tip, need: c.need, needBytes: c.needBytes}
}

// owns reports whether a message on subject belongs to sh, among those
// sh's consumer delivers.
func (s *Source) owns(sh *shard, subject string) bool {
	return s.kind != byToken || Partition(subject, s.opt.tokenIndex, s.opt.tokenN) == sh.idx
}

// shardOf returns the index of the shard subject belongs to, or -1.
func (s *Source) shardOf(subject string) int {
	switch s.kind {
	case byToken:
		return Partition(subject, s.opt.tokenIndex, s.opt.tokenN)
	case byFilter:
		for i, sh := range s.shards {
			if matchSubject(sh.filter, subject) {
				return i
			}
		}
		return -1
	}
	return 0
}

// fill pulls from sh's consumer until the queue holds need records or
// needBytes of data, the consumer runs out, or (for a filtered or
// whole-stream shard) after one pull. It reports whether it pulled, and
// whether the consumer said it had nothing more.
//
// The position only moves over messages the consumer delivered: a no-wait
// pull can answer "no messages" for one stored an instant ago (the
// consumer counts new messages asynchronously), so "nothing more" never
// proves that the stream holds nothing up to its last sequence.
func (s *Source) fill(ctx context.Context, sh *shard, need, needBytes int, wait time.Duration) (pulled, drained bool, err error) {
	c := &sh.cur
	recs, size := 0, 0
	for _, e := range c.queue {
		if e.seq != 0 {
			recs++
			size += len(e.msg.Data)
		}
	}
	single := false // the next message alone exceeds the byte allowance
	for pulls := 0; recs < need && size < needBytes && pulls < maxTokenPulls; pulls++ {
		if c.cons == "" {
			name, err := s.createConsumer(ctx, natsjs.ConsumerConfig{
				DeliverPolicy: natsjs.DeliverByStartSequencePolicy,
				OptStartSeq:   c.scanned + 1,
				FilterSubject: sh.filter,
			})
			if err != nil {
				return pulled, false, err
			}
			c.cons, c.cseq = name, 0
		}
		batch, maxBytes := need-recs, needBytes-size+(need-recs)*perMessageOverhead
		if s.kind == byToken {
			batch = min(max(batch*s.opt.tokenN, 64), tailBatch)
			maxBytes *= s.opt.tokenN
		}
		if single {
			batch, maxBytes, single = 1, 0, false
		}
		expected := c.scanned + 1
		got := 0
		end, err := s.pull(ctx, c.cons, batch, maxBytes, wait, func(m *nats.Msg, d delivered) bool {
			if d.cseq != c.cseq+1 || d.seq < expected {
				return false
			}
			got++
			c.cseq = d.cseq
			if d.seq > expected {
				c.openGap(expected)
			}
			expected, c.scanned = d.seq+1, d.seq
			c.tip = max(c.tip, d.seq+d.pending)
			if s.owns(sh, m.Subject) {
				c.closeGap(d.seq - 1)
				c.queue = append(c.queue, entry{seq: d.seq, msg: m, ts: d.ts})
				c.maxRec = max(c.maxRec, d.seq)
				recs++
				size += len(m.Data)
			}
			return true
		})
		pulled = true
		if err != nil {
			// The consumer may have sent what nobody received: start a
			// new one at scanned+1 next time.
			s.abandon(c.cons)
			c.cons = ""
			return pulled, false, err
		}
		switch end {
		case endDrained:
			c.more = false
			c.openGap(expected)
			return pulled, true, nil
		case endGone:
			c.cons = ""
			continue
		case endBroken:
			if s.deleteConsumer(ctx, c.cons) != nil {
				s.abandon(c.cons)
			}
			c.cons = ""
			continue
		case endBytes:
			c.more = true
			single = got == 0
		default:
			c.more = true
		}
		if s.kind != byToken && !single {
			break
		}
	}
	return pulled, false, nil
}

// promote moves sh's position to through, over messages the tail scan saw
// and found none of sh's among: for a filtered shard, whose consumer
// delivers nothing of the other subjects, this is what keeps an idle shard
// from reporting the removal of other shards' messages as a loss.
func (c *cursor) promote(through uint64) {
	if through <= c.scanned {
		return
	}
	c.scanned = through
	if n := len(c.queue); n > 0 {
		if e := &c.queue[n-1]; e.seq == 0 && !e.resolved && e.hi == 0 {
			e.lo = max(e.lo, through+1)
		}
	}
}

// Read returns up to limit records of shard above after, in stream order,
// stopping before maxBytes of data (but returning at least one record when
// there is one). Their Data is each message's own, never reused. A Read
// that continues where the previous one ended (the engine's usual next
// read) costs one pull request and one stream info; any other position
// first makes a new consumer there.
//
// Lost reports messages removed (by the stream's limits, or a purge)
// between after and the first record returned, and Trimmed the last of
// them. For the whole-stream shard Lost is the exact count of removed
// sequences; for a partitioned shard it is 1 when the removed range may
// have held the shard's messages, as JetStream cannot tell which subjects
// removed messages had: the driver reports it only for ranges it has not
// scanned itself, so a running shard reports no false loss for its idle
// periods, but a shard whose position (after a restart) lies behind the
// stream's first sequence reports 1 even if none of its messages were
// removed. Messages deleted one by one inside the retained range are not
// reported.
//
// Latest is the stream's last sequence for the whole-stream shard; for a
// partitioned shard it is the newest sequence of the shard's messages that
// the driver has seen, by scanning the stream's headers from the position
// of the Source's first Read on, bounded per Read: a lower bound while a
// large backlog is being scanned.
func (s *Source) Read(ctx context.Context, shardID string, after idem.Sequence, limit, maxBytes int) (source.ReadResult, error) {
	sh, err := s.shard(shardID)
	if err != nil {
		return source.ReadResult{}, err
	}
	a, err := parseSequence(after)
	if err != nil {
		return source.ReadResult{}, err
	}
	if err := sh.lock(ctx); err != nil {
		return source.ReadResult{}, err
	}
	defer sh.unlock()
	limit = max(limit, 1)
	c := &sh.cur
	s.position(ctx, sh, a)
	c.need, c.needBytes = limit, maxBytes
	pulled, drained, err := s.fill(ctx, sh, limit, maxBytes, 0)
	if err != nil {
		return source.ReadResult{}, err
	}
	// The stream's state resolves gaps and, for partitioned shards, tells
	// the tail scan where to go; a whole-stream read without gaps (the
	// common case while catching up) needs none.
	var info *natsjs.StreamInfo
	var seen uint64
	for attempt := 0; c.unresolved() || (pulled && s.kind != byNothing); attempt++ {
		if info, err = s.info(ctx); err != nil {
			return source.ReadResult{}, err
		}
		last := info.State.LastSeq
		var more bool
		if s.kind == byNothing {
			more = last > c.scanned
		} else {
			var from, to uint64
			if seen, from, to, err = s.advanceTail(ctx, sh, a+1, last); err != nil {
				return source.ReadResult{}, err
			}
			if s.kind == byFilter && seen <= c.scanned && from <= c.scanned+1 {
				c.promote(to)
			}
			more = last > c.scanned && (s.kind == byToken || seen > c.scanned)
		}
		// A pull that found nothing although the stream holds more raced
		// the message's arrival (the consumer counts new messages
		// asynchronously): look once more, letting the server wait a
		// moment for it, and take the stream's state again to resolve what
		// that pull skipped.
		if attempt > 0 || !drained || !more || c.recordAbove(a) {
			break
		}
		if pulled, drained, err = s.fill(ctx, sh, limit, maxBytes, raceWait); err != nil {
			return source.ReadResult{}, err
		}
	}
	if info != nil {
		c.resolve(info.State.FirstSeq)
	}
	res := s.pop(sh, limit, maxBytes)
	res.Latest = s.latest(sh, info, seen)
	return res, nil
}

// pop takes the records a Read returns off sh's queue: a resolved gap
// before the first of them is the loss it reports.
func (s *Source) pop(sh *shard, limit, maxBytes int) source.ReadResult {
	c := &sh.cur
	var res source.ReadResult
	var trimmed uint64
	size, i := 0, 0
	for ; i < len(c.queue); i++ {
		e := &c.queue[i]
		if e.seq == 0 {
			if len(res.Records) > 0 || !e.resolved {
				break
			}
			if s.kind == byNothing {
				res.Lost += e.trimmed - e.lo + 1
			} else {
				res.Lost++
			}
			trimmed = e.trimmed
			continue
		}
		if len(res.Records) >= limit || (len(res.Records) > 0 && size+len(e.msg.Data) > maxBytes) {
			break
		}
		if res.Records == nil {
			res.Records = make([]idem.Record, 0, min(limit, len(c.queue)))
		}
		size += len(e.msg.Data)
		res.Records = append(res.Records, s.record(sh, e))
	}
	if trimmed != 0 {
		res.Trimmed = idem.SequenceOf(trimmed)
	}
	if n := len(res.Records); n > 0 {
		c.pos = c.queue[i-1].seq
	} else if trimmed != 0 && trimmed <= c.scanned {
		c.pos = max(c.pos, trimmed)
	}
	rest := copy(c.queue, c.queue[i:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	return res
}

func (s *Source) record(sh *shard, e *entry) idem.Record {
	key := e.msg.Subject
	if e.msg.Header != nil {
		if v := e.msg.Header.Get(PartitionKeyHeader); v != "" {
			key = v
		}
	}
	return idem.Record{
		Stream:       s.name,
		ShardID:      sh.id,
		Sequence:     idem.SequenceOf(e.seq),
		PartitionKey: key,
		Data:         e.msg.Data,
		ArrivalTime:  time.Unix(0, e.ts),
	}
}

// latest is the Latest of a Read of sh: seen is the tail scan's newest
// sequence of sh's messages, for a partitioned shard.
func (s *Source) latest(sh *shard, info *natsjs.StreamInfo, seen uint64) idem.Sequence {
	if s.kind != byNothing {
		if info == nil {
			seen = s.tailLatest(sh)
		}
		return sequence(max(seen, sh.cur.maxRec))
	}
	last := s.lastSeq.Load()
	if info != nil {
		last = info.State.LastSeq
	} else {
		last = max(last, sh.cur.tip)
	}
	return sequence(max(last, sh.cur.maxRec))
}

// Wait returns when shard may hold a record above after: at once when
// the driver already holds one (or has more of the stream to scan), or when
// a message is published on the shard's subjects, or after the poll
// interval, or when ctx is done (returning its error) or the Source
// closes. It listens before it looks, so a message that arrives in between
// is not missed; what it looks at (one pull after the previous Read's
// position) is kept for the next Read.
func (s *Source) Wait(ctx context.Context, shardID string, after idem.Sequence) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh, err := s.shard(shardID)
	if err != nil {
		return err
	}
	a, err := parseSequence(after)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.opt.pollInterval)
	defer cancel()
	stop := context.AfterFunc(s.done, cancel)
	defer stop()
	if err := sh.lock(wctx); err != nil {
		return s.waitEnd(ctx)
	}
	defer sh.unlock()
	c := &sh.cur
	if !c.covers(a) || c.recordAbove(a) || c.more {
		// Not where the last Read left off, or something to read: the
		// next Read finds out.
		return nil
	}
	subjects := s.wake
	if s.kind == byFilter {
		subjects = []string{sh.filter}
	}
	ch := make(chan *nats.Msg, 1024)
	for _, subj := range subjects {
		sub, err := s.nc.ChanSubscribe(subj, ch)
		if err != nil {
			return fmt.Errorf("jetstream: stream %q shard %q: subscribing to %q: %w", s.name, sh.id, subj, err)
		}
		defer sub.Unsubscribe()
	}
	need, needBytes := c.need, c.needBytes
	if need < 1 {
		need, needBytes = 100, 1<<20
	}
	if _, _, err := s.fill(wctx, sh, need, needBytes, 0); err != nil {
		if wctx.Err() != nil {
			return s.waitEnd(ctx)
		}
		return err
	}
	if c.recordAbove(a) || c.more {
		return nil
	}
	for {
		select {
		case m := <-ch:
			if s.owns(sh, m.Subject) {
				return nil
			}
		case <-wctx.Done():
			return s.waitEnd(ctx)
		}
	}
}

// waitEnd is what Wait returns once its own context is done.
func (s *Source) waitEnd(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Start returns the position a mapping without a checkpoint starts from:
// for TRIM_HORIZON the sequence before the stream's first retained message
// ("" for a stream that never dropped one), for LATEST the stream's last
// sequence (what follows it is new for every shard), for AT_TIMESTAMP the
// sequence before the first of the shard's messages (of any, for a
// token-partitioned shard) that the stream stored at or after ts, by the
// server's clock, or the last sequence if there is none.
func (s *Source) Start(ctx context.Context, shardID string, pos source.StartingPosition, ts time.Time) (idem.Sequence, error) {
	sh, err := s.shard(shardID)
	if err != nil {
		return "", err
	}
	switch pos {
	case source.TrimHorizon, source.Latest, source.AtTimestamp:
	default:
		return "", fmt.Errorf("jetstream: unknown starting position %q", pos)
	}
	if pos == source.AtTimestamp && ts.IsZero() {
		return "", errors.New("jetstream: AT_TIMESTAMP without a timestamp")
	}
	info, err := s.info(ctx)
	if err != nil {
		return "", err
	}
	switch pos {
	case source.TrimHorizon:
		if info.State.FirstSeq == 0 {
			return "", nil
		}
		return sequence(info.State.FirstSeq - 1), nil
	case source.Latest:
		return sequence(info.State.LastSeq), nil
	}
	name, err := s.createConsumer(ctx, natsjs.ConsumerConfig{
		DeliverPolicy: natsjs.DeliverByStartTimePolicy,
		OptStartTime:  &ts,
		FilterSubject: sh.filter,
		HeadersOnly:   true,
	})
	if err != nil {
		return "", err
	}
	defer s.deleteConsumer(context.WithoutCancel(ctx), name)
	var first uint64
	if _, err := s.pull(ctx, name, 1, 0, 0, func(_ *nats.Msg, d delivered) bool {
		first = d.seq
		return true
	}); err != nil {
		return "", err
	}
	if first == 0 {
		return sequence(info.State.LastSeq), nil
	}
	return sequence(first - 1), nil
}

// tail scans the stream's headers for partitioned shards, to know the
// newest sequence of each: JetStream has no cheap "last message matching
// this filter" for a hash partition.
type tail struct {
	sem     chan struct{}
	cons    string
	cseq    uint64
	started bool
	scanned uint64
	from    uint64   // the tail saw every sequence in [from, scanned] that existed
	latest  []uint64 // per shard index
}

func (t *tail) lock(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *tail) unlock() { <-t.sem }

// tailLatest is the newest sequence of sh's messages the tail has seen.
func (s *Source) tailLatest(sh *shard) uint64 {
	t := s.tail
	t.sem <- struct{}{}
	defer t.unlock()
	return t.latest[sh.idx]
}

// advanceTail scans the stream's headers towards target (at most a bounded
// amount per call; the first call starts at start). It returns the newest
// sequence of sh's messages seen, and the range [from, to] of sequences
// the scan saw without a gap.
func (s *Source) advanceTail(ctx context.Context, sh *shard, start, target uint64) (seen, from, to uint64, err error) {
	t := s.tail
	if err := t.lock(ctx); err != nil {
		return 0, 0, 0, err
	}
	defer t.unlock()
	if !t.started {
		t.scanned, t.from, t.started = start-1, start, true
	}
	var wait time.Duration
	for pulls := 0; pulls < maxTailPulls && t.scanned < target; pulls++ {
		if t.cons == "" {
			name, err := s.createConsumer(ctx, natsjs.ConsumerConfig{
				DeliverPolicy: natsjs.DeliverByStartSequencePolicy,
				OptStartSeq:   t.scanned + 1,
				HeadersOnly:   true,
			})
			if err != nil {
				return 0, 0, 0, err
			}
			t.cons, t.cseq = name, 0
		}
		end, err := s.pull(ctx, t.cons, tailBatch, 0, wait, func(m *nats.Msg, d delivered) bool {
			if d.cseq != t.cseq+1 || d.seq <= t.scanned {
				return false
			}
			if d.seq > t.scanned+1 {
				t.from = d.seq
			}
			t.cseq, t.scanned = d.cseq, d.seq
			if i := s.shardOf(m.Subject); i >= 0 {
				t.latest[i] = d.seq
			}
			return true
		})
		if err != nil {
			s.abandon(t.cons)
			t.cons = ""
			return 0, 0, 0, err
		}
		if end == endDrained {
			if wait > 0 || t.scanned >= target {
				break
			}
			// The stream holds more than the consumer has counted yet
			// (it counts new messages asynchronously): let the server
			// wait a moment for them.
			wait = raceWait
			continue
		}
		if end == endBroken || end == endGone {
			if end == endBroken && s.deleteConsumer(ctx, t.cons) != nil {
				s.abandon(t.cons)
			}
			t.cons = ""
		}
	}
	return t.latest[sh.idx], t.from, t.scanned, nil
}

// parseSequence reads a position the engine passes: "" or a decimal stream
// sequence, padded or not.
func parseSequence(seq idem.Sequence) (uint64, error) {
	n, ok := seq.Uint64()
	if !ok {
		return 0, fmt.Errorf("jetstream: sequence %q is not a stream sequence", seq)
	}
	return n, nil
}

// sequence spells a stream sequence; 0, the position before the first
// message, is the zero Sequence.
func sequence(n uint64) idem.Sequence {
	if n == 0 {
		return ""
	}
	return idem.SequenceOf(n)
}
