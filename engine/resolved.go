package engine

import (
	"sort"

	"github.com/idem-run/idem"
)

// window tracks which records of the window being processed are resolved,
// so that the checkpoint only ever moves over resolved records, and records
// resolved out of order (under parallelization) are remembered in the scope's
// progress.
type window struct {
	seqs []idem.Sequence
	done []bool
	next int // index of the first unresolved record
	// failed is set when a commit of the window failed: its outcome may be
	// unknown (a connection lost during COMMIT), so nothing more of the
	// window may commit on top of what this process believes; the shard
	// restarts from what the store holds.
	failed bool
}

func (w *window) index(seq idem.Sequence) int {
	return sort.Search(len(w.seqs), func(i int) bool { return w.seqs[i].Compare(seq) >= 0 })
}

// each calls f with the index of every sequence of seqs the window holds.
// seqs mostly come in window order (a batch's records), so each lookup
// first tries the place after the previous one, and searches only when
// that misses.
func (w *window) each(seqs []idem.Sequence, f func(i int)) {
	hint := 0
	for _, q := range seqs {
		i := hint
		if i >= len(w.seqs) || w.seqs[i] != q {
			i = w.index(q)
		}
		if i < len(w.seqs) && w.seqs[i] == q {
			f(i)
			hint = i + 1
		}
	}
}

// unresolve undoes resolve(seqs), for a commit that failed.
func (w *window) unresolve(seqs []idem.Sequence) {
	w.each(seqs, func(i int) {
		w.done[i] = false
		w.next = min(w.next, i)
	})
}

// resolve marks seqs resolved; it returns whether the contiguous prefix grew.
func (w *window) resolve(seqs []idem.Sequence) bool {
	w.each(seqs, func(i int) { w.done[i] = true })
	before := w.next
	for w.next < len(w.done) && w.done[w.next] {
		w.next++
	}
	return w.next > before
}

// above lists resolved sequences past the contiguous prefix.
func (w *window) above(dst []idem.Sequence) []idem.Sequence {
	for i := w.next; i < len(w.seqs); i++ {
		if w.done[i] {
			dst = append(dst, w.seqs[i])
		}
	}
	return dst
}
