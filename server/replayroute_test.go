package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/idem-run/idem/engine"
	"github.com/idem-run/idem/server"
)

// replayYAML configures one stream of two shards and one mapping, name,
// of the function count (whose name is the default scope).
func replayYAML(name, start string) string {
	return fmt.Sprintf(`
auth: {tokens: [%s]}
streams: [{name: events, shards: 2}]
functions: [{name: count}]
mappings: [{name: %s, source: {stream: events}, function: count, startingPosition: %s, batchSize: 500}]
`, token, name, start)
}

// putNumbered puts the records "r<from>" to "r<to-1>", 500 a request.
func putNumbered(t *testing.T, addr string, from, to int) {
	t.Helper()
	for i := from; i < to; i += 500 {
		data := make([]string, 0, 500)
		for j := i; j < min(i+500, to); j++ {
			data = append(data, fmt.Sprint("r", j))
		}
		putRecords(t, addr, "events", data...)
	}
}

// setEnabled pauses (false) or resumes (true) a mapping through the
// control plane.
func setEnabled(t *testing.T, addr, mapping string, enabled bool) {
	t.Helper()
	url := "http://" + addr + "/2015-03-31/event-source-mappings/" + server.MappingUUID(mapping)
	if code, body := call(t, "PUT", url, "Bearer "+token, fmt.Sprintf(`{"Enabled":%v}`, enabled)); code != http.StatusAccepted {
		t.Fatalf("enabled=%v: %d %s", enabled, code, body)
	}
}

// replay asks a replay and decodes its report; it fails the test unless
// the answer has status want.
func replay(t *testing.T, method, addr, mapping, query, body string, want int) engine.ReplayReport {
	t.Helper()
	url := "http://" + addr + "/v1/mappings/" + mapping + "/replay" + query
	code, resp := call(t, method, url, "Bearer "+token, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, code, resp, want)
	}
	var rep engine.ReplayReport
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(resp), &rep); err != nil {
			t.Fatalf("%s: %v", resp, err)
		}
	}
	return rep
}

// checkpoints returns the checkpoints status shows for mapping, by shard,
// and the sums of its processed and skipped counters.
func checkpoints(t *testing.T, addr, mapping string) (cps map[string]string, processed, skipped uint64) {
	t.Helper()
	cps = map[string]string{}
	for _, s := range status(t, addr).Shards {
		if s.Mapping == mapping {
			cps[s.Shard] = string(s.Checkpoint)
			processed += s.Processed
			skipped += s.Skipped
		}
	}
	return cps, processed, skipped
}

// fillAndPause starts a server whose mapping m ran 10,000 records, pauses
// m, and puts 2,000 more, which m holds back.
func fillAndPause(t *testing.T) (dir, addr string, stop func(), fn *recordCounter) {
	dir = t.TempDir()
	fn = newRecordCounter()
	addr, stop = start(t, dir, "127.0.0.1:0", replayYAML("m", "TRIM_HORIZON"), nil, server.WithHandler("count", fn))
	putNumbered(t, addr, 0, 10000)
	eventually(t, "10,000 records", func() bool { return fn.total() == 10000 })
	setEnabled(t, addr, "m", false)
	eventually(t, "the shards paused", func() bool { return shardsPaused(t, addr, "m") })
	putNumbered(t, addr, 10000, 12000)
	return dir, addr, stop, fn
}

// checkReport checks a replay's counts over the 12,000 records.
func checkReport(t *testing.T, rep engine.ReplayReport, run, skip uint64) {
	t.Helper()
	if rep.Records != 12000 || rep.WouldRun != run || rep.WouldSkip != skip || rep.Filtered != 0 || rep.Duplicates != 0 {
		t.Fatalf("records %d, wouldRun %d, wouldSkip %d, filtered %d, duplicates %d; want 12000, %d, %d, 0, 0",
			rep.Records, rep.WouldRun, rep.WouldSkip, rep.Filtered, rep.Duplicates, run, skip)
	}
	if len(rep.First) != engine.DefaultReplayFirst {
		t.Fatalf("first lists %d records, want %d", len(rep.First), engine.DefaultReplayFirst)
	}
	for _, r := range rep.First {
		if want := "events/" + r.Shard + "/" + string(r.Sequence); r.IdempotencyKey != want || r.Stream != "events" || r.PartitionKey == "" {
			t.Fatalf("first: %+v, want the key %q and a partition key", r, want)
		}
	}
}

// checkRanOnce checks that each of the 12,000 records ran exactly once.
func checkRanOnce(t *testing.T, fn *recordCounter) {
	t.Helper()
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for i := range 12000 {
		if n := fn.runs[fmt.Sprint("r", i)]; n != 1 {
			t.Fatalf("record r%d ran %d times, want once", i, n)
		}
	}
}

