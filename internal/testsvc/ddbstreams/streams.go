package ddbstreams

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	statusEnabled  = "ENABLED"
	statusDisabled = "DISABLED"
)

// stream is one stream of a table.
type stream struct {
	arn, label, table string
	viewType          string
	status            string
	created           time.Time
	keySchema         []keyElement
	shards            []*shard // in creation order
	open              []*shard // the open shard of each lineage; none once disabled
	last              struct{ shard, seq string }
}

// shard is one shard of a stream, and its retained records.
type shard struct {
	id, parent string
	start, end string // sequence numbers; end is "" while the shard is open
	closedAt   time.Time
	records    []record // retained, in order
	trimmed    string   // the last trimmed record's sequence number, "" for none
}

// record is one stream record, encoded.
type record struct {
	seq     string
	created time.Time
	json    []byte
}

func (st *stream) shard(id string) *shard {
	for _, sh := range st.shards {
		if sh.id == id {
			return sh
		}
	}
	return nil
}

func (sh *shard) close(end string, at time.Time) { sh.end, sh.closedAt = end, at }

// trim drops the records up to and including through.
func (sh *shard) trim(through string) {
	i := 0
	for i < len(sh.records) && compareSeq(sh.records[i].seq, through) <= 0 {
		i++
	}
	sh.records = slices.Delete(sh.records, 0, i)
	if compareSeq(through, sh.trimmed) > 0 {
		sh.trimmed = through
	}
}

// expire applies retention at now: records older than Retention are
// trimmed. It reports whether the shard itself expired (closed longer than
// Retention ago).
func (sh *shard) expire(now time.Time) bool {
	i := 0
	for i < len(sh.records) && !sh.records[i].created.After(now.Add(-Retention)) {
		i++
	}
	if i > 0 {
		sh.trim(sh.records[i-1].seq)
	}
	return sh.end != "" && !sh.closedAt.After(now.Add(-Retention))
}

// newShard adds a shard to st, a child of parent ("" for none).
func (s *Server) newShard(st *stream, parent string, now time.Time) *shard {
	ms := max(now.UnixMilli(), s.lastID+1)
	s.lastID = ms
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", st.arn, ms)
	sh := &shard{
		id:     fmt.Sprintf("shardId-%020d-%08x", ms, h.Sum32()),
		parent: parent,
		start:  s.nextSeq(),
	}
	st.shards = append(st.shards, sh)
	return sh
}

// newStream enables a stream on t.
func (s *Server) newStream(t *table, viewType string) {
	now := s.now()
	label := now.UTC().Format("2006-01-02T15:04:05.000")
	for _, old := range s.streams {
		if old.table == t.name && old.label == label {
			// Two streams of a table within a millisecond: keep labels apart.
			now = now.Add(time.Millisecond)
			label = now.UTC().Format("2006-01-02T15:04:05.000")
		}
	}
	st := &stream{
		arn:       fmt.Sprintf("arn:aws:dynamodb:%s:%s:table/%s/stream/%s", s.region, Account, t.name, label),
		label:     label,
		table:     t.name,
		viewType:  viewType,
		status:    statusEnabled,
		created:   now,
		keySchema: t.keySchema,
	}
	for range s.shardsPerStream {
		st.open = append(st.open, s.newShard(st, "", now))
	}
	s.streams = append(s.streams, st)
	t.latest = st
}

// disable closes st's open shards: it takes no more records.
func (s *Server) disable(st *stream) {
	if st == nil || st.status != statusEnabled {
		return
	}
	now := s.now()
	for _, sh := range st.open {
		sh.close(s.nextSeq(), now)
	}
	st.open, st.status = nil, statusDisabled
}

func (s *Server) streamByARN(arn string) *stream {
	for _, st := range s.streams {
		if st.arn == arn {
			return st
		}
	}
	return nil
}

// expireAll applies retention to every stream at the current time.
func (s *Server) expireAll() {
	now := s.now()
	for _, st := range s.streams {
		st.shards = slices.DeleteFunc(st.shards, func(sh *shard) bool { return sh.expire(now) })
	}
}

// change is one write's effect on one item.
type change struct {
	table  *table
	keys   map[string]json.RawMessage
	before map[string]json.RawMessage // nil: the item did not exist
	after  map[string]json.RawMessage
}

