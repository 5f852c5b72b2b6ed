package policy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reload results, the values of the result label.
const (
	reloadSuccess   = "success"
	reloadFailure   = "failure"
	reloadUnchanged = "unchanged"
)

type metrics struct {
	reloads  *prometheus.CounterVec
	revision *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_policy_reloads_total",
			Help: "Policy reload attempts, by result (success, failure, unchanged).",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshward_policy_revision_info",
			Help: "The policy revision being served (value 1), by content-hash id.",
		}, []string{"revision"}),
	}
	for _, r := range []string{reloadSuccess, reloadFailure, reloadUnchanged} {
		m.reloads.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.reloads, m.revision} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
