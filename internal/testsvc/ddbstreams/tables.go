package ddbstreams

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
)

// keyElement is one element of a table's KeySchema.
type keyElement struct {
	AttributeName string `json:"AttributeName"`
	KeyType       string `json:"KeyType"`
}

// table is what the Server knows of a table: its key, its latest stream,
// and its Kinesis streaming destinations.
type table struct {
	name      string
	keySchema []keyElement
	latest    *stream // nil when it never had a stream
	kinesis   []*kinesisDest
}

// hashKey is the name of the table's partition key.
func (t *table) hashKey() string {
	for _, k := range t.keySchema {
		if k.KeyType == "HASH" {
			return k.AttributeName
		}
	}
	return ""
}

// key returns the key attributes of item; false when one is missing.
func (t *table) key(item map[string]json.RawMessage) (map[string]json.RawMessage, bool) {
	k := make(map[string]json.RawMessage, len(t.keySchema))
	for _, e := range t.keySchema {
		v, ok := item[e.AttributeName]
		if !ok {
			return nil, false
		}
		k[e.AttributeName] = v
	}
	return k, len(k) > 0
}

// streamed reports whether writes to t are recorded anywhere.
func (t *table) streamed() bool {
	return (t.latest != nil && t.latest.status == statusEnabled) || len(t.kinesis) > 0
}

type streamSpec struct {
	StreamEnabled  bool
	StreamViewType string
}

func validViewType(v string) bool {
	switch v {
	case "KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES":
		return true
	}
	return false
}

// serveDynamoDB answers a DynamoDB operation through the DynamoDB server,
// recording the stream records of writes.
func (s *Server) serveDynamoDB(w http.ResponseWriter, r *http.Request, op string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch op {
	case "CreateTable":
		err = s.createTable(w, r, body)
	case "UpdateTable":
		err = s.updateTable(w, r, body)
	case "DescribeTable":
		var in struct{ TableName string }
		json.Unmarshal(body, &in)
		rec := s.forward(r, op, body)
		copyResponse(w, rec, s.patchTable(rec.Body.Bytes(), "Table", s.tables[in.TableName]))
	case "DeleteTable":
		var in struct{ TableName string }
		json.Unmarshal(body, &in)
		rec := s.forward(r, op, body)
		if t := s.tables[in.TableName]; rec.Code == http.StatusOK && t != nil {
			s.disable(t.latest)
			delete(s.tables, in.TableName)
		}
		copyResponse(w, rec, rec.Body.Bytes())
	case "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems":
		err = s.write(w, r, op, body)
	case "EnableKinesisStreamingDestination", "DisableKinesisStreamingDestination", "DescribeKinesisStreamingDestination":
		err = s.kinesisDestination(w, op, body)
	default:
		rec := s.forward(r, op, body)
		copyResponse(w, rec, rec.Body.Bytes())
	}
	if err != nil {
		if ae, ok := err.(*apiError); ok {
			writeError(w, ae.status, ae.code, ae.message)
			return
		}
		writeError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
	}
}

func (s *Server) createTable(w http.ResponseWriter, r *http.Request, body []byte) error {
	var in struct {
		TableName           string
		KeySchema           []keyElement
		StreamSpecification *streamSpec
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return validation("%v", err)
	}
	spec := in.StreamSpecification
	if spec != nil && spec.StreamEnabled && !validViewType(spec.StreamViewType) {
		return validation("StreamViewType %q is not one of KEYS_ONLY, NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES", spec.StreamViewType)
	}
	rec := s.forward(r, "CreateTable", body)
	if rec.Code != http.StatusOK {
		copyResponse(w, rec, rec.Body.Bytes())
		return nil
	}
	t := &table{name: in.TableName, keySchema: in.KeySchema}
	s.tables[t.name] = t
	if spec != nil && spec.StreamEnabled {
		s.newStream(t, spec.StreamViewType)
	}
	copyResponse(w, rec, s.patchTable(rec.Body.Bytes(), "TableDescription", t))
	return nil
}

func (s *Server) updateTable(w http.ResponseWriter, r *http.Request, body []byte) error {
	var in struct {
		TableName           string
		StreamSpecification *streamSpec
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return validation("%v", err)
	}
	t := s.tables[in.TableName]
	if spec := in.StreamSpecification; spec != nil && t != nil {
		enabled := t.latest != nil && t.latest.status == statusEnabled
		switch {
		case spec.StreamEnabled && enabled:
			return validation("Table already has an enabled stream: %s", t.latest.arn)
		case spec.StreamEnabled && !validViewType(spec.StreamViewType):
			return validation("StreamViewType %q is not one of KEYS_ONLY, NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES", spec.StreamViewType)
		case !spec.StreamEnabled && !enabled:
			return validation("Table %s has no enabled stream to disable", t.name)
		}
	}
	rec := s.forward(r, "UpdateTable", body)
	if rec.Code == http.StatusOK && t != nil && in.StreamSpecification != nil {
		if in.StreamSpecification.StreamEnabled {
			s.newStream(t, in.StreamSpecification.StreamViewType)
		} else {
			s.disable(t.latest)
		}
	}
	copyResponse(w, rec, s.patchTable(rec.Body.Bytes(), "TableDescription", t))
	return nil
}