// TestReplayDryRunCountsCompletedInScope: of 12,000 retained records,
// 10,000 completed in the mapping's scope, a dry run from TRIM_HORIZON
// reports 2,000 to run and 10,000 to skip and changes nothing; moving the
// checkpoint (the mapping paused) makes the resumed mapping run exactly
// the 2,000.
func TestReplayDryRunCountsCompletedInScope(t *testing.T) {
	_, addr, _, fn := fillAndPause(t)
	before, _, _ := checkpoints(t, addr, "m")

	rep := replay(t, "GET", addr, "m", "?from=TRIM_HORIZON", "", http.StatusOK)
	checkReport(t, rep, 2000, 10000)
	if !rep.DryRun || rep.Moved || rep.Scope != "count" || len(rep.Shards) != 2 {
		t.Fatalf("report: %+v", rep)
	}
	rep = replay(t, "POST", addr, "m", "", `{"from":"TRIM_HORIZON","dryRun":true,"first":-1}`, http.StatusOK)
	if rep.WouldRun != 2000 || rep.WouldSkip != 10000 || len(rep.First) != 0 {
		t.Fatalf("POST dry run: wouldRun %d, wouldSkip %d, %d first", rep.WouldRun, rep.WouldSkip, len(rep.First))
	}
	// What if the mapping used another scope: nothing completed there.
	rep = replay(t, "GET", addr, "m", "?from=TRIM_HORIZON&scope=other", "", http.StatusOK)
	if rep.WouldRun != 12000 || rep.WouldSkip != 0 || rep.Scope != "other" {
		t.Fatalf("scope other: wouldRun %d, wouldSkip %d, scope %q", rep.WouldRun, rep.WouldSkip, rep.Scope)
	}
	rep = replay(t, "GET", addr, "m", "?from=LATEST", "", http.StatusOK)
	if rep.Records != 0 || rep.WouldRun != 0 {
		t.Fatalf("LATEST: %d records, wouldRun %d", rep.Records, rep.WouldRun)
	}
	replay(t, "GET", addr, "m", "?from=AT_TIMESTAMP", "", http.StatusBadRequest)
	replay(t, "GET", addr, "nope", "?from=TRIM_HORIZON", "", http.StatusNotFound)
	replay(t, "POST", addr, "m", "", `{"from":"TRIM_HORIZON","scope":"other"}`, http.StatusBadRequest)

	if n := fn.total(); n != 10000 {
		t.Fatalf("%d records ran during the dry runs, want the 10,000 of before", n)
	}
	if after, _, _ := checkpoints(t, addr, "m"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("checkpoints moved by dry runs: %v, then %v", before, after)
	}

	rep = replay(t, "POST", addr, "m", "", `{"from":"TRIM_HORIZON"}`, http.StatusOK)
	if !rep.Moved || rep.DryRun || rep.WouldRun != 2000 || rep.WouldSkip != 10000 {
		t.Fatalf("move: %+v", rep)
	}
	setEnabled(t, addr, "m", true)
	eventually(t, "the replay read to the end", func() bool {
		_, processed, skipped := checkpoints(t, addr, "m")
		return processed == 12000 && skipped == 10000
	})
	if n := fn.total(); n != 12000 {
		t.Fatalf("%d records ran, want 12,000", n)
	}
	checkRanOnce(t, fn)

	// Running again: a move is refused.
	replay(t, "POST", addr, "m", "", `{"from":"TRIM_HORIZON"}`, http.StatusConflict)
}

