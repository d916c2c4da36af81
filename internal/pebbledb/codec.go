package pebbledb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

// Keyspace prefixes; see the package doc for the layout behind each.
const (
	prefixFormat     = 'f'
	prefixMeta       = 'm'
	prefixRecord     = 's'
	prefixCheckpoint = 'c'
	prefixProgress   = 'p'
	prefixMark       = 'k'
	prefixJournal    = 'j'
	prefixExpiry     = 'x'
	prefixState      = 'v'
	prefixClaim      = 'i'
	prefixLegacy     = 'h'
	prefixRun        = 'r'
)

// valueVersion is the leading byte of every value this code writes.
const valueVersion = 1

// layoutVersion is the value of the 'f' key: the version of the key layout.
// Version 2 added the mark journal ('j'), version 3 the runs of marks
// ('r'): a program that reads only an earlier version would not see the
// marks they hold, so it must refuse the directory. Open upgrades a
// directory of version 1 or 2 by rewriting the key; Close writes version 1
// back when the directory holds neither journal nor runs.
const layoutVersion = 3

// errCorrupt is wrapped by every decoder error: a value that does not parse
// means the directory was damaged or written by an incompatible program.
var errCorrupt = errors.New("pebbledb: corrupt value")

// appendStr appends str(s) = uvarint(len(s)) | s.
func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// strLen is len(appendStr(nil, s)).
func strLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

// shardPrefix is 's' | str(stream) | u16 shard: every key of one shard.
func shardPrefix(stream string, shard int) []byte {
	b := make([]byte, 0, 1+strLen(stream)+2+8)
	b = append(b, prefixRecord)
	b = appendStr(b, stream)
	return binary.BigEndian.AppendUint16(b, uint16(shard))
}

// seqKey appends seq to a copy of a shard prefix.
func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, seq)
}

// keySeq returns the sequence at the end of a record key.
func keySeq(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

func metaKey(stream string) []byte {
	return appendStr([]byte{prefixMeta}, stream)
}

func checkpointKey(k store.CheckpointKey) []byte {
	b := make([]byte, 0, 1+strLen(k.Mapping)+strLen(k.Stream)+strLen(k.Shard))
	b = append(b, prefixCheckpoint)
	b = appendStr(b, k.Mapping)
	b = appendStr(b, k.Stream)
	return appendStr(b, k.Shard)
}

// progressKey is 'p' | str(scope) | str(stream) | str(shard), followed by
// str(mapping) for a mapping's own progress: the scope-wide progress of
// Mapping "" (what earlier versions wrote) is the bare prefix, and every
// mapping's progress of a shard lies under it (scopeProgressBounds).
func progressKey(k store.ProgressKey) []byte {
	b := make([]byte, 0, 1+strLen(k.Scope)+strLen(k.Stream)+strLen(k.Shard)+strLen(k.Mapping))
	b = append(b, prefixProgress)
	b = appendStr(b, k.Scope)
	b = appendStr(b, k.Stream)
	b = appendStr(b, k.Shard)
	if k.Mapping != "" {
		b = appendStr(b, k.Mapping)
	}
	return b
}

func markKey(dst *[17]byte, k store.MarkKey) []byte {
	dst[0] = prefixMark
	copy(dst[1:], k[:])
	return dst[:]
}

// expiryKeyLen is len('x' | u64 | MarkKey).
const expiryKeyLen = 1 + 8 + 16

// expiryKey is 'x' | u64(expires XOR 1<<63) | key: flipping the sign bit
// makes byte order the numeric order of signed nanoseconds. An expiry
// entry names the marks that expire at its time: the one in its key, and
// the others of the same commit and expiry, their keys one after the other
// in its value (setMarks). Entries written before marks were grouped have
// an empty value.
func expiryKey(dst *[expiryKeyLen]byte, expires int64, k store.MarkKey) []byte {
	dst[0] = prefixExpiry
	binary.BigEndian.PutUint64(dst[1:9], uint64(expires)^(1<<63))
	copy(dst[9:], k[:])
	return dst[:]
}

// expiryBound is the first expiry key of marks expiring after t.
func expiryBound(t int64) []byte {
	if t == math.MaxInt64 {
		return []byte{prefixExpiry + 1}
	}
	return binary.BigEndian.AppendUint64([]byte{prefixExpiry}, uint64(t+1)^(1<<63))
}

func stateKey(namespace, key string) []byte {
	b := make([]byte, 0, 1+strLen(namespace)+strLen(key))
	b = append(b, prefixState)
	b = appendStr(b, namespace)
	return appendStr(b, key)
}

// reader decodes a value, remembering the first error so that decoders read
// as straight-line code.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errCorrupt, what)
	}
}

