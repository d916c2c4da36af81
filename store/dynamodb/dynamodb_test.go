package dynamodb_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/store"
	ddbstore "github.com/idem-run/idem/store/dynamodb"
	"github.com/idem-run/idem/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// sent counts what a client sent: TransactWriteItems calls and their
// items.
type sent struct {
	txns     atomic.Int64
	maxItems atomic.Int64
	last     atomic.Int64
}

// middleware records the items of every TransactWriteItems.
func (c *sent) middleware(st *middleware.Stack) error {
	return st.Initialize.Add(middleware.InitializeMiddlewareFunc("idemtest-count", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		if t, ok := in.Parameters.(*dynamodb.TransactWriteItemsInput); ok {
			n := int64(len(t.TransactItems))
			c.txns.Add(1)
			c.last.Store(n)
			for {
				m := c.maxItems.Load()
				if n <= m || c.maxItems.CompareAndSwap(m, n) {
					break
				}
			}
		}
		return next.HandleInitialize(ctx, in)
	}), middleware.Before)
}

// harness opens each driver over a table of its own (minidyn copies a
// table at every transaction: small tables keep the suite fast), on the
// endpoint of testsvc.DynamoDBEndpoint; Reopen abandons a driver and opens
// another over its table.
type harness struct {
	client *dynamodb.Client
	sent   *sent
	mu     sync.Mutex
	tables map[store.Driver]string
	// table is the table of the last Open.
	table string
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	endpoint := testsvc.DynamoDBEndpoint(t)
	base, err := ddbstore.NewClient(context.Background(), "us-east-1", endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c := &sent{}
	client := dynamodb.New(base.Options(), func(o *dynamodb.Options) { o.APIOptions = append(o.APIOptions, c.middleware) })
	return &harness{client: client, sent: c, tables: map[store.Driver]string{}}
}

// newTable names a table for t, deleted when t ends.
func (h *harness) newTable(t testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	table := "idemtest-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		h.client.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	h.mu.Lock()
	h.table = table
	h.mu.Unlock()
	return table
}

func (h *harness) open(ctx context.Context, t testing.TB, table string, opts ...ddbstore.Option) (*ddbstore.Store, error) {
	opts = append([]ddbstore.Option{ddbstore.WithClient(h.client), ddbstore.WithTable(table), ddbstore.WithLogger(quiet)}, opts...)
	s, err := ddbstore.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	h.mu.Lock()
	h.tables[s] = table
	h.mu.Unlock()
	return s, nil
}

func (h *harness) Open(ctx context.Context, t testing.TB) (store.Driver, error) {
	return h.open(ctx, t, h.newTable(t))
}

func (h *harness) Reopen(ctx context.Context, t testing.TB, crashed store.Driver) (store.Driver, error) {
	h.mu.Lock()
	table, ok := h.tables[crashed]
	h.mu.Unlock()
	if !ok {
		return nil, errors.New("harness: unknown driver")
	}
	if err := crashed.(*ddbstore.Store).Close(); err != nil {
		return nil, err
	}
	return h.open(ctx, t, table)
}

// TestConformance runs the store suite. RunLegacy does not apply: the
// FNV-1a keys of earlier versions predate this store, so no table holds
// any (the Store does not implement store.LegacyKeyed, and store.LegacyOf
// looks nothing up).
func TestConformance(t *testing.T) { storetest.RunConformance(t, newHarness(t)) }

func BenchmarkStore(b *testing.B) { storetest.RunBenchmarks(b, newHarness(b)) }

// fixture is one Store over a fresh table, with a raw client.
type fixture struct {
	ctx    context.Context
	s      *ddbstore.Store
	h      *harness
	client *dynamodb.Client
	table  string
}

func newFixture(t *testing.T, opts ...ddbstore.Option) *fixture {
	t.Helper()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	table := h.newTable(t)
	s, err := h.open(ctx, t, table, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &fixture{ctx: ctx, s: s, h: h, client: h.client, table: table}
}

// item reads an item as it is stored.
func (f *fixture) item(t *testing.T, pk, sk string) map[string]types.AttributeValue {
	t.Helper()
	out, err := f.client.GetItem(f.ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}, "sk": &types.AttributeValueMemberS{Value: sk}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Item
}

func sAttr(item map[string]types.AttributeValue, name string) string {
	v, _ := item[name].(*types.AttributeValueMemberS)
	if v == nil {
		return ""
	}
	return v.Value
}

func nAttr(item map[string]types.AttributeValue, name string) string {
	v, _ := item[name].(*types.AttributeValueMemberN)
	if v == nil {
		return ""
	}
	return v.Value
}

func markKey(i int) store.MarkKey { return store.MarkKeyOf("test", fmt.Sprint(i)) }

func sq(n int) idem.Sequence { return idem.SequenceOf(uint64(n)) }

// TestLargestBatch: the commit of the largest batch of payload-keyed
// records CheckBatch allows, with everything else a batch may carry (a
// fence, progress ending a range claim, a window's state, an on-failure
// batch), is one transaction of exactly 100 items, and lands whole; one
// more mark is refused before anything is sent, and nothing of it lands.
func TestLargestBatch(t *testing.T) {
	f := newFixture(t)
	if err := ddbstore.CheckBatch(ddbstore.MaxPayloadKeyBatch, true); err != nil {
		t.Fatalf("CheckBatch(%d): %v", ddbstore.MaxPayloadKeyBatch, err)
	}
	lease := store.MarkKeyOf("test", "lease")
	cl, err := f.s.Claim(f.ctx, lease, [32]byte{1}, time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(marks int, seq int) *store.Write {
		w := &store.Write{
			Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}, NewCheckpoint: store.Checkpoint{Sequence: sq(seq), Processed: uint64(marks)},
			HasProgress: true, ProgressKey: store.ProgressKey{Scope: "scope", Stream: "s", Shard: "0", Mapping: "m"},
			Progress: store.Progress{HighWater: sq(seq)}, EndRange: true,
			State:    []store.StateOp{{Namespace: "scope", Key: "window", Value: []byte("w")}},
			Failures: []store.Failure{{Destination: "dlq", Metadata: []byte(`{}`), Records: []idem.Record{{Stream: "s", ShardID: "0", Sequence: sq(seq), Data: []byte("x")}}}},
			Fence:    &store.Fence{Key: lease, Token: cl.Token},
		}
		for i := range marks {
			w.Marks = append(w.Marks, store.Mark{Key: markKey(seq*1000 + i), Expires: now.Add(time.Hour)})
		}
		return w
	}
	w := write(ddbstore.MaxPayloadKeyBatch, 1)
	if err := f.s.Commit(f.ctx, w); err != nil {
		t.Fatalf("Commit of the largest batch: %v", err)
	}
	if got := f.h.sent.last.Load(); got != ddbstore.MaxTransactItems {
		t.Fatalf("the largest batch's transaction held %d items, want %d", got, ddbstore.MaxTransactItems)
	}
	keys := make([]store.MarkKey, len(w.Marks))
	for i := range w.Marks {
		keys[i] = w.Marks[i].Key
	}
	done := make([]bool, len(keys))
	if err := f.s.Completed(f.ctx, keys, now, done); err != nil {
		t.Fatal(err)
	}
	for i, d := range done {
		if !d {
			t.Fatalf("mark %d of the largest batch missing", i)
		}
	}

	txns := f.h.sent.txns.Load()
	over := write(ddbstore.MaxPayloadKeyBatch+1, 2)
	err = f.s.Commit(f.ctx, over)
	if !errors.Is(err, ddbstore.ErrTooLarge) {
		t.Fatalf("Commit of one mark more: %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "101 items") {
		t.Errorf("the error does not say how many items: %v", err)
	}
	if got := f.h.sent.txns.Load(); got != txns {
		t.Fatalf("a refused Write sent %d transactions", got-txns)
	}
	if c, _, _ := f.s.Checkpoint(f.ctx, over.Checkpoint); c.Sequence != sq(1) {
		t.Fatalf("checkpoint after a refused Write = %q, want %q", c.Sequence, sq(1))
	}
	if items, _, refused := testsvc.DynamoDBMax(); items > ddbstore.MaxTransactItems || refused > 0 {
		t.Fatalf("the emulator saw a transaction of %d items and refused %d requests", items, refused)
	}
}

// TestCheckBatch: payload-keyed batches above MaxPayloadKeyBatch are
// refused with a message naming the count; batches keyed by identity are
// not limited.
func TestCheckBatch(t *testing.T) {
	if err := ddbstore.CheckBatch(10000, false); err != nil {
		t.Fatalf("identity keys: %v", err)
	}
	err := ddbstore.CheckBatch(200, true)
	var be *ddbstore.BatchError
	if !errors.As(err, &be) || !errors.Is(err, ddbstore.ErrTooLarge) {
		t.Fatalf("CheckBatch(200) = %v, want a *BatchError wrapping ErrTooLarge", err)
	}
	if want := "200 records with payload keys need up to 205 transaction items; the dynamodb store allows 100"; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("message %q, want it to start %q", err, want)
	}
	if err := ddbstore.CheckBatch(ddbstore.MaxPayloadKeyBatch+1, true); err == nil {
		t.Fatal("one above MaxPayloadKeyBatch accepted")
	}
}

// TestStateLimits: a state value too large for an item, and more state
// keys than a transaction holds, are refused before anything is sent;
// repeated keys are folded into one item.
func TestStateLimits(t *testing.T) {
	f := newFixture(t)
	cp := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	big := bytes.Repeat([]byte("x"), ddbstore.MaxStateValue+1)
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		State: []store.StateOp{{Namespace: "n", Key: "big", Value: big}}}); !errors.Is(err, ddbstore.ErrTooLarge) {
		t.Fatalf("a value of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	fits := bytes.Repeat([]byte("y"), ddbstore.MaxStateValue)
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: sq(1)},
		State: []store.StateOp{{Namespace: "n", Key: "big", Value: fits}}}); err != nil {
		t.Fatalf("a value of MaxStateValue bytes: %v", err)
	}
	if v, err := f.s.State(f.ctx, "n", "big"); err != nil || !bytes.Equal(v, fits) {
		t.Fatalf("State = %d bytes, %v", len(v), err)
	}
	var many []store.StateOp
	for i := range 200 {
		many = append(many, store.StateOp{Namespace: "n", Key: fmt.Sprint(i % 99), Value: []byte{byte(i)}})
	}
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: sq(2)}, State: many}); err != nil {
		t.Fatalf("200 ops on 99 keys: %v", err)
	}
	if v, err := f.s.State(f.ctx, "n", "1"); err != nil || !bytes.Equal(v, []byte{199}) {
		t.Fatalf("State of a key written 3 times = %v, %v; want the last", v, err)
	}
	many = append(many, store.StateOp{Namespace: "n", Key: "one more", Value: []byte("z")})
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: sq(3)}, State: many}); !errors.Is(err, ddbstore.ErrTooLarge) {
		t.Fatalf("100 state keys beside a checkpoint: %v, want ErrTooLarge", err)
	}
}