// TestReplayRenamedMapping is the renamed consumer: a mapping of the same
// stream and scope under a new name has no checkpoint, yet a dry run from
// TRIM_HORIZON finds the 10,000 records the old name completed, and the
// new name, moved there, runs only the 2,000 others.
func TestReplayRenamedMapping(t *testing.T) {
	dir, _, stop, fn := fillAndPause(t)
	stop()
	addr, _ := start(t, dir, "127.0.0.1:0", replayYAML("m-renamed", "LATEST"), nil, server.WithHandler("count", fn))
	eventually(t, "the renamed mapping's shards running from LATEST", func() bool {
		cps, _, _ := checkpoints(t, addr, "m-renamed")
		return len(cps) == 2 && cps["shardId-000000000000"] != "" && cps["shardId-000000000001"] != ""
	})

	rep := replay(t, "GET", addr, "m-renamed", "?from=TRIM_HORIZON", "", http.StatusOK)
	checkReport(t, rep, 2000, 10000)
	for _, sh := range rep.Shards {
		if sh.Checkpoint.Compare(sh.From) <= 0 {
			t.Fatalf("shard %s: checkpoint %q, from %q: want LATEST's, above the start", sh.Shard, sh.Checkpoint, sh.From)
		}
	}
	// Moving the checkpoint of a running mapping is refused.
	replay(t, "POST", addr, "m-renamed", "", `{"from":"TRIM_HORIZON"}`, http.StatusConflict)
	setEnabled(t, addr, "m-renamed", false)
	eventually(t, "the shards paused", func() bool { return shardsPaused(t, addr, "m-renamed") })
	rep = replay(t, "POST", addr, "m-renamed", "", `{"from":"TRIM_HORIZON"}`, http.StatusOK)
	if !rep.Moved || rep.WouldRun != 2000 {
		t.Fatalf("move: %+v", rep)
	}
	if n := fn.total(); n != 10000 {
		t.Fatalf("%d records ran before the resume, want 10,000", n)
	}
	setEnabled(t, addr, "m-renamed", true)
	eventually(t, "the replay read to the end", func() bool {
		_, processed, skipped := checkpoints(t, addr, "m-renamed")
		return processed == 2000 && skipped == 10000
	})
	if n := fn.total(); n != 12000 {
		t.Fatalf("%d records ran, want 12,000", n)
	}
	checkRanOnce(t, fn)
}

// TestReplayProgressStream: a client that accepts NDJSON gets progress
// lines, then the report.
func TestReplayProgressStream(t *testing.T) {
	fn := newRecordCounter()
	addr := serve(t, replayYAML("m", "TRIM_HORIZON"), nil, server.WithHandler("count", fn))
	putNumbered(t, addr, 0, 3000)
	eventually(t, "3,000 records", func() bool { return fn.total() == 3000 })
	req, err := http.NewRequest("GET", "http://"+addr+"/v1/mappings/m/replay?from=TRIM_HORIZON", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", server.ReplayProgressContentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != server.ReplayProgressContentType {
		t.Fatalf("%s, %s", resp.Status, ct)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 2 || !strings.Contains(lines[0], `"progress":0`) || !strings.Contains(lines[0], `"total":3000`) {
		t.Fatalf("want a progress line of 0 out of 3000 first: %q", lines)
	}
	var rep engine.ReplayReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.WouldRun != 0 || rep.WouldSkip != 3000 {
		t.Fatalf("wouldRun %d, wouldSkip %d; want 0, 3000", rep.WouldRun, rep.WouldSkip)
	}
}

// TestReplayHonoursFilterCriteria: records the mapping's filterCriteria
// reject are counted as filtered, neither run nor skipped.
func TestReplayHonoursFilterCriteria(t *testing.T) {
	fn := newRecordCounter()
	addr := serve(t, fmt.Sprintf(`
auth: {tokens: [%s]}
streams: [{name: events}]
functions: [{name: count}]
mappings:
  - name: m
    source: {stream: events}
    function: count
    startingPosition: TRIM_HORIZON
    filterCriteria: {filters: [{pattern: '{"data":{"a":[1]}}'}]}
`, token), nil, server.WithHandler("count", fn))
	putRecords(t, addr, "events", `{"a":1}`, `{"a":2}`, `{"a":1,"b":3}`, `{"a":2}`, `{"a":2}`)
	eventually(t, "the 2 selected records", func() bool { return fn.total() == 2 })
	eventually(t, "the checkpoint past the filtered ones", func() bool {
		for _, s := range status(t, addr).Shards {
			if s.Mapping == "m" && s.Latest != "" && s.Checkpoint == s.Latest {
				return true
			}
		}
		return false
	})
	rep := replay(t, "GET", addr, "m", "?from=TRIM_HORIZON", "", http.StatusOK)
	if rep.Records != 5 || rep.Filtered != 3 || rep.WouldSkip != 2 || rep.WouldRun != 0 {
		t.Fatalf("records %d, filtered %d, wouldSkip %d, wouldRun %d; want 5, 3, 2, 0", rep.Records, rep.Filtered, rep.WouldSkip, rep.WouldRun)
	}
	rep = replay(t, "GET", addr, "m", "?from=TRIM_HORIZON&scope=other", "", http.StatusOK)
	if rep.Filtered != 3 || rep.WouldSkip != 0 || rep.WouldRun != 2 {
		t.Fatalf("scope other: filtered %d, wouldSkip %d, wouldRun %d; want 3, 0, 2", rep.Filtered, rep.WouldSkip, rep.WouldRun)
	}
}
