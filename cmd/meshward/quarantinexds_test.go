package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/xds"
	"google.golang.org/protobuf/proto"
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

// sameResources reports where a and b differ, "" when they are equal.
func sameResources[T proto.Message](kind string, a, b []T) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d %s, want %d", len(a), kind, len(b))
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return fmt.Sprintf("%s[%d] differs", kind, i)
		}
	}
	return ""
}

// TestRequarantineSameResources: the model requarantineMesh builds from
// the previous one equals, node by node and resource by resource, the
// whole mesh translated again, through a sequence of quarantines and
// releases (one agent, two, a release, many: the fallback, none).
func TestRequarantineSameResources(t *testing.T) {
	const n = 300
	cfg := syntheticMesh(t, n)
	id := func(i int) string { return fmt.Sprintf("spiffe://mesh.local/ns/default/sa/a%d", i) }
	var many []string
	for i := 0; i < n; i += 10 { // 30 quarantined, 90 affected: over maxRequarantineNodes
		many = append(many, id(i))
	}
	steps := []struct {
		name string
		ids  []string
	}{
		{"one", []string{id(42)}},
		{"two", []string{id(42), id(7)}},
		{"release one", []string{id(7)}},
		{"same set", []string{id(7)}},
		{"many", many},
		{"release some of many", many[:20]},
		{"none", nil},
	}
	prev, err := translateMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var was *extauthz.Quarantine
	for _, st := range steps {
		now := extauthz.NewQuarantine(st.ids)
		got, err := requarantineMesh(cfg, prev, was, now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want, err := translateMesh(withoutQuarantinedPeers(cfg, now))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.nodes) != len(want.nodes) || len(got.ids) != len(want.ids) {
			t.Fatalf("%s: %d nodes %d ids, want %d %d", st.name, len(got.nodes), len(got.ids), len(want.nodes), len(want.ids))
		}
		for node, w := range want.nodes {
			g := got.nodes[node]
			if g == nil {
				t.Fatalf("%s: node %s missing", st.name, node)
			}
			for _, d := range []string{
				sameResources("listeners", g.Listeners, w.Listeners),
				sameResources("clusters", g.Clusters, w.Clusters),
				sameResources("routes", g.Routes, w.Routes),
			} {
				if d != "" {
					t.Errorf("%s: node %s: %s", st.name, node, d)
				}
			}
			if !slices.Equal(g.SecretNames, w.SecretNames) || !slices.Equal(g.GenericSecrets, w.GenericSecrets) {
				t.Errorf("%s: node %s: secrets %v %v, want %v %v", st.name, node, g.SecretNames, g.GenericSecrets, w.SecretNames, w.GenericSecrets)
			}
			if got.ids[node] != want.ids[node] {
				t.Errorf("%s: node %s: id %q, want %q", st.name, node, got.ids[node], want.ids[node])
			}
		}
		// The peers of a quarantined agent lose its cluster: the test
		// would pass vacuously if nothing changed.
		if len(st.ids) > 0 && strings.Contains(clusterNames(got, "a41"), "a42") == slices.Contains(st.ids, id(42)) {
			t.Errorf("%s: a41's clusters %s: a42 quarantined %v", st.name, clusterNames(got, "a41"), slices.Contains(st.ids, id(42)))
		}
		prev, was = got, now
	}
}
