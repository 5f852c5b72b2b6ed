package audit

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a record is lost (label of meshward_audit_records_lost_total).
const (
	LostQueueFull  = "queue_full"  // the queue was full when Audit was called
	LostUnhealthy  = "unhealthy"   // refused while a sink was failing (failClosed)
	LostClosed     = "closed"      // Audit called after Run ended
	LostEncode     = "encode"      // the record could not be encoded as JSON
	LostSinkFailed = "sink_failed" // a failing sink's retry buffer overflowed
	LostShutdown   = "shutdown"    // still unwritten in a failing sink at shutdown
	LostTornTail   = "torn_tail"   // an incomplete last line removed at start
)

var lostReasons = []string{LostQueueFull, LostUnhealthy, LostClosed, LostEncode, LostSinkFailed, LostShutdown, LostTornTail}

type metrics struct {
	written    *prometheus.CounterVec
	lost       *prometheus.CounterVec
	sinkErrors *prometheus.CounterVec
	lostBy     map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, depth, healthy func() float64) (*metrics, error) {
	m := &metrics{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_audit_records_written_total",
			Help: "Audit records written, by sink.",
		}, []string{"sink"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_audit_records_lost_total",
			Help: "Audit records not written, by reason (a record lost in one sink counts once per sink).",
		}, []string{"reason"}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_audit_sink_errors_total",
			Help: "Failed writes, syncs, rotations or opens of an audit sink, by sink.",
		}, []string{"sink"}),
		lostBy: map[string]prometheus.Counter{},
	}
	for _, r := range lostReasons {
		m.lostBy[r] = m.lost.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.written, m.lost, m.sinkErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshward_audit_queue_depth",
			Help: "Audit records queued and not yet written.",
		}, depth),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshward_audit_healthy",
			Help: "1 while every audit sink writes, 0 while one is failing (with failClosed, decisions are denied).",
		}, healthy),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register audit metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) lose(reason string, n int) {
	if n > 0 {
		m.lostBy[reason].Add(float64(n))
	}
}
