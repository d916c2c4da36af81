package e2e

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/internal/testsvc"
	"github.com/idem-run/idem/server"
)

// The chaos tests of this file run the counter example (examples/counter)
// under SIGKILLs where records of one stream race for the same completion:
// payload-key duplicates spread over every shard, and two mappings sharing
// their function's scope with disjoint filters (issue 18). The counter
// function increments "record/"+IdempotencyKey in idem's state, which
// commits exactly once with its record: a value of 1 says the key's effect
// was applied once, 2 that it ran twice, none that it never ran.

// claimsStore is the store a chaos test of this file runs on.
type claimsStore struct {
	name string
	yaml string // the store: line of the configuration, "" for the embedded store
}

// claimsStoreFor returns the store named name: "embedded", or "postgres",
// a schema of t's own at the test PostgreSQL (testsvc.PostgresDSN), dropped
// when t ends; without that PostgreSQL t is skipped (failed under CI=true).
func claimsStoreFor(t *testing.T, name string) claimsStore {
	t.Helper()
	if name == "embedded" {
		return claimsStore{name: name}
	}
	dsn := testsvc.PostgresDSN(t)
	b := make([]byte, 6)
	rand.Read(b)
	schema := "idem_chaos_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(ctx)
		}
	})
	return claimsStore{name: name, yaml: fmt.Sprintf("store: {postgres: {dsn: %q, schema: %s}}\n", dsn, schema)}
}

// chaosRNG returns the kill schedule's random source: IDEM_E2E_SEED, or a
// seed from the clock, which it logs.
func chaosRNG(t *testing.T) *mrand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IDEM_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IDEM_E2E_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("kill schedule seed %d (IDEM_E2E_SEED=%d repeats it)", seed, seed)
	return mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// chaosRun puts recs to the stream events through the API, in POSTs of
