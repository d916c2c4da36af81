package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestStatusJSONEmptyLists (issue 11, item 8): `idem status --json` of an
// idem without mappings, functions or queues prints empty lists, not
// nulls, so that a script can iterate over them.
func TestStatusJSONEmptyLists(t *testing.T) {
	addr := freeAddr(t)
	var stderr syncBuffer
	cancel, exit := startServe(t, addr, fmt.Sprintf("dataDir: %s\nlisten: %s\n", t.TempDir(), addr), nil, &stderr)
	defer func() {
		cancel()
		<-exit
	}()
	var out bytes.Buffer
	if c := Run(context.Background(), []string{"status", "--json", "--addr", addr}, strings.NewReader(""), &out, io.Discard); c != exitOK {
		t.Fatalf("status --json exited %d:\n%s", c, stderr.String())
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	for _, k := range []string{"shards", "functions", "queues"} {
		if got := string(st[k]); got != "[]" {
			t.Errorf("%q is %s, want []:\n%s", k, got, out.String())
		}
	}
}
