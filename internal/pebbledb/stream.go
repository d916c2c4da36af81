package pebbledb

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Limits of the embedded streams. The record and partition key limits are
// Kinesis', so that what runs on idem runs on Kinesis too.
const (
	// MaxShards is the most shards a stream can have.
	MaxShards = 1 << 16
	// MaxRecordBytes is the largest Data a Put accepts.
	MaxRecordBytes = 1 << 20
	// MaxPartitionKeyBytes is the longest partition key; the shortest is 1.
	MaxPartitionKeyBytes = 256
	// MaxStreamNameBytes is the longest stream name; the shortest is 1.
	MaxStreamNameBytes = 255
)

// ErrRecordTooLarge is returned by Put, wrapped with the stream, the record's
// index and its size, for a record whose Data exceeds MaxRecordBytes. Put
// writes nothing then.
var ErrRecordTooLarge = errors.New("record too large")

// ErrInvalidPartitionKey is returned by Put, wrapped with the stream, the
// record's index and the key's length, for a partition key outside 1 to
// MaxPartitionKeyBytes bytes. Put writes nothing then.
var ErrInvalidPartitionKey = errors.New("invalid partition key")

// PutRecord is one record to append.
type PutRecord struct {
	// PartitionKey chooses the shard: the MD5 hash of the key, read as an
	// unsigned 128-bit integer, falls in exactly one shard's hash key range,
	// as in Kinesis. 1 to MaxPartitionKeyBytes bytes.
	PartitionKey string
	// Data is copied; at most MaxRecordBytes.
	Data []byte
	// routeKey, when set, chooses the shard instead of PartitionKey: the
	// records of one on-failure batch follow their metadata record in its
	// shard, so that a redrive can read them back together.
	routeKey string
}

// PutResult says where a record was appended.
type PutResult struct {
	Shard    string
	Sequence uint64
}

// StreamInfo describes a stream for status pages and the CLI.
type StreamInfo struct {
	Name string `json:"name"`
	// Retention is how long records are kept (JSON: nanoseconds).
	Retention time.Duration `json:"retention"`
	Shards    []ShardInfo   `json:"shards"`
}

// ShardInfo describes one shard of a stream.
type ShardInfo struct {
	ID string `json:"id"`
	// Latest is the sequence of the newest visible record; 0 if none was
	// ever appended.
	Latest uint64 `json:"latest"`
	// LowestRetained is the lowest sequence retention has not deleted; it
	// is Latest+1 when retention deleted every record.
	LowestRetained uint64 `json:"lowestRetained"`
}

// ShardID names shard i as Kinesis does.
func ShardID(i int) string { return fmt.Sprintf("shardId-%012d", i) }

// stream is the in-memory state of one stream.
type stream struct {
	name      string
	shards    []*shard
	starts    []hash128 // starting hash key of each shard
	retention atomic.Int64

	// mu guards sequence allocation and each shard's pending writes and
	// notify channel. It is never held across a Pebble commit.
	mu sync.Mutex
}

// shard is the in-memory state of one shard.
type shard struct {
	index  int
	id     string
	prefix []byte // 's' | str(stream) | u16 index
	lower  []byte // the horizon key: prefix | u64 0
	upper  []byte // the first key after the shard

	// Guarded by stream.mu.
	next        uint64    // last allocated sequence
	lastArrival int64     // arrival of sequence next, so that times never go back
	pending     []*ticket // writes in flight, in allocation order
	cur         *ticket   // the ticket of the write being allocated
	notify      chan struct{}

	// visible: every sequence at or below it is committed (or abandoned by
	// a failed write); readers never look above it.
	visible atomic.Uint64
	// trimmed: retention deleted every sequence at or below it.
	trimmed atomic.Uint64
}

// ticket is one write's allocation in one shard.
type ticket struct {
	end  uint64 // last sequence allocated
	done bool   // committed or failed
}

// pending is one write's allocations, to release once its batch committed.
type pending struct {
	st      *stream
	shards  []*shard
	tickets []ticket
}

type hash128 struct{ hi, lo uint64 }

