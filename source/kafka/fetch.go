package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fetch sizes: a Read asks for about limit records' worth of bytes, as the
// partition's records have been so far, within these bounds. A batch larger
// than the size asked is returned whole all the same (KIP-74).
const (
	minFetchBytes     = 64 << 10
	maxFetchBytes     = 16 << 20
	initialAvgBytes   = 512     // wire bytes per record before any fetch
	firstFetchBytes   = 1 << 20 // at most, before any fetch told the record size
	perRecordOverhead = 128     // a record's wire bytes beyond its value, at most, roughly
)

// partState is what a Source keeps of one partition: the records of its
// last fetch not yet returned, the offsets known to hold no committed
// record, and the last stable offset last seen.
type partState struct {
	mu sync.Mutex
	// The cache: every committed record at offsets [from, next) is in
	// recs, in order. Empty when from == next.
	from, next int64
	recs       []*kgo.Record
	// [quietFrom, quietTo) holds no committed record: only transaction
	// markers and aborted records, found by an earlier fetch. Offsets below
	// the last stable offset never change, so this stays true (a trim
	// makes reads there fail before it is consulted); it outlives the
	// cache, so that a reader caught up behind a marker is not woken by
	// the marker over and over.
	quietFrom, quietTo int64
	// lso is the last stable offset last seen (by a fetch or a listing),
	// -1 before any; avg is the estimated wire bytes per record.
	lso int64
	avg int
	// ahead is the fetch in flight from next (Source.fetchAhead); nil when
	// none is.
	ahead *aheadFetch
}

// aheadFetch is a fetch ahead of the reader, for its next Reads: the reader
// of a backlog then finds its records fetched and decoded while it
// processed the previous batch, as a kgo consumer's buffered fetches are.
type aheadFetch struct {
	from int64
	done chan struct{} // closed once the result is in the cache, or dropped
}

// part returns the state of partition p.
func (s *Source) part(p int32) *partState {
	s.partsMu.Lock()
	defer s.partsMu.Unlock()
	ps := s.parts[p]
	if ps == nil {
		ps = &partState{lso: -1}
		s.parts[p] = ps
	}
	return ps
}

// take returns the cached records at offsets n and above, up to limit and
// maxBytes of values (at least one), and removes them from the cache. With
// none, it returns the offset a fetch should start at: the first offset at
// or above n not known to hold no committed record. The caller holds ps.mu.
func (ps *partState) take(n int64, limit, maxBytes int) ([]*kgo.Record, int64) {
	if n >= ps.from && n < ps.next {
		i := 0
		for i < len(ps.recs) && ps.recs[i].Offset < n {
			i++
		}
		if recs := ps.recs[i:]; len(recs) > 0 {
			k, size := 0, 0
			for k < len(recs) && k < limit {
				d := len(recs[k].Value)
				if k > 0 && size+d > maxBytes {
					break
				}
				size += d
				k++
			}
			out := recs[:k:k]
			ps.recs = recs[k:]
			ps.from = out[k-1].Offset + 1
			return out, 0
		}
		ps.from, ps.recs = n, nil
	}
	start := ps.skip(n)
	ps.noteQuiet(n, start)
	return nil, start
}

// skip returns the first offset at or above n that neither the cache nor
// the quiet range knows to hold no committed record. The caller holds ps.mu.
func (ps *partState) skip(n int64) int64 {
	for range 2 {
		if n >= ps.from && n < ps.next && (len(ps.recs) == 0 || ps.recs[len(ps.recs)-1].Offset < n) {
			n = ps.next
		}
		if n >= ps.quietFrom && n < ps.quietTo {
			n = ps.quietTo
		}
	}
	return n
}

// noteQuiet records that [n, to) holds no committed record, merging it
// with the quiet range it touches, else keeping the higher of the two.
func (ps *partState) noteQuiet(n, to int64) {
	switch {
	case to <= n:
	case n <= ps.quietTo && ps.quietFrom <= to:
		ps.quietFrom, ps.quietTo = min(ps.quietFrom, n), max(ps.quietTo, to)
	case to > ps.quietTo:
		ps.quietFrom, ps.quietTo = n, to
	}
}

