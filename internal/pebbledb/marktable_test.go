package pebbledb

import (
	"math/rand/v2"
	"testing"

	"github.com/idem-run/idem/store"
)

// TestMarkTable holds markTable to a Go map under the journal's rule (of
// two writes of a key the later expiry counts, in whatever order they are
// filed), through growth from the smallest table, with SHA-256 keys and
// with keys that differ in one byte of one half only; and a mark that
// expires at the Unix epoch itself (an empty slot's expiry) is held, as
// expiring a nanosecond later.
func TestMarkTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keySets := map[string][]store.MarkKey{"sha256": markKeys("scope", 0, 5000)}
	var lowHalf, highHalf []store.MarkKey
	for i := range 256 {
		var a, b store.MarkKey
		a[0], b[15] = byte(i), byte(i)
		lowHalf, highHalf = append(lowHalf, a), append(highHalf, b)
	}
	keySets["first byte only"], keySets["last byte only"] = lowHalf, highHalf
	for name, keys := range keySets {
		t.Run(name, func(t *testing.T) {
			tab := newMarkTable(0)
			want := map[store.MarkKey]journaled{}
			for range 4 * len(keys) {
				k := keys[rng.IntN(len(keys))]
				m := journaled{expires: rng.Int64()}
				tab.put(&k, m)
				if old, ok := want[k]; ok {
					m = journaled{expires: max(old.expires, m.expires)}
				}
				want[k] = m
			}
			if tab.len() != len(want) {
				t.Fatalf("len %d, want %d", tab.len(), len(want))
			}
			for k, m := range want {
				if got, ok := tab.get(&k); !ok || got != m {
					t.Fatalf("get %x = %+v, %v; want %+v", k[:], got, ok, m)
				}
			}
			seen := 0
			tab.all(func(k *store.MarkKey, m journaled) {
				seen++
				if want[*k] != m {
					t.Fatalf("all gave %x %+v, want %+v", k[:], m, want[*k])
				}
			})
			if seen != len(want) {
				t.Fatalf("all gave %d marks, want %d", seen, len(want))
			}
			absent := markKeys("other scope", 0, 100)
			for i := range absent {
				if _, ok := tab.get(&absent[i]); ok {
					t.Fatalf("get of a key never put found it")
				}
			}
			tab.reset()
			if _, ok := tab.get(&keys[0]); ok || tab.len() != 0 {
				t.Fatal("reset kept a mark")
			}
		})
	}
	tab := newMarkTable(0)
	epoch := markKeys("epoch", 0, 1)[0]
	tab.put(&epoch, journaled{expires: 0})
	if got, ok := tab.get(&epoch); !ok || got.expires != 1 || tab.len() != 1 {
		t.Fatalf("a mark expiring at 0: get = %+v, %v, len %d; want expiry 1, found, len 1", got, ok, tab.len())
	}
	tab.put(&epoch, journaled{expires: -5})
	if got, _ := tab.get(&epoch); got.expires != 1 {
		t.Fatalf("an earlier expiry replaced the later: %+v", got)
	}
	var none *markTable
	if _, ok := none.get(&store.MarkKey{}); ok || none.len() != 0 {
		t.Fatal("a nil table holds a mark")
	}
}

// BenchmarkFileMarks files a spill's worth of marks (131,072, one commit
// of 100 at a time) into a markTable and, as the journal did before, into
// a Go map with a lookup before each store.
func BenchmarkFileMarks(b *testing.B) {
	keys := markKeys("scope", 0, defaultSpillMarksAt)
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			tab := newMarkTable(defaultSpillMarksAt)
			for i := range keys {
				tab.put(&keys[i], journaled{expires: 1})
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/mark")
	})
	b.Run("map", func(b *testing.B) {
		for b.Loop() {
			m := make(map[store.MarkKey]journaled, defaultSpillMarksAt)
			for i := range keys {
				v := journaled{expires: int64(i/100) + 1}
				if old, ok := m[keys[i]]; !ok || old.expires <= v.expires {
					m[keys[i]] = v
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/mark")
	})
}

// BenchmarkFileCommits files marks as commits do, 100 at a time, into a
// table of a spill's size that is larger than the cache, with and without
// touching each commit's slots first.
func BenchmarkFileCommits(b *testing.B) {
	keys := markKeys("scope", 0, 1<<20)
	marks := make([]store.Mark, len(keys))
	for i := range keys {
		marks[i] = store.Mark{Key: keys[i]}
	}
	for _, touch := range []bool{false, true} {
		name := "direct"
		if touch {
			name = "touched"
		}
		b.Run(name, func(b *testing.B) {
			tab := newMarkTable(len(keys))
			n := 0
			for b.Loop() {
				if n+100 > len(marks) {
					tab.reset()
					n = 0
				}
				c := marks[n : n+100]
				if touch {
					tab.touch(c)
				}
				for i := range c {
					tab.put(&c[i].Key, journaled{expires: 1})
				}
				n += 100
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/mark")
		})
	}
}
