package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/extauthz/audit"
)

// configReloadTask runs the configuration's one watcher (config.Origin):
// on a file change or SIGHUP it loads the configuration once and hands it
// to every component that subscribed, in component order. The first
// component to subscribe adds this task.
func configReloadTask(d *serveDeps) task.Task {
	return task.Task{Name: "config-reload", Run: func(ctx context.Context) error {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		defer signal.Stop(sig)
		return d.cfg.Origin.Run(ctx, sig, d.log)
	}}
}

// reloadReporter reports every configuration reload of every component
// the same way: counted in meshward_config_reloads_total{component,
// result}, a failure logged at error and audited as a
// config_reload_failure event naming the component and what keeps
// serving.
type reloadReporter struct {
	log    *slog.Logger
	audit  *audit.Logger
	counts *prometheus.CounterVec
}

// Components of meshward_config_reloads_total.
const (
	reloadAuthz = "authz"
	reloadXDS   = "xds"
)

func newReloadReporter(log *slog.Logger, reg prometheus.Registerer, a *audit.Logger) (*reloadReporter, error) {
	r := &reloadReporter{log: log, audit: a, counts: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshward_config_reloads_total",
		Help: "Configuration reloads applied (result=success) or refused, the previous configuration kept serving (result=failure), by component (authz, xds).",
	}, []string{"component", "result"})}
	for _, c := range []string{reloadAuthz, reloadXDS} {
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

// report records one reload of component; serving names what stays in
// force after a failure (a revision id, an agent count). logged says the
// failure was logged already (the policy store logs its own).
func (r *reloadReporter) report(component string, err error, serving string, logged bool) {
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
		if component == reloadAuthz {
			kind = audit.KindPolicyReload // as before: what audit consumers know it by
		}
		// Best effort: a full queue is counted by the audit logger.
		_ = r.audit.Event(kind, component+" reload failed; keeping the previous configuration",
			map[string]string{"component": component, "error": err.Error(), "serving": serving})
	}
}
