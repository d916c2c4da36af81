package jetstream

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// delivered is the metadata JetStream puts in a delivered message's reply
// subject.
type delivered struct {
	seq     uint64 // stream sequence
	cseq    uint64 // consumer delivery sequence
	pending uint64 // messages left for the consumer after this one
	ts      int64  // when the stream stored it, Unix nanoseconds
}

// pullEnd says why a pull ended.
type pullEnd int

const (
	endBatch   pullEnd = iota // the batch was filled: more may follow
	endBytes                  // the next message did not fit max_bytes: more follow
	endDrained                // the consumer had nothing more (404 or 408)
	endGone                   // the consumer no longer exists, or moved: recreate it
	endBroken                 // the handler refused a message (a delivery gap)
)

// pull sends one no-wait pull request to consumer for up to batch messages
// (and about maxBytes, if not 0) and hands each delivered message to each,
// in order, until each returns false. With wait above 0 the server waits
// up to wait for a first message instead of answering "no messages" at once.
// Delivered messages go
// to a subscription of pull's own; it owns no goroutine: it reads the
// replies on a subscription of its own, which it removes before returning.
// A context error is returned as is; the consumer's position is then
// unknown.
func (s *Source) pull(ctx context.Context, consumer string, batch, maxBytes int, wait time.Duration, each func(*nats.Msg, delivered) bool) (pullEnd, error) {
	rctx, cancel := s.requestContext(ctx)
	defer cancel()
	// A channel with room for the whole batch (and a status): the
	// connection never drops a reply, and no goroutine is involved.
	ch := make(chan *nats.Msg, batch+2)
	inbox := s.nc.NewInbox()
	sub, err := s.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, fmt.Errorf("jetstream: stream %q: subscribing for a pull: %w", s.name, err)
	}
	defer sub.Unsubscribe()

	req := make([]byte, 0, 64)
	req = append(req, `{"batch":`...)
	req = strconv.AppendInt(req, int64(batch), 10)
	if maxBytes > 0 {
		req = append(req, `,"max_bytes":`...)
		req = strconv.AppendInt(req, int64(maxBytes), 10)
	}
	if wait > 0 {
		req = append(req, `,"expires":`...)
		req = strconv.AppendInt(req, int64(wait), 10)
	}
	req = append(req, `,"no_wait":true}`...)
	subject := s.api + "CONSUMER.MSG.NEXT." + s.name + "." + consumer
	if err := s.nc.PublishRequest(subject, inbox, req); err != nil {
		return 0, fmt.Errorf("jetstream: stream %q: pull from consumer %q: %w", s.name, consumer, err)
	}
	for n := 0; n < batch; {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-rctx.Done():
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			return 0, fmt.Errorf("jetstream: stream %q: pull from consumer %q: no answer within %s", s.name, consumer, s.opt.requestTimeout)
		}
		if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
			end, err := pullStatus(m)
			if err != nil {
				return 0, fmt.Errorf("jetstream: stream %q: pull from consumer %q: %w", s.name, consumer, err)
			}
			if end < 0 {
				continue
			}
			return end, nil
		}
		d, ok := parseAck(m.Reply)
		if !ok {
			return 0, fmt.Errorf("jetstream: stream %q: pull from consumer %q: unexpected reply subject %q", s.name, consumer, m.Reply)
		}
		n++
		if !each(m, d) {
			return endBroken, nil
		}
	}
	return endBatch, nil
}

// pullStatus interprets a status message that ends (or, returning -1,
// does not end) a pull.
func pullStatus(m *nats.Msg) (pullEnd, error) {
	code, descr := m.Header.Get("Status"), strings.ToLower(m.Header.Get("Description"))
	switch code {
	case "100": // heartbeat or flow control
		return -1, nil
	case "404", "408":
		return endDrained, nil
	case "503":
		return endGone, nil
	case "409":
		switch {
		case strings.Contains(descr, "maxbytes"):
			return endBytes, nil
		case strings.Contains(descr, "consumer deleted"),
			strings.Contains(descr, "leadership change"),
			strings.Contains(descr, "server shutdown"),
			strings.Contains(descr, "consumer is push based"):
			return endGone, nil
		}
	}
	return 0, fmt.Errorf("status %s %s", code, m.Header.Get("Description"))
}

// parseAck reads the metadata of a JetStream ack subject:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>...]
func parseAck(reply string) (delivered, bool) {
	var toks [16]string
	n := 0
	for rest := reply; n < len(toks); n++ {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			toks[n] = rest
			n++
			break
		}
		toks[n], rest = rest[:i], rest[i+1:]
	}
	var f []string
	switch {
	case n == 9:
		f = toks[4:9]
	case n >= 11:
		f = toks[6:11]
	default:
		return delivered{}, false
	}
	num := func(s string) (uint64, bool) {
		v, err := strconv.ParseUint(s, 10, 64)
		return v, err == nil
	}
	var d delivered
	var ok1, ok2, ok3, ok4 bool
	d.seq, ok1 = num(f[1])
	d.cseq, ok2 = num(f[2])
	ts, ok3 := num(f[3])
	d.pending, ok4 = num(f[4])
	d.ts = int64(ts)
	return d, ok1 && ok2 && ok3 && ok4
}
