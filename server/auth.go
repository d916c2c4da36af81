package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/idem-run/idem/config"
	"github.com/idem-run/idem/store"
)

// authenticator checks the API tokens of `auth.tokens` (full) and
// `auth.readTokens` (GET routes only). A request proves it holds a token in
// one of three ways:
//
//   - Authorization: Bearer <token>;
//   - HTTP Basic authentication (Authorization: Basic) whose password is
//     the token, with any user name: what webhook senders that know only
//     a URL send (Go's net/http, and most HTTP clients, turn the userinfo
//     of http://idem:<token>@host/… into it), such as S3-compatible
//     stores posting bucket notifications. It grants what the token
//     grants, as Bearer does;
//   - an AWS Signature Version 4 (what the AWS CLI and SDKs send) made with
//     the token as the secret access key, any access key id, any region,
//     within 15 minutes of idem's clock. This is what lets `aws lambda
//     invoke --endpoint-url …` call a protected idem:
//     AWS_ACCESS_KEY_ID=idem AWS_SECRET_ACCESS_KEY=<token>.
//
// Tokens are compared in constant time (as SHA-256 digests, so that their
// lengths do not leak either).
//
// A signature covers the SHA-256 of the body, so checking one may need the
// body. Everything else is checked first: the header's form, the credential
// scope, the signed headers and the date. A client that sends
// X-Amz-Content-Sha256 (signed) has its signature checked before its body
// is read; the bodies of the others are read under a budget of bytes shared
// by every request not yet verified (bodies), so that clients without a
// token cannot make idem hold more than that in memory.
//
// A signed write is served once: its signature is claimed in the store for
// as long as it is valid (see replay.go), and a replay of it answers as the
// first did. Bearer tokens are not replay-protected: anyone who saw one can
// make new requests with it anyway (TLS in front of idem keeps it secret).
type authenticator struct {
	secrets     []secret
	now         func() time.Time
	openMetrics bool
	// bodies bounds the body bytes read before their signature is checked.
	bodies *byteBudget
	// claims remembers the signed writes served (nil: not remembered).
	claims store.Claims
	log    *slog.Logger
}

// secret is one token and what it grants.
type secret struct {
	token  string
	digest [32]byte
	grant  grant
}

// grant is what a request's token allows.
type grant uint8

const (
	grantNone grant = iota
	grantRead       // GET routes only
	grantFull       // every route
)

// maxSignatureSkew is how far a signature's X-Amz-Date may be from idem's
// clock, as AWS allows.
const maxSignatureSkew = 15 * time.Minute

// defaultUnverifiedBodyBytes bounds the body bytes held by requests whose
// signature is not checked yet, all together: ten bodies of the largest
// size.
const defaultUnverifiedBodyBytes = 64 << 20

func newAuthenticator(a config.Auth, unverified int64, log *slog.Logger) *authenticator {
	if !a.Enabled() {
		return nil
	}
	au := &authenticator{now: time.Now, openMetrics: a.OpenMetrics,
		bodies: &byteBudget{limit: unverified}, log: log}
	for _, t := range a.Tokens {
		au.secrets = append(au.secrets, secret{token: t, digest: sha256.Sum256([]byte(t)), grant: grantFull})
	}
	for _, t := range a.ReadTokens {
		au.secrets = append(au.secrets, secret{token: t, digest: sha256.Sum256([]byte(t)), grant: grantRead})
	}
	return au
}

// authError is a refused request: its status and why.
type authError struct {
	code       int
	msg        string
	retryAfter bool
}

func (e *authError) Error() string { return e.msg }

func forbidden(format string, args ...any) *authError {
	return &authError{code: http.StatusForbidden, msg: "forbidden: " + fmt.Sprintf(format, args...)}
}

// errNoToken is the answer to a request without a token, or with a wrong
// one.
var errNoToken = forbidden("this API requires a token of auth.tokens, as Authorization: Bearer <token>, as the password of HTTP Basic authentication, or as the secret access key of an AWS Signature Version 4")

// isWrite reports whether a request may change something: every method but
// GET, HEAD and OPTIONS.
func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// open reports whether r may go without a token: the probes, and the
// metrics with auth.openMetrics.
func (a *authenticator) open(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch r.URL.Path {
	case "/healthz", "/readyz":
		return true
	case "/metrics":
		return a.openMetrics
	}
	return false
}

