package redisstream

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/idem-run/idem"
)

// SequenceWidth is the number of digits of every Sequence this source gives
// a record: 2^128 has 39 digits, and a fixed width makes the strings sort as
// the numbers do, for tools that sort them as text.
const SequenceWidth = 40

// ErrInvalidSequence is wrapped by the errors for a position that is not a
// decimal number below 2^128, or an entry ID that is not "ms-seq".
var ErrInvalidSequence = errors.New("redisstream: not a Redis stream position")

// entryID is a stream entry ID "ms-seq", ordered as Redis orders IDs: as the
// 128-bit number ms*2^64+seq. The zero entryID, 0-0, is the position before
// every entry (Redis never gives an entry that ID).
type entryID struct{ ms, seq uint64 }

// maxID is the largest ID Redis can represent.
var maxID = entryID{^uint64(0), ^uint64(0)}

func (a entryID) isZero() bool { return a.ms == 0 && a.seq == 0 }

// cmp returns -1, 0 or +1 as a is below, equal to or above b.
func (a entryID) cmp(b entryID) int {
	switch {
	case a.ms < b.ms:
		return -1
	case a.ms > b.ms:
		return 1
	case a.seq < b.seq:
		return -1
	case a.seq > b.seq:
		return 1
	}
	return 0
}

// next returns the smallest ID above a, and false when a is maxID.
func (a entryID) next() (entryID, bool) {
	if a == maxID {
		return a, false
	}
	seq, carry := bits.Add64(a.seq, 1, 0)
	return entryID{a.ms + carry, seq}, true
}

// prev returns the largest ID below a; a must not be zero.
func (a entryID) prev() entryID {
	seq, borrow := bits.Sub64(a.seq, 1, 0)
	return entryID{a.ms - borrow, seq}
}

// String spells a as Redis does: "ms-seq".
func (a entryID) String() string {
	b := make([]byte, 0, 41)
	b = strconv.AppendUint(b, a.ms, 10)
	b = append(b, '-')
	return string(strconv.AppendUint(b, a.seq, 10))
}

// parseEntryID parses a complete Redis entry ID, "ms-seq".
func parseEntryID(s string) (entryID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok {
		return entryID{}, fmt.Errorf("%w: entry ID %q is not ms-seq", ErrInvalidSequence, s)
	}
	ms, err1 := parseDecimal(msPart)
	seq, err2 := parseDecimal(seqPart)
	if err1 != nil || err2 != nil {
		return entryID{}, fmt.Errorf("%w: entry ID %q is not ms-seq", ErrInvalidSequence, s)
	}
	return entryID{ms, seq}, nil
}

// parseDecimal parses digits only: strconv.ParseUint alone would also take
// a sign or underscores.
func parseDecimal(s string) (uint64, error) {
	if s == "" || !idem.Sequence(s).Valid() {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, 64)
}

const e19 = 10_000_000_000_000_000_000 // 10^19, the largest power of 10 below 2^64

// appendSequence appends a as its SequenceWidth-digit decimal number.
func (a entryID) appendSequence(dst []byte) []byte {
	// ms*2^64+seq = ((top*10^19)+mid)*10^19+low, top < 4.
	hiQ, r := a.ms/e19, a.ms%e19
	loQ, low := bits.Div64(r, a.seq, e19)
	top, mid := bits.Div64(hiQ, loQ, e19) // hiQ < 2 < 10^19: no overflow
	dst = append(dst, '0', byte('0'+top))
	dst = appendDigits(dst, mid)
	return appendDigits(dst, low)
}

// appendDigits appends n as exactly 19 digits.
func appendDigits(dst []byte, n uint64) []byte {
	var b [19]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return append(dst, b[:]...)
}

// sequence is a as the Sequence of a record: always SequenceWidth digits.
func (a entryID) sequence() idem.Sequence {
	return idem.Sequence(a.appendSequence(make([]byte, 0, SequenceWidth)))
}

// position is a as a reading position: the zero Sequence for 0-0, the
// record spelling otherwise.
func (a entryID) position() idem.Sequence {
	if a.isZero() {
		return ""
	}
	return a.sequence()
}

// parseSequence reads a decimal Sequence of any width (leading zeros do not
// count; "" is 0) as the entry ID it numbers.
func parseSequence(s idem.Sequence) (entryID, error) {
	var hi, lo uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return entryID{}, fmt.Errorf("%w: %q is not a decimal number", ErrInvalidSequence, s)
		}
		// (hi, lo) = (hi, lo)*10 + digit, refusing to pass 2^128-1.
		carry, lo10 := bits.Mul64(lo, 10)
		over, hi10 := bits.Mul64(hi, 10)
		hi10, c1 := bits.Add64(hi10, carry, 0)
		lo11, c2 := bits.Add64(lo10, uint64(c-'0'), 0)
		hi11, c3 := bits.Add64(hi10, 0, c2)
		if over != 0 || c1 != 0 || c3 != 0 {
			return entryID{}, fmt.Errorf("%w: %q is 2^128 or more", ErrInvalidSequence, s)
		}
		hi, lo = hi11, lo11
	}
	return entryID{hi, lo}, nil
}

// SequenceOfID returns the Sequence of the stream entry with Redis ID id
// ("ms-seq", as XADD returns it): the number ms*2^64+seq, in SequenceWidth
// digits. It orders as the IDs do, and IDOfSequence maps it back. Records
// read from this source carry exactly this spelling.
func SequenceOfID(id string) (idem.Sequence, error) {
	e, err := parseEntryID(id)
	if err != nil {
		return "", err
	}
	return e.sequence(), nil
}

// IDOfSequence returns the Redis entry ID ("ms-seq") that seq numbers, for
// any spelling of the number (leading zeros do not count); the zero
// Sequence, the position before every entry, is "0-0". The error wraps
// ErrInvalidSequence when seq is not a decimal number below 2^128.
func IDOfSequence(seq idem.Sequence) (string, error) {
	e, err := parseSequence(seq)
	if err != nil {
		return "", err
	}
	return e.String(), nil
}