func (r *reader) version(what string) {
	if r.err != nil {
		return
	}
	if len(r.b) == 0 {
		r.fail(what + ": empty")
		return
	}
	if r.b[0] != valueVersion {
		r.fail(fmt.Sprintf("%s: unknown version %d", what, r.b[0]))
		return
	}
	r.b = r.b[1:]
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// sequence reads a str that must be a decimal idem.Sequence.
func (r *reader) sequence(what string) idem.Sequence {
	b := r.bytes(r.uvarint(what), what)
	if r.err != nil {
		return ""
	}
	s := idem.Sequence(b)
	if !s.Valid() {
		r.fail(what + ": not a decimal sequence")
		return ""
	}
	return s
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) end(what string) error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(what + ": trailing bytes")
	}
	return r.err
}

// streamMeta is a stream's persisted configuration.
type streamMeta struct {
	shards    int
	retention int64 // nanoseconds
}

func encodeStreamMeta(m streamMeta) []byte {
	b := []byte{valueVersion}
	b = binary.AppendUvarint(b, uint64(m.shards))
	return binary.AppendVarint(b, m.retention)
}

func decodeStreamMeta(v []byte) (streamMeta, error) {
	r := reader{b: v}
	r.version("stream meta")
	shards := r.uvarint("stream meta: shards")
	ret := r.varint("stream meta: retention")
	if err := r.end("stream meta"); err != nil {
		return streamMeta{}, err
	}
	if shards < 1 || shards > MaxShards {
		return streamMeta{}, fmt.Errorf("%w: stream meta: %d shards", errCorrupt, shards)
	}
	if ret <= 0 {
		return streamMeta{}, fmt.Errorf("%w: stream meta: retention %d", errCorrupt, ret)
	}
	return streamMeta{shards: int(shards), retention: ret}, nil
}

// recordValueLen is the length of a record value.
func recordValueLen(arrival int64, pk string, data []byte) int {
	return 1 + varintLen(arrival) + uvarintLen(uint64(len(pk))) + len(pk) + len(data)
}

// putRecordValue encodes a record value into dst, which has exactly
// recordValueLen bytes.
func putRecordValue(dst []byte, arrival int64, pk string, data []byte) {
	dst[0] = valueVersion
	n := 1 + binary.PutVarint(dst[1:], arrival)
	n += binary.PutUvarint(dst[n:], uint64(len(pk)))
	n += copy(dst[n:], pk)
	copy(dst[n:], data)
}

// decodeRecord returns a record value's parts; pk and data alias v.
func decodeRecord(v []byte) (arrival int64, pk, data []byte, err error) {
	r := reader{b: v}
	r.version("record")
	arrival = r.varint("record: arrival")
	pk = r.bytes(r.uvarint("record: partition key length"), "record: partition key")
	if r.err != nil {
		return 0, nil, nil, r.err
	}
	return arrival, pk, r.b, nil
}

// decodeArrival returns only a record's arrival time, for searches.
func decodeArrival(v []byte) (int64, error) {
	r := reader{b: v}
	r.version("record")
	a := r.varint("record: arrival")
	return a, r.err
}

func encodeHorizon(trimmed uint64) []byte {
	return binary.AppendUvarint([]byte{valueVersion}, trimmed)
}

func decodeHorizon(v []byte) (uint64, error) {
	r := reader{b: v}
	r.version("horizon")
	t := r.uvarint("horizon: trimmed")
	return t, r.end("horizon")
}

