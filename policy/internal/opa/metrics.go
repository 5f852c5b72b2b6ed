package opa

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the package's Prometheus metrics, registered on the
// registry given to [NewMetrics].
type Metrics struct {
	bundleFetches *prometheus.CounterVec
}

// Fetch results.
const (
	resultUpdated     = "updated"
	resultNotModified = "not_modified"
	resultError       = "error"
)

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		bundleFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_rego_bundle_fetches_total",
			Help: "Rego bundle fetches from a bundle URL, by result (updated, not_modified, error).",
		}, []string{"result"}),
	}
	if err := reg.Register(m.bundleFetches); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) fetch(result string) {
	if m == nil {
		return
	}
	m.bundleFetches.WithLabelValues(result).Inc()
}
