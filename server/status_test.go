package server_test

import (
	"encoding/json"
	"testing"
)

// TestStatusEmptyLists (issue 11, item 8): GET /v1/status of an idem
// without mappings, functions or queues answers empty lists, not nulls.
func TestStatusEmptyLists(t *testing.T) {
	addr := serve(t, "streams: [{name: events}]\n", nil)
	code, body := call(t, "GET", "http://"+addr+"/v1/status", "", "")
	if code != 200 {
		t.Fatalf("GET /v1/status: %d %s", code, body)
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, k := range []string{"shards", "functions", "queues"} {
		if got := string(st[k]); got != "[]" {
			t.Errorf("%q is %s, want []: %s", k, got, body)
		}
	}
}