// appendRecord appends c's stream record, if its table has an enabled
// stream and c changed the item, and streams it to Kinesis destinations.
func (s *Server) appendRecord(c change) error {
	name := eventName(c.before, c.after)
	if name == "" {
		return nil
	}
	now := s.now()
	if err := s.toKinesis(c, name, now); err != nil {
		return err
	}
	st := c.table.latest
	if st == nil || st.status != statusEnabled {
		return nil
	}
	h := fnv.New32a()
	h.Write(c.keys[c.table.hashKey()])
	sh := st.open[int(h.Sum32()%uint32(len(st.open)))]
	seq := s.nextSeq()
	sum := md5.Sum([]byte(st.arn + "/" + seq))
	body := streamRecord{
		AWSRegion: s.region,
		Dynamodb: streamChange{
			ApproximateCreationDateTime: json.Number(strconv.FormatInt(now.Unix(), 10)),
			Keys:                        c.keys,
			SequenceNumber:              seq,
			StreamViewType:              st.viewType,
		},
		EventID:      hex.EncodeToString(sum[:]),
		EventName:    name,
		EventSource:  "aws:dynamodb",
		EventVersion: "1.1",
	}
	if (st.viewType == "NEW_IMAGE" || st.viewType == "NEW_AND_OLD_IMAGES") && c.after != nil {
		body.Dynamodb.NewImage = c.after
	}
	if (st.viewType == "OLD_IMAGE" || st.viewType == "NEW_AND_OLD_IMAGES") && c.before != nil {
		body.Dynamodb.OldImage = c.before
	}
	body.Dynamodb.SizeBytes = itemSize(body.Dynamodb.Keys) + itemSize(body.Dynamodb.NewImage) + itemSize(body.Dynamodb.OldImage)
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	sh.records = append(sh.records, record{seq: seq, created: now, json: data})
	st.last.shard, st.last.seq = sh.id, seq
	return nil
}

// eventName is the stream record of a change from before to after: "" when
// nothing changed.
func eventName(before, after map[string]json.RawMessage) string {
	switch {
	case before == nil && after != nil:
		return "INSERT"
	case before != nil && after == nil:
		return "REMOVE"
	case before != nil && !sameItem(before, after):
		return "MODIFY"
	}
	return ""
}

func sameItem(a, b map[string]json.RawMessage) bool {
	var x, y any
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if json.Unmarshal(ja, &x) != nil || json.Unmarshal(jb, &y) != nil {
		return false
	}
	cx, _ := json.Marshal(x) // maps marshal with sorted keys
	cy, _ := json.Marshal(y)
	return bytes.Equal(cx, cy)
}

// streamRecord is a stream record on the wire (a Record of GetRecords).
type streamRecord struct {
	AWSRegion    string       `json:"awsRegion"`
	Dynamodb     streamChange `json:"dynamodb"`
	EventID      string       `json:"eventID"`
	EventName    string       `json:"eventName"`
	EventSource  string       `json:"eventSource"`
	EventVersion string       `json:"eventVersion"`
}

type streamChange struct {
	ApproximateCreationDateTime json.Number                `json:"ApproximateCreationDateTime"`
	Keys                        map[string]json.RawMessage `json:"Keys"`
	NewImage                    map[string]json.RawMessage `json:"NewImage,omitempty"`
	OldImage                    map[string]json.RawMessage `json:"OldImage,omitempty"`
	SequenceNumber              string                     `json:"SequenceNumber,omitempty"`
	SizeBytes                   int                        `json:"SizeBytes"`
	StreamViewType              string                     `json:"StreamViewType,omitempty"`
}

