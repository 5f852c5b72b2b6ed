package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
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
// the decision-rate sampler's task when the authz component runs. Panels
// of components that do not run say so.
func (p *statusPage) register(adm *admin.Server, d *serveDeps, reg prometheus.Gatherer) []task.Task {
	var tasks []task.Task
	if d.secrets != nil {
		p.src.Certificates = d.secrets
	}
	if p.src.Policy != nil { // the authz component runs
		p.src.Decisions = ui.NewRates(reg)
		tasks = append(tasks, task.Task{Name: "ui-rates", Run: p.src.Decisions.Run})
	} else {
		p.src.Denies = nil
	}
	ui.Register(adm, p.src)
	return tasks
}
