package kinesis

import "github.com/idem-run/idem/source/internal/shards"

// Kinesis sequence numbers are decimal strings of up to 128 digits;
// positions between two records are written one below the later record's
// number.
var (
	increment = shards.Increment
	decrement = shards.Decrement
)