// guard answers 403 to requests without a valid token (and to writes with
// a read-only one), and passes the others to h. With no tokens configured
// it is h.
func (a *authenticator) guard(h http.Handler) http.Handler {
	if a == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.open(r) {
			h.ServeHTTP(w, r)
			return
		}
		g, sig, err := a.authenticate(w, r)
		if err == nil && g == grantRead && isWrite(r) {
			err = forbidden("this token is read-only (auth.readTokens): it may call GET routes only; writes need a token of auth.tokens")
		}
		if err != nil {
			if err.retryAfter {
				w.Header().Set("Retry-After", "1")
			}
			writeError(w, err.code, err)
			return
		}
		if sig != nil && isWrite(r) && a.claims != nil {
			a.once(w, r, sig, h)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authenticate returns what r's token grants, and its signature when it is
// signed.
func (a *authenticator) authenticate(w http.ResponseWriter, r *http.Request) (grant, *sigV4, *authError) {
	h := r.Header.Get("Authorization")
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "Bearer "):
		if g := a.bearer(strings.TrimSpace(h[7:])); g != grantNone {
			return g, nil, nil
		}
	case len(h) > 6 && strings.EqualFold(h[:6], "Basic "):
		// The user name is ignored: a webhook's URL must carry one.
		if _, pass, ok := r.BasicAuth(); ok {
			if g := a.bearer(pass); g != grantNone {
				return g, nil, nil
			}
		}
	case strings.HasPrefix(h, "AWS4-HMAC-SHA256 "):
		sv, err := parseSigV4(r, h, a.now())
		if err != nil {
			return grantNone, nil, err
		}
		g, err := a.checkSigV4(w, r, sv)
		return g, sv, err
	}
	return grantNone, nil, errNoToken
}

func (a *authenticator) bearer(token string) grant {
	d := sha256.Sum256([]byte(token))
	g := grantNone
	for i := range a.secrets {
		if subtle.ConstantTimeCompare(d[:], a.secrets[i].digest[:]) == 1 {
			g = max(g, a.secrets[i].grant)
		}
	}
	return g
}

// sigV4 is a parsed Signature Version 4 Authorization header.
type sigV4 struct {
	akid, region, service string
	signed                []string
	sig                   string
	when                  time.Time
}

// parseSigV4 checks everything of a signature that needs neither the
// tokens nor the body: its form, its credential scope, that it signs host,
// x-amz-date and (when sent) x-amz-content-sha256, and its date.
func parseSigV4(r *http.Request, header string, now time.Time) (*sigV4, *authError) {
	var sv sigV4
	var date, signed string
	for _, part := range strings.Split(strings.TrimPrefix(header, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || !scopeName(f[0]) || !scopeName(f[2]) || !scopeName(f[3]) || f[4] != "aws4_request" {
				return nil, forbidden("the signature's Credential must be <access key id>/<yyyymmdd>/<region>/<service>/aws4_request, each of 1 to 128 letters, digits, '-' and '_'")
			}
			sv.akid, date, sv.region, sv.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			signed = v
		case "Signature":
			sv.sig = v
		}
	}
	if sv.akid == "" || signed == "" {
		return nil, forbidden("the signature needs Credential, SignedHeaders and Signature")
	}
	if len(sv.sig) != 64 || strings.Trim(sv.sig, "0123456789abcdef") != "" {
		return nil, forbidden("the signature's Signature must be 64 lowercase hexadecimal digits")
	}
	sv.signed = strings.Split(signed, ";")
	must := []string{"host", "x-amz-date"}
	if r.Header.Get("X-Amz-Content-Sha256") != "" {
		must = append(must, "x-amz-content-sha256")
	}
	for _, name := range must {
		if !slices.Contains(sv.signed, name) {
			return nil, forbidden("the signature must sign the %s header", name)
		}
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil, forbidden("X-Amz-Date must be the signing time as yyyymmddThhmmssZ")
	}
	if when.Format("20060102") != date {
		return nil, forbidden("the signature's Credential date is not the day of its X-Amz-Date")
	}
	if d := now.Sub(when); d > maxSignatureSkew || d < -maxSignatureSkew {
		return nil, forbidden("the signature's X-Amz-Date is more than %s from idem's clock", maxSignatureSkew)
	}
	sv.when = when
	return &sv, nil
}

