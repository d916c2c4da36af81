package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/idem-run/idem/function"
)

// authenticator checks the API tokens of `auth.tokens`. A request proves it
// holds a token in one of two ways:
//
//   - Authorization: Bearer <token>;
//   - an AWS Signature Version 4 (what the AWS CLI and SDKs send) made with
//     the token as the secret access key, any access key id, any region,
//     within 15 minutes of idem's clock. This is what lets `aws lambda
//     invoke --endpoint-url …` call a protected idem:
//     AWS_ACCESS_KEY_ID=idem AWS_SECRET_ACCESS_KEY=<token>.
//
// Tokens are compared in constant time (as SHA-256 digests, so that their
// lengths do not leak either).
type authenticator struct {
	digests [][32]byte
	tokens  []string
	signer  *v4.Signer
	now     func() time.Time
}

// maxSignatureSkew is how far a signature's X-Amz-Date may be from idem's
// clock, as AWS allows.
const maxSignatureSkew = 15 * time.Minute

func newAuthenticator(tokens []string) *authenticator {
	if len(tokens) == 0 {
		return nil
	}
	a := &authenticator{tokens: tokens, signer: v4.NewSigner(), now: time.Now}
	for _, t := range tokens {
		a.digests = append(a.digests, sha256.Sum256([]byte(t)))
	}
	return a
}

// guard answers 403 to requests without a valid token, and passes the
// others to h. With no tokens configured it is h.
func (a *authenticator) guard(h http.Handler) http.Handler {
	if a == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.allow(w, r) {
			w.Header().Set("X-Amzn-Errortype", "AccessDeniedException")
			writeError(w, http.StatusForbidden, errForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

type forbiddenError struct{}

func (forbiddenError) Error() string {
	return "forbidden: this API requires a token of auth.tokens, as Authorization: Bearer <token> or as the secret access key of an AWS Signature Version 4"
}

var errForbidden error = forbiddenError{}

func (a *authenticator) allow(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	switch {
	case len(h) > 7 && strings.EqualFold(h[:7], "Bearer "):
		return a.bearer(strings.TrimSpace(h[7:]))
	case strings.HasPrefix(h, "AWS4-HMAC-SHA256 "):
		return a.sigV4(w, r, h)
	}
	return false
}

func (a *authenticator) bearer(token string) bool {
	d := sha256.Sum256([]byte(token))
	ok := 0
	for i := range a.digests {
		ok |= subtle.ConstantTimeCompare(d[:], a.digests[i][:])
	}
	return ok == 1
}

// sigV4 verifies an AWS Signature Version 4 header by signing the request
// again with each token as the secret key. It reads the body (at most the
// Invoke API's limit) to hash it, and puts it back for the handler.
func (a *authenticator) sigV4(w http.ResponseWriter, r *http.Request, header string) bool {
	var akid, date, region, service, signed, sig string
	for _, part := range strings.Split(strings.TrimPrefix(header, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return false
			}
			akid, date, region, service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			signed = v
		case "Signature":
			sig = v
		}
	}
	if akid == "" || signed == "" || sig == "" {
		return false
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || when.Format("20060102") != date {
		return false
	}
	if d := a.now().Sub(when); d > maxSignatureSkew || d < -maxSignatureSkew {
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, function.MaxPayloadSize+1))
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	switch h := r.Header.Get("X-Amz-Content-Sha256"); h {
	case "", payloadHash:
	case "UNSIGNED-PAYLOAD": // the signature covers the request, not its body
		payloadHash = h
	default:
		return false
	}

	u := *r.URL
	clone := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: make(http.Header)}
	for _, name := range strings.Split(signed, ";") {
		switch name {
		case "host":
		case "content-length":
			clone.ContentLength = r.ContentLength
			if clone.ContentLength < 0 {
				clone.ContentLength = int64(len(body))
			}
		default:
			if v, ok := r.Header[http.CanonicalHeaderKey(name)]; ok {
				clone.Header[http.CanonicalHeaderKey(name)] = v
			}
		}
	}
	clone.URL.Host = r.Host
	want := []byte(sig)
	ok := false
	for _, token := range a.tokens {
		c := clone.Clone(context.Background())
		c.Header.Del("Authorization")
		creds := aws.Credentials{AccessKeyID: akid, SecretAccessKey: token, SessionToken: r.Header.Get("X-Amz-Security-Token")}
		if err := a.signer.SignHTTP(context.Background(), creds, c, payloadHash, service, region, when); err != nil {
			continue
		}
		_, got, _ := strings.Cut(c.Header.Get("Authorization"), "Signature=")
		if hmac.Equal([]byte(got), want) {
			ok = true
		}
	}
	return ok
}
