package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/idem-run/idem/server"
)

// counterConfig returns a configuration for the counter example (its
// in-process Go function "counter") listening on addr, with the stream events
// of 4 shards, its on-failure stream events-failed, and the mappings given as
// YAML list items. The data directory is given with `serve --data`.
func counterConfig(addr, mappings string) string {
	return fmt.Sprintf(`listen: %s
streams:
  - {name: events, shards: 4}
  - {name: events-failed}
functions:
  - {name: counter}
mappings:
%s`, addr, mappings)
}

// counterMapping is the mapping of TestCrashExactlyOnce: TRIM_HORIZON,
// batches of 100, two concurrent batches per shard.
const counterMapping = `  - name: events-to-counter
    source: {stream: events}
    function: counter
    startingPosition: TRIM_HORIZON
    batchSize: 100
    parallelizationFactor: 2
    destinationConfig: {onFailure: {stream: events-failed}}
`

// ack is a record whose put was acknowledged: where it landed, and its data.
type ack struct {
	shard, seq, data string
}

// producerResult is what produce did.
type producerResult struct {
	acks        []ack
	failedPosts int // POSTs that failed (server down) and were sent again
	err         error
}

// produce puts total records, with keys partition keys ("pk-00"…) and unique
// data ("record-00000"…), in POSTs of perPost records, pausing pace after
// each. A POST that fails because the server is down (no answer, or a 5xx) is
// sent again after a short wait, until ctx is done; any other failure ends
// it. A POST sent again may append its records twice: the stream holds the
// truth.
func produce(ctx context.Context, a *api, stream string, total, keys, perPost int, pace time.Duration) producerResult {
	recs := make([]server.PutRecord, total)
	for i := range recs {
		recs[i] = server.PutRecord{PartitionKey: fmt.Sprintf("pk-%02d", i%keys), Data: fmt.Sprintf("record-%05d", i)}
	}
	return putAll(ctx, a, stream, "records", recs, perPost, pace)
}

// putAll puts recs in POSTs of perPost records, pausing pace after each,
// and sends a POST again, after a short wait, while the server is down (no
// answer, or a 5xx); any other failure ends it. what names the records in
// errors.
func putAll(ctx context.Context, a *api, stream, what string, all []server.PutRecord, perPost int, pace time.Duration) producerResult {
	var res producerResult
	for first := 0; first < len(all); first += perPost {
		recs := all[first:min(first+perPost, len(all))]
		for {
			resp, err := a.put(ctx, stream, recs)
			if err == nil {
				for i, r := range resp.Records {
					res.acks = append(res.acks, ack{shard: r.ShardID, seq: r.SequenceNumber, data: recs[i].Data})
				}
				break
			}
			var he *httpError
			if ctx.Err() != nil || (errors.As(err, &he) && he.code < 500) {
				res.err = fmt.Errorf("put of %s %d to %d: %w", what, first, first+len(recs)-1, err)
				return res
			}
			res.failedPosts++
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		if pace > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pace):
			}
		}
	}
	return res
}

// assertCheckpointsCovered reads /v1/status once, as soon as every shard of
// mapping has loaded its checkpoint, and asserts that every record of stream
// at or below each shard's checkpoint has its counter example's record
// counter at 1: the checkpoint never passed a record that was not processed.
// verified holds, per shard, the sequence up to which an earlier call
// checked (a counter once 1 stays 1 unless a record runs twice, which the
// final check catches); it is advanced. It returns how many records it
// checked.
func assertCheckpointsCovered(t *testing.T, a *api, mapping, stream string, verified map[string]uint64) int {
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
		last := uint64(0)
		for _, r := range recs {
			seq := parseSeq(t, r.SequenceNumber)
			if seq > cp {
				break
			}
			last = seq
			keys = append(keys, "record/"+stream+"/"+shard+"/"+r.SequenceNumber)
		}
		if last != cp {
			t.Errorf("shard %s: checkpoint %d is not the sequence of a record of the shard (the last at or below it is %d)", shard, cp, last)
		}
		vals, err := a.states(ctx, "counter", keys)
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, k := range keys {
			if v := vals[k]; v != "1" {
				if bad++; bad <= 10 {
					t.Errorf("shard %s, checkpoint %d: %s is %q, want 1 (the checkpoint passed a record that did not run exactly once)", shard, cp, k, v)
				}
			}
		}
		if bad > 10 {
			t.Errorf("shard %s: %d records at or below checkpoint %d without their counter at 1", shard, bad, cp)
		}
		checked += len(keys)
		verified[shard] = cp
	}
	return checked
}

