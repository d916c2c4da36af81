package engine

import (
	"fmt"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/function"
)

// A batch is cut at Lambda's invocation payload limit by the bytes of the
// event the function gets (function.EventSize): base64 data and each
// record's JSON envelope, and a tumbling window's state, not the records'
// raw data.

// conditionPayloadSize is the condition of an on-failure record for a
// record whose event alone is above MaxBatchBytes: Lambda's name for it
// (its Kafka on-failure records say "MaximumPayloadSizeExceeded", with a
// null responseContext, since the function never ran).
const conditionPayloadSize = "MaximumPayloadSizeExceeded"

// eventSizer sizes the events of one mapping's batches.
type eventSizer struct {
	region string
	format idem.EventFormat
}

func (m *mapping) sizer() eventSizer {
	region := function.DefaultEventRegion
	if r, ok := m.cfg.Invoker.(function.EventRegioner); ok {
		region = r.EventRegion()
	}
	return eventSizer{region: region, format: m.cfg.EventFormat}
}

// base is the bytes of a batch's event around its records, whose first is
// first, with window w (nil: none). A batch of records of sizes r1..rn
// (record) has an event of at most base+r1+...+rn-1 bytes.
func (z eventSizer) base(first *idem.Record, w *idem.Window) int {
	return function.EventBaseSize(z.region, z.format, first, w)
}

// record is the bytes r adds to its batch's event, with a separator.
func (z eventSizer) record(r *idem.Record) int {
	return function.EventRecordSize(z.region, z.format, r)
}

// size is the bytes of the event over recs (no window).
func (z eventSizer) size(recs []idem.Record) int {
	if len(recs) == 0 {
		return 0
	}
	return function.EventSize(z.region, z.format, recs, nil) - 1
}

// dataBudget is the most raw data that encodes to at most n bytes of an
// event: base64 makes 3 bytes 4. A source's Read counts raw data.
func dataBudget(n int) int { return max(n, 0) / 4 * 3 }

// tooLargeMessage says why a record was not sent.
func tooLargeMessage(size int) string {
	return fmt.Sprintf("the record's invocation payload alone is %d bytes, above the %d-byte limit", size, MaxBatchBytes)
}
