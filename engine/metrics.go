package engine

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/idem-run/idem/store"
)

// metrics are the engine's Prometheus series, labelled by mapping. Per-shard
// gauges (lag, iterator age) come from Status, scraped by the server.
type metrics struct {
	processed   *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	filtered    *prometheus.CounterVec
	discarded   *prometheus.CounterVec
	lost        *prometheus.CounterVec
	invocations *prometheus.CounterVec
	retries     *prometheus.CounterVec
	conflicts   *prometheus.CounterVec
	shardErrors *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

func newMetrics() *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "idem", Name: name, Help: help}, labels)
	}
	return &metrics{
		processed:   counter("records_processed_total", "Records whose function succeeded.", "mapping"),
		skipped:     counter("records_skipped_total", "Records not delivered because their idempotency key was already completed in the scope.", "mapping"),
		filtered:    counter("records_filtered_total", "Records not delivered because they matched none of the mapping's filterCriteria patterns.", "mapping"),
		discarded:   counter("records_discarded_total", "Records sent to the on-failure destination (or dropped when none is configured).", "mapping", "condition"),
		lost:        counter("records_lost_total", "Records that retention removed before they were read.", "mapping"),
		invocations: counter("invocations_total", "Function invocations by outcome.", "mapping", "outcome"),
		retries:     counter("retries_total", "Invocations that retried a failed batch or record.", "mapping"),
		conflicts:   counter("store_conflicts_total", "Batches run again because their store transaction conflicted with another (a deadlock, a serialization failure, a lock timeout); not counted as retries.", "mapping"),
		shardErrors: counter("shard_errors_total", "Shards stopped by an error and restarted from their checkpoint, by cause: no_space (the store's disk is full; the shard resumes once space is freed), fenced, claim_lost (a commit refused because a record claim was lost before it landed: the window runs again under new claims), or error.", "mapping", "cause"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "idem", Name: "invocation_duration_seconds", Help: "Function invocation latency.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"mapping"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) {
	for _, c := range []prometheus.Collector{m.processed, m.skipped, m.filtered, m.discarded, m.lost, m.invocations, m.retries, m.conflicts, m.shardErrors, m.duration} {
		r.MustRegister(c)
	}
}

// shardError counts a shard stopped by err, by its cause.
func (m *metrics) shardError(mapping string, err error) {
	cause := "error"
	switch {
	case errors.Is(err, store.ErrNoSpace):
		cause = "no_space"
	case errors.Is(err, store.ErrFenced):
		cause = "fenced"
	case errors.Is(err, store.ErrRecordClaimLost):
		cause = "claim_lost"
	}
	m.shardErrors.WithLabelValues(mapping, cause).Inc()
}