// TestCrashExactlyOnce runs the counter example while a producer puts 10,000
// records through the API and the server is killed with SIGKILL at random
// moments and restarted, at least 20 times (5 with -short). At some
// restarts it checks that every record at or below each checkpoint has run
// exactly once. At the end, once every shard's checkpoint is at the shard's
// newest record, it reads the whole stream back and asserts that each
// record's counter is 1 (none lost, none run twice), that each partition
// key's count is the number of its records in the stream, and that each
// shard's status counts every record processed once and none discarded.
func TestCrashExactlyOnce(t *testing.T) {
	_, counter := binaries(t)
	const (
		total   = 10000
		keys    = 100
		perPost = 50
		mapping = "events-to-counter"
		stream  = "events"
	)
	kills := 20
	checkAt := map[int]bool{1: true, 6: true, 11: true, 16: true}
	if testing.Short() {
		kills = 5
		checkAt = map[int]bool{2: true}
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IDEM_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("IDEM_E2E_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("kill schedule seed %d (IDEM_E2E_SEED=%d repeats it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "idem.yaml")
	writeFile(t, cfg, counterConfig(addr, counterMapping))
	data := filepath.Join(dir, "data")
	a := newAPI(addr)
	start := time.Now()

	// The producer's puts are spread over about the time the kills take, so
	// that the kills land among puts and processing alike.
	pace := time.Duration(kills) * 400 * time.Millisecond / (total / perPost)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	var wg sync.WaitGroup
	results := make(chan producerResult, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		results <- produce(ctx, a, stream, total, keys, perPost, pace)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})

	verified := make(map[string]uint64)
	killed := 0
	for i := 0; i < kills; i++ {
		srv := startServe(t, counter, cfg, addr, "--data", data)
		if checkAt[i] {
			n := assertCheckpointsCovered(t, a, mapping, stream, verified)
			t.Logf("start %d: %d more records at or below the checkpoints have run exactly once", i+1, n)
		}
		time.Sleep(time.Duration(100+rng.IntN(501)) * time.Millisecond)
		srv.kill()
		killed++
	}
	srv := startServe(t, counter, cfg, addr, "--data", data)
	n := assertCheckpointsCovered(t, a, mapping, stream, verified)
	t.Logf("last start: %d more records at or below the checkpoints have run exactly once", n)

	var res producerResult
	select {
	case res = <-results:
	case <-time.After(5 * time.Minute):
		t.Fatal("the producer did not finish within 5 minutes")
	}
	if res.err != nil {
		t.Fatalf("producer: %v", res.err)
	}
	statuses := waitCaughtUp(t, a, mapping, stream, 3*time.Minute)

	byShard, err := a.allRecords(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var recordKeys []string
	perKey := make(map[string]int)
	bySeq := make(map[string]string) // shard/sequence → data
	dataSeen := make(map[string]int)
	inStream := 0
	var skipped uint64
	for shard, recs := range byShard {
		st := statuses[shard]
		skipped += st.Skipped
		if len(recs) > 0 {
			if last := recs[len(recs)-1].SequenceNumber; parseSeq(t, string(st.Checkpoint)) != parseSeq(t, last) {
				t.Errorf("shard %s: checkpoint %q, the last record's sequence %q", shard, st.Checkpoint, last)
			}
		}
		if st.Discarded != 0 || st.Lost != 0 {
			t.Errorf("shard %s: discarded %d, lost %d; want 0", shard, st.Discarded, st.Lost)
		}
		if st.Processed != uint64(len(recs)) {
			t.Errorf("shard %s: processed %d, the shard holds %d records (skipped %d)", shard, st.Processed, len(recs), st.Skipped)
		}
		for _, r := range recs {
			recordKeys = append(recordKeys, "record/"+stream+"/"+shard+"/"+r.SequenceNumber)
			perKey[r.PartitionKey]++
			bySeq[shard+"/"+r.SequenceNumber] = r.Data
			dataSeen[r.Data]++
			inStream++
		}
	}
	for _, ak := range res.acks {
		if got, ok := bySeq[ak.shard+"/"+ak.seq]; !ok || got != ak.data {
			t.Errorf("acknowledged record %s/%s (%s) is not in the stream as put: found %q", ak.shard, ak.seq, ak.data, got)
		}
	}
	for i := range total {
		if d := fmt.Sprintf("record-%05d", i); dataSeen[d] == 0 {
			t.Errorf("%s is not in the stream", d)
		}
	}

	countKeys := make([]string, 0, len(perKey))
	for pk := range perKey {
		countKeys = append(countKeys, "count/"+pk)
	}
	vals, err := a.states(context.Background(), "counter", append(recordKeys, countKeys...))
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
	for pk, want := range perKey {
		if got := vals["count/"+pk]; got != strconv.Itoa(want) {
			t.Errorf("count/%s is %q, the stream holds %d records with that key", pk, got, want)
		}
	}
	failed, err := a.allRecords(context.Background(), "events-failed")
	if err != nil {
		t.Fatal(err)
	}
	for shard, recs := range failed {
		if len(recs) > 0 {
			t.Errorf("events-failed shard %s holds %d records, want none", shard, len(recs))
		}
	}
	a.closeIdle()
	if code := srv.stop(t); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM, want 0", code)
	}
	t.Logf("%d kills with SIGKILL, %d records in the stream (%d put twice by POSTs sent again; %d POSTs failed), %d skipped after restarts, %v",
		killed, inStream, inStream-total, res.failedPosts, skipped, time.Since(start).Round(time.Millisecond))
}