// TestLongKeys: names longer than DynamoDB's key limits are stored under
// their hash, and stay apart.
func TestLongKeys(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("k", 3000)
	cp := store.CheckpointKey{Mapping: long, Stream: "s", Shard: "0"}
	pk := store.ProgressKey{Scope: long, Stream: "s", Shard: "0", Mapping: long}
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: sq(5)},
		HasProgress: true, ProgressKey: pk, Progress: store.Progress{HighWater: sq(5)},
		State: []store.StateOp{{Namespace: long, Key: long, Value: []byte("a")}, {Namespace: long, Key: long + "x", Value: []byte("b")}}}); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := f.s.Checkpoint(f.ctx, cp); err != nil || !ok || c.Sequence != sq(5) {
		t.Fatalf("Checkpoint = %+v, %v, %v", c, ok, err)
	}
	ps, err := f.s.ScopeProgress(f.ctx, pk)
	if err != nil || len(ps) != 1 || ps[0].Mapping != long || ps[0].HighWater != sq(5) {
		t.Fatalf("ScopeProgress = %+v, %v", ps, err)
	}
	for key, want := range map[string]string{long: "a", long + "x": "b"} {
		if v, err := f.s.State(f.ctx, long, key); err != nil || string(v) != want {
			t.Fatalf("State = %q, %v; want %q", v, err, want)
		}
	}
}