// store replaces the cache with a fetch from offset from, when [n, from)
// is known to hold no committed record. The caller holds ps.mu.
func (ps *partState) store(n, from int64, f fetched) {
	ps.from, ps.next, ps.recs = n, max(f.next, from), f.recs
	ps.lso = f.lso
	ps.sample(f)
}

// extend appends a fetch from offset from to the cache, if the cache still
// ends there; otherwise the cache moved on (a reader went back and fetched
// elsewhere) and the fetch is dropped. The caller holds ps.mu.
func (ps *partState) extend(from int64, f fetched) {
	if from != ps.next {
		return
	}
	if len(ps.recs) == 0 {
		ps.recs = nil // not the old backing array: let it go
	}
	ps.recs = append(ps.recs, f.recs...)
	ps.next = max(f.next, from)
	ps.lso = f.lso
	ps.sample(f)
}

// sample folds a fetch's bytes per record into the average.
func (ps *partState) sample(f fetched) {
	if len(f.recs) > 0 && f.wire > 0 {
		sample := max(f.wire/len(f.recs), 16)
		if ps.avg == 0 {
			ps.avg = sample
		} else {
			ps.avg = (3*ps.avg + sample) / 4
		}
	}
}

// short reports whether a Read at offset n continues in the cache (or right
// after it) and finds fewer than limit records there, while the fetch in
// flight would add more. The caller holds ps.mu.
func (ps *partState) short(n int64, limit int) bool {
	return ps.ahead != nil && ps.ahead.from == ps.next &&
		n >= ps.from && n <= ps.next && len(ps.recs) < limit
}

// wantsAhead reports whether the cache should grow by a fetch ahead: it
// holds less than two Reads' worth of records, the partition is known to
// hold committed records beyond it, and no fetch is in flight already. Two
// Reads' worth lets the fetching go on while the reader processes a batch,
// rather than the two taking turns; it bounds the memory a partition's
// cache takes to about three batches. The caller holds ps.mu.
func (ps *partState) wantsAhead(limit int) bool {
	return ps.ahead == nil && len(ps.recs) < 2*limit && ps.lso > ps.next
}

// startAhead records a fetch ahead from the end of the cache, returning it
// and how many bytes it asks for: enough to fill the cache to two Reads'
// worth. The caller holds ps.mu.
func (ps *partState) startAhead(limit, maxBytes int) (*aheadFetch, int32) {
	a := &aheadFetch{from: ps.next, done: make(chan struct{})}
	ps.ahead = a
	want := 2*limit - len(ps.recs)
	return a, fetchBytes(ps.avg, want, maxBytes*want/limit)
}

// setLSO notes a last stable offset listed.
func (ps *partState) setLSO(lso int64) {
	ps.mu.Lock()
	ps.lso = lso
	ps.mu.Unlock()
}

// ready reports whether the partition is known to hold a committed record
// at or above offset n.
func (ps *partState) ready(n int64) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if n >= ps.from && n < ps.next && len(ps.recs) > 0 && ps.recs[len(ps.recs)-1].Offset >= n {
		return true
	}
	return ps.lso > ps.skip(n)
}

// fetchBytes is how many bytes a Read asks for, avg being the wire bytes
// per record, or 0 if unknown. A first fetch asks for no more than
// firstFetchBytes: records compress, and a guess of their size could fetch
// (and decode, before the first record is returned) a hundred times the
// records asked for.
func fetchBytes(avg, limit, maxBytes int) int32 {
	if avg == 0 {
		return min(fetchBytes(initialAvgBytes, limit, maxBytes), firstFetchBytes)
	}
	want := int64(limit) * int64(avg)
	want = min(want, int64(maxBytes)+int64(limit)*perRecordOverhead)
	return int32(max(min(want, maxFetchBytes), minFetchBytes))
}

