package httpfn

import (
	"encoding/base64"
	"errors"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/ddbevent"
	"github.com/idem-run/idem/internal/s3event"
)

// appendEvent appends b as the JSON of the Lambda event b.Format names.
func (f *Function) appendEvent(dst []byte, b *idem.Batch) []byte {
	switch b.Format {
	case idem.EventFormatKafka:
		return f.appendKafkaEvent(dst, b)
	case idem.EventFormatS3:
		return appendS3Event(dst, b)
	case idem.EventFormatDynamoDB:
		return f.appendDynamoDBEvent(dst, b)
	}
	return f.appendKinesisEvent(dst, b)
}

// appendDynamoDBEvent appends b as the JSON of an events.DynamoDBEvent: one
// {"Records":[…]} holding, in order, the DynamoDBEventRecord of every
// record's data (internal/ddbevent: a DynamoDB Streams record compacted
// but otherwise as it is, a change Kinesis Data Streams for DynamoDB wrote
// converted, with the Kinesis sequence number as its SequenceNumber), and
// with a tumbling window the fields of an events.DynamoDBTimeWindowEvent,
// the same as a KinesisTimeWindowEvent's (appendWindow). Records carry no
// idempotencyKey and nothing of the region. Data that is no DynamoDB
// change adds no record; the engine never sends any (it discards such a
// record before building a batch).
func (f *Function) appendDynamoDBEvent(dst []byte, b *idem.Batch) []byte {
	dst = append(dst, `{"Records":[`...)
	first := true
	for i := range b.Records {
		r := &b.Records[i]
		n := len(dst)
		if !first {
			dst = append(dst, ',')
		}
		out, err := ddbevent.Append(dst, r.Data, string(r.Sequence))
		if err != nil {
			dst = dst[:n]
			continue
		}
		dst, first = out, false
	}
	dst = append(dst, ']')
	if w := b.Window; w != nil {
		dst = f.appendWindow(dst, w)
	}
	return append(dst, '}')
}

// appendS3Event appends b as the JSON of an events.S3Event: one
// {"Records":[…]} holding, in order, the event records of every record's
// data, an S3 event notification, each compacted but otherwise as the
// store wrote it (fields aws-lambda-go does not know reach the function
// too). A test notification, or data that is not a notification, adds no
// record; the engine never sends either (it filters test notifications
// out, and discards what is not a notification, before building a batch).
func appendS3Event(dst []byte, b *idem.Batch) []byte {
	dst = append(dst, `{"Records":[`...)
	first := true
	for i := range b.Records {
		n, err := s3event.Parse(b.Records[i].Data)
		if err != nil {
			continue
		}
		for j := range n.Records {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, n.Records[j].Raw...)
		}
	}
	return append(dst, "]}"...)
}

