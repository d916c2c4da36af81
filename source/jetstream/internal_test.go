package jetstream

import "testing"

func TestParseAck(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  delivered
		ok    bool
	}{
		{"$JS.ACK.orders.C1.1.42.7.1700000000000000000.3", delivered{seq: 42, cseq: 7, ts: 1700000000000000000, pending: 3}, true},
		{"$JS.ACK.hub.ACCHASH.orders.C1.1.42.7.1700000000000000000.3.rand", delivered{seq: 42, cseq: 7, ts: 1700000000000000000, pending: 3}, true},
		{"$JS.ACK.hub.ACCHASH.orders.C1.1.42.7.1700000000000000000.3", delivered{seq: 42, cseq: 7, ts: 1700000000000000000, pending: 3}, true},
		{"$JS.ACK.orders.C1.1.x.7.1.3", delivered{}, false},
		{"$JS.ACK.orders.C1", delivered{}, false},
	} {
		got, ok := parseAck(tc.reply)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseAck(%q) = %+v, %v; want %+v, %v", tc.reply, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSubjects(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		match           bool
	}{
		{"a.b", "a.b", true},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"*.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"a.b.c", "a.b", false},
	} {
		if got := matchSubject(tc.filter, tc.subject); got != tc.match {
			t.Errorf("matchSubject(%q, %q) = %v", tc.filter, tc.subject, got)
		}
	}
	for _, tc := range []struct {
		a, b    string
		overlap bool
	}{
		{"a.>", "a.b", true},
		{"a.*", "*.b", true},
		{"a.*", "a.b.c", false},
		{"a.x", "a.y", false},
		{"a.*.c", "a.b.>", true},
		{"a", "a.>", false},
	} {
		if got := overlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("overlap(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
	for _, bad := range []string{"", "a..b", "a.>.b", "a.b*", "a b"} {
		if validFilter(bad) == nil {
			t.Errorf("validFilter(%q) accepted it", bad)
		}
	}
	if token("a.b.c", 2) != "b" || token("a.b.c", 3) != "c" || token("a.b", 5) != "" || token("a", 1) != "a" {
		t.Error("token")
	}
}