// serveStreams answers a DynamoDB Streams operation.
func (s *Server) serveStreams(w http.ResponseWriter, op string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireAll()
	var out any
	var err error
	switch op {
	case "ListStreams":
		out, err = s.listStreams(body)
	case "DescribeStream":
		out, err = s.describeStream(body)
	case "GetShardIterator":
		out, err = s.getShardIterator(body)
	case "GetRecords":
		out, err = s.getRecords(body)
	default:
		err = &apiError{http.StatusBadRequest, "UnknownOperationException", "unknown operation " + op}
	}
	if err != nil {
		if ae, ok := err.(*apiError); ok {
			writeError(w, ae.status, ae.code, ae.message)
			return
		}
		writeError(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	writeJSON(w, out)
}

type streamSummary struct {
	StreamArn   string `json:"StreamArn"`
	StreamLabel string `json:"StreamLabel"`
	TableName   string `json:"TableName"`
}

func (s *Server) listStreams(body []byte) (any, error) {
	var in struct {
		TableName               string
		Limit                   *int
		ExclusiveStartStreamArn string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	limit := 100
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > 100 {
			return nil, validation("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100", *in.Limit)
		}
		limit = *in.Limit
	}
	var out struct {
		Streams                []streamSummary `json:"Streams"`
		LastEvaluatedStreamArn string          `json:"LastEvaluatedStreamArn,omitempty"`
	}
	out.Streams = []streamSummary{}
	started := in.ExclusiveStartStreamArn == ""
	for _, st := range s.streams {
		if !started {
			started = st.arn == in.ExclusiveStartStreamArn
			continue
		}
		if in.TableName != "" && st.table != in.TableName {
			continue
		}
		if len(out.Streams) == limit {
			out.LastEvaluatedStreamArn = out.Streams[limit-1].StreamArn
			break
		}
		out.Streams = append(out.Streams, streamSummary{st.arn, st.label, st.table})
	}
	return out, nil
}

type wireShard struct {
	ShardId             string `json:"ShardId"`
	ParentShardId       string `json:"ParentShardId,omitempty"`
	SequenceNumberRange struct {
		StartingSequenceNumber string `json:"StartingSequenceNumber"`
		EndingSequenceNumber   string `json:"EndingSequenceNumber,omitempty"`
	} `json:"SequenceNumberRange"`
}

func (s *Server) describeStream(body []byte) (any, error) {
	var in struct {
		StreamArn             string
		Limit                 *int
		ExclusiveStartShardId string
		ShardFilter           *struct{ Type, ShardId string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	st := s.streamByARN(in.StreamArn)
	if st == nil {
		return nil, notFound("Requested resource not found: Stream: %s not found", in.StreamArn)
	}
	limit := 100
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > 100 {
			return nil, validation("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100", *in.Limit)
		}
		limit = *in.Limit
	}
	if f := in.ShardFilter; f != nil && f.Type != "CHILD_SHARDS" {
		return nil, validation("ShardFilter type %q is not CHILD_SHARDS", f.Type)
	}
	type description struct {
		StreamArn               string       `json:"StreamArn"`
		StreamLabel             string       `json:"StreamLabel"`
		StreamStatus            string       `json:"StreamStatus"`
		StreamViewType          string       `json:"StreamViewType"`
		CreationRequestDateTime json.Number  `json:"CreationRequestDateTime"`
		TableName               string       `json:"TableName"`
		KeySchema               []keyElement `json:"KeySchema"`
		Shards                  []wireShard  `json:"Shards"`
		LastEvaluatedShardId    string       `json:"LastEvaluatedShardId,omitempty"`
	}
	d := description{
		StreamArn: st.arn, StreamLabel: st.label, StreamStatus: st.status, StreamViewType: st.viewType,
		CreationRequestDateTime: epochSeconds(st.created), TableName: st.table, KeySchema: st.keySchema,
		Shards: []wireShard{},
	}
	started := in.ExclusiveStartShardId == ""
	for _, sh := range st.shards {
		if !started {
			started = sh.id == in.ExclusiveStartShardId
			continue
		}
		if f := in.ShardFilter; f != nil && sh.parent != f.ShardId {
			continue
		}
		if len(d.Shards) == limit {
			d.LastEvaluatedShardId = d.Shards[limit-1].ShardId
			break
		}
		var ws wireShard
		ws.ShardId, ws.ParentShardId = sh.id, sh.parent
		ws.SequenceNumberRange.StartingSequenceNumber = sh.start
		ws.SequenceNumberRange.EndingSequenceNumber = sh.end
		d.Shards = append(d.Shards, ws)
	}
	return map[string]any{"StreamDescription": d}, nil
}

// iterator is what a shard iterator holds: records above pos are next.
type iterator struct {
	ARN    string `json:"a"`
	Shard  string `json:"s"`
	Pos    string `json:"p"`
	Issued int64  `json:"t"` // Unix nanoseconds on the Server's clock
}

func (it iterator) encode() string {
	b, _ := json.Marshal(it)
	return "ddbs1/" + base64.RawURLEncoding.EncodeToString(b)
}

func decodeIterator(s string) (iterator, bool) {
	var it iterator
	rest, ok := strings.CutPrefix(s, "ddbs1/")
	if !ok {
		return iterator{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || json.Unmarshal(b, &it) != nil {
		return iterator{}, false
	}
	return it, true
}

func trimmedError(sh *shard) *apiError {
	return &apiError{http.StatusBadRequest, "TrimmedDataAccessException",
		fmt.Sprintf("The operation attempted to read past the oldest stream record in a shard (shard %s is trimmed through %s)", sh.id, sh.trimmed)}
}

func (s *Server) getShardIterator(body []byte) (any, error) {
	var in struct {
		StreamArn, ShardId, ShardIteratorType string
		SequenceNumber                        *string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	st := s.streamByARN(in.StreamArn)
	if st == nil {
		return nil, notFound("Requested resource not found: Stream: %s not found", in.StreamArn)
	}
	sh := st.shard(in.ShardId)
	if sh == nil {
		return nil, notFound("Requested resource not found: Shard: %s in Stream: %s not found", in.ShardId, in.StreamArn)
	}
	it := iterator{ARN: st.arn, Shard: sh.id, Issued: s.now().UnixNano()}
	switch in.ShardIteratorType {
	case "TRIM_HORIZON":
		it.Pos = sh.trimmed
	case "LATEST":
		it.Pos = sh.trimmed
		if n := len(sh.records); n > 0 {
			it.Pos = sh.records[n-1].seq
		}
		if sh.end != "" {
			it.Pos = sh.end
		}
	case "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER":
		if in.SequenceNumber == nil {
			return nil, validation("SequenceNumber is required for %s", in.ShardIteratorType)
		}
		n := *in.SequenceNumber
		if !isDigits(n) || compareSeq(n, sh.start) < 0 || (sh.end != "" && compareSeq(n, sh.end) > 0) {
			return nil, validation("Invalid SequenceNumber %q for shard %s (from %s to %s)", n, sh.id, sh.start, sh.end)
		}
		it.Pos = n
		if in.ShardIteratorType == "AT_SEQUENCE_NUMBER" {
			it.Pos = decrementSeq(n)
		}
		if compareSeq(it.Pos, sh.trimmed) < 0 {
			return nil, trimmedError(sh)
		}
	default:
		return nil, validation("1 validation error detected: Value '%s' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_SEQUENCE_NUMBER, TRIM_HORIZON]", in.ShardIteratorType)
	}
	return map[string]string{"ShardIterator": it.encode()}, nil
}

func (s *Server) getRecords(body []byte) (any, error) {
	var in struct {
		ShardIterator string
		Limit         *int
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, err
	}
	limit := MaxGetRecords
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > MaxGetRecords {
			return nil, validation("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and %d", *in.Limit, MaxGetRecords)
		}
		limit = *in.Limit
	}
	it, ok := decodeIterator(in.ShardIterator)
	if !ok {
		return nil, validation("Invalid ShardIterator")
	}
	now := s.now()
	if issued := time.Unix(0, it.Issued); now.Sub(issued) > IteratorLifetime {
		return nil, &apiError{http.StatusBadRequest, "ExpiredIteratorException",
			fmt.Sprintf("Iterator expired. The iterator was created at time %s while right now it is %s which is further in the future than the tolerated delay of %d milliseconds.",
				issued.UTC().Format(time.RFC1123), now.UTC().Format(time.RFC1123), IteratorLifetime.Milliseconds())}
	}
	st := s.streamByARN(it.ARN)
	if st == nil {
		return nil, notFound("Requested resource not found: Stream: %s not found", it.ARN)
	}
	sh := st.shard(it.Shard)
	if sh == nil {
		return nil, notFound("Requested resource not found: Shard: %s in Stream: %s not found", it.Shard, it.ARN)
	}
	if compareSeq(it.Pos, sh.trimmed) < 0 {
		return nil, trimmedError(sh)
	}
	i := 0
	for i < len(sh.records) && compareSeq(sh.records[i].seq, it.Pos) <= 0 {
		i++
	}
	var buf bytes.Buffer
	buf.WriteString(`{"Records":[`)
	n, size := 0, 0
	for j := i; j < len(sh.records) && n < limit; j++ {
		r := sh.records[j]
		if n > 0 && size+len(r.json) > MaxGetRecordsBytes {
			break
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(r.json)
		size += len(r.json)
		it.Pos = r.seq
		n++
	}
	buf.WriteByte(']')
	if sh.end == "" || i+n < len(sh.records) {
		it.Issued = now.UnixNano()
		fmt.Fprintf(&buf, `,"NextShardIterator":%q`, it.encode())
	}
	buf.WriteByte('}')
	return json.RawMessage(buf.Bytes()), nil
}

func epochSeconds(t time.Time) json.Number {
	return json.Number(strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64))
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// compareSeq compares two sequence numbers as numbers; "" is below all.
func compareSeq(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return -1
	case b == "":
		return 1
	}
	x, _ := new(big.Int).SetString(a, 10)
	y, _ := new(big.Int).SetString(b, 10)
	if x == nil || y == nil {
		return bytes.Compare([]byte(a), []byte(b))
	}
	return x.Cmp(y)
}

// decrementSeq returns n-1 ("" for 0).
func decrementSeq(n string) string {
	x, ok := new(big.Int).SetString(n, 10)
	if !ok || x.Sign() <= 0 {
		return ""
	}
	return x.Sub(x, big.NewInt(1)).String()
}