// appendKafkaEvent appends b as the JSON of an events.KafkaEvent (Amazon
// MSK's shape) whose records also carry "idempotencyKey", grouped by their
// "<topic>-<partition>" shard ID. It writes the bytes encoding/json would. It expects a Kafka source's records: the
// topic is the Stream, the partition follows the shard ID's last '-', and
// the offset is the Sequence minus one, since Kafka sources number records
// offset+1 (source/kafka's Offset; it is not imported, to keep this driver
// free of the Kafka client). A key is the PartitionKey's bytes; an empty
// key or value is left out, as encoding/json's omitempty does; timestamps
// are CREATE_TIME in Unix milliseconds.
func (f *Function) appendKafkaEvent(dst []byte, b *idem.Batch) []byte {
	dst = append(dst, `{"eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:`...)
	dst = appendStringBody(dst, f.region)
	dst = append(dst, `:000000000000:cluster/idem/`...)
	if len(b.Records) > 0 {
		dst = appendStringBody(dst, b.Records[0].Stream)
	}
	dst = append(dst, `","records":{`...)
	// A batch holds one shard's records, so there is almost always one
	// group; several are sorted, as encoding/json sorts map keys.
	var shards []string
	for i := range b.Records {
		if !slices.Contains(shards, b.Records[i].ShardID) {
			shards = append(shards, b.Records[i].ShardID)
		}
	}
	slices.Sort(shards)
	for g, shard := range shards {
		if g > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, shard)
		dst = append(dst, `:[`...)
		first := true
		var partition int64 // the group's, from its first record
		for i := range b.Records {
			r := &b.Records[i]
			if r.ShardID != shard {
				continue
			}
			if first {
				partition = int64(r.KafkaPartition())
			} else {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `{"topic":`...)
			dst = appendString(dst, r.Stream)
			dst = append(dst, `,"partition":`...)
			dst = strconv.AppendInt(dst, partition, 10)
			dst = append(dst, `,"offset":`...)
			dst = strconv.AppendUint(dst, r.KafkaOffset(), 10)
			dst = append(dst, `,"timestamp":`...)
			if r.ArrivalTime.IsZero() {
				dst = append(dst, '0')
			} else {
				dst = strconv.AppendInt(dst, r.ArrivalTime.UnixMilli(), 10)
			}
			dst = append(dst, `,"timestampType":"CREATE_TIME"`...)
			if r.PartitionKey != "" {
				dst = append(dst, `,"key":"`...)
				dst = base64.StdEncoding.AppendEncode(dst, []byte(r.PartitionKey))
				dst = append(dst, '"')
			}
			if len(r.Data) > 0 {
				dst = append(dst, `,"value":"`...)
				dst = base64.StdEncoding.AppendEncode(dst, r.Data)
				dst = append(dst, '"')
			}
			dst = append(dst, `,"headers":[`...)
			for j, h := range r.Headers {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, '{')
				dst = appendString(dst, h.Key)
				dst = append(dst, `:[`...)
				for k, c := range h.Value {
					if k > 0 {
						dst = append(dst, ',')
					}
					// Java bytes: signed, as events.JSONNumberBytes reads them.
					dst = strconv.AppendInt(dst, int64(int8(c)), 10)
				}
				dst = append(dst, "]}"...)
			}
			dst = append(dst, `],"idempotencyKey":`...)
			dst = appendString(dst, r.IdempotencyKey)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	return append(dst, `},"bootstrapServers":""}`...)
}

