package main

import (
	"slices"
	"testing"
)

func TestRecords(t *testing.T) {
	recs := makeRecords(1000)
	seen := make(map[string]bool)
	for _, r := range recs {
		if len(r.Data) != recordSize {
			t.Fatalf("%s: %d bytes of data, want %d", r.ID, len(r.Data), recordSize)
		}
		id, err := idOf(r.Data)
		if err != nil || id != r.ID {
			t.Fatalf("idOf(%q) = %q, %v; want %q", r.Data, id, err, r.ID)
		}
		if seen[id] {
			t.Fatalf("id %s twice", id)
		}
		seen[id] = true
	}
	if _, err := idOf([]byte("{}")); err == nil {
		t.Error("idOf of short data: no error")
	}
}

func TestSummary(t *testing.T) {
	if m := median([]float64{1, 2, 3}); m != 2 {
		t.Errorf("median of 1 2 3 = %v", m)
	}
	if m := median([]float64{1, 2, 3, 5}); m != 2.5 {
		t.Errorf("median of 1 2 3 5 = %v", m)
	}
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
	systems := []system{{name: "hand-written", partitions: 1}, {name: "x"}}
	runs := []runResult{{System: "hand-written", Partitions: 1, RecordsPerSecond: 100}, {System: "x", RecordsPerSecond: 50},
		{System: "hand-written", Partitions: 1, RecordsPerSecond: 300}, {System: "x", RecordsPerSecond: 70}}
	s := summarize(systems, runs)
	if len(s) != 2 || s[0].Median != 200 || s[1].Median != 60 || s[1].Ratio != 0.3 || s[1].BaselinePartitions != 1 {
		t.Errorf("summarize = %+v", s)
	}
}

func TestFlags(t *testing.T) {
	o, err := parseFlags([]string{"-records", "10", "-partitions", "1, 4,4", "-only", "Hand-Written,DEFER"})
	if err != nil {
		t.Fatal(err)
	}
	if o.dbosRecords != 10 || !slices.Equal(o.partitions, []int{1, 4}) || !slices.Equal(o.only, []string{"hand-written", "defer"}) {
		t.Errorf("parseFlags = %+v", o)
	}
	var names []string
	for _, s := range selectSystems(o) {
		names = append(names, s.name)
	}
	want := []string{"hand-written", "hand-written", "idem RecordFunc + Defer", "idem RecordFunc + Defer"}
	if !slices.Equal(names, want) {
		t.Errorf("systems %q, want %q", names, want)
	}
	for _, bad := range [][]string{{"-records", "0"}, {"-partitions", "0"}, {"-partitions", "x"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}
