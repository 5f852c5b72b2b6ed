package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/xds"
)

const executorID = "spiffe://mesh.local/ns/default/sa/executor"

// clusterNames are the names of node's clusters in m.
func clusterNames(m *meshModel, node string) string {
	var names []string
	for _, c := range m.nodes[node].Clusters {
		names = append(names, c.GetName())
	}
	return strings.Join(names, " ")
}

// TestQuarantineWithdrawsPeers: translated with executor quarantined, no
// Envoy has a cluster to it and its own node gets no configuration; the
// configuration itself is unchanged.
func TestQuarantineWithdrawsPeers(t *testing.T) {
	cfg, err := config.Quickstart()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Authz.Server.Address = "127.0.0.1:9191" // a known port: translated
	before, err := translateMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(clusterNames(before, "planner"), "executor") {
		t.Fatalf("test setup: planner has no cluster to executor: %s", clusterNames(before, "planner"))
	}
	q := extauthz.NewQuarantine([]string{executorID})
	after, err := translateMesh(withoutQuarantinedPeers(cfg, q))
	if err != nil {
		t.Fatal(err)
	}
	for node := range after.nodes {
		if names := clusterNames(after, node); strings.Contains(names, "executor") {
			t.Errorf("node %s still has a cluster to the quarantined executor: %s", node, names)
		}
	}
	if !slicesHavePeer(cfg.Agents, "executor") {
		t.Error("withoutQuarantinedPeers changed the configuration it was given")
	}
	x := &xdsMesh{} // no secrets manager: reaching it would panic
	x.model.Store(after)
	x.quarantine.Store(q)
	if _, err := x.NodeResources(context.Background(), "executor"); !errors.Is(err, xds.ErrUnknownNode) {
		t.Errorf("NodeResources of the quarantined node = %v, want ErrUnknownNode", err)
	}
}

func slicesHavePeer(agents []envoy.Agent, name string) bool {
	for _, a := range agents {
		for _, p := range a.Peers {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// TestServeXDSQuarantineStopsRenewal: quarantining an agent in a running
// serve unregisters its SVID from the secrets manager (no renewal: its
// expiry gauge goes); releasing registers it again.
func TestServeXDSQuarantineStopsRenewal(t *testing.T) {
	path, _ := quarantineConfig(t)
	ctx, _, admin := serveXDSOnly(t, path, io.Discard)
	const gauge = `id="` + executorID + `"`
	waitMetric := func(present bool, what string) {
		t.Helper()
		for strings.Contains(scrapeMetrics(t, ctx, admin), gauge) != present {
			if ctx.Err() != nil {
				t.Fatal(what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitMetric(true, "executor's certificate never issued")
	if out, err := runCLI(ctx, "quarantine", "--config", path, "executor"); err != nil {
		t.Fatalf("quarantine: %v\n%s", err, out)
	}
	waitMetric(false, "quarantined executor's SVID is still kept")
	if !strings.Contains(scrapeMetrics(t, ctx, admin), `id="`+plannerID+`"`) {
		t.Error("planner's SVID went too")
	}
	if out, err := runCLI(ctx, "release", "--config", path, "executor"); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	waitMetric(true, "released executor's SVID never issued again")
}
