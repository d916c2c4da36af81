package pebbledb

import (
	"crypto/md5"
	"errors"
	"math"
	"math/big"
	"slices"
	"strconv"
	"testing"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/store"
)

func TestCheckpointRoundTrip(t *testing.T) {
	for _, c := range []store.Checkpoint{
		{},
		{Sequence: sq(1), Processed: 2, Skipped: 3, Discarded: 4, Lost: 5},
		{Sequence: "49590338271490256608559692538361571095921575989136588898", Processed: math.MaxUint64, Skipped: math.MaxUint64, Discarded: math.MaxUint64, Lost: math.MaxUint64},
	} {
		got, err := decodeCheckpoint(appendCheckpoint(nil, c))
		if err != nil || got != c {
			t.Fatalf("round trip of %+v = %+v, %v", c, got, err)
		}
	}
}

func TestProgressRoundTrip(t *testing.T) {
	for _, p := range []store.Progress{
		{},
		{HighWater: sq(10)},
		{HighWater: sq(10), Above: []idem.Sequence{sq(11), sq(12), sq(20), sq(1 << 50)}},
		{HighWater: sq(uint64(math.MaxUint64 - 2)), Above: []idem.Sequence{sq(uint64(math.MaxUint64 - 1)), sq(uint64(math.MaxUint64)), "49590338271490256608559692538361571095921575989136588898"}},
	} {
		v, err := appendProgress(nil, &p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeProgress(v)
		if err != nil || got.HighWater != p.HighWater || !slices.Equal(got.Above, p.Above) {
			t.Fatalf("round trip of %+v = %+v, %v", p, got, err)
		}
	}
	for _, bad := range []store.Progress{
		{HighWater: sq(10), Above: []idem.Sequence{"10"}},
		{HighWater: sq(10), Above: []idem.Sequence{sq(12), sq(11)}},
		{HighWater: sq(10), Above: []idem.Sequence{sq(12), "12"}},
		{HighWater: "1x"},
		{HighWater: sq(10), Above: []idem.Sequence{sq(11), "12a"}},
		{HighWater: sq(10), Above: []idem.Sequence{"-11"}},
	} {
		if _, err := appendProgress(nil, &bad); err == nil {
			t.Fatalf("appendProgress(%+v) accepted Above that is not strictly ascending above HighWater", bad)
		}
	}
}

func TestDecodersRefuse(t *testing.T) {
	good := appendCheckpoint(nil, store.Checkpoint{Sequence: sq(1)})
	for name, v := range map[string][]byte{
		"empty":            {},
		"unknown version":  append([]byte{2}, good[1:]...),
		"truncated":        good[:len(good)-1],
		"trailing":         append(slices.Clone(good), 0),
		"overlong varint":  {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"version only":     {1},
		"zero delta":       {1, 5, 1, 0},
		"count over bytes": {1, 5, 200, 1},
	} {
		if _, err := decodeCheckpoint(v); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeCheckpoint(%s) = %v, want errCorrupt", name, err)
		}
		if _, err := decodeProgress(v); !errors.Is(err, errCorrupt) && name != "trailing" {
			t.Errorf("decodeProgress(%s) = %v, want errCorrupt", name, err)
		}
	}
}

func TestRecordValue(t *testing.T) {
	for _, arrival := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1_700_000_000_000_000_000} {
		pk, data := "key", []byte("some data")
		v := make([]byte, recordValueLen(arrival, pk, data))
		putRecordValue(v, arrival, pk, data)
		a, k, d, err := decodeRecord(v)
		if err != nil || a != arrival || string(k) != pk || string(d) != string(data) {
			t.Fatalf("record round trip at %d = %d %q %q %v", arrival, a, k, d, err)
		}
	}
}

// TestShardStarts checks the hash key ranges against Kinesis' and against
// big-integer arithmetic.
func TestShardStarts(t *testing.T) {
	// Kinesis' starting hash keys for a new 3-shard stream.
	want3 := []string{"0", "113427455640312821154458202477256070485", "226854911280625642308916404954512140970"}
	for i, s := range shardStarts(3) {
		if got := toBig(s).String(); got != want3[i] {
			t.Fatalf("shard %d of 3 starts at %s, want %s", i, got, want3[i])
		}
	}
	two128 := new(big.Int).Lsh(big.NewInt(1), 128)
	for _, n := range []int{1, 2, 3, 4, 7, 10, 1000, MaxShards} {
		st := newStream("s", streamMeta{shards: n, retention: 1})
		for i, s := range st.starts {
			want := new(big.Int).Div(new(big.Int).Mul(big.NewInt(int64(i)), two128), big.NewInt(int64(n)))
			if toBig(s).Cmp(want) != 0 {
				t.Fatalf("n=%d: shard %d starts at %s, want %s", n, i, toBig(s), want)
			}
		}
		for k := range 200 {
			pk := "key-" + strconv.Itoa(k)
			sum := md5.Sum([]byte(pk))
			h := new(big.Int).SetBytes(sum[:])
			// The owner is the last shard whose start is at or below h:
			// floor(h·n/2¹²⁸) or, when h is exactly the next start, one more.
			want := int(new(big.Int).Div(new(big.Int).Mul(h, big.NewInt(int64(n))), two128).Int64())
			if want+1 < n && toBig(st.starts[want+1]).Cmp(h) <= 0 {
				want++
			}
			if got := st.route(pk).index; got != want {
				t.Fatalf("n=%d: key %q routes to shard %d, want %d", n, pk, got, want)
			}
		}
	}
}

