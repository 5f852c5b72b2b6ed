package main

import (
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/examples/quickstart"
)

// TestTranslateMeshUsesEnvoySection: the `envoy` section of serve's
// configuration reaches the translated resources.
func TestTranslateMeshUsesEnvoySection(t *testing.T) {
	data := strings.Replace(string(quickstart.Config), "\nagents:\n", "\nenvoy:\n  routeTimeout: 45s\n  streamIdleTimeout: 150s\n\nagents:\n", 1)
	if data == string(quickstart.Config) {
		t.Fatal("test setup: could not edit the quickstart")
	}
	cfg, err := config.Parse([]byte(data), quickstart.Files, "test")
	if err != nil {
		t.Fatal(err)
	}
	m, err := translateMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nr := m.nodes["planner"]
	if nr == nil {
		t.Fatal("no planner")
	}
	for _, r := range nr.Routes {
		if got := r.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetTimeout().AsDuration(); got != 45*time.Second {
			t.Errorf("route %s timeout %v, want envoy.routeTimeout 45s", r.GetName(), got)
		}
	}
}

