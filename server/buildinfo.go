package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/idem-run/idem/internal/buildinfo"
)

// buildInfoGauge is idem_build_info: 1, labelled with what the binary was
// built from, so that dashboards and alerts can tell which build each
// instance runs (and join it onto other series).
func buildInfoGauge() prometheus.Collector {
	bi := buildinfo.Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "idem_build_info",
		Help: "Always 1; its labels say which build of idem is running.",
		ConstLabels: prometheus.Labels{
			"version":   bi.Version,
			"revision":  bi.Revision,
			"goversion": bi.GoVersion,
		},
	})
	g.Set(1)
	return g
}