// patchTable adds the stream of t to the table description in field of a
// DynamoDB answer.
func (s *Server) patchTable(body []byte, field string, t *table) []byte {
	if t == nil || t.latest == nil {
		return body
	}
	var out map[string]json.RawMessage
	if json.Unmarshal(body, &out) != nil || out[field] == nil {
		return body
	}
	var desc map[string]any
	if json.Unmarshal(out[field], &desc) != nil {
		return body
	}
	st := t.latest
	desc["LatestStreamArn"], desc["LatestStreamLabel"] = st.arn, st.label
	if st.status == statusEnabled {
		desc["StreamSpecification"] = map[string]any{"StreamEnabled": true, "StreamViewType": st.viewType}
	} else {
		delete(desc, "StreamSpecification")
	}
	b, err := json.Marshal(desc)
	if err != nil {
		return body
	}
	out[field] = b
	patched, err := json.Marshal(out)
	if err != nil {
		return body
	}
	return patched
}

// write passes a write on, with the items it touches read before and
// after, and appends their stream records.
func (s *Server) write(w http.ResponseWriter, r *http.Request, op string, body []byte) error {
	changes := s.touched(op, body)
	for i := range changes {
		before, err := s.getItem(r, changes[i].table, changes[i].keys)
		if err != nil {
			return err
		}
		changes[i].before = before
	}
	rec := s.forward(r, op, body)
	if rec.Code == http.StatusOK {
		for _, c := range changes {
			after, err := s.getItem(r, c.table, c.keys)
			if err != nil {
				return err
			}
			c.after = after
			if err := s.appendRecord(c); err != nil {
				return err
			}
		}
	}
	copyResponse(w, rec, rec.Body.Bytes())
	return nil
}

// touched returns the items of streamed tables a write request names, in
// its order.
func (s *Server) touched(op string, body []byte) []change {
	type item = map[string]json.RawMessage
	var out []change
	add := func(tableName string, it item) {
		t := s.tables[tableName]
		if t == nil || !t.streamed() {
			return
		}
		k, ok := t.key(it)
		if !ok {
			return
		}
		out = append(out, change{table: t, keys: k})
	}
	switch op {
	case "PutItem":
		var in struct {
			TableName string
			Item      item
		}
		if json.Unmarshal(body, &in) == nil {
			add(in.TableName, in.Item)
		}
	case "UpdateItem", "DeleteItem":
		var in struct {
			TableName string
			Key       item
		}
		if json.Unmarshal(body, &in) == nil {
			add(in.TableName, in.Key)
		}
	case "BatchWriteItem":
		var in struct {
			RequestItems map[string][]struct {
				PutRequest    *struct{ Item item }
				DeleteRequest *struct{ Key item }
			}
		}
		if json.Unmarshal(body, &in) == nil {
			for name, reqs := range in.RequestItems {
				for _, rq := range reqs {
					switch {
					case rq.PutRequest != nil:
						add(name, rq.PutRequest.Item)
					case rq.DeleteRequest != nil:
						add(name, rq.DeleteRequest.Key)
					}
				}
			}
		}
	case "TransactWriteItems":
		type keyed struct {
			TableName string
			Key       item
		}
		var in struct {
			TransactItems []struct {
				Put *struct {
					TableName string
					Item      item
				}
				Update, Delete *keyed
			}
		}
		if json.Unmarshal(body, &in) == nil {
			for _, ti := range in.TransactItems {
				switch {
				case ti.Put != nil:
					add(ti.Put.TableName, ti.Put.Item)
				case ti.Update != nil:
					add(ti.Update.TableName, ti.Update.Key)
				case ti.Delete != nil:
					add(ti.Delete.TableName, ti.Delete.Key)
				}
			}
		}
	}
	return out
}

// getItem reads an item through the DynamoDB server, consistently; nil
// when there is none.
func (s *Server) getItem(r *http.Request, t *table, keys map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"TableName": t.name, "Key": keys, "ConsistentRead": true})
	if err != nil {
		return nil, err
	}
	rec := s.forward(r, "GetItem", body)
	if rec.Code != http.StatusOK {
		return nil, &apiError{http.StatusInternalServerError, "InternalServerError", "ddbstreams: reading the item: " + strings.TrimSpace(rec.Body.String())}
	}
	var out struct{ Item map[string]json.RawMessage }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return nil, err
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	return out.Item, nil
}

// itemSize approximates DynamoDB's size of an item: each attribute's name
// and value, strings and binaries by their bytes, numbers by about half
// their digits, lists and maps 3 bytes plus their elements.
func itemSize(item map[string]json.RawMessage) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

func valueSize(raw json.RawMessage) int {
	var v map[string]json.RawMessage
	if json.Unmarshal(raw, &v) != nil {
		return 0
	}
	n := 0
	for typ, x := range v {
		switch typ {
		case "S", "N", "B":
			var s string
			json.Unmarshal(x, &s)
			switch typ {
			case "N":
				n += len(strings.TrimLeft(s, "-0"))/2 + 1
			case "B":
				b, _ := base64.StdEncoding.DecodeString(s)
				n += len(b)
			default:
				n += len(s)
			}
		case "BOOL", "NULL":
			n++
		case "SS", "NS", "BS":
			var ss []string
			json.Unmarshal(x, &ss)
			for _, s := range ss {
				n += len(s)
			}
		case "L":
			var l []json.RawMessage
			json.Unmarshal(x, &l)
			n += 3
			for _, e := range l {
				n += 1 + valueSize(e)
			}
		case "M":
			var m map[string]json.RawMessage
			json.Unmarshal(x, &m)
			n += 3 + itemSize(m) + len(m)
		}
	}
	return n
}
