package xds

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/secrets/mtls"
)

// metrics are the xDS server's Prometheus metrics.
type metrics struct {
	connected    prometheus.Gauge
	pushes       *prometheus.CounterVec
	nacks        *prometheus.CounterVec
	pushDuration prometheus.Histogram
	refused      *prometheus.CounterVec
	buildErrors  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshward_xds_connected_proxies",
			Help: "Nodes with at least one open xDS stream.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_xds_pushes_total",
			Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_xds_nacks_total",
			Help: "xDS responses rejected by a node (requests with error_detail), by resource type.",
		}, []string{"type"}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshward_xds_push_duration_seconds",
			Help:    "Time from setting a node's snapshot to the node ACKing the new version of a type.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_xds_refused_total",
			Help: "xDS connections, streams or requests refused (connection limit, failed mTLS handshake, node authentication/authorization), by reason.",
		}, []string{"reason"}),
		buildErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_xds_snapshot_errors_total",
			Help: "Node snapshots not set because building or checking them failed, by stage (resources, check).",
		}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.pushes, m.nacks, m.pushDuration, m.refused, m.buildErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{ReasonNoClientCert, ReasonMissingNode, ReasonUnknownNode, ReasonNodeMismatch, ReasonNodeChanged, ReasonUnknownSecret, ReasonNodeRemoved} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range mtls.RefusedReasons {
		m.refused.WithLabelValues(r)
	}
	for _, s := range typeSlots {
		m.pushes.WithLabelValues(s.label)
		m.nacks.WithLabelValues(s.label)
	}
	m.buildErrors.WithLabelValues(stageResources)
	m.buildErrors.WithLabelValues(stageCheck)
	return m, nil
}

const (
	stageResources = "resources"
	stageCheck     = "check"
)