func appendCheckpoint(b []byte, c store.Checkpoint) []byte {
	b = append(b, valueVersion)
	b = appendStr(b, string(c.Sequence))
	b = binary.AppendUvarint(b, c.Processed)
	b = binary.AppendUvarint(b, c.Skipped)
	b = binary.AppendUvarint(b, c.Discarded)
	return binary.AppendUvarint(b, c.Lost)
}

func decodeCheckpoint(v []byte) (store.Checkpoint, error) {
	r := reader{b: v}
	r.version("checkpoint")
	c := store.Checkpoint{
		Sequence:  r.sequence("checkpoint: sequence"),
		Processed: r.uvarint("checkpoint: processed"),
		Skipped:   r.uvarint("checkpoint: skipped"),
		Discarded: r.uvarint("checkpoint: discarded"),
		Lost:      r.uvarint("checkpoint: lost"),
	}
	if err := r.end("checkpoint"); err != nil {
		return store.Checkpoint{}, err
	}
	return c, nil
}

// appendProgress encodes p; it fails if a sequence is not decimal or Above is
// not strictly ascending above HighWater: such a value would be a bug
// upstream, and decodeProgress would refuse it as corrupt.
func appendProgress(b []byte, p *store.Progress) ([]byte, error) {
	if !p.HighWater.Valid() {
		return nil, fmt.Errorf("pebbledb: progress: high water %q is not a decimal number", p.HighWater)
	}
	b = append(b, valueVersion)
	b = appendStr(b, string(p.HighWater))
	b = binary.AppendUvarint(b, uint64(len(p.Above)))
	prev := p.HighWater
	for _, s := range p.Above {
		if !s.Valid() {
			return nil, fmt.Errorf("pebbledb: progress: sequence %q is not a decimal number", s)
		}
		if s.Compare(prev) <= 0 {
			return nil, fmt.Errorf("pebbledb: progress: Above must be ascending and above HighWater %q, got %q after %q", p.HighWater, s, prev)
		}
		b = appendStr(b, string(s))
		prev = s
	}
	if p.Filter != "" {
		b = appendStr(b, p.Filter) // absent in what earlier versions wrote
	}
	return b, nil
}

func decodeProgress(v []byte) (store.Progress, error) {
	r := reader{b: v}
	r.version("progress")
	p := store.Progress{HighWater: r.sequence("progress: high water")}
	n := r.uvarint("progress: count")
	if r.err != nil {
		return store.Progress{}, r.err
	}
	// Each sequence takes at least one byte: a larger count is corrupt, and
	// checking first keeps a hostile count from allocating.
	if n > uint64(len(r.b)) {
		return store.Progress{}, fmt.Errorf("%w: progress: %d sequences in %d bytes", errCorrupt, n, len(r.b))
	}
	if n > 0 {
		p.Above = make([]idem.Sequence, n)
	}
	prev := p.HighWater
	for i := range p.Above {
		s := r.sequence("progress: sequence")
		if r.err != nil {
			return store.Progress{}, r.err
		}
		if s.Compare(prev) <= 0 {
			return store.Progress{}, fmt.Errorf("%w: progress: sequence %q after %q", errCorrupt, s, prev)
		}
		p.Above[i], prev = s, s
	}
	if len(r.b) > 0 {
		p.Filter = string(r.bytes(r.uvarint("progress: filter"), "progress: filter"))
	}
	if err := r.end("progress"); err != nil {
		return store.Progress{}, err
	}
	return p, nil
}

func appendMark(b []byte, expires int64) []byte {
	return binary.AppendVarint(append(b, valueVersion), expires)
}

func decodeMark(v []byte) (int64, error) {
	r := reader{b: v}
	r.version("mark")
	e := r.varint("mark: expires")
	return e, r.end("mark")
}

func appendState(b []byte, value []byte) []byte {
	return append(append(b, valueVersion), value...)
}

// decodeState returns the value inside a state value; it aliases v.
func decodeState(v []byte) ([]byte, error) {
	r := reader{b: v}
	r.version("state")
	return r.b, r.err
}
