package dynamodb_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/function/gofunc"
	"github.com/idem-run/idem/internal/pebbledb"
	"github.com/idem-run/idem/source"
	"github.com/idem-run/idem/source/embedded"
)

// TestStateTooLargeForOneTransaction: a batch whose records write more
// state keys than one DynamoDB transaction holds is committed in smaller
// parts, the rest running again, and a record whose own writes cannot fit
// goes to the on-failure destination with its error: no batch blocks the
// shard, and every other record's state lands.
func TestStateTooLargeForOneTransaction(t *testing.T) {
	f := newFixture(t)
	db, err := pebbledb.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.CreateStream("s", 1, time.Hour); err != nil {
		t.Fatal(err)
	}
	const records, keysEach, tooMany = 40, 10, 13 // record 13 writes 120 keys
	var put []pebbledb.PutRecord
	for i := range records {
		put = append(put, pebbledb.PutRecord{PartitionKey: "p", Data: []byte(fmt.Sprint(i))})
	}
	if _, err := db.Put(f.ctx, "s", put); err != nil {
		t.Fatal(err)
	}
	src, err := embedded.New(db, "s")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[string]int{}
	h := idem.RecordFunc(func(ctx context.Context, r *idem.Record) error {
		mu.Lock()
		runs[string(r.Data)]++
		mu.Unlock()
		n := keysEach
		if string(r.Data) == fmt.Sprint(tooMany) {
			n = 120
		}
		for j := range n {
			if err := idem.StateFrom(ctx).Put(ctx, fmt.Sprintf("r%s-k%d", r.Data, j), r.Data); err != nil {
				return err
			}
		}
		return nil
	})
	e := engine.New(f.s, engine.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := e.Add(engine.Mapping{Name: "m", Stream: "s", Source: src, Function: "f", Invoker: gofunc.New(h), Scope: "sc",
		StartingPosition: source.TrimHorizon, BatchSize: 20, OnFailure: "dlq"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var processed, discarded uint64
		for _, st := range e.Status() {
			processed += st.Processed
			discarded += st.Discarded
		}
		if processed+discarded == records {
			if processed != records-1 || discarded != 1 {
				t.Fatalf("%d processed and %d discarded, want %d and 1", processed, discarded, records-1)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s, %d records processed and %d discarded of %d", processed, discarded, records)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range records {
		v, err := f.s.State(f.ctx, "sc", fmt.Sprintf("r%d-k%d", i, keysEach-1))
		if i == tooMany {
			if err == nil {
				t.Errorf("record %d's state landed though it went to the on-failure destination", i)
			}
			continue
		}
		if err != nil || string(v) != fmt.Sprint(i) {
			t.Errorf("record %d's state = %q, %v", i, v, err)
		}
	}
	batches, err := f.s.Failures(f.ctx, "dlq", "", 10)
	if err != nil || len(batches) != 1 || len(batches[0].Records) != 1 || string(batches[0].Records[0].Data) != fmt.Sprint(tooMany) {
		t.Fatalf("on-failure batches = %+v, %v; want record %d alone", batches, err, tooMany)
	}
	meta := string(batches[0].Metadata)
	if !strings.Contains(meta, "StateSizeExceeded") || !strings.Contains(meta, "StateTooLarge") || !strings.Contains(meta, "DynamoDB transaction") {
		t.Errorf("the failure record does not say why: %s", meta)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range records {
		if runs[fmt.Sprint(i)] == 0 {
			t.Errorf("record %d never ran", i)
		}
	}
}
