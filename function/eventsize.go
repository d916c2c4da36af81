package function

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/ddbevent"
	"github.com/idem-run/idem/internal/s3event"
)

// Sizes of the Lambda events that drivers build from a batch
// (httpfn.AppendEvent, which function/process and gofunc use too), computed
// without encoding, so that the engine can cut a batch at Lambda's 6 MB
// invocation payload as Lambda does: by the bytes of the whole event, not
// the records' raw data. httpfn's tests encode random batches and check
// these against the encoder.

// EventRegioner is implemented by drivers that write a region into the
// events they build (awsRegion, the ARNs). The engine sizes a batch's event
// with it; for a driver without it, DefaultEventRegion.
type EventRegioner interface {
	EventRegion() string
}

// DefaultEventRegion is the region the engine sizes events with for a
// driver that does not say its own (an in-process handler gets no JSON),
// and the default region of the drivers, the engine's on-failure records
// and the Invoke API's ARNs: config.DefaultRegion, the region idem's
// server passes them all when its config names none.
const DefaultEventRegion = "us-east-1"

// EventRecordSize returns the bytes record r adds to the event of format,
// including the comma that separates it from the record before: the exact
// size of its JSON in the event plus one. The sum over a batch's records
// plus EventBaseSize is therefore at most one byte above the event's size.
func EventRecordSize(region string, format idem.EventFormat, r *idem.Record) int {
	switch format {
	case idem.EventFormatKafka:
		return kafkaRecordSize(r)
	case idem.EventFormatS3:
		return s3RecordSize(r)
	case idem.EventFormatDynamoDB:
		return ddbRecordSize(r)
	}
	return kinesisRecordSize(region, r)
}

// EventBaseSize returns the bytes of the event of format without its
// records: the envelope around them, as for a batch of one shard whose
// first record is first (the Kafka envelope names its topic and its
// "<topic>-<partition>" group), and, for a Kinesis or DynamoDB event, the
// tumbling window w's fields and state when w is not nil (an S3Event has
// no window: w is ignored). A window's StateJSON counts as it is; a State map
// without it as encoding/json writes it, which is never shorter than the
// event's (HTML characters escaped).
func EventBaseSize(region string, format idem.EventFormat, first *idem.Record, w *idem.Window) int {
	if format == idem.EventFormatKafka {
		n := len(`{"eventSource":"aws:kafka","eventSourceArn":"arn:aws:kafka:`) + stringBodySize(region) +
			len(`:000000000000:cluster/idem/`) + len(`","records":{`) + len(`},"bootstrapServers":""}`)
		if first != nil {
			n += stringBodySize(first.Stream) + stringBodySize(first.ShardID) + 2 + len(`:[`) + len(`]`)
		}
		return n
	}
	n := len(`{"Records":[`) + len(`]`) + len(`}`)
	if format == idem.EventFormatS3 {
		return n
	}
	if w != nil {
		n += windowSize(region, w)
	}
	return n
}

// EventSize returns the size of the event of format over recs (one shard's
// records) and window w, as EventBaseSize and EventRecordSize count it: at
// most one byte above the encoded event.
func EventSize(region string, format idem.EventFormat, recs []idem.Record, w *idem.Window) int {
	var first *idem.Record
	if len(recs) > 0 {
		first = &recs[0]
	}
	n := EventBaseSize(region, format, first, w)
	for i := range recs {
		n += EventRecordSize(region, format, &recs[i])
	}
	return n
}

func kinesisRecordSize(region string, r *idem.Record) int {
	const fixed = len(`,`) + len(`{"awsRegion":""`) + len(`,"eventID":"`) + len(`:`) +
		len(`","eventName":"aws:kinesis:record","eventSource":"aws:kinesis","eventSourceARN":`) +
		len(`"arn:aws:kinesis:`) + len(`:000000000000:stream/`) + len(`"`) +
		len(`,"eventVersion":"1.0","invokeIdentityArn":"","kinesis":{"approximateArrivalTimestamp":`) +
		len(`,"data":"`) + len(`","partitionKey":""`) + len(`,"sequenceNumber":"`) +
		len(`","kinesisSchemaVersion":"1.0"},"idempotencyKey":""`) + len(`}`)
	seq := stringBodySize(string(r.Sequence))
	return fixed + 2*stringBodySize(region) + stringBodySize(r.ShardID) + 2*seq + stringBodySize(r.Stream) +
		epochSecondsSize(r.ArrivalTime) + base64Size(len(r.Data)) + stringBodySize(r.PartitionKey) +
		stringBodySize(r.IdempotencyKey)
}

// s3RecordSize is the bytes of the S3 event records of r's notification
// in an S3Event, each compacted and preceded by a comma; 0 for data that
// is not a notification (or a test notification), which adds nothing.
// Counting them parses the notification: the S3Event carries the records
// compacted, and without the envelope of the document that held them.
func s3RecordSize(r *idem.Record) int {
	n, err := s3event.Parse(r.Data)
	if err != nil {
		return 0
	}
	size := 0
	for i := range n.Records {
		size += len(n.Records[i].Raw) + 1
	}
	return size
}

