package config

import (
	"fmt"
	"net"
	"strings"
	"time"
	"unicode"
)

// Async is `functions[].async`: how idem runs the function's asynchronous
// invocations (Lambda's Invoke API with X-Amz-Invocation-Type: Event), with
// the names and ranges of Lambda's EventInvokeConfig. An accepted event is
// queued durably in dataDir before the 202 answer, then run; a failed run
// is retried MaximumRetryAttempts times, after which (or once the event is
// older than MaximumEventAge) it goes to OnFailure.
type Async struct {
	// MaximumRetryAttempts is how many times a failed invocation is retried,
	// 0 to 2.
	// Default: 2
	MaximumRetryAttempts int `yaml:"maximumRetryAttempts"`
	// MaximumEventAge discards an event this long after it was accepted,
	// 60s to 6h; it then goes to OnFailure with condition EventAgeExceeded.
	// Default: 6h
	MaximumEventAge Duration `yaml:"maximumEventAge"`
	// OnFailure receives Lambda's asynchronous failure record of each
	// discarded event (requestContext, requestPayload, responseContext,
	// responsePayload) and, unlike Lambda, the event itself, so it can be
	// redriven.
	// Default: nil (discarded events are counted and logged only)
	OnFailure *Destination `yaml:"onFailure,omitempty"`
	// PermanentErrorTypes (idem extension) are function error types that
	// skip the remaining retries at once.
	// Default: empty
	PermanentErrorTypes []string `yaml:"permanentErrorTypes"`
	// Retry (idem extension) is the delay before each retry: BaseDelay
	// before the first, doubling, capped at MaxDelay, without jitter.
	// Lambda waits 1m, then 2m: `retry: {baseDelay: 1m}` does the same.
	// Default: {baseDelay: 1s, maxDelay: 2m}
	Retry Retry `yaml:"retry"`
}

// FunctionIdempotency is `functions[].idempotency`: which direct
// invocations (Invoke API) of the function count as repeats. A request with
// an Idempotency-Key header uses that key; otherwise Key, when set, is
// evaluated over the payload. A repeat of a completed invocation returns
// its result without running the function again.
type FunctionIdempotency struct {
	// Key is a JMESPath expression over the payload's JSON whose result is
	// the idempotency key, e.g. order.id. A request whose payload gives no
	// key (null, or nothing) is refused.
	// Default: empty (only the Idempotency-Key header makes a key)
	Key string `yaml:"key"`
	// Retention is how long a completed invocation's result is kept for
	// repeats, 1m to 8760h.
	// Default: 24h
	Retention Duration `yaml:"retention"`
}

// Auth is `auth`: who may call idem's HTTP API. With Tokens or ReadTokens
// set, every route needs a token except GET /healthz and GET /readyz (and
// GET /metrics with OpenMetrics), whatever address listen binds.
type Auth struct {
	// Tokens, when set, are the tokens that may call every route, reads
	// and writes (the Invoke API, puts): a request must carry
	// `Authorization: Bearer <token>`, or an AWS Signature Version 4 made
	// with a token as the secret access key (what the AWS CLI and SDKs
	// send); others get 403. A signed write must sign its payload
	// (UNSIGNED-PAYLOAD is refused), and a signed write is served once:
	// a replay of it answers as the first did, without writing again.
	// Each token is 16 to 4096 printable characters without spaces.
	// Default: none (no authentication; idem warns at start when listen is
	// not a loopback address)
	Tokens []string `yaml:"tokens"`
	// ReadTokens, when set, are tokens that may call the read routes (GET:
	// status, streams, records, state, metrics) only; a write with one gets
	// 403 saying the token is read-only. Same form as Tokens, and none may
	// repeat a token of Tokens. With ReadTokens alone, nobody may write.
	// Default: none
	ReadTokens []string `yaml:"readTokens"`
	// OpenMetrics leaves GET /metrics open to requests without a token
	// when tokens are set, for a Prometheus that cannot send one (its
	// `authorization` setting can send a read token).
	// Default: false (metrics need a token when tokens are set)
	OpenMetrics bool `yaml:"openMetrics"`
}

// Enabled reports whether the API needs tokens.
func (a *Auth) Enabled() bool { return len(a.Tokens) > 0 || len(a.ReadTokens) > 0 }

