package testsvc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	miniserver "github.com/truora/minidyn/server"
)

// DynamoDB's limits that DynamoDBEndpoint enforces on minidyn, which has
// none of them.
const (
	// DynamoDBMaxTransactItems is how many items one TransactWriteItems
	// may hold.
	DynamoDBMaxTransactItems = 100
	// DynamoDBMaxTransactBytes is the aggregate size of one
	// TransactWriteItems' items.
	DynamoDBMaxTransactBytes = 4 << 20
	// DynamoDBMaxItemBytes is the size of one item.
	DynamoDBMaxItemBytes = 400 << 10
	// DynamoDBMaxPartitionKeyBytes and DynamoDBMaxSortKeyBytes bound the
	// key attributes' values.
	DynamoDBMaxPartitionKeyBytes = 2048
	DynamoDBMaxSortKeyBytes      = 1024
)

var ddb struct {
	once     sync.Once
	endpoint string
	srv      *httptest.Server
	stats    DynamoDBStats
}

// DynamoDBStats counts what the tests sent to the emulator that
// DynamoDBEndpoint started (none with IDEM_TEST_DYNAMODB_ENDPOINT).
type DynamoDBStats struct {
	mu sync.Mutex
	// MaxTransactItems is the most items one TransactWriteItems carried.
	MaxTransactItems int
	// MaxTransactBytes is the largest aggregate item size of one
	// TransactWriteItems, as DynamoDB counts it.
	MaxTransactBytes int
	// Refused counts the requests refused for exceeding a limit.
	Refused int
}

// DynamoDBMax returns the most items and bytes one TransactWriteItems sent
// to the emulator carried so far, and how many requests it refused for
// exceeding DynamoDB's limits.
func DynamoDBMax() (items, bytes, refused int) {
	s := &ddb.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.MaxTransactItems, s.MaxTransactBytes, s.Refused
}

// DynamoDBEndpoint returns the DynamoDB endpoint of the tests: the
// IDEM_TEST_DYNAMODB_ENDPOINT (DynamoDB Local, LocalStack, or AWS itself), or
// else minidyn's server (github.com/truora/minidyn/server), which speaks
// DynamoDB's JSON API in this process, started on a loopback httptest
// server the first time and kept for the life of the test binary. An
// endpoint given in the environment that does not accept connections
// skips t (fails it under CI=true).
//
// minidyn is an emulator with gaps, which drivers must tolerate and tests
// must not rely on:
//   - no TTL: items are never deleted at their expiration attribute, and
//     UpdateTimeToLive and DescribeTimeToLive are unknown operations
//     (answered 400 "unsupported operation"), as are ListTables, streams,
//     backups and tags;
//   - no limits: it accepts transactions of any number of items and any
//     size, items over 400 KB and keys of any length. DynamoDBEndpoint puts
//     a front in it that refuses, with DynamoDB's ValidationException, a
//     TransactWriteItems of more than 100 items or 4 MB, an item over
//     400 KB written by PutItem or a transaction, and a partition (sort)
//     key over 2048 (1024) bytes, and records the largest transaction
//     (DynamoDBMax);
//   - one lock for everything: operations never run concurrently (the
//     front serializes the table operations minidyn does not lock), so
//     TransactionConflict never happens, reads are always strongly
//     consistent, and a failed transaction is rolled back by restoring a
//     snapshot of the table, which each transaction copies whole (keep
//     tables small: a table per test);
//   - UpdateItem's REMOVE does nothing to top-level attributes (v0.8.2
//     applies what SET changed and forgets what REMOVE deleted);
//   - an empty binary value corrupts the item it is written to;
//   - numbers are float64 inside expressions: a number above 2^53 that an
//     UpdateItem's SET or a condition touches loses precision (numbers
//     written whole by PutItem are kept as sent);
//   - no consumed capacity, no throttling, no 1 MB page limit on Query and
//     Scan.
func DynamoDBEndpoint(t testing.TB) string {
	t.Helper()
	if e := os.Getenv("IDEM_TEST_DYNAMODB_ENDPOINT"); e != "" {
		host := strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")
		host, _, _ = strings.Cut(host, "/")
		if _, _, err := net.SplitHostPort(host); err != nil {
			if strings.HasPrefix(e, "https://") {
				host += ":443"
			} else {
				host += ":80"
			}
		}
		reachable(t, "DynamoDB", host, "IDEM_TEST_DYNAMODB_ENDPOINT")
		return e
	}
	ddb.once.Do(func() {
		ddb.srv = httptest.NewServer(&dynamoLimits{next: miniserver.NewServer(), stats: &ddb.stats})
		ddb.endpoint = ddb.srv.URL
	})
	return ddb.endpoint
}

// dynamoLimits refuses the requests DynamoDB would refuse for their size
// before minidyn sees them.
type dynamoLimits struct {
	next  http.Handler
	stats *DynamoDBStats
	// mu serializes requests: minidyn locks item operations but not
	// DescribeTable, CreateTable or DeleteTable, which race with a
	// transaction's rollback.
	mu sync.Mutex
}

