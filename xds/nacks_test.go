package xds_test

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshward/meshward/xds/internal/xdstest"
)

// TestNACKsByType: a node's last NACK of each type is kept, not only the
// last of all (Status's lastNack), and goes with the node.
func TestNACKsByType(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	c, stop := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), true, "a")
	syncTypes(t, c, allSubs("a"), map[string]bool{resource.ListenerType: true, resource.ClusterType: true})
	waitFor(ctx, t, "a NACK of both types", func() bool { return len(e.srv.NACKs()["a"]) == 2 })
	got := e.srv.NACKs()["a"]
	for _, typ := range []string{"listener", "cluster"} {
		if n, ok := got[typ]; !ok || n.Type != typ || n.Message != "rejected by test" || n.Version == "" {
			t.Errorf("NACKs()[a][%s] = %+v, want the test's NACK", typ, n)
		}
	}
	if _, ok := got["route"]; ok {
		t.Error("a route NACK that never happened")
	}
	ns, _ := nodeStatus(e.srv, "a")
	if ns.LastNACK == nil || got[ns.LastNACK.Type] != *ns.LastNACK {
		t.Errorf("Status lastNack %+v is not the last of NACKs() %+v", ns.LastNACK, got)
	}
	stop()
	waitFor(ctx, t, "node gone", func() bool { return len(e.srv.NACKs()) == 0 })
}