// TestFailures: a Write's on-failure batches are read back in order, page
// by page, records exact (binary partition keys and headers included),
// large ones through their chunks; a refused Write stores nothing.
func TestFailures(t *testing.T) {
	f := newFixture(t)
	arrival := time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC)
	recs := []idem.Record{
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "0007", PartitionKey: "alice", Data: []byte(`{"n":1}`), ArrivalTime: arrival,
			IdempotencyKey: "in/shardId-000000000003/0007", Headers: []idem.Header{{Key: "h", Value: []byte{0, 1}}, {Key: "\xff", Value: nil}}},
		{Stream: "in", ShardID: "shardId-000000000003", Sequence: "49590338271490256608559692538361571095921575989136588898", PartitionKey: "\x00\xfe", Data: []byte{0xff, 0, '\n', ','}},
	}
	// A batch too large to travel inline: random data does not compress.
	large := make([]idem.Record, 4)
	for i := range large {
		data := make([]byte, 300<<10)
		rand.Read(data)
		large[i] = idem.Record{Stream: "in", ShardID: "shardId-000000000003", Sequence: sq(100 + i), Data: data}
	}
	cp := store.CheckpointKey{Mapping: "m", Stream: "in", Shard: "shardId-000000000003"}
	w := &store.Write{
		Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: recs[1].Sequence, Discarded: 2},
		Failures: []store.Failure{
			{Destination: "dlq", Metadata: []byte(`{"meta":1}`), Records: recs},
			{Destination: "other", Metadata: []byte(`{"meta":2}`)},
			{Destination: "dlq", Metadata: []byte(`{"meta":3}`), Records: recs[:1]},
			{Destination: "dlq", Metadata: []byte(`{"meta":4}`), Records: large},
		},
	}
	if err := f.s.Commit(f.ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: cp, NewCheckpoint: store.Checkpoint{Sequence: "1"},
		Failures: []store.Failure{{Destination: "dlq", Metadata: []byte(`{"refused":1}`), Records: large}}}); !errors.Is(err, store.ErrCheckpointBackwards) {
		t.Fatalf("backwards Commit: %v", err)
	}
	var all []ddbstore.FailureBatch
	after := ""
	for {
		page, err := f.s.Failures(f.ctx, "dlq", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d batches, limit 2", len(page))
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
	if len(all) != 3 {
		t.Fatalf("dlq holds %d batches, want 3", len(all))
	}
	same := func(g, r idem.Record) bool {
		return g.Stream == r.Stream && g.ShardID == r.ShardID && g.Sequence == r.Sequence && g.PartitionKey == r.PartitionKey &&
			bytes.Equal(g.Data, r.Data) && g.ArrivalTime.Equal(r.ArrivalTime) && g.IdempotencyKey == r.IdempotencyKey &&
			len(g.Headers) == len(r.Headers)
	}
	for i, want := range []struct {
		meta string
		recs []idem.Record
	}{{`{"meta":1}`, recs}, {`{"meta":3}`, recs[:1]}, {`{"meta":4}`, large}} {
		b := all[i]
		if string(b.Metadata) != want.meta || len(b.Records) != len(want.recs) || b.Shard != "shardId-000000000003" {
			t.Fatalf("batch %d = %s with %d records, shard %q; want %s with %d", i, b.Metadata, len(b.Records), b.Shard, want.meta, len(want.recs))
		}
		for j := range want.recs {
			if !same(b.Records[j], want.recs[j]) {
				t.Fatalf("batch %d record %d = %+v, want %+v", i, j, b.Records[j], want.recs[j])
			}
		}
	}
	if h := all[0].Records[0].Headers; h[1].Key != "\xff" || !bytes.Equal(h[0].Value, []byte{0, 1}) {
		t.Fatalf("headers = %+v", h)
	}
	other, err := f.s.Failures(f.ctx, "other", "", 0)
	if err != nil || len(other) != 1 || string(other[0].Metadata) != `{"meta":2}` || len(other[0].Records) != 0 || other[0].Shard != "" {
		t.Fatalf("other = %+v, %v", other, err)
	}
	if none, err := f.s.Failures(f.ctx, "never", "", 10); err != nil || len(none) != 0 {
		t.Fatalf("Failures of a destination never written = %+v, %v", none, err)
	}
}

// TestExpiredNotDeleted: DynamoDB deletes expired items late, and the
// emulator never: marks, record claims and idempotency claims past their
// expiry count as absent though their items are still there, and carry
// the expiration DynamoDB's TTL deletes them by.
func TestExpiredNotDeleted(t *testing.T) {
	f := newFixture(t, ddbstore.WithExpiryGrace(time.Hour))
	base := time.Now().Truncate(time.Second)
	k := markKey(1)
	if err := f.s.Commit(f.ctx, &store.Write{Checkpoint: store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"},
		Marks: []store.Mark{{Key: k, Expires: base.Add(time.Minute)}}}); err != nil {
		t.Fatal(err)
	}
	it := f.item(t, "k#"+hex.EncodeToString(k[:]), "k")
	if got, want := nAttr(it, "expiration"), fmt.Sprint(base.Add(time.Minute+time.Hour).Unix()); got != want {
		t.Fatalf("mark's expiration = %s, want %s (its expiry plus the grace)", got, want)
	}
	later := base.Add(2 * time.Minute)
	done := []bool{true}
	if err := f.s.Completed(f.ctx, []store.MarkKey{k}, later, done); err != nil || done[0] {
		t.Fatalf("an expired mark whose item is there: Completed = %v, %v", done, err)
	}
	rc := &store.RecordClaims{Owner: markKey(100), Keys: []store.MarkKey{k}, Marks: true, Now: later, LeaseUntil: later.Add(time.Second)}
	if err := f.s.ClaimRecords(f.ctx, rc); err != nil || rc.Status[0] != store.Acquired {
		t.Fatalf("ClaimRecords over an expired mark = %v, %v", rc.Status, err)
	}
	// The claim's lease ends; another owner takes the key, item and all.
	rc2 := &store.RecordClaims{Owner: markKey(101), Keys: []store.MarkKey{k}, Now: later.Add(time.Second), LeaseUntil: later.Add(time.Minute)}
	if err := f.s.ClaimRecords(f.ctx, rc2); err != nil || rc2.Status[0] != store.Acquired {
		t.Fatalf("ClaimRecords over an ended lease = %v, %v", rc2.Status, err)
	}

	ck := markKey(2)
	cl, err := f.s.Claim(f.ctx, ck, [32]byte{7}, time.Minute, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.Complete(f.ctx, cl, []byte(`{"ok":true}`), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	it = f.item(t, "c#"+hex.EncodeToString(ck[:]), "c")
	if sAttr(it, "status") != "COMPLETED" || nAttr(it, "expiration") != fmt.Sprint(base.Add(time.Hour).Unix()) ||
		sAttr(it, "data") != `{"ok":true}` || sAttr(it, "validation") != hexOf([32]byte{7}) {
		t.Fatalf("completed claim's item = %v (Powertools' attributes expected)", it)
	}
	if _, ok, err := f.s.Lookup(f.ctx, ck, base.Add(2*time.Hour)); err != nil || ok {
		t.Fatalf("Lookup of an expired claim whose item is there = %v, %v", ok, err)
	}
	again, err := f.s.Claim(f.ctx, ck, [32]byte{8}, time.Minute, base.Add(2*time.Hour))
	if err != nil || again.Status != store.Acquired || again.Token <= cl.Token {
		t.Fatalf("Claim over an expired record = %+v, %v", again, err)
	}
	if it := f.item(t, "c#"+hex.EncodeToString(ck[:]), "c"); sAttr(it, "status") != "INPROGRESS" || nAttr(it, "in_progress_expiration") != fmt.Sprint(base.Add(2*time.Hour+time.Minute).UnixMilli()) {
		t.Fatalf("in-progress claim's item = %v", it)
	}
}

func hexOf(b [32]byte) string { return hex.EncodeToString(b[:]) }

// TestMarkOwnerItems: under a Write's MarkOwner, a mark's item decides:
// one a release left (no owner, no mark) and MarkOwner's claim over an
// expired mark (the mark's expiry kept) let the commit land; a mark
// expired but not yet deleted refuses it, and a stale fence is reported
// before a lost claim. Without MarkOwner the mark's Put has no condition.
func TestMarkOwnerItems(t *testing.T) {
	f := newFixture(t)
	base := time.Now().Truncate(time.Second)
	a, b := markKey(100), markKey(101)
	cp := store.CheckpointKey{Mapping: "m", Stream: "s", Shard: "0"}
	commit := func(w *store.Write) error {
		w.Checkpoint = cp
		return f.s.Commit(f.ctx, w)
	}
	mark := func(keys ...store.MarkKey) []store.Mark {
		var m []store.Mark
		for _, k := range keys {
			m = append(m, store.Mark{Key: k, Expires: base.Add(time.Hour)})
		}
		return m
	}
	released, remarked, expired := markKey(1), markKey(2), markKey(3)
	if err := commit(&store.Write{Release: []store.MarkKey{released}, ReleaseOwner: b}); err != nil {
		t.Fatal(err)
	}
	if it := f.item(t, "k#"+hex.EncodeToString(released[:]), "k"); len(it) == 0 || sAttr(it, "owner") != "" {
		t.Fatalf("a release of an unclaimed key left %v, want an item without owner", it)
	}
	if err := commit(&store.Write{Marks: []store.Mark{{Key: remarked, Expires: base.Add(time.Second)}, {Key: expired, Expires: base.Add(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	rc := &store.RecordClaims{Owner: a, Keys: []store.MarkKey{remarked}, Marks: true, Now: base.Add(time.Minute), LeaseUntil: base.Add(2 * time.Minute)}
	if err := f.s.ClaimRecords(f.ctx, rc); err != nil || rc.Status[0] != store.Acquired {
		t.Fatalf("ClaimRecords over an expired mark = %v, %v", rc.Status, err)
	}
	if err := commit(&store.Write{Marks: mark(released, remarked), MarkOwner: a}); err != nil {
		t.Fatalf("Commit over a released item and a's claim over an expired mark: %v", err)
	}
	err := commit(&store.Write{Marks: mark(expired), MarkOwner: a})
	if !errors.Is(err, store.ErrRecordClaimLost) || !strings.Contains(err.Error(), hex.EncodeToString(expired[:])) {
		t.Fatalf("Commit over an expired mark: %v, want ErrRecordClaimLost naming the key", err)
	}

	lease := markKey(1000)
	old, err := f.s.Claim(f.ctx, lease, [32]byte{1}, time.Second, base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Claim(f.ctx, lease, [32]byte{1}, time.Minute, base.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	err = commit(&store.Write{Marks: mark(expired), MarkOwner: a, Fence: &store.Fence{Key: lease, Token: old.Token}})
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit with a stale fence and a lost claim: %v, want ErrFenced", err)
	}

	// Without MarkOwner, marks replace whatever is there, unconditioned.
	if err := commit(&store.Write{Marks: mark(expired)}); err != nil {
		t.Fatalf("Commit without MarkOwner over an expired mark: %v", err)
	}
}

// TestTimeToLiveAbsent: an endpoint without UpdateTimeToLive (minidyn)
// opens with a warning, not an error.
func TestTimeToLiveAbsent(t *testing.T) {
	h := newHarness(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	table := h.newTable(t)
	s, err := h.open(context.Background(), t, table, ddbstore.WithLogger(log))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if s.Table() != table {
		t.Fatalf("Table = %q", s.Table())
	}
	mu.Lock()
	defer mu.Unlock()
	if testsvcIsMinidyn() && !strings.Contains(buf.String(), "time to live") {
		t.Fatalf("no warning about the time to live: %q", buf.String())
	}
}

// testsvcIsMinidyn reports whether the tests run against minidyn.
func testsvcIsMinidyn() bool { return os.Getenv("IDEM_TEST_DYNAMODB_ENDPOINT") == "" }

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestForeignTable: a table whose keys are not pk and sk (a Powertools
// idempotency table) is refused.
func TestForeignTable(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	table := h.newTable(t)
	_, err := h.client.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table), BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.open(ctx, t, table); err == nil || !strings.Contains(err.Error(), "Powertools") {
		t.Fatalf("New over a Powertools table: %v, want a refusal naming it", err)
	}
}

// TestClosed: every method fails with store.ErrClosed after Close.
func TestClosed(t *testing.T) {
	f := newFixture(t)
	f.s.Close()
	f.s.Close()
	ctx := f.ctx
	for name, call := range map[string]func() error{
		"Checkpoint": func() error { _, _, err := f.s.Checkpoint(ctx, store.CheckpointKey{}); return err },
		"Commit":     func() error { return f.s.Commit(ctx, &store.Write{}) },
		"Completed":  func() error { return f.s.Completed(ctx, nil, time.Now(), nil) },
		"Claim": func() error {
			_, err := f.s.Claim(ctx, store.MarkKey{}, store.PayloadHash{}, time.Second, time.Now())
			return err
		},
		"ClaimRecords": func() error { return f.s.ClaimRecords(ctx, &store.RecordClaims{}) },
		"ClaimRange":   func() error { return f.s.ClaimRange(ctx, &store.RangeClaim{}) },
		"Failures":     func() error { _, err := f.s.Failures(ctx, "d", "", 1); return err },
	} {
		if err := call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestParseURL: the dynamodb:// form of idem bench --store.
func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ddbstore.URL
		bad  bool
	}{
		{in: "dynamodb://127.0.0.1:8000", want: ddbstore.URL{Table: "idem", Endpoint: "http://127.0.0.1:8000"}},
		{in: "dynamodb://localhost:8000/my-table?region=eu-west-1", want: ddbstore.URL{Table: "my-table", Region: "eu-west-1", Endpoint: "http://localhost:8000"}},
		{in: "dynamodb://vpce.example:443?tls=true", want: ddbstore.URL{Table: "idem", Endpoint: "https://vpce.example:443"}},
		{in: "dynamodb:///idem.prod?region=us-east-2", want: ddbstore.URL{Table: "idem.prod", Region: "us-east-2"}},
		{in: "dynamodb://", want: ddbstore.URL{Table: "idem"}},
		{in: "redis://x", bad: true},
		{in: "dynamodb://h:1/ab", bad: true},
		{in: "dynamodb://h:1/?tls=maybe", bad: true},
		{in: "dynamodb://h:1/?table=x", bad: true},
	} {
		got, err := ddbstore.ParseURL(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseURL(%q) = %+v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}
