package invoke

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode"

	"github.com/jmespath/go-jmespath"

	"github.com/idem-run/idem/store"
)

// maxKeyBytes bounds an idempotency key, from a header or an expression.
const maxKeyBytes = 1024

// keyScope is the claims namespace of a function's invocations. The leading
// NUL keeps it apart from every scope a configuration can name, and from
// the engine's step journal ("\x00step").
func keyScope(function string) string { return "\x00invoke/" + function }

// queuedScope is the claims namespace of the reservations of a function's
// keyed events: one per key while an event with that key is queued, in
// the store, so that every process sharing the store sees it. It is apart
// from keyScope: a run of the key (a synchronous invocation, or the event
// itself) holds the other record.
func queuedScope(function string) string { return "\x00invoke-queued/" + function }

// payloadHash is the SHA-256 a claim keeps, so that a repeat with another
// payload under the same key is refused.
func payloadHash(payload []byte) store.PayloadHash { return sha256.Sum256(payload) }

// keyOnlyPrefix sets the hashes of keyHash apart from every payload's: a
// key-only claim and an invocation whose payload happens to be the key's
// text are never taken for one another.
const keyOnlyPrefix = "idem key-only claim\x00"

// keyHash is what a claim keeps in place of the payload's hash for a
// KeyOnly request: the key's own SHA-256, so that every payload sent under
// the key is taken for the same event.
func keyHash(key string) store.PayloadHash {
	h := sha256.New()
	h.Write([]byte(keyOnlyPrefix))
	h.Write([]byte(key))
	var out store.PayloadHash
	h.Sum(out[:0])
	return out
}

// claimHash is the hash the claims of a keyed request keep: the key's for
// a KeyOnly request, else the payload's. Every claim of one event (its
// reservation, its run) must use it, or a repeat would be refused as a
// payload mismatch.
func claimHash(keyOnly bool, key string, payload []byte) store.PayloadHash {
	if keyOnly {
		return keyHash(key)
	}
	return payloadHash(payload)
}

// checkKey validates an Idempotency-Key header. (A Request's DefaultKey,
// which idem computes, is bound in length only.)
func checkKey(k string) error {
	if len(k) > maxKeyBytes {
		return fmt.Errorf("Idempotency-Key is %d bytes; the maximum is %d", len(k), maxKeyBytes)
	}
	for _, r := range k {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return fmt.Errorf("Idempotency-Key %q: only printable ASCII is allowed", k)
		}
	}
	return nil
}

// compileKey compiles a function's idempotency.key expression; nil for "".
func compileKey(expr string) (k *jmespath.JMESPath, err error) {
	if expr == "" {
		return nil, nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("JMESPath parser failed: %v", r)
		}
	}()
	return jmespath.Compile(expr)
}

// evalKey computes the idempotency key of a JSON payload with expr, with
// the engine's rules: a string is itself, a number or boolean its JSON
// text, any other value its JSON encoding; null or nothing is an error.
func evalKey(expr *jmespath.JMESPath, payload []byte) (string, error) {
	var doc any
	if err := json.Unmarshal(payload, &doc); err != nil {
		return "", fmt.Errorf("the payload is not JSON: %v", err)
	}
	v, err := expr.Search(doc)
	if err != nil {
		return "", err
	}
	var key string
	switch v := v.(type) {
	case nil:
		return "", fmt.Errorf("the expression resolves to nothing in this payload")
	case string:
		if v == "" {
			return "", fmt.Errorf("the expression resolves to an empty string")
		}
		key = v
	case float64:
		key = strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		key = strconv.FormatBool(v)
	default:
		b, _ := json.Marshal(v)
		key = string(b)
	}
	if len(key) > maxKeyBytes {
		return "", fmt.Errorf("the key is %d bytes; the maximum is %d", len(key), maxKeyBytes)
	}
	return key, nil
}
