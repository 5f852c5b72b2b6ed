package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/cmd/meshward/internal/ui"
)

// statusPage collects the admin server's /ui sources while the components
// are built: the deny ring is the audit logger's tap from the start; the
// policy store and the xDS server are set by their builders.
type statusPage struct {
	src ui.Sources
}

func newStatusPage() *statusPage {
	return &statusPage{src: ui.Sources{Denies: ui.NewDenyRing(ui.DefaultDenies)}}
}

// register mounts /ui on adm once every component is built, and returns
// the tasks it needs: the decision-rate sampler when the authz component
// runs, the configuration watch when nothing else runs it. Panels of
// components that do not run say so.
func (p *statusPage) register(adm *admin.Server, d *serveDeps, reg prometheus.Gatherer) []task.Task {
	var tasks []task.Task
	if mgr := d.sharedSecrets(); mgr != nil {
		p.src.Certificates = mgr
	}
	if p.src.Policy != nil { // the authz component runs
		p.src.Decisions = ui.NewRates(reg)
		tasks = append(tasks, task.Task{Name: "ui-rates", Run: p.src.Decisions.Run})
	} else {
		p.src.Denies = nil
	}
	if d.quarantine != nil {
		q := &quarantinePanel{watch: d.quarantine}
		q.setAgents(d.cfg)
		// Every state the watch applies, after ext_authz and xDS have
		// applied it (they subscribed first).
		d.quarantine.subscribe(func(s *quarantineSnapshot) { q.state.Store(s.state) })
		// Agent names follow the configuration; a generation that does
		// not load keeps the names of the last one that did.
		if d.origin.Subscribe("ui", nil, func(_ context.Context, c *config.Config, err error) {
			if err == nil {
				q.setAgents(c)
			}
		}) {
			tasks = append(tasks, configReloadTask(d))
		}
		p.src.Quarantine, p.src.QuarantineFile = q, d.quarantine.path
		if d.quarantine.path == "" {
			p.src.QuarantineFile = kubeQuarantineSource
		}
	}
	ui.Register(adm, p.src)
	return tasks
}

// quarantinePanel is the page's view of the quarantine: the state the
// watch applied last, with each SPIFFE ID's agents from the configuration.
type quarantinePanel struct {
	watch  *quarantineWatch
	state  atomic.Pointer[quarantine.State]
	agents atomic.Pointer[map[string][]string] // SPIFFE ID -> agent names
}

func (q *quarantinePanel) setAgents(c *config.Config) {
	m := map[string][]string{}
	for _, a := range c.Agents {
		m[a.SPIFFEID] = append(m[a.SPIFFEID], a.Name)
	}
	q.agents.Store(&m)
}

// Quarantined implements ui.Quarantine.
func (q *quarantinePanel) Quarantined() []ui.Quarantined {
	st, agents := q.state.Load(), *q.agents.Load()
	if st == nil {
		return nil
	}
	out := make([]ui.Quarantined, 0, len(st.Quarantined))
	for _, e := range st.Quarantined {
		out = append(out, ui.Quarantined{SPIFFEID: e.SPIFFEID, Agents: agents[e.SPIFFEID], Reason: e.Reason, By: e.By, At: e.At})
	}
	return out
}

// Problem implements ui.Quarantine.
func (q *quarantinePanel) Problem() (string, time.Time) {
	p := q.watch.problem()
	if p == nil {
		return "", time.Time{}
	}
	return p.err.Error(), p.since
}
