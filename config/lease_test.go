package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLease(t *testing.T) {
	f, err := Parse([]byte("store: {postgres: {dsn: 'postgres://127.0.0.1/test'}}\nlease: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Lease == nil || f.Lease.TTL.D() != 10*time.Second {
		t.Fatalf("lease = %+v; want ttl 10s by default", f.Lease)
	}
	f, err = Parse([]byte("store: {redis: {}}\nlease: {ttl: 3s}\n"))
	if err != nil || f.Lease.TTL.D() != 3*time.Second {
		t.Fatalf("lease = %+v, %v; want ttl 3s", f.Lease, err)
	}
	if f, err := Parse([]byte("listen: 127.0.0.1:0\n")); err != nil || f.Lease != nil {
		t.Fatalf("no lease key: %+v, %v; want leases off", f, err)
	}

	for _, tt := range []struct{ yaml, path, msg string }{
		{"lease: {ttl: 10s}\n", "lease", "embedded store"},
		{"store: {redis: {}}\nlease: {ttl: 100ms}\n", "lease.ttl", "below the minimum"},
		{"store: {redis: {}}\nlease: {ttl: 1h}\n", "lease.ttl", "above the maximum"},
	} {
		_, err := Parse([]byte(tt.yaml))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Parse(%q) = %v; want an error at %s saying %q", tt.yaml, err, tt.path, tt.msg)
		}
	}
}