// ddbRecordSize is the bytes of r's DynamoDBEventRecord in a
// DynamoDBEvent, preceded by a comma; 0 for data that is no DynamoDB
// change, which adds nothing. Counting it converts the record
// (internal/ddbevent): a change read from Kinesis is rewritten.
func ddbRecordSize(r *idem.Record) int {
	rec, err := ddbevent.Record(r.Data, string(r.Sequence))
	if err != nil {
		return 0
	}
	return len(rec) + 1
}

func kafkaRecordSize(r *idem.Record) int {
	const fixed = len(`,`) + len(`{"topic":""`) + len(`,"partition":`) + len(`,"offset":`) + len(`,"timestamp":`) +
		len(`,"timestampType":"CREATE_TIME"`) + len(`,"headers":[`) + len(`],"idempotencyKey":""`) + len(`}`)
	n := fixed + stringBodySize(r.Stream) + intSize(int64(r.KafkaPartition())) + uintSize(r.KafkaOffset()) +
		stringBodySize(r.IdempotencyKey)
	if r.ArrivalTime.IsZero() {
		n++
	} else {
		n += intSize(r.ArrivalTime.UnixMilli())
	}
	if r.PartitionKey != "" {
		n += len(`,"key":""`) + base64Size(len(r.PartitionKey))
	}
	if len(r.Data) > 0 {
		n += len(`,"value":""`) + base64Size(len(r.Data))
	}
	for j, h := range r.Headers {
		if j > 0 {
			n++
		}
		n += len(`{"":[]}`) + stringBodySize(h.Key)
		for k, c := range h.Value {
			if k > 0 {
				n++
			}
			n += intSize(int64(int8(c)))
		}
	}
	return n
}

// windowSize is the bytes of a KinesisTimeWindowEvent's fields beyond its
// Records.
func windowSize(region string, w *idem.Window) int {
	state := len(w.StateJSON) // written as it is
	if w.StateJSON == nil {
		state = 4 // null
		if b, err := json.Marshal(w.State); err == nil {
			state = len(b)
		}
	}
	var buf [64]byte
	return len(`,"window":{"start":"`) + len(w.Start.UTC().AppendFormat(buf[:0], time.RFC3339)) +
		len(`","end":"`) + len(w.End.UTC().AppendFormat(buf[:0], time.RFC3339)) + len(`"},"state":`) + state +
		len(`,"shardId":""`) + stringBodySize(w.ShardID) + len(`,"eventSourceARN":"arn:aws:kinesis:`) +
		stringBodySize(region) + len(`:000000000000:stream/`) + stringBodySize(w.Stream) +
		len(`","isFinalInvokeForWindow":`) + boolSize(w.Final) + len(`,"isWindowTerminatedEarly":`) +
		boolSize(w.TerminatedEarly)
}

func boolSize(b bool) int {
	if b {
		return 4
	}
	return 5
}

// base64Size is the length of n bytes in padded standard base64.
func base64Size(n int) int { return (n + 2) / 3 * 4 }

func intSize(v int64) int {
	var buf [24]byte
	return len(strconv.AppendInt(buf[:0], v, 10))
}

func uintSize(v uint64) int {
	var buf [24]byte
	return len(strconv.AppendUint(buf[:0], v, 10))
}

// epochSecondsSize is the length of an arrival time written as Unix seconds
// the way encoding/json writes a float64 (0 for the zero time).
func epochSecondsSize(t time.Time) int {
	if t.IsZero() {
		return 1
	}
	f := float64(t.UnixNano()) / 1e9
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return 1
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	var buf [40]byte
	b := strconv.AppendFloat(buf[:0], f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			return n - 1
		}
	}
	return len(b)
}

// stringBodySize is the length of s JSON-escaped without its quotes, as
// encoding/json writes it with HTML escaping off: '"', '\\' and the
// short-escaped control characters take 2 bytes, other control characters,
// invalid UTF-8 bytes (\ufffd), U+2028 and U+2029 take 6.
func stringBodySize(s string) int {
	// The strings sized here (names, sequence numbers, keys) rarely need
	// escaping: take eight bytes at a time while none of them does, then
	// go byte by byte from the first word that may.
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if mayEscape(uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56) {
			break
		}
	}
	n := i
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '"' && c != '\\':
				n++
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += size
		}
		i += size
	}
	return n
}

// mayEscape reports whether any of the eight bytes of w is one that JSON
// escapes or that is not ASCII: a control character, '"' or '\\', or a
// byte of 0x80 or more. The tests are exact (a zero byte found by the
// borrow it leaves in the subtraction), never answering false for such a
// byte.
func mayEscape(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(x uint64) bool { return (x-ones)&^x&highs != 0 }
	return w&highs != 0 || // not ASCII
		(w-ones*0x20)&^w&highs != 0 || // below 0x20
		hasZero(w^(ones*'"')) || hasZero(w^(ones*'\\'))
}
