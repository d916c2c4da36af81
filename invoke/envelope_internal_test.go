package invoke

import (
	"strings"
	"testing"
)

// TestEnvelopeKeyOnly: keyOnly is written only when set, so the records
// of events without it keep their format, and a record queued before the
// field existed decodes as false and hashes its payload as it did.
func TestEnvelopeKeyOnly(t *testing.T) {
	old := []byte("{\"v\":1,\"requestId\":\"r\",\"key\":\"k\",\"reservation\":7}\n{\"a\":1}")
	e, err := decodeEnvelope(old)
	if err != nil {
		t.Fatal(err)
	}
	if e.KeyOnly || e.hash() != payloadHash([]byte(`{"a":1}`)) {
		t.Errorf("an earlier version's record: KeyOnly %v, hash %x; want false, the payload's hash", e.KeyOnly, e.hash())
	}
	if got := string(e.encode()); got != string(old) {
		t.Errorf("re-encoded without KeyOnly = %q, want the same bytes %q", got, old)
	}

	e.KeyOnly = true
	b := e.encode()
	if !strings.HasPrefix(string(b), `{"v":1,"requestId":"r","key":"k","reservation":7,"keyOnly":true}`+"\n") {
		t.Errorf("KeyOnly record = %q", b)
	}
	back, err := decodeEnvelope(b)
	if err != nil || !back.KeyOnly || string(back.Payload) != `{"a":1}` {
		t.Fatalf("decoded = %+v, %v", back, err)
	}
	if back.hash() != keyHash("k") || back.hash() == payloadHash([]byte(`{"a":1}`)) {
		t.Errorf("a KeyOnly event's hash is not its key's")
	}
	other := back
	other.Payload = []byte(`{"a":2}`)
	if other.hash() != back.hash() {
		t.Errorf("two payloads under one KeyOnly key hash apart")
	}
	// A key-only hash is never a payload's: the key's bytes as a payload
	// hash differently.
	if keyHash("k") == payloadHash([]byte("k")) {
		t.Errorf("keyHash(k) == payloadHash(k)")
	}
}