// scopeName reports whether s may be an access key id, a region or a
// service of a credential scope.
func scopeName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkSigV4 verifies sv by signing the request again with each token as
// the secret key. With a signed X-Amz-Content-Sha256 the signature is
// checked before the body is read, then the body against it; without, the
// body is read first, within the budget of unverified bodies. The body is
// put back for the handler.
func (a *authenticator) checkSigV4(w http.ResponseWriter, r *http.Request, sv *sigV4) (grant, *authError) {
	ph := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case ph == "UNSIGNED-PAYLOAD" || strings.HasPrefix(ph, "STREAMING-"):
		if isWrite(r) {
			return grantNone, forbidden("X-Amz-Content-Sha256 %s: a write must sign its body's SHA-256, so that the body cannot be swapped", ph)
		}
		// A read's body is not used: leave it unread.
		r.Body = http.NoBody
		if g := a.verify(r, sv, ph); g != grantNone {
			return g, nil
		}
		return grantNone, errNoToken
	case ph != "":
		if len(ph) != 64 || strings.Trim(ph, "0123456789abcdef") != "" {
			return grantNone, forbidden("X-Amz-Content-Sha256 must be the body's SHA-256 in lowercase hexadecimal")
		}
		g := a.verify(r, sv, ph)
		if g == grantNone {
			return grantNone, errNoToken
		}
		if g == grantRead && isWrite(r) {
			return g, nil // refused by guard, without reading the body
		}
		body, err := readBody(w, r)
		if err != nil {
			return grantNone, err
		}
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != ph {
			return grantNone, forbidden("the body does not match its signed X-Amz-Content-Sha256")
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		return g, nil
	}
	if r.ContentLength > maxRequestBytes {
		return grantNone, tooLarge()
	}
	n := r.ContentLength
	if n < 0 {
		n = maxRequestBytes
	}
	if !a.bodies.acquire(n) {
		return grantNone, &authError{code: http.StatusServiceUnavailable, retryAfter: true,
			msg: "too many request bodies are being read before their signature can be checked; retry later, or send a signed X-Amz-Content-Sha256 header"}
	}
	defer a.bodies.release(n)
	body, err := readBody(w, r)
	if err != nil {
		return grantNone, err
	}
	sum := sha256.Sum256(body)
	g := a.verify(r, sv, hex.EncodeToString(sum[:]))
	if g == grantNone {
		return grantNone, errNoToken
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return g, nil
}

func tooLarge() *authError {
	return &authError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body exceeds %d bytes", maxRequestBytes)}
}

// readBody reads r's body, at most maxRequestBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *authError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			return nil, tooLarge()
		}
		return nil, &authError{code: http.StatusBadRequest, msg: "reading the request body: " + err.Error()}
	}
	return body, nil
}

// verify returns the grant of the token sv was made with, or grantNone.
func (a *authenticator) verify(r *http.Request, sv *sigV4, payloadHash string) grant {
	u := *r.URL
	clone := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: make(http.Header)}
	for _, name := range sv.signed {
		switch name {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
		default:
			if v, ok := r.Header[http.CanonicalHeaderKey(name)]; ok {
				clone.Header[http.CanonicalHeaderKey(name)] = v
			}
		}
	}
	clone.URL.Host = r.Host
	want := []byte(sv.sig)
	g := grantNone
	for _, s := range a.secrets {
		c := clone.Clone(context.Background())
		creds := aws.Credentials{AccessKeyID: sv.akid, SecretAccessKey: s.token, SessionToken: r.Header.Get("X-Amz-Security-Token")}
		// A Signer per signature: a Signer caches derived keys by region
		// and service (which the client chooses, so a shared cache would
		// grow without bound) and access key id, not by secret (so a
		// shared one would sign every token after the first with the
		// first's key).
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, c, payloadHash, sv.service, sv.region, sv.when); err != nil {
			continue
		}
		_, got, _ := strings.Cut(c.Header.Get("Authorization"), "Signature=")
		if hmac.Equal([]byte(got), want) {
			g = max(g, s.grant)
		}
	}
	return g
}

// byteBudget counts bytes in use against a limit; acquire never waits.
type byteBudget struct {
	mu    sync.Mutex
	used  int64
	limit int64
}

func (b *byteBudget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}
