package main

import (
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
)

// TestMCPExampleQuotasReachEnvoy: of examples/mcp's quotas, the per-caller
// one is in every agent's inbound local rate limit and the tool quota is
// not (Envoy cannot see the tool); a quota change changes the mesh inputs,
// so a reload pushes it.
func TestMCPExampleQuotasReachEnvoy(t *testing.T) {
	cfg, err := config.Load(filepath.Join("..", "..", "examples", "mcp", "meshward.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := translateMesh(cfg)
	if err != nil || m.err != nil {
		t.Fatalf("translateMesh: %v %v", err, m.err)
	}
	for _, node := range []string{"planner", "viewer", "tools"} {
		var h hcmv3.HttpConnectionManager
		l := m.nodes[node].Listeners[0]
		if l.GetName() != envoy.ListenerInbound {
			t.Fatalf("%s: first listener is %s", node, l.GetName())
		}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		var rl localrlv3.LocalRateLimit
		if err := h.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&rl); err != nil {
			t.Fatalf("%s: first inbound filter %s: %v", node, h.GetHttpFilters()[0].GetName(), err)
		}
		var quotas []string
		for _, d := range rl.GetDescriptors() {
			quotas = append(quotas, d.GetEntries()[0].GetValue()+" "+d.GetEntries()[1].GetValue())
		}
		if want := []string{"viewer-calls spiffe://mesh.local/ns/agents/sa/viewer"}; !slices.Equal(quotas, want) {
			t.Errorf("%s: Envoy quotas %q, want %q", node, quotas, want)
		}
	}

	before := meshInputs(cfg)
	cfg.Authz.Policy.Quotas[1].Burst++
	if reflect.DeepEqual(before, meshInputs(cfg)) {
		t.Error("a per-caller quota change leaves the mesh inputs unchanged: a reload would not push it")
	}
	cfg.Authz.Policy.Quotas[1].Burst--
	cfg.Authz.Policy.Quotas[0].Rate++
	if !reflect.DeepEqual(before, meshInputs(cfg)) {
		t.Error("a tool quota change changes the mesh inputs, but Envoy never gets tool quotas")
	}
}