// fetched is one partition's part of a fetch response.
type fetched struct {
	recs []*kgo.Record // committed records at or above the offset asked
	next int64         // the offset after the last batch processed
	lso  int64         // last stable offset (high watermark if unknown)
	wire int           // bytes of record batches received
}

// fetch issues one read_committed Fetch of partition p from offset to the
// partition's leader, outside any fetch session, waiting at most maxWait for
// data. A position out of range is an error wrapping
// kerr.OffsetOutOfRange.
func (s *Source) fetch(ctx context.Context, p int32, offset int64, maxWait time.Duration, bytes int32) (fetched, error) {
	shard := ShardID(s.topic, p)
	m, err := s.cachedMeta(ctx)
	if err != nil {
		return fetched{}, err
	}
	leader, ok := m.leaders[p]
	if !ok || leader < 0 {
		s.invalidate()
		return fetched{}, fmt.Errorf("kafka: fetch %s: %w", shard, kerr.LeaderNotAvailable)
	}
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = int32(maxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = bytes
	req.IsolationLevel = 1 // read_committed
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = s.topic
	rt.TopicID = m.id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition = p
	rp.FetchOffset = offset
	rp.PartitionMaxBytes = bytes
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)

	kresp, err := s.cl.Broker(int(leader)).Request(ctx, req)
	if err != nil {
		if ctx.Err() == nil {
			s.invalidate()
		}
		return fetched{}, fmt.Errorf("kafka: fetch %s at offset %d from broker %d: %w", shard, offset, leader, err)
	}
	resp := kresp.(*kmsg.FetchResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		s.invalidate()
		return fetched{}, fmt.Errorf("kafka: fetch %s at offset %d from broker %d: %w", shard, offset, leader, err)
	}
	var part *kmsg.FetchResponseTopicPartition
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			if resp.Topics[i].Partitions[j].Partition == p {
				part = &resp.Topics[i].Partitions[j]
			}
		}
	}
	if part == nil {
		return fetched{}, fmt.Errorf("kafka: fetch %s at offset %d from broker %d: partition missing from the response", shard, offset, leader)
	}
	if err := kerr.ErrorForCode(part.ErrorCode); err != nil {
		if !errors.Is(err, kerr.OffsetOutOfRange) {
			s.invalidate()
		}
		return fetched{}, fmt.Errorf("kafka: fetch %s at offset %d from broker %d: %w", shard, offset, leader, err)
	}
	fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
		Offset:         offset,
		IsolationLevel: kgo.ReadCommitted(),
		Topic:          s.topic,
		Partition:      p,
		Pools:          []kgo.Pool{&s.slabs},
	}, part, s.dec, nil)
	if fp.Err != nil && len(fp.Records) == 0 {
		return fetched{}, fmt.Errorf("kafka: decoding %s at offset %d: %w", shard, offset, fp.Err)
	}
	// A decoding error after some records keeps those: next stops before
	// the batch that failed, and the next fetch reports it.
	f := fetched{recs: fp.Records, next: max(next, offset), lso: part.LastStableOffset, wire: len(part.RecordBatches)}
	if f.lso < 0 {
		f.lso = part.HighWatermark
	}
	return f, nil
}

// outOfRange finds out why a fetch from offset was out of range: it returns
// the log start offset when offset is below it, an error wrapping
// ErrPositionAhead when offset is beyond the end, and offset itself when
// neither holds any more (the partition moved meanwhile).
func (s *Source) outOfRange(ctx context.Context, p int32, offset int64) (start int64, err error) {
	list, err := s.adm.ListStartOffsets(ctx, s.topic)
	if start, err = s.listed(list, err, p, "start"); err != nil {
		return 0, err
	}
	if offset < start {
		return start, nil
	}
	list, err = s.adm.ListEndOffsets(ctx, s.topic)
	end, err := s.listed(list, err, p, "end")
	if err != nil {
		return 0, err
	}
	if offset > end {
		return 0, fmt.Errorf("kafka: read %s: %w: position %d, end offset %d", ShardID(s.topic, p), ErrPositionAhead, offset, end)
	}
	return offset, nil
}

