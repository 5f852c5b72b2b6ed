package detect

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	fired   *prometheus.CounterVec
	dropped prometheus.Counter
	evicted prometheus.Counter
}

// actions lists the actions a rule's quarantine mode can take, so that
// every series is exported at 0 from the start.
func actions(mode string) []string {
	switch mode {
	case QuarantineDryRun:
		return []string{ActionWouldQuarantine}
	case QuarantineEnforce:
		return []string{ActionQuarantined, ActionAlreadyQuarantined, ActionQuarantineFailed}
	default:
		return []string{ActionAlert}
	}
}

func newMetrics(reg prometheus.Registerer, rules []*rule, tracked func() float64) (*metrics, error) {
	m := &metrics{
		fired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_detections_total",
			Help: "Detection rules that reached their threshold for an identity, by rule and action taken.",
		}, []string{"rule", "action"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshward_detection_records_dropped_total",
			Help: "Denies not counted by the detector because its queue was full.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshward_detection_identities_evicted_total",
			Help: "Identities forgotten (with their counts) to stay within detection.maxIdentities.",
		}),
	}
	for _, r := range rules {
		r.count = map[string]prometheus.Counter{}
		for _, a := range actions(r.Quarantine) {
			r.count[a] = m.fired.WithLabelValues(r.Name, a)
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.fired, m.dropped, m.evicted, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshward_detection_tracked_identities",
		Help: "Identities the detector holds counts for.",
	}, tracked)} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register detection metrics: %w", err)
		}
	}
	return m, nil
}

// detections is the counter of rule r's action.
func (m *metrics) detections(r *rule, action string) prometheus.Counter {
	if c, ok := r.count[action]; ok {
		return c
	}
	return m.fired.WithLabelValues(r.Name, action)
}
