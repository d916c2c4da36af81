package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idem-run/idem/internal/s3event"
	"github.com/idem-run/idem/invoke"
	"github.com/idem-run/idem/store"
)

// s3EventsRoute receives the bucket notifications of S3-compatible stores
// (MinIO, Ceph RGW, versitygw, SeaweedFS), which POST AWS's notification
// document ({"Records": [...]}) to a webhook, for any function: no
// configuration names it.
const s3EventsRoute = "POST /v1/functions/{name}/s3-events"

// s3QueueTimeout bounds the queueing of one notification's records, which
// goes on when its sender stops waiting.
const s3QueueTimeout = time.Minute

// maxS3NotificationBytes bounds a notification's body: the put API's and
// Lambda's 6 MiB. Stores send one record, or a few, per notification.
const maxS3NotificationBytes = maxRequestBytes

// S3EventsResponse is the answer to a notification whose records are all
// queued: how many it held, how many were queued, and how many were
// repeats of events already queued or run (deduplicated by their key).
// A test notification is answered {"test": true} alone.
type S3EventsResponse struct {
	// Test is set, and the rest zero, for a test notification.
	Test       bool `json:"test,omitempty"`
	Records    int  `json:"records"`
	Queued     int  `json:"queued"`
	Duplicates int  `json:"duplicates"`
}

// Outcomes of idem_s3_notifications_total.
const (
	s3Queued    = "queued"    // a record queued as an event
	s3Duplicate = "duplicate" // a record deduplicated by its key
	s3Test      = "test"      // a test notification
	s3Invalid   = "invalid"   // a notification refused as a whole (4xx), nothing queued
	s3Failed    = "failed"    // a record that could not be queued
)

// s3Events serves s3EventsRoute.
type s3Events struct {
	s     *Server
	count *prometheus.CounterVec
}

// s3EventRoutes registers s3EventsRoute, behind the tokens as every route
// (see routes), and its counter in reg.
func (s *Server) s3EventRoutes(mux *http.ServeMux, reg prometheus.Registerer) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "idem_s3_notifications_total",
		Help: "S3 event notifications received, by function and outcome: records queued or deduplicated (duplicate) or that failed to queue, and notifications that were tests or invalid.",
	}, []string{"function", "outcome"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(fmt.Sprintf("registering idem_s3_notifications_total: %v", err))
		}
		c = are.ExistingCollector.(*prometheus.CounterVec)
	}
	mux.Handle(s3EventsRoute, &s3Events{s: s, count: c})
}