// watcher is the goroutine that lists last stable offsets while anyone
// waits, and the waiters' rendezvous with it.
type watcher struct {
	mu      sync.Mutex
	waiting int
	changed chan struct{} // closed, and replaced, after every listing
	wake    chan struct{} // a first waiter arrived
	started bool
	closed  bool
	done    chan struct{} // closed when the goroutine ends
}

// enter registers a waiter, starting the goroutine on first use, and
// returns the channel the next listing closes.
func (w *watcher) enter(s *Source) (<-chan struct{}, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	w.waiting++
	if !w.started {
		w.started = true
		go s.watch()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return w.changed, nil
}

// leave unregisters a waiter.
func (w *watcher) leave() {
	w.mu.Lock()
	w.waiting--
	w.mu.Unlock()
}

// current returns the channel the next listing closes.
func (w *watcher) current() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// watch lists the topic's last stable offsets every poll interval while
// anyone waits, until Close.
func (s *Source) watch() {
	w := &s.w
	defer close(w.done)
	timer := time.NewTimer(s.poll)
	defer timer.Stop()
	for {
		w.mu.Lock()
		idle := w.waiting == 0
		w.mu.Unlock()
		if idle {
			select {
			case <-w.wake:
			case <-s.ctx.Done():
				return
			}
		}
		s.listLSOs()
		timer.Reset(s.poll)
		select {
		case <-timer.C:
		case <-s.ctx.Done():
			return
		}
	}
}

// listLSOs lists the last stable offsets once and wakes the waiters. An
// error wakes nobody: waiters time out, and their next Read reports it.
func (s *Source) listLSOs() {
	ctx, cancel := context.WithTimeout(s.ctx, 10*s.poll+5*time.Second)
	defer cancel()
	list, err := s.adm.ListCommittedOffsets(ctx, s.topic)
	if err != nil && len(list) == 0 {
		return
	}
	for p, lo := range list[s.topic] {
		if p >= 0 && lo.Err == nil && lo.Offset >= 0 {
			s.part(p).setLSO(lo.Offset)
		}
	}
	s.w.mu.Lock()
	close(s.w.changed)
	s.w.changed = make(chan struct{})
	s.w.mu.Unlock()
}

// slabPool recycles the slices kgo decodes a record batch's records into:
// a record is converted to an idem.Record by the Read that returns it, and
// recycled right after (kgo.Record.Recycle), so that a reader catching up
// does not allocate, and collect, a slab of kgo records per batch. Slabs
// are kept by capacity, in powers of two from 64 records; larger batches
// are not pooled.
type slabPool struct {
	byLog [maxSlabLog - minSlabLog + 1]sync.Pool
}

const minSlabLog, maxSlabLog = 6, 16

// slabLog is the power of two a slab for n records has.
func slabLog(n int) int {
	return max(bits.Len(uint(max(n, 1)-1)), minSlabLog)
}

// GetRecords returns an empty slice of capacity n at least.
func (sp *slabPool) GetRecords(n int) []kgo.Record {
	l := slabLog(n)
	if l > maxSlabLog {
		return make([]kgo.Record, 0, n)
	}
	if v, ok := sp.byLog[l-minSlabLog].Get().(*[]kgo.Record); ok {
		return (*v)[:0]
	}
	return make([]kgo.Record, 0, 1<<l)
}

// PutRecords takes a slice back, zeroed by kgo.
func (sp *slabPool) PutRecords(s []kgo.Record) {
	if l := slabLog(cap(s)); l <= maxSlabLog && cap(s) == 1<<l {
		sp.byLog[l-minSlabLog].Put(&s)
	}
}