func (d *dynamoLimits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	target := r.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(target, '.'); i >= 0 {
		target = target[i+1:]
	}
	if msg := d.check(target, body); msg != "" {
		d.stats.mu.Lock()
		d.stats.Refused++
		d.stats.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{
			"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": msg})
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.next.ServeHTTP(w, r)
}

// ddbValue is an AttributeValue as the JSON protocol spells it.
type ddbValue map[string]json.RawMessage

// check returns why DynamoDB would refuse the request, or "".
func (d *dynamoLimits) check(op string, body []byte) string {
	switch op {
	case "PutItem":
		var in struct{ Item map[string]ddbValue }
		if json.Unmarshal(body, &in) != nil {
			return ""
		}
		return checkItem(in.Item)
	case "UpdateItem", "GetItem", "DeleteItem":
		var in struct{ Key map[string]ddbValue }
		if json.Unmarshal(body, &in) != nil {
			return ""
		}
		return checkKey(in.Key)
	case "TransactWriteItems":
		var in struct {
			TransactItems []struct {
				Put            *struct{ Item map[string]ddbValue }
				Update         *struct{ Key map[string]ddbValue }
				Delete         *struct{ Key map[string]ddbValue }
				ConditionCheck *struct{ Key map[string]ddbValue }
			}
		}
		if json.Unmarshal(body, &in) != nil {
			return ""
		}
		n, size := len(in.TransactItems), 0
		for _, ti := range in.TransactItems {
			var item map[string]ddbValue
			switch {
			case ti.Put != nil:
				item = ti.Put.Item
				if msg := checkItem(item); msg != "" {
					return msg
				}
			case ti.Update != nil:
				item = ti.Update.Key
			case ti.Delete != nil:
				item = ti.Delete.Key
			case ti.ConditionCheck != nil:
				item = ti.ConditionCheck.Key
			}
			if msg := checkKey(item); msg != "" {
				return msg
			}
			size += itemSize(item)
		}
		d.stats.mu.Lock()
		d.stats.MaxTransactItems = max(d.stats.MaxTransactItems, n)
		d.stats.MaxTransactBytes = max(d.stats.MaxTransactBytes, size)
		d.stats.mu.Unlock()
		if n > DynamoDBMaxTransactItems {
			return fmt.Sprintf("1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length less than or equal to %d (it has %d)", DynamoDBMaxTransactItems, n)
		}
		if size > DynamoDBMaxTransactBytes {
			return fmt.Sprintf("Transaction size has exceeded the maximum allowed size of 4 MB (%d bytes)", size)
		}
	}
	return ""
}

func checkItem(item map[string]ddbValue) string {
	if n := itemSize(item); n > DynamoDBMaxItemBytes {
		return fmt.Sprintf("Item size has exceeded the maximum allowed size (%d bytes)", n)
	}
	return checkKey(item)
}

func checkKey(item map[string]ddbValue) string {
	for name, limit := range map[string]int{"pk": DynamoDBMaxPartitionKeyBytes, "sk": DynamoDBMaxSortKeyBytes} {
		if v, ok := item[name]; ok {
			if n := valueSize(v); n > limit {
				return fmt.Sprintf("One or more parameter values were invalid: Size of hashkey or rangekey %s has exceeded the maximum size limit of %d bytes (%d)", name, limit, n)
			}
		}
	}
	return ""
}

// itemSize is an item's size as DynamoDB counts it: each attribute's name
// and value.
func itemSize(item map[string]ddbValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

// valueSize approximates DynamoDB's size of one attribute value: bytes of
// strings and binaries, about half the digits of a number, and 3 bytes
// plus the elements of lists and maps.
func valueSize(v ddbValue) int {
	for typ, raw := range v {
		switch typ {
		case "S":
			var s string
			json.Unmarshal(raw, &s)
			return len(s)
		case "N":
			var s string
			json.Unmarshal(raw, &s)
			return len(strings.TrimLeft(s, "-0"))/2 + 1
		case "B":
			var s string
			json.Unmarshal(raw, &s)
			b, _ := base64.StdEncoding.DecodeString(s)
			return len(b)
		case "BOOL", "NULL":
			return 1
		case "SS", "NS", "BS":
			var ss []string
			json.Unmarshal(raw, &ss)
			n := 0
			for _, s := range ss {
				n += len(s)
			}
			return n
		case "L":
			var l []ddbValue
			json.Unmarshal(raw, &l)
			n := 3
			for _, e := range l {
				n += 1 + valueSize(e)
			}
			return n
		case "M":
			var m map[string]ddbValue
			json.Unmarshal(raw, &m)
			n := 3
			for k, e := range m {
				n += 1 + len(k) + valueSize(e)
			}
			return n
		}
	}
	return 0
}
