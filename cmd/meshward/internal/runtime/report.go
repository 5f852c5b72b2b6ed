package runtime

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/extauthz/audit"
)

// Reporter reports every configuration reload of every component
// the same way: counted in meshward_config_reloads_total{component,
// result}, a failure logged at error and audited as a
// config_reload_failure event naming the component and what keeps
// serving.
type Reporter struct {
	log    *slog.Logger
	audit  *audit.Logger
	counts *prometheus.CounterVec
}

// Components of meshward_config_reloads_total.
const (
	ComponentAuthz = "authz"
	ComponentXDS   = "xds"
)

func NewReporter(log *slog.Logger, reg prometheus.Registerer, a *audit.Logger) (*Reporter, error) {
	r := &Reporter{log: log, audit: a, counts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshward_config_reloads_total",
		Help: "Configuration reloads applied (result=success) or refused, the previous configuration kept serving (result=failure), by component (authz, xds).",
	}, []string{"component", "result"})}
	for _, c := range []string{ComponentAuthz, ComponentXDS} {
		for _, res := range []string{"success", "failure"} {
			r.counts.WithLabelValues(c, res)
		}
	}
	if reg != nil {
		if err := reg.Register(r.counts); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Report records one reload of component; serving names what stays in
// force after a failure (a revision id, an agent count). logged says the
// failure was logged already (the policy store logs its own).
func (r *Reporter) Report(component string, err error, serving string, logged bool) {
	if r == nil {
		return
	}
	if err == nil {
		r.counts.WithLabelValues(component, "success").Inc()
		return
	}
	r.counts.WithLabelValues(component, "failure").Inc()
	if !logged {
		r.log.Error(component+": reload failed; keeping the previous configuration", "error", err, "serving", serving)
	}
	if r.audit != nil {
		kind := audit.KindConfigReload
		if component == ComponentAuthz {
			kind = audit.KindPolicyReload // as before: what audit consumers know it by
		}
		// Best effort: a full queue is counted by the audit logger.
		_ = r.audit.Event(kind, component+" reload failed; keeping the previous configuration",
			map[string]string{"component": component, "error": err.Error(), "serving": serving})
	}
}