// Defaults and ranges of the Invoke API's settings.
const (
	defaultAsyncRetryAttempts = 2
	MaxAsyncRetryAttempts     = 2 // bounds functions[].async.maximumRetryAttempts
	defaultMaximumEventAge    = Duration(6 * time.Hour)
	minEventAge, maxEventAge  = Duration(60 * time.Second), Duration(6 * time.Hour)
	defaultAsyncBaseDelay     = Duration(time.Second)
	defaultAsyncMaxDelay      = Duration(2 * time.Minute)
	defaultInvokeRetention    = Duration(24 * time.Hour)
	minInvokeRetention        = Duration(time.Minute)
	MinTokenLen, MaxTokenLen  = 16, 4096 // bound the length of auth tokens
)

// applyInvokeDefaults fills the Invoke API's settings the file left out.
func (f *File) applyInvokeDefaults(set func(path string) bool) {
	for i := range f.Functions {
		fn, p := &f.Functions[i], fmt.Sprintf("functions[%d].", i)
		a := &fn.Async
		if !set(p+"async.maximumRetryAttempts") && a.MaximumRetryAttempts == 0 {
			a.MaximumRetryAttempts = defaultAsyncRetryAttempts
		}
		if !set(p+"async.maximumEventAge") && a.MaximumEventAge == 0 {
			a.MaximumEventAge = defaultMaximumEventAge
		}
		if !set(p+"async.retry.baseDelay") && a.Retry.BaseDelay == 0 {
			a.Retry.BaseDelay = defaultAsyncBaseDelay
		}
		if !set(p+"async.retry.maxDelay") && a.Retry.MaxDelay == 0 {
			a.Retry.MaxDelay = max(defaultAsyncMaxDelay, a.Retry.BaseDelay)
		}
		if !set(p+"idempotency.retention") && fn.Idempotency.Retention == 0 {
			fn.Idempotency.Retention = defaultInvokeRetention
		}
	}
}

// invokeSettings checks a function's async and idempotency settings.
func (c *checker) invokeSettings(f *File, p string, fn *Function) {
	a, ap := &fn.Async, p+".async"
	c.intRange(ap+".maximumRetryAttempts", a.MaximumRetryAttempts, 0, MaxAsyncRetryAttempts)
	c.durRange(ap+".maximumEventAge", a.MaximumEventAge, minEventAge, maxEventAge)
	if d := a.OnFailure; d != nil {
		dp := ap + ".onFailure.stream"
		switch {
		case d.Stream == "":
			c.addf(dp, "required (the name of a configured stream)")
		case f.Stream(d.Stream) == nil:
			c.addf(dp, "unknown stream %q (%s)", d.Stream, configured("streams", streamNames(f)))
		}
	}
	c.retries(ap, a.PermanentErrorTypes, a.Retry)

	ip := p + ".idempotency"
	if fn.Idempotency.Key != "" {
		if err := compileJMESPath(fn.Idempotency.Key); err != nil {
			c.add(ip+".key", fmt.Errorf("%q is not a valid JMESPath expression: %w", fn.Idempotency.Key, err))
		}
	}
	c.durRange(ip+".retention", fn.Idempotency.Retention, minInvokeRetention, maxRetention)
}

// auth checks the API tokens.
func (c *checker) auth(a *Auth) {
	seen := make(map[string]bool, len(a.Tokens)+len(a.ReadTokens))
	c.tokens("auth.tokens", a.Tokens, seen)
	c.tokens("auth.readTokens", a.ReadTokens, seen)
}

// tokens checks one list of tokens; seen holds the tokens of the lists
// checked before, which none may repeat.
func (c *checker) tokens(path string, tokens []string, seen map[string]bool) {
	for i, t := range tokens {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case len(t) < MinTokenLen:
			c.addf(p, "a token of %d characters is too short to be secret (allowed: %d to %d printable characters without spaces; e.g. the output of `openssl rand -hex 32`)", len(t), MinTokenLen, MaxTokenLen)
		case len(t) > MaxTokenLen:
			c.addf(p, "%d characters is above the maximum %d", len(t), MaxTokenLen)
		case strings.ContainsFunc(t, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) }):
			c.addf(p, "must be printable ASCII without spaces")
		case seen[t]:
			c.addf(p, "repeats an earlier token")
		}
		seen[t] = true
	}
}

// LoopbackListen reports whether listen (host:port) accepts connections
// from this machine only: a loopback IP address or localhost. An empty host
// (all interfaces) is not loopback.
func LoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
