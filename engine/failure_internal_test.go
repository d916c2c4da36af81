package engine

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/idem-run/idem"
)

// TestFailureTimesInMilliseconds (issue 19, item 7): Lambda writes an
// on-failure record's times to the millisecond ("…04.835Z"), and so does
// idem, whatever the records' arrival times hold.
func TestFailureTimesInMilliseconds(t *testing.T) {
	at := time.Date(2026, 12, 4, 1, 2, 3, 858618844, time.UTC)
	recs := []idem.Record{{Stream: "s", ShardID: "shardId-000000000000", Sequence: "1", ArrivalTime: at}}
	meta := failureMetadata("us-east-1", "id", "f", "", conditionRetriesExhausted, 1, "", "", recs, 0, at)
	var m map[string]any
	if err := json.Unmarshal(meta, &m); err != nil {
		t.Fatal(err)
	}
	ms := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	var times []string
	times = append(times, m["timestamp"].(string))
	for k, v := range m {
		if info, ok := v.(map[string]any); ok && k != "requestContext" && k != "responseContext" {
			for _, f := range []string{"approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord"} {
				if s, ok := info[f].(string); ok {
					times = append(times, s)
				}
			}
		}
	}
	if len(times) != 3 {
		t.Fatalf("times found %q in %s", times, meta)
	}
	for _, s := range times {
		if !ms.MatchString(s) || s != "2026-12-04T01:02:03.858Z" {
			t.Errorf("time %q, want 2026-12-04T01:02:03.858Z (milliseconds, as Lambda)", s)
		}
	}
}