func (a hash128) less(b hash128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// shardStarts returns each shard's starting hash key, floor(i·2¹²⁸/n), as
// Kinesis lays out the shards of a new stream.
func shardStarts(n int) []hash128 {
	s := make([]hash128, n)
	for i := range s {
		// i·2¹²⁸ is the three-word number (i, 0, 0); i < n, so the top
		// word's quotient is 0 and its remainder i.
		hi, r := bits.Div64(uint64(i), 0, uint64(n))
		lo, _ := bits.Div64(r, 0, uint64(n))
		s[i] = hash128{hi, lo}
	}
	return s
}

func newStream(name string, m streamMeta) *stream {
	st := &stream{name: name, starts: shardStarts(m.shards), shards: make([]*shard, m.shards)}
	st.retention.Store(m.retention)
	for i := range st.shards {
		sh := &shard{index: i, id: ShardID(i), prefix: shardPrefix(name, i), notify: make(chan struct{})}
		sh.lower = seqKey(sh.prefix, 0)
		sh.upper = prefixEnd(sh.prefix)
		st.shards[i] = sh
	}
	return st
}

// prefixEnd returns the first key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// route returns the shard owning partition key pk.
func (st *stream) route(pk string) *shard {
	sum := md5.Sum([]byte(pk))
	h := hash128{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
	i := sort.Search(len(st.starts), func(i int) bool { return h.less(st.starts[i]) }) - 1
	return st.shards[i]
}

// shard returns the shard named id.
func (st *stream) shard(id string) (*shard, error) {
	const prefix = "shardId-"
	if len(id) == len(prefix)+12 && id[:len(prefix)] == prefix {
		n := 0
		for _, c := range []byte(id[len(prefix):]) {
			if c < '0' || c > '9' {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		if n >= 0 && n < len(st.shards) {
			return st.shards[n], nil
		}
	}
	return nil, fmt.Errorf("stream %q: shard %q: %w", st.name, id, ErrShardNotFound)
}

// recover sets the shard's counters from its horizon and last record; it
// reads through it, an iterator bounded to the shard.
func (sh *shard) recover(it *pebble.Iterator) error {
	var trimmed uint64
	if it.SeekGE(sh.lower) && bytes.Equal(it.Key(), sh.lower) {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if trimmed, err = decodeHorizon(v); err != nil {
			return err
		}
	}
	last := trimmed
	if it.Last() && !bytes.Equal(it.Key(), sh.lower) {
		k := it.Key()
		if len(k) != len(sh.lower) {
			return fmt.Errorf("%w: record key %x", errCorrupt, k)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if sh.lastArrival, err = decodeArrival(v); err != nil {
			return err
		}
		last = max(last, keySeq(k))
	}
	if err := it.Error(); err != nil {
		return err
	}
	sh.next = last
	sh.visible.Store(last)
	sh.trimmed.Store(trimmed)
	return nil
}

// advance makes visible every sequence up to the first write still in flight
// and wakes the waiters. stream.mu must be held.
func (sh *shard) advance() {
	n := 0
	for n < len(sh.pending) && sh.pending[n].done {
		n++
	}
	if n == 0 {
		return
	}
	sh.visible.Store(sh.pending[n-1].end)
	m := copy(sh.pending, sh.pending[n:])
	clear(sh.pending[m:])
	sh.pending = sh.pending[:m]
	close(sh.notify)
	sh.notify = make(chan struct{})
}

// finish releases a write's allocations, whether its batch committed or
// failed: a failed write's sequences are never reused, readers skip them.
func (p *pending) finish() {
	if p == nil {
		return
	}
	p.st.mu.Lock()
	for i, sh := range p.shards {
		p.tickets[i].done = true
		sh.advance()
	}
	p.st.mu.Unlock()
}

// recMeta is what allocation decides for one record.
type recMeta struct {
	sh      *shard
	arrival int64
}

// append allocates sequences for recs, fills res, and encodes the records
// into b. The caller commits b and then calls finish on the result. Records
// are not validated here.
func (st *stream) append(b *pebble.Batch, recs []PutRecord, res []PutResult, now time.Time) *pending {
	meta := make([]recMeta, len(recs))
	for i := range recs {
		k := recs[i].PartitionKey
		if recs[i].routeKey != "" {
			k = recs[i].routeKey
		}
		meta[i].sh = st.route(k)
	}
	p := &pending{st: st, tickets: make([]ticket, min(len(recs), len(st.shards)))}
	ts := now.UnixNano()

	st.mu.Lock()
	for i := range meta {
		sh := meta[i].sh
		if sh.cur == nil {
			sh.cur = &p.tickets[len(p.shards)]
			p.shards = append(p.shards, sh)
		}
		sh.next++
		sh.lastArrival = max(sh.lastArrival, ts)
		sh.cur.end = sh.next
		meta[i].arrival = sh.lastArrival
		res[i] = PutResult{Shard: sh.id, Sequence: sh.next}
	}
	for _, sh := range p.shards {
		sh.pending = append(sh.pending, sh.cur)
		sh.cur = nil
	}
	st.mu.Unlock()

	for i := range recs {
		r, m := &recs[i], &meta[i]
		op := b.SetDeferred(len(m.sh.lower), recordValueLen(m.arrival, r.PartitionKey, r.Data))
		copy(op.Key, m.sh.prefix)
		binary.BigEndian.PutUint64(op.Key[len(m.sh.prefix):], res[i].Sequence)
		putRecordValue(op.Value, m.arrival, r.PartitionKey, r.Data)
		op.Finish()
	}
	return p
}

func validateStreamName(name string) error {
	if len(name) < 1 || len(name) > MaxStreamNameBytes {
		return fmt.Errorf("pebbledb: stream name %q: %d bytes, want 1 to %d", name, len(name), MaxStreamNameBytes)
	}
	return nil
}

// CreateStream makes a stream with shards shards (0 means 1) that keeps
// records for retention. It is idempotent: for an existing stream it checks
// the shard count, which cannot change (an error names both counts), and
// updates the retention, which can. The DB accepts any positive retention;
// the configuration enforces the range users may choose.
func (db *DB) CreateStream(name string, shards int, retention time.Duration) error {
	if shards == 0 {
		shards = 1
	}
	var errs []error
	if err := validateStreamName(name); err != nil {
		errs = append(errs, err)
	}
	if shards < 1 || shards > MaxShards {
		errs = append(errs, fmt.Errorf("pebbledb: stream %q: %d shards is outside 1 to %d", name, shards, MaxShards))
	}
	if retention <= 0 {
		errs = append(errs, fmt.Errorf("pebbledb: stream %q: retention %s must be positive", name, retention))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	release, err := db.enter()
	if err != nil {
		return err
	}
	defer release()

	db.streamsMu.Lock()
	defer db.streamsMu.Unlock()
	m := streamMeta{shards: shards, retention: int64(retention)}
	st, ok := db.streams[name]
	if ok {
		if n := len(st.shards); n != shards {
			return fmt.Errorf("pebbledb: stream %q has %d shards and cannot change to %d: resharding is not supported", name, n, shards)
		}
		if st.retention.Load() == m.retention {
			return nil
		}
	}
	if err := db.admit(len(name) + 16); err != nil {
		return fmt.Errorf("pebbledb: stream %q: %w", name, err)
	}
	if err := db.pdb.Set(metaKey(name), encodeStreamMeta(m), pebble.Sync); err != nil {
		return fmt.Errorf("pebbledb: stream %q: %w", name, noSpace(err))
	}
	if ok {
		st.retention.Store(m.retention)
		return nil
	}
	db.streams[name] = newStream(name, m)
	return nil
}

// stream returns the stream named name.
func (db *DB) stream(name string) (*stream, error) {
	db.streamsMu.RLock()
	st, ok := db.streams[name]
	db.streamsMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("pebbledb: stream %q: %w", name, ErrStreamNotFound)
	}
	return st, nil
}

// enterPut is the preamble of the puts to stream: it checks recs, enters
// db and finds the stream. The caller calls release once done.
func (db *DB) enterPut(stream string, recs []PutRecord) (st *stream, release func(), err error) {
	if err := validateRecords(stream, recs); err != nil {
		return nil, nil, err
	}
	release, err = db.enter()
	if err != nil {
		return nil, nil, err
	}
	st, err = db.stream(stream)
	if err != nil {
		release()
		return nil, nil, err
	}
	return st, release, nil
}

// batchSize is about how many bytes appending recs to st adds to a batch.
func (st *stream) batchSize(recs []PutRecord) int {
	size := 0
	for i := range recs {
		size += len(st.shards[0].lower) + len(recs[i].PartitionKey) + len(recs[i].Data) + 24
	}
	return size
}

// validateRecords checks Put's limits for every record before anything is
// written.
func validateRecords(stream string, recs []PutRecord) error {
	var errs []error
	for i := range recs {
		r := &recs[i]
		if n := len(r.PartitionKey); n < 1 || n > MaxPartitionKeyBytes {
			errs = append(errs, fmt.Errorf("stream %q: record %d: %w: %d bytes, want 1 to %d", stream, i, ErrInvalidPartitionKey, n, MaxPartitionKeyBytes))
		}
		if n := len(r.Data); n > MaxRecordBytes {
			errs = append(errs, fmt.Errorf("stream %q: record %d: %w: %d bytes of data, the maximum is %d (1 MiB); nothing was written", stream, i, ErrRecordTooLarge, n, MaxRecordBytes))
		}
	}
	return errors.Join(errs...)
}

// Put appends recs to stream atomically, in one synced batch, and returns
// where each landed, in order. Records of one partition key land in one
// shard in the order given. On error nothing was appended; if the Pebble
// commit itself failed, the sequences allocated to the records are skipped.
// Concurrent Puts share fsyncs.
//
// Errors: ErrStreamNotFound, ErrInvalidPartitionKey, ErrRecordTooLarge,
// store.ErrNoSpace (nothing was appended), ErrFatal, ErrClosed, ctx.Err().
func (db *DB) Put(ctx context.Context, stream string, recs []PutRecord) ([]PutResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, release, err := db.enterPut(stream, recs)
	if err != nil {
		return nil, err
	}
	defer release()
	res := make([]PutResult, len(recs))
	if len(recs) == 0 {
		return res, nil
	}
	size := st.batchSize(recs)
	if err := db.admit(size); err != nil {
		return nil, fmt.Errorf("pebbledb: put to stream %q: %w", stream, err)
	}
	b := db.pdb.NewBatchWithSize(size)
	defer b.Close()
	p := st.append(b, recs, res, time.Now())
	err = b.Commit(pebble.Sync)
	p.finish()
	if err != nil {
		return nil, fmt.Errorf("pebbledb: put to stream %q: %w", stream, noSpace(err))
	}
	return res, nil
}

// Shards returns the stream's shard IDs in order.
//
// Errors: ErrStreamNotFound.
func (db *DB) Shards(stream string) ([]string, error) {
	st, err := db.stream(stream)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(st.shards))
	for i, sh := range st.shards {
		ids[i] = sh.id
	}
	return ids, nil
}

// Retention returns how long stream keeps records.
//
// Errors: ErrStreamNotFound.
func (db *DB) Retention(stream string) (time.Duration, error) {
	st, err := db.stream(stream)
	if err != nil {
		return 0, err
	}
	return time.Duration(st.retention.Load()), nil
}

func (st *stream) info() StreamInfo {
	in := StreamInfo{Name: st.name, Retention: time.Duration(st.retention.Load()), Shards: make([]ShardInfo, len(st.shards))}
	for i, sh := range st.shards {
		in.Shards[i] = ShardInfo{ID: sh.id, Latest: sh.visible.Load(), LowestRetained: sh.trimmed.Load() + 1}
	}
	return in
}

// StreamInfo describes one stream.
//
// Errors: ErrStreamNotFound, ctx.Err().
func (db *DB) StreamInfo(ctx context.Context, name string) (StreamInfo, error) {
	if err := ctx.Err(); err != nil {
		return StreamInfo{}, err
	}
	st, err := db.stream(name)
	if err != nil {
		return StreamInfo{}, err
	}
	return st.info(), nil
}

// Streams describes every stream, sorted by name.
//
// Errors: ctx.Err().
func (db *DB) Streams(ctx context.Context) ([]StreamInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	db.streamsMu.RLock()
	infos := make([]StreamInfo, 0, len(db.streams))
	for _, st := range db.streams {
		infos = append(infos, st.info())
	}
	db.streamsMu.RUnlock()
	slices.SortFunc(infos, func(a, b StreamInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}