// perPost, while `serve` runs cfg (listening on addr) and is killed with
// SIGKILL 100 to 600 ms after each start, kills times, and restarted. After
// the starts listed in checkAt (0-based) and after the last one it calls
// check. It returns the last process, still running, once the producer is
// done.
func chaosRun(t *testing.T, cfg, addr, data string, recs []server.PutRecord, perPost, kills int, checkAt map[int]bool, check func()) (*serveProc, producerResult) {
	t.Helper()
	_, counter := binaries(t)
	rng := chaosRNG(t)
	a := newAPI(addr)

	pace := time.Duration(kills) * 400 * time.Millisecond / time.Duration((len(recs)+perPost-1)/perPost)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var wg sync.WaitGroup
	results := make(chan producerResult, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		results <- putAll(ctx, a, "events", "records", recs, perPost, pace)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	for i := 0; i < kills; i++ {
		srv := startServe(t, counter, cfg, addr, "--data", data)
		if checkAt[i] {
			check()
		}
		time.Sleep(time.Duration(100+rng.IntN(501)) * time.Millisecond)
		select {
		case <-srv.done:
			t.Errorf("serve (process %d) exited by itself before it was killed (%v):\n%s", i+1, srv.cmd.ProcessState, srv.tail(20))
		default:
		}
		srv.kill()
	}
	srv := startServe(t, counter, cfg, addr, "--data", data)
	check()
	var res producerResult
	select {
	case res = <-results:
	case <-time.After(3 * time.Minute):
		t.Fatal("the producer did not finish within 3 minutes")
	}
	if res.err != nil {
		t.Fatalf("producer: %v", res.err)
	}
	return srv, res
}

// writeClaimsConfig writes the configuration of a test of this file, with
// the stream events of 4 shards, events-failed, the counter function and
// mappings (YAML list items), and returns its path and the address it
// listens on.
func writeClaimsConfig(t *testing.T, st claimsStore, mappings string) (cfg, addr string) {
	t.Helper()
	addr = freeAddr(t)
	cfg = filepath.Join(t.TempDir(), "idem.yaml")
	writeFile(t, cfg, st.yaml+counterConfig(addr, mappings))
	return cfg, addr
}

// assertResolvedRan reads /v1/status once every shard of mapping has loaded
// its checkpoint, and asserts that for every record of stream at or below
// its shard's checkpoint for which key gives a state key (not ""), that
// counter is 1: the checkpoint passed no record whose effect was not applied
// exactly once. verified holds, per shard, the sequence up to which an
// earlier call checked, and is advanced. It returns how many records it
// checked.
func assertResolvedRan(t *testing.T, a *api, mapping, stream string, verified map[string]uint64, key func(r server.RecordJSON) string) int {
	t.Helper()
	ctx := context.Background()
	var cps map[string]uint64
	eventually(t, time.Minute, "shards of "+mapping+" loading their checkpoints", func() (bool, string) {
		sts, err := a.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		cps = make(map[string]uint64)
		for _, s := range sts {
			if s.Mapping != mapping {
				continue
			}
			if s.State == "starting" {
				return false, "shard " + s.Shard + " is starting"
			}
			cps[s.Shard] = parseSeq(t, string(s.Checkpoint))
		}
		return len(cps) > 0, "no shard of " + mapping + " in the status"
	})
	checked := 0
	for shard, cp := range cps {
		if cp <= verified[shard] {
			continue
		}
		recs, err := a.records(ctx, stream, shard, verified[shard])
		if err != nil {
			t.Fatalf("reading shard %s: %v", shard, err)
		}
		var keys []string
		for _, r := range recs {
			if parseSeq(t, r.SequenceNumber) > cp {
				break
			}
			if k := key(r); k != "" {
				keys = append(keys, k)
			}
		}
		vals, err := a.states(ctx, "counter", keys)
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, k := range keys {
			if v := vals[k]; v != "1" {
				if bad++; bad <= 10 {
					t.Errorf("mapping %s, shard %s, checkpoint %d: %s is %q, want 1 (the checkpoint passed a record whose effect was not applied exactly once)", mapping, shard, cp, k, v)
				}
			}
		}
		if bad > 10 {
			t.Errorf("mapping %s, shard %s: %d records at or below checkpoint %d without their counter at 1", mapping, shard, bad, cp)
		}
		checked += len(keys)
		verified[shard] = cp
	}
	return checked
}

// assertNoFailures asserts that the on-failure stream events-failed is
// empty. (With PostgreSQL on-failure records would be in the store, where
// they show as discarded counts, which the tests check too.)
func assertNoFailures(t *testing.T, a *api) {
	t.Helper()
	failed, err := a.allRecords(context.Background(), "events-failed")
	if err != nil {
		t.Fatal(err)
	}
	for shard, recs := range failed {
		if len(recs) > 0 {
			t.Errorf("events-failed shard %s holds %d records, want none", shard, len(recs))
		}
	}
}

// shardPartitionKeys returns n partition keys for each of the 4 shards of
// an embedded stream, which routes a key by its MD5 hash read as a 128-bit
// number into 4 equal ranges (internal/pebbledb): the top two bits.
func shardPartitionKeys(n int) [4][]string {
	var out [4][]string
	for i := 0; ; i++ {
		pk := fmt.Sprintf("pk-%d", i)
		sum := md5.Sum([]byte(pk))
		s := sum[0] >> 6
		if len(out[s]) < n {
			out[s] = append(out[s], pk)
		}
		if len(out[0]) == n && len(out[1]) == n && len(out[2]) == n && len(out[3]) == n {
			return out
		}
	}
}

// payloadKeyMapping is the mapping of TestChaosPayloadKeyDuplicates: the
// idempotency key is the payload's order.id, small batches, two concurrent
// batches per shard, so that copies of one key run at once in several
// shards.
const payloadKeyMapping = `  - name: events-to-counter
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 20
    parallelizationFactor: 2
    retry: {baseDelay: 20ms, maxDelay: 500ms}
    idempotency: {key: order.id}
    destinationConfig: {onFailure: {stream: events-failed}}
`

// TestChaosPayloadKeyDuplicates puts 1,000 orders (400 with -short), each
// four times with the same data {"order":{"id":…}} under partition keys
// that route the four copies to the four shards, side by side in one POST,
// while `serve` is killed with SIGKILL at random moments and restarted, 10
// times (4 with -short), on the embedded store and on PostgreSQL. The
// mapping's idempotency key is order.id, so the copies race for one key
// in different shards. It asserts that each key's counter is 1 (applied
// exactly once), at some restarts for every record at or below each
// checkpoint and at the end for every key; that the partition keys'
// counters sum to the number of keys (no run beyond one per key); that the
// shards count one processed record per key, none discarded or lost; and
// that the on-failure stream is empty.
func TestChaosPayloadKeyDuplicates(t *testing.T) {
	for _, store := range []string{"embedded", "postgres"} {
		t.Run(store, func(t *testing.T) { testChaosPayloadKeys(t, claimsStoreFor(t, store)) })
	}
}

func testChaosPayloadKeys(t *testing.T, st claimsStore) {
	const (
		copies  = 4 // = shards
		perPost = 100
		mapping = "events-to-counter"
		stream  = "events"
	)
	orders, kills := 1000, 10
	checkAt := map[int]bool{2: true, 6: true}
	if testing.Short() {
		orders, kills = 400, 4
		checkAt = map[int]bool{2: true}
	}
	pks := shardPartitionKeys(8)
	recs := make([]server.PutRecord, 0, orders*copies)
	for i := range orders {
		data := fmt.Sprintf(`{"order":{"id":"K-%05d"}}`, i)
		for c := range copies {
			recs = append(recs, server.PutRecord{PartitionKey: pks[c][i%len(pks[c])], Data: data})
		}
	}
	keyOf := func(r server.RecordJSON) string {
		var d struct {
			Order struct {
				ID string `json:"id"`
			} `json:"order"`
		}
		if err := json.Unmarshal([]byte(r.Data), &d); err != nil || d.Order.ID == "" {
			t.Fatalf("record %s/%s holds %q, which was not put", r.ShardID, r.SequenceNumber, r.Data)
		}
		return d.Order.ID
	}

	cfg, addr := writeClaimsConfig(t, st, payloadKeyMapping)
	data := filepath.Join(t.TempDir(), "data")
	a := newAPI(addr)
	binaries(t) // built before the clock starts
	start := time.Now()
	verified := make(map[string]uint64)
	srv, res := chaosRun(t, cfg, addr, data, recs, perPost, kills, checkAt, func() {
		n := assertResolvedRan(t, a, mapping, stream, verified, func(r server.RecordJSON) string { return "record/" + keyOf(r) })
		t.Logf("%d more records at or below the checkpoints have their key applied exactly once", n)
	})
	producedAt := time.Since(start)
	statuses := waitCaughtUp(t, a, mapping, stream, 2*time.Minute)
	caughtUpAt := time.Since(start)

	byShard, err := a.allRecords(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	shardsOf := make(map[string]map[string]bool) // order id → the shards holding a copy
	pkUsed := make(map[string]bool)
	inStream := 0
	var processed, skipped uint64
	for shard, rs := range byShard {
		s := statuses[shard]
		processed += s.Processed
		skipped += s.Skipped
		if s.Discarded != 0 || s.Lost != 0 {
			t.Errorf("shard %s: discarded %d, lost %d; want 0", shard, s.Discarded, s.Lost)
		}
		for _, r := range rs {
			id := keyOf(r)
			if shardsOf[id] == nil {
				shardsOf[id] = make(map[string]bool)
			}
			shardsOf[id][shard] = true
			pkUsed[r.PartitionKey] = true
			inStream++
		}
	}
	if len(shardsOf) != orders {
		t.Errorf("the stream holds %d order ids, want %d", len(shardsOf), orders)
	}
	spread := 0
	for id, shards := range shardsOf {
		if len(shards) != copies {
			if spread++; spread <= 5 {
				t.Errorf("order %s has copies in %d shards, want %d (the partition keys were chosen to route one copy to each shard)", id, len(shards), copies)
			}
		}
	}

	keys := make([]string, 0, len(shardsOf)+len(pkUsed))
	for id := range shardsOf {
		keys = append(keys, "record/"+id)
	}
	for pk := range pkUsed {
		keys = append(keys, "count/"+pk)
	}
	vals, err := a.states(context.Background(), "counter", keys)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for id := range shardsOf {
		if v := vals["record/"+id]; v != "1" {
			if bad++; bad <= 20 {
				t.Errorf("record/%s is %q, want 1", id, v)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d keys were not applied exactly once", bad, len(shardsOf))
	}
	runs := 0
	for pk := range pkUsed {
		if v, ok := vals["count/"+pk]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("count/%s is %q", pk, v)
			}
			runs += n
		}
	}
	if runs != len(shardsOf) {
		t.Errorf("the partition keys' counters sum to %d runs, want one per key: %d", runs, len(shardsOf))
	}
	if processed != uint64(len(shardsOf)) {
		t.Errorf("the shards count %d records processed (%d skipped), want one per key: %d", processed, skipped, len(shardsOf))
	}
	assertNoFailures(t, a)
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("%s store: %d kills with SIGKILL; %d keys, %d records in the stream (%d put twice by POSTs sent again; %d POSTs failed); %d processed, %d skipped; produced in %v, caught up in %v, total %v",
		st.name, kills, len(shardsOf), inStream, inStream-len(recs), res.failedPosts, processed, skipped,
		producedAt.Round(time.Millisecond), caughtUpAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// sharedScopeMappings are the mappings of TestChaosSharedScopeFilters: two
// mappings of the stream events call counter, so they share its default
// scope "counter", and filter disjoint record types.
const sharedScopeMappings = `  - name: events-orders
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 20
    parallelizationFactor: 2
    filterCriteria: {filters: [{pattern: '{"data": {"type": ["order"]}}'}]}
    destinationConfig: {onFailure: {stream: events-failed}}
  - name: events-refunds
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 20
    parallelizationFactor: 2
    filterCriteria: {filters: [{pattern: '{"data": {"type": ["refund"]}}'}]}
    destinationConfig: {onFailure: {stream: events-failed}}
`

// TestChaosSharedScopeFilters puts 4,000 records (1,600 with -short), one in
// three a refund and the others orders, through two mappings that share
// the counter function's scope and filter disjoint types (orders, refunds),
// while `serve` is killed with SIGKILL at random moments and restarted, 10
// times (4 with -short), on the embedded store and on PostgreSQL. It
// asserts that each record's counter (its key is its identity, the same in
// both mappings) is 1: at some restarts for every record of a mapping's
// type at or below that mapping's checkpoint, at the end for every record;
// that the partition keys' counters sum to the number of records; and that
// each mapping counts as processed exactly the records of its type (so each
// ran in the mapping whose filter matches it, and neither mapping's
// progress made the other skip a record), none discarded or lost.
func TestChaosSharedScopeFilters(t *testing.T) {
	for _, store := range []string{"embedded", "postgres"} {
		t.Run(store, func(t *testing.T) { testChaosSharedScope(t, claimsStoreFor(t, store)) })
	}
}

func testChaosSharedScope(t *testing.T, st claimsStore) {
	const (
		perPost = 100
		keys    = 40
		stream  = "events"
	)
	total, kills := 4000, 10
	checkAt := map[int]bool{2: true, 6: true}
	if testing.Short() {
		total, kills = 1600, 4
		checkAt = map[int]bool{2: true}
	}
	typeOf := func(i int) string {
		if i%3 == 0 {
			return "refund"
		}
		return "order"
	}
	recs := make([]server.PutRecord, total)
	for i := range recs {
		// A partition key of each type's own: its counter is then
		// written by one mapping only (two mappings sharing a scope
		// run concurrently, and state has no isolation between them).
		recs[i] = server.PutRecord{PartitionKey: fmt.Sprintf("%s-%02d", typeOf(i), i%keys), Data: fmt.Sprintf(`{"type":%q,"n":%d}`, typeOf(i), i)}
	}
	typeOfRecord := func(r server.RecordJSON) string {
		var d struct {
			Type string `json:"type"`
			N    int    `json:"n"`
		}
		if err := json.Unmarshal([]byte(r.Data), &d); err != nil || d.N < 0 || d.N >= total || d.Type != typeOf(d.N) {
			t.Fatalf("record %s/%s holds %q, which was not put", r.ShardID, r.SequenceNumber, r.Data)
		}
		return d.Type
	}
	mappingOf := map[string]string{"order": "events-orders", "refund": "events-refunds"}

	cfg, addr := writeClaimsConfig(t, st, sharedScopeMappings)
	data := filepath.Join(t.TempDir(), "data")
	a := newAPI(addr)
	binaries(t) // built before the clock starts
	start := time.Now()
	verified := map[string]map[string]uint64{"order": {}, "refund": {}}
	srv, res := chaosRun(t, cfg, addr, data, recs, perPost, kills, checkAt, func() {
		for typ, m := range mappingOf {
			n := assertResolvedRan(t, a, m, stream, verified[typ], func(r server.RecordJSON) string {
				if typeOfRecord(r) != typ {
					return "" // the other mapping's: it may be behind
				}
				return "record/" + stream + "/" + r.ShardID + "/" + r.SequenceNumber
			})
			t.Logf("%s: %d more records at or below the checkpoints have run exactly once", m, n)
		}
	})
	producedAt := time.Since(start)
	statuses := make(map[string]map[string]engine.ShardStatus)
	for _, m := range mappingOf {
		statuses[m] = waitCaughtUp(t, a, m, stream, 2*time.Minute)
	}
	caughtUpAt := time.Since(start)

	byShard, err := a.allRecords(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var recordKeys []string
	perType := make(map[string]uint64)
	pkUsed := make(map[string]bool)
	for _, rs := range byShard {
		for _, r := range rs {
			perType[typeOfRecord(r)]++
			recordKeys = append(recordKeys, "record/"+stream+"/"+r.ShardID+"/"+r.SequenceNumber)
			pkUsed[r.PartitionKey] = true
		}
	}
	var skipped uint64
	for typ, m := range mappingOf {
		var processed uint64
		for shard, s := range statuses[m] {
			processed += s.Processed
			skipped += s.Skipped
			if s.Discarded != 0 || s.Lost != 0 {
				t.Errorf("%s, shard %s: discarded %d, lost %d; want 0", m, shard, s.Discarded, s.Lost)
			}
		}
		if processed != perType[typ] {
			t.Errorf("%s counts %d records processed, the stream holds %d %ss", m, processed, perType[typ], typ)
		}
	}

	stateKeys := append([]string(nil), recordKeys...)
	for pk := range pkUsed {
		stateKeys = append(stateKeys, "count/"+pk)
	}
	vals, err := a.states(context.Background(), "counter", stateKeys)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, k := range recordKeys {
		if v := vals[k]; v != "1" {
			if bad++; bad <= 20 {
				t.Errorf("%s is %q, want 1", k, v)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d records did not run exactly once", bad, len(recordKeys))
	}
	runs := 0
	for pk := range pkUsed {
		if v, ok := vals["count/"+pk]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("count/%s is %q", pk, v)
			}
			runs += n
		}
	}
	if runs != len(recordKeys) {
		t.Errorf("the partition keys' counters sum to %d runs, want one per record: %d", runs, len(recordKeys))
	}
	assertNoFailures(t, a)
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("%s store: %d kills with SIGKILL; %d records in the stream (%d orders, %d refunds; %d put twice by POSTs sent again; %d POSTs failed), %d skipped; produced in %v, caught up in %v, total %v",
		st.name, kills, len(recordKeys), perType["order"], perType["refund"], len(recordKeys)-total, res.failedPosts, skipped,
		producedAt.Round(time.Millisecond), caughtUpAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
