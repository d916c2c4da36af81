package invoke

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/idem-run/idem/store"
)

// An event queued for asynchronous invocation is one record of the
// function's queue stream:
//
//	{"v":1,"requestId":"…","key":"…","reservation":7,"keyOnly":true}\n<payload>
//
// a one-line JSON header (json.Marshal never writes a raw newline), then
// the payload verbatim. The payload is JSON, so the whole record reads as
// text (`idem records --stream idem:invoke:<function>`). The format is
// stable: a queue written by one version of idem is run by the next. The
// record's arrival time is the event's acceptance time, for
// maximumEventAge.
type envelope struct {
	V         int    `json:"v"`
	RequestID string `json:"requestId"`
	// Key is the invocation's idempotency key, if it has one.
	Key string `json:"key,omitempty"`
	// Reservation is the fencing token of the key's reservation (a claims
	// record of queuedScope) the event was queued under; 0 for an event
	// without a key, or queued by a version of idem without reservations.
	// Of two events queued under one key (the first one's reservation
	// lapsed before it was marked queued), the one whose token the
	// reservation holds runs.
	Reservation uint64 `json:"reservation,omitempty"`
	// KeyOnly is Request.KeyOnly: the key alone identifies the event, and
	// its claims keep the key's hash, not the payload's (see hash). Absent
	// (false) in the records of events queued without it, and by versions
	// of idem before it, which hashed the payload: they still do.
	KeyOnly bool `json:"keyOnly,omitempty"`
	// Payload is not in the header.
	Payload []byte `json:"-"`
}

const envelopeVersion = 1

// hash is the payload hash every claim of the event keeps (its
// reservation, its run): one helper, so that they never disagree.
func (e *envelope) hash() store.PayloadHash { return claimHash(e.KeyOnly, e.Key, e.Payload) }

func (e *envelope) encode() []byte {
	e.V = envelopeVersion
	h, _ := json.Marshal(e)
	out := make([]byte, 0, len(h)+1+len(e.Payload))
	out = append(out, h...)
	out = append(out, '\n')
	return append(out, e.Payload...)
}

var errBadEnvelope = errors.New("invoke: queued event is not an idem event envelope")

func decodeEnvelope(b []byte) (envelope, error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return envelope{}, errBadEnvelope
	}
	var e envelope
	if err := json.Unmarshal(b[:i], &e); err != nil || e.V != envelopeVersion || e.RequestID == "" {
		return envelope{}, errBadEnvelope
	}
	e.Payload = b[i+1:]
	return e, nil
}
