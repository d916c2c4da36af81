package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
)

// replayScope is the claims scope under which the signatures of the signed
// writes served are kept.
const replayScope = "\x00sigv4"

// maxReplayBody is the largest answer kept to answer the replays of a
// signed write; a replay of a write whose answer was larger gets 409.
const maxReplayBody = 1 << 20

// servedAnswer is a signed write's answer, kept to answer its replays.
type servedAnswer struct {
	Code   int         `json:"code"`
	Header http.Header `json:"header,omitempty"`
	Body   []byte      `json:"body,omitempty"`
	// Dropped is the size of a body over maxReplayBody, which was not kept.
	Dropped int `json:"dropped,omitempty"`
}

// once serves a signed write at most once while its signature is valid.
// An AWS Signature Version 4 is valid for maxSignatureSkew around its
// X-Amz-Date, so whoever captures a signed request could send it again
// until then: the signature is claimed in the store (durably, shared by
// every idem on a shared store) until it expires, and a replay answers as
// the first did, with Idempotent-Replayed: true, without running the write
// again. A replay while the first runs (or after a crash in the middle of
// it) answers 409. An answer of 5xx releases the claim: nothing was done,
// and the request may be sent again.
func (a *authenticator) once(w http.ResponseWriter, r *http.Request, sv *sigV4, h http.Handler) {
	now := a.now()
	until := sv.when.Add(maxSignatureSkew + time.Minute)
	key := store.MarkKeyOf(replayScope, sv.sig)
	ph := store.PayloadHash(sha256.Sum256([]byte(sv.sig)))
	ctx := context.WithoutCancel(r.Context())
	c, err := a.claims.Claim(ctx, key, ph, until.Sub(now), now)
	switch {
	case errors.Is(err, store.ErrClaimHeld), errors.Is(err, store.ErrPayloadMismatch):
		writeError(w, http.StatusConflict, errors.New("conflict: this signed request is being served already (a replay, or a retry that reused its signature); sign the request anew"))
		return
	case err != nil:
		writeError(w, storeErrorStatus(err), fmt.Errorf("remembering the signed request: %w", err))
		return
	case c.Status == store.Completed:
		replay(w, c.Result)
		return
	}
	rec := &recorder{header: make(http.Header)}
	h.ServeHTTP(rec, r)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 500 {
		if err := a.claims.Release(ctx, c); err != nil {
			a.log.Warn("releasing the claim of a failed signed request failed; its replays answer 409 until the signature expires", "err", err)
		}
	} else {
		ans := servedAnswer{Code: rec.code, Header: rec.header, Body: rec.body.Bytes()}
		if len(ans.Body) > maxReplayBody {
			ans.Body, ans.Dropped = nil, rec.body.Len()
		}
		b, _ := json.Marshal(ans)
		if err := a.claims.Complete(ctx, c, b, until); err != nil {
			a.log.Warn("remembering the answer of a signed request failed; its replays answer 409 until the signature expires", "err", err)
		}
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.code)
	w.Write(rec.body.Bytes())
}

// replay answers with a served answer.
func replay(w http.ResponseWriter, result []byte) {
	var ans servedAnswer
	if err := json.Unmarshal(result, &ans); err != nil || ans.Code == 0 {
		writeError(w, http.StatusConflict, errors.New("conflict: this signed request was served already; sign the request anew"))
		return
	}
	if ans.Dropped > 0 {
		writeError(w, http.StatusConflict, fmt.Errorf("conflict: this signed request was served already, and its answer (%d bytes) was too large to keep; sign the request anew", ans.Dropped))
		return
	}
	for k, v := range ans.Header {
		w.Header()[k] = v
	}
	w.Header().Set(invoke.HeaderReplayed, "true")
	w.WriteHeader(ans.Code)
	w.Write(ans.Body)
}

// recorder keeps a handler's answer, to be remembered before it is sent.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}