func toBig(h hash128) *big.Int {
	b := new(big.Int).SetUint64(h.hi)
	return b.Lsh(b, 64).Or(b, new(big.Int).SetUint64(h.lo))
}

func TestShardIDs(t *testing.T) {
	st := newStream("s", streamMeta{shards: 12, retention: 1})
	if ShardID(11) != "shardId-000000000011" {
		t.Fatalf("ShardID(11) = %q", ShardID(11))
	}
	for _, id := range []string{"shardId-000000000012", "shardId-00000000001", "shardId-0000000000011", "shardid-000000000001", "shardId-00000000000x", ""} {
		if _, err := st.shard(id); !errors.Is(err, ErrShardNotFound) {
			t.Fatalf("shard(%q) = %v, want ErrShardNotFound", id, err)
		}
	}
	if sh, err := st.shard("shardId-000000000011"); err != nil || sh.index != 11 {
		t.Fatalf("shard 11 = %v, %v", sh, err)
	}
}

// FuzzDecodeCheckpoint: arbitrary bytes make an error, never a panic, and
// whatever decodes re-encodes to the same bytes.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(appendCheckpoint(nil, store.Checkpoint{Sequence: sq(300), Processed: 1, Lost: 1 << 40}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 0x80})
	f.Fuzz(func(t *testing.T, v []byte) {
		c, err := decodeCheckpoint(v)
		if err != nil {
			return
		}
		if got := appendCheckpoint(nil, c); string(got) != string(v) {
			// Varints have non-minimal encodings; decoding those must still
			// give the same checkpoint.
			if c2, err := decodeCheckpoint(got); err != nil || c2 != c {
				t.Fatalf("re-encoding %+v gave %x, which decodes to %+v, %v", c, got, c2, err)
			}
		}
	})
}

// FuzzDecodeProgress: arbitrary bytes make an error, never a panic or a
// huge allocation, and a decoded Progress is strictly ascending above its
// high water, so that it encodes again.
func FuzzDecodeProgress(f *testing.F) {
	v, _ := appendProgress(nil, &store.Progress{HighWater: sq(100), Above: []idem.Sequence{sq(101), sq(105), sq(1 << 40)}})
	f.Add(v)
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 5, 200, 1})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 1})
	f.Fuzz(func(t *testing.T, v []byte) {
		p, err := decodeProgress(v)
		if err != nil {
			return
		}
		enc, err := appendProgress(nil, &p)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", p, err)
		}
		p2, err := decodeProgress(enc)
		if err != nil || p2.HighWater != p.HighWater || !slices.Equal(p2.Above, p.Above) {
			t.Fatalf("re-decoding %+v gave %+v, %v", p, p2, err)
		}
	})
}

// FuzzDecodeValues runs the other decoders over arbitrary bytes: records
// read from disk, stream metadata, horizons, marks and state.
func FuzzDecodeValues(f *testing.F) {
	rec := make([]byte, recordValueLen(5, "pk", []byte("data")))
	putRecordValue(rec, 5, "pk", []byte("data"))
	f.Add(rec)
	f.Add(encodeStreamMeta(streamMeta{shards: 4, retention: 3600e9}))
	f.Add(encodeHorizon(7))
	f.Add(appendMark(nil, 99))
	f.Add([]byte{1, 2, 0xff})
	f.Fuzz(func(t *testing.T, v []byte) {
		if _, pk, data, err := decodeRecord(v); err == nil && len(pk)+len(data) > len(v) {
			t.Fatalf("record parts longer than the value")
		}
		if m, err := decodeStreamMeta(v); err == nil && (m.shards < 1 || m.shards > MaxShards || m.retention <= 0) {
			t.Fatalf("stream meta %+v accepted", m)
		}
		decodeArrival(v)
		decodeHorizon(v)
		decodeMark(v)
		decodeState(v)
	})
}

// sq is the tests' shorthand for a 20-digit sequence.
func sq[N int | uint64](n N) idem.Sequence { return idem.SequenceOf(uint64(n)) }

// num is the number a 20-digit sequence spells.
func num(s idem.Sequence) uint64 { n, _ := s.Uint64(); return n }