// ServeHTTP runs the function once per notification record, as S3 runs
// Lambda: each record is queued as an asynchronous (Event) invocation
// whose payload is the S3Event {"Records": [record]}, under the record's
// identity as its default idempotency key, and key only (s3event.Record.Key):
// a notification delivered again runs nothing again, while two uploads of
// one object key run twice.
//
// Every record is checked before any is queued: a body that is not a
// notification is 400, naming the field, and queues nothing. The answer is
// 200 only once every record is durably queued or deduplicated; if one
// cannot be queued it is 5xx (507 for a full disk, 503 for a store that is
// closing or busy, 500 otherwise), so that the store sends the
// notification again, and the records already queued are then
// deduplicated by their keys. A sender that stops waiting does not stop
// the queueing.
func (h *s3Events) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	svc := h.s.invoke
	if err := svc.CheckFunction(name); err != nil {
		// Before the body: a store pointed at a wrong function learns it
		// from its test notification already. Unknown names get no series.
		invoke.WriteError(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxS3NotificationBytes))
	if err != nil {
		h.count.WithLabelValues(name, s3Invalid).Inc()
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("an S3 notification must be at most %d bytes", maxS3NotificationBytes))
			return
		}
		writeTypedError(w, http.StatusBadRequest, errContentType, fmt.Errorf("reading the notification: %w", err))
		return
	}
	n, err := s3event.Parse(body)
	if err != nil {
		// An *s3event.Error, naming the field.
		h.count.WithLabelValues(name, s3Invalid).Inc()
		writeTypedError(w, http.StatusBadRequest, errContentType, err)
		return
	}
	if n.Test {
		h.count.WithLabelValues(name, s3Test).Inc()
		h.s.log.Info("S3 test notification received", "function", name)
		writeJSON(w, http.StatusOK, struct {
			Test bool `json:"test"`
		}{true})
		return
	}

	reqs := make([]invoke.Request, len(n.Records))
	for i := range n.Records {
		rec := &n.Records[i]
		req := invoke.Request{Function: name, Payload: rec.Event(), DefaultKey: rec.Key(), KeyOnly: true}
		if len(req.Payload) > invoke.MaxAsyncPayload {
			h.count.WithLabelValues(name, s3Invalid).Inc()
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("Records[%d]: its S3Event is %d bytes; an asynchronous invocation takes at most %d",
				i, len(req.Payload), invoke.MaxAsyncPayload))
			return
		}
		// The function's idempotency.key expression, if it has one, must
		// find a key in every record's event.
		if err := svc.Check(req); err != nil {
			h.count.WithLabelValues(name, s3Invalid).Inc()
			writeRecordError(w, i, err)
			return
		}
		reqs[i] = req
	}

	// A sender that stops waiting (versitygw gives up after 3 s, and never
	// sends again) does not stop the queueing of what it sent: its records
	// are queued all the same, within a bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s3QueueTimeout)
	defer cancel()
	out := S3EventsResponse{Records: len(reqs)}
	var refused error // the first record refused for what it is (4xx)
	for i, req := range reqs {
		dup, err := svc.Enqueue(ctx, req)
		if err != nil {
			h.count.WithLabelValues(name, s3Failed).Inc()
			if code, ok := recordRefused(err); ok {
				// Sending it again cannot help: queue the others, then
				// answer this one's error.
				h.s.log.Warn("an S3 event record was refused", "function", name, "record", i, "status", code, "err", err)
				if refused == nil {
					refused = recordError(i, err)
				}
				continue
			}
			h.s.log.Warn("queueing an S3 event record failed; the store's retry of the notification queues what is missing", "function", name,
				"record", i, "of", len(reqs), "err", err)
			code := s3QueueStatus(err)
			if code == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			msg := "queueing record %d of %d failed (%w); the records before it are queued, and sending the notification again queues the rest, once"
			if code == http.StatusInsufficientStorage {
				msg = "the disk holding idem's data is full: queueing record %d of %d failed (%w); the records before it are queued, and sending the notification again once space is freed queues the rest, once"
			}
			writeError(w, code, fmt.Errorf(msg, i, len(reqs), err))
			return
		}
		if dup {
			out.Duplicates++
			h.count.WithLabelValues(name, s3Duplicate).Inc()
		} else {
			out.Queued++
			h.count.WithLabelValues(name, s3Queued).Inc()
		}
	}
	if refused != nil {
		writeRecordError(w, -1, refused)
		return
	}
	h.s.log.Debug("S3 notification queued", "function", name, "records", out.Records, "queued", out.Queued, "duplicates", out.Duplicates)
	writeJSON(w, http.StatusOK, out)
}

// recordRefused reports whether err refuses a record for what it is (an
// *invoke.Error of 4xx, such as a key first used with another payload by
// an invocation that was not an S3 event), with its status. A conflict
// (the key's reservation held by another Enqueue past its wait) is not:
// it passes, and a retry succeeds.
func recordRefused(err error) (int, bool) {
	var ie *invoke.Error
	if errors.As(err, &ie) && ie.Status < 500 && !errors.Is(err, store.ErrClaimHeld) {
		return ie.Status, true
	}
	return 0, false
}

// s3QueueStatus classifies a failure to queue a record that a retry may
// cure: 507 for a full disk, 503 for a store that is closing, a request
// given up, or a key held by another request past the wait, 500 otherwise.
func s3QueueStatus(err error) int {
	if errors.Is(err, store.ErrClaimHeld) {
		return http.StatusServiceUnavailable
	}
	return storeErrorStatus(err)
}

// recordError names record i in err's message, keeping an *invoke.Error's
// status and type.
func recordError(i int, err error) error {
	var ie *invoke.Error
	if errors.As(err, &ie) {
		return &invoke.Error{Status: ie.Status, Code: ie.Code, Message: fmt.Sprintf("Records[%d]: %s", i, ie.Message), Err: ie.Err}
	}
	return fmt.Errorf("Records[%d]: %w", i, err)
}

// writeRecordError answers the error of record i (i < 0: err names its
// record already) as the Invoke API answers its errors.
func writeRecordError(w http.ResponseWriter, i int, err error) {
	if i >= 0 {
		err = recordError(i, err)
	}
	invoke.WriteError(w, err)
}
