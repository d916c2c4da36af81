package config

import (
	"strings"
	"testing"
	"time"
)

func TestInvokeSettings(t *testing.T) {
	f, err := Parse([]byte(`
streams: [{name: failed}]
auth: {tokens: [0123456789abcdef0123, another-token-of-16+], readTokens: [read-only-token-0123], openMetrics: true}
functions:
  - name: ship
    async:
      maximumRetryAttempts: 0
      maximumEventAge: 60s
      onFailure: {stream: failed}
      permanentErrorTypes: [ValidationError]
      retry: {baseDelay: 5m}
    idempotency: {key: order.id, retention: 1h}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fn := f.Functions[0]
	want := Async{MaximumRetryAttempts: 0, MaximumEventAge: Duration(time.Minute), OnFailure: &Destination{Stream: "failed"},
		PermanentErrorTypes: []string{"ValidationError"}, Retry: Retry{BaseDelay: Duration(5 * time.Minute), MaxDelay: Duration(5 * time.Minute)}}
	if got, want := dump(t, &File{Functions: []Function{{Async: fn.Async}}}), dump(t, &File{Functions: []Function{{Async: want}}}); got != want {
		t.Errorf("async =\n%s\nwant\n%s", got, want)
	}
	if fn.Idempotency != (FunctionIdempotency{Key: "order.id", Retention: Duration(time.Hour)}) {
		t.Errorf("idempotency = %+v", fn.Idempotency)
	}
	if len(f.Auth.Tokens) != 2 || len(f.Auth.ReadTokens) != 1 || !f.Auth.OpenMetrics || !f.Auth.Enabled() {
		t.Errorf("auth = %+v", f.Auth)
	}
}

func TestInvokeSettingsErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"retries", "functions: [{name: f, async: {maximumRetryAttempts: 3}}]\n",
			[]string{"functions[0].async.maximumRetryAttempts: 3 is above the maximum 2"}},
		{"negative retries", "functions: [{name: f, async: {maximumRetryAttempts: -1}}]\n",
			[]string{"functions[0].async.maximumRetryAttempts: -1 is below the minimum 0"}},
		{"event age", "functions: [{name: f, async: {maximumEventAge: 59s}}, {name: g, async: {maximumEventAge: 7h}}]\n",
			[]string{"functions[0].async.maximumEventAge: 59s is below the minimum 1m",
				"functions[1].async.maximumEventAge: 7h is above the maximum 6h"}},
		{"destination", "functions: [{name: f, async: {onFailure: {stream: nope}}}]\n",
			[]string{`functions[0].async.onFailure.stream: unknown stream "nope" (no streams are configured)`}},
		{"empty destination", "functions: [{name: f, async: {onFailure: {}}}]\n",
			[]string{"functions[0].async.onFailure.stream: required (the name of a configured stream)"}},
		{"permanent", "functions: [{name: f, async: {permanentErrorTypes: [' ']}}]\n",
			[]string{"functions[0].async.permanentErrorTypes[0]: empty (an error type such as ValidationError)"}},
		{"retry", "functions: [{name: f, async: {retry: {baseDelay: 2s, maxDelay: 1s}}}]\n",
			[]string{"functions[0].async.retry.maxDelay: 1s is below the minimum 2s (functions[0].async.retry.baseDelay)"}},
		{"key", "functions: [{name: f, idempotency: {key: 'a.['}}]\n",
			[]string{`functions[0].idempotency.key: "a.[" is not a valid JMESPath expression`}},
		{"retention", "functions: [{name: f, idempotency: {retention: 1s}}]\n",
			[]string{"functions[0].idempotency.retention: 1s is below the minimum 1m"}},
		{"unknown async key", "functions: [{name: f, async: {maximumRetries: 1}}]\n",
			[]string{"functions[0].async.maximumRetries: unknown key"}},
		{"short token", "auth: {tokens: [secret]}\n",
			[]string{"auth.tokens[0]: a token of 6 characters is too short"}},
		{"token with space", "auth: {tokens: ['0123456789 abcdefgh']}\n",
			[]string{"auth.tokens[0]: must be printable ASCII without spaces"}},
		{"repeated token", "auth: {tokens: [0123456789abcdefgh, 0123456789abcdefgh]}\n",
			[]string{"auth.tokens[1]: repeats an earlier token"}},
		{"read token of tokens", "auth: {tokens: [0123456789abcdefgh], readTokens: [0123456789abcdefgh]}\n",
			[]string{"auth.readTokens[0]: repeats an earlier token"}},
		{"short read token", "auth: {readTokens: [secret]}\n",
			[]string{"auth.readTokens[0]: a token of 6 characters is too short"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.yaml)
			}
			var lines []string
			for _, e := range flatten(err) {
				lines = append(lines, e.Error())
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("Parse error:\n%s\nwant %d problems:\n%s", err, len(tt.want), strings.Join(tt.want, "\n"))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], w)
				}
			}
		})
	}
}

// flatten returns the problems of a joined error.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestLoopbackListen(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true, "[::1]:7070": true, "localhost:0": true, "127.1.2.3:1": true,
		"0.0.0.0:7070": false, ":7070": false, "10.0.0.1:7070": false, "example.com:80": false, "junk": false,
	} {
		if got := LoopbackListen(addr); got != want {
			t.Errorf("LoopbackListen(%q) = %v, want %v", addr, got, want)
		}
	}
}
