package shards

import "github.com/idem-run/idem"

// Kinesis and DynamoDB Streams sequence numbers are decimal strings (up to
// 128 digits on Kinesis). Positions between two records are written one
// below the later record's number; these helpers do that arithmetic on the
// digits.

// Increment returns s+1; s must be a valid idem.Sequence ("" is 0).
func Increment(s idem.Sequence) idem.Sequence {
	b := []byte(s)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < '9' {
			b[i]++
			return idem.Sequence(b)
		}
		b[i] = '0'
	}
	return idem.Sequence(append([]byte{'1'}, b...))
}

// Decrement returns s-1 without leading zeros (but "0" for 0); it returns
// "" for 0 and "", the position before every record.
func Decrement(s idem.Sequence) idem.Sequence {
	b := []byte(s)
	i := len(b) - 1
	for ; i >= 0; i-- {
		if b[i] > '0' {
			b[i]--
			break
		}
		b[i] = '9'
	}
	if i < 0 {
		return ""
	}
	for len(b) > 1 && b[0] == '0' {
		b = b[1:]
	}
	return idem.Sequence(b)
}