// appendKinesisEvent appends b as the JSON of an events.KinesisEvent whose records
// also carry "idempotencyKey". It writes the bytes encoding/json would for
// that struct (with HTML escaping off), without reflection: the event is
// built once per batch and a batch holds up to 10,000 records.
func (f *Function) appendKinesisEvent(dst []byte, b *idem.Batch) []byte {
	dst = append(dst, `{"Records":[`...)
	var stream string
	var arnStart, arnEnd int // where the current stream's quoted ARN lies in dst
	for i := range b.Records {
		r := &b.Records[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"awsRegion":`...)
		dst = appendString(dst, f.region)
		dst = append(dst, `,"eventID":"`...)
		dst = appendStringBody(dst, r.ShardID)
		dst = append(dst, ':')
		dst = appendStringBody(dst, string(r.Sequence))
		dst = append(dst, `","eventName":"aws:kinesis:record","eventSource":"aws:kinesis","eventSourceARN":`...)
		if i == 0 || r.Stream != stream {
			stream = r.Stream
			arnStart = len(dst)
			dst = append(dst, `"arn:aws:kinesis:`...)
			dst = appendStringBody(dst, f.region)
			dst = append(dst, `:000000000000:stream/`...)
			dst = appendStringBody(dst, stream)
			dst = append(dst, '"')
			arnEnd = len(dst)
		} else {
			dst = append(dst, dst[arnStart:arnEnd]...)
		}
		dst = append(dst, `,"eventVersion":"1.0","invokeIdentityArn":"","kinesis":{"approximateArrivalTimestamp":`...)
		dst = appendEpochSeconds(dst, r)
		dst = append(dst, `,"data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, r.Data)
		dst = append(dst, `","partitionKey":`...)
		dst = appendString(dst, r.PartitionKey)
		dst = append(dst, `,"sequenceNumber":"`...)
		dst = appendStringBody(dst, string(r.Sequence))
		dst = append(dst, `","kinesisSchemaVersion":"1.0"},"idempotencyKey":`...)
		dst = appendString(dst, r.IdempotencyKey)
		dst = append(dst, '}')
	}
	dst = append(dst, ']')
	if w := b.Window; w != nil {
		dst = f.appendWindow(dst, w)
	}
	return append(dst, '}')
}

// appendWindow appends the fields of an events.KinesisTimeWindowEvent
// beyond its Records, as encoding/json writes them, except that the state
// is Window.StateJSON as it is, when set: values of any JSON type, which
// events.TimeWindowProperties' map of strings cannot hold.
func (f *Function) appendWindow(dst []byte, w *idem.Window) []byte {
	dst = append(dst, `,"window":{"start":"`...)
	dst = w.Start.UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, `","end":"`...)
	dst = w.End.UTC().AppendFormat(dst, time.RFC3339)
	dst = append(dst, `"},"state":`...)
	if w.StateJSON != nil {
		// The state exactly as the function returned it: any JSON object.
		dst = append(dst, w.StateJSON...)
	} else if w.State == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '{')
		for i, k := range slices.Sorted(maps.Keys(w.State)) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendString(dst, w.State[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"shardId":`...)
	dst = appendString(dst, w.ShardID)
	dst = append(dst, `,"eventSourceARN":"arn:aws:kinesis:`...)
	dst = appendStringBody(dst, f.region)
	dst = append(dst, `:000000000000:stream/`...)
	dst = appendStringBody(dst, w.Stream)
	dst = append(dst, `","isFinalInvokeForWindow":`...)
	dst = strconv.AppendBool(dst, w.Final)
	dst = append(dst, `,"isWindowTerminatedEarly":`...)
	return strconv.AppendBool(dst, w.TerminatedEarly)
}

// appendEpochSeconds writes the arrival time as events.SecondsEpochTime
// does: Unix seconds as a float64, formatted as encoding/json formats
// floats. An unknown (zero) arrival time is written as 0, where
// SecondsEpochTime would write an overflowed number.
func appendEpochSeconds(dst []byte, r *idem.Record) []byte {
	if r.ArrivalTime.IsZero() {
		return append(dst, '0')
	}
	return appendFloat(dst, float64(r.ArrivalTime.UnixNano())/1e9)
}

// appendFloat formats f as encoding/json does.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(dst, '0') // cannot happen for a time; JSON has no such numbers
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendString appends s as a JSON string, as encoding/json does with HTML
// escaping off.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendStringBody(dst, s)
	return append(dst, '"')
}

// appendStringBody appends s JSON-escaped, without quotes: control
// characters, '"' and '\\' are escaped, invalid UTF-8 becomes U+FFFD, and
// U+2028 and U+2029 are escaped for JavaScript consumers.
func appendStringBody(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(dst, s[start:]...)
}

// payload is a pooled request body. The transport may close a request's
// body after Do returns, and may ask for a second copy (GetBody) to resend
// on a fresh connection, so the buffer goes back to the pool only when
// Invoke and every body reading it are done with it.
type payload struct {
	buf  []byte
	refs atomic.Int32
}

func (f *Function) payload() *payload {
	p, ok := f.bodies.Get().(*payload)
	if !ok {
		p = new(payload)
	}
	p.refs.Store(1) // Invoke's
	return p
}

// release drops one reference, returning p to pool after the last.
func (p *payload) release(pool *sync.Pool) {
	if p.refs.Add(-1) == 0 && cap(p.buf) <= maxPooled {
		pool.Put(p)
	}
}

// newBody returns a reader over p's bytes holding a reference to p until it
// is closed.
func (p *payload) newBody(pool *sync.Pool) io.ReadCloser {
	p.refs.Add(1)
	return &body{p: p, pool: pool, rest: p.buf}
}

var errBodyClosed = errors.New("httpfn: read from a closed request body")

// body reads a payload. Read and Close may be called from different
// goroutines (the transport closes a body when a request is canceled), so
// they exclude each other: after Close, the bytes may already belong to
// another request.
type body struct {
	mu     sync.Mutex
	p      *payload
	pool   *sync.Pool
	rest   []byte
	closed bool
}

func (b *body) Read(dst []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyClosed
	}
	if len(b.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(dst, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.rest = nil
		b.p.release(b.pool)
	}
	return nil
}
