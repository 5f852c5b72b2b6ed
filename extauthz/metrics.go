package extauthz

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets/mtls"
)

// Decision results, the values of the result label.
const (
	resultAllow  = "allow"
	resultDeny   = "deny"
	resultError  = "error"
	resultDryRun = "dry_run"
)

type metrics struct {
	decisions *prometheus.CounterVec
	duration  prometheus.Histogram
	errors    *prometheus.CounterVec
	authn     *prometheus.CounterVec
	refused   *prometheus.CounterVec
	rpc       *prometheus.CounterVec
	limited   *prometheus.CounterVec

	cache    cowMap[[2]string, prometheus.Counter]
	rpcCache cowMap[[3]string, prometheus.Counter]
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_decisions_total",
			Help: "ext_authz decisions by result (allow, deny, error, dry_run) and reason code.",
		}, []string{"result", "reason"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshward_authz_check_duration_seconds",
			Help:    "Time to answer one Check, from receipt to response.",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .025, .05, .1, .25},
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_errors_total",
			Help: "Checks denied because of an internal failure (status_on_error), by reason; not counted as policy denies.",
		}, []string{"reason"}),
		authn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_authn_failures_total",
			Help: "Checks denied 401 because the caller had no or an invalid verified identity, by reason.",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_refused_connections_total",
			Help: "Client connections refused before any Check: over maxConnections, or a failed TLS handshake, by reason.",
		}, []string{"reason"}),
		rpc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_jsonrpc_decisions_total",
			Help: "Decisions on JSON-RPC routes by result, JSON-RPC method (known MCP and A2A methods, else other) and MCP tool (configured tools, else unknown; none without one); a batch counts its deciding element.",
		}, []string{"result", "method", "tool"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_authz_rate_limited_total",
			Help: "Requests denied 429 because a quota of the caller was used up, by quota.",
		}, []string{"quota"}),
		cache:    cowMap[[2]string, prometheus.Counter]{max: 1024},
		rpcCache: cowMap[[3]string, prometheus.Counter]{max: 4096},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.decisions, m.duration, m.errors, m.authn, m.refused, m.rpc, m.limited} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	// Known label values start at 0, so that rate() and absent-series
	// alerts work before the first occurrence (Prometheus practice).
	for _, r := range mtls.RefusedReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range authnReasons {
		m.authn.WithLabelValues(r)
	}
	for _, r := range errorReasons {
		m.errors.WithLabelValues(r)
		m.decisions.WithLabelValues(resultError, r)
	}
	m.decisions.WithLabelValues(resultAllow, policy.ReasonAllowed)
	for _, r := range []string{policy.ReasonNoMatchingRule, policy.ReasonDeniedByRule, policy.ReasonMissingRole} {
		m.decisions.WithLabelValues(resultDeny, r)
	}
	return m, nil
}

// authnReasons are the reasons of 401 denies; errorReasons those of
// internal failures (errorReason).
var (
	authnReasons = []string{ReasonMissingIdentity, ReasonInvalidIdentity, ReasonInvalidClaims}
	errorReasons = []string{ReasonInternal, ReasonDeadline, ReasonCanceled, ReasonAudit,
		policy.ReasonEvalError, policy.ReasonNoRevision, policy.ReasonSchemaUnavailable}
)

// jsonrpc counts a decision on a JSON-RPC route, and a rate-limited one
// by its quota.
func (m *metrics) jsonrpc(d *policy.Decision) {
	result := resultDeny
	switch {
	case d.Err != nil:
		result = resultError
	case d.Allow && d.DryRun:
		result = resultDryRun
	case d.Allow:
		result = resultAllow
	}
	if d.Quota != "" && !d.Allow {
		m.limited.WithLabelValues(d.Quota).Inc()
	}
	if !d.RPC.Route {
		return
	}
	method, tool := rpcLabels(&d.RPC)
	key := [3]string{result, method, tool}
	c, ok := m.rpcCache.get(key)
	if !ok {
		c = m.rpc.WithLabelValues(result, method, tool)
		m.rpcCache.put(key, c)
	}
	c.Inc()
}

// decision counts one decision without allocating once the label pair
// has been seen.
func (m *metrics) decision(result, reason string) {
	key := [2]string{result, reason}
	c, ok := m.cache.get(key)
	if !ok {
		c = m.decisions.WithLabelValues(result, reason)
		m.cache.put(key, c)
	}
	c.Inc()
}
