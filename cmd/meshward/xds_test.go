package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/examples/quickstart"
	"github.com/meshward/meshward/xds"
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

// TestNodeResourcesRefusesReservedIDs: even a model that skipped
// validation never hands a node the key of a meshward service.
func TestNodeResourcesRefusesReservedIDs(t *testing.T) {
	x := &xdsMesh{} // no secrets manager: reaching it would panic
	x.model.Store(&meshModel{
		nodes: map[string]*envoy.NodeResources{"evil": {}},
		ids:   map[string]string{"evil": xdsServerID("mesh.local")},
	})
	if _, err := x.NodeResources(context.Background(), "evil"); !errors.Is(err, xds.ErrUnknownNode) {
		t.Fatalf("NodeResources = %v, want ErrUnknownNode", err)
	}
}

// TestServeXDSReloadRetiresRemovedAgents: an agent removed by a config
// reload is unregistered from the secrets manager (its certificate stops
// rotating, its expiry gauge goes, it no longer counts for readiness).
func TestServeXDSReloadRetiresRemovedAgents(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, lw, admin := serveXDSOnly(t, path, io.Discard)
	const viewer = `id="spiffe://mesh.local/ns/default/sa/viewer"`
	metrics := func() string { return scrapeMetrics(t, ctx, admin) }
	for !strings.Contains(metrics(), viewer) {
		if ctx.Err() != nil {
			t.Fatal("viewer's certificate never issued")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Remove viewer (nobody has it as a peer).
	start := strings.Index(string(orig), "\n  - name: viewer\n")
	end := strings.Index(string(orig), "\n  - name: executor\n")
	if start < 0 || end < start {
		t.Fatal("test setup: viewer not found in the quickstart")
	}
	if err := os.WriteFile(path, []byte(string(orig[:start])+string(orig[end:])), 0o600); err != nil {
		t.Fatal(err)
	}
	lw.waitFor(t, "xds: agents reloaded", "")
	for strings.Contains(metrics(), viewer) {
		if ctx.Err() != nil {
			t.Fatal("removed agent viewer is still registered with the secrets manager")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := metrics(); !strings.Contains(m, `id="spiffe://mesh.local/ns/default/sa/planner"`) {
		t.Error("planner's certificate is gone too")
	}
}

// TestServeXDSReloadFailureCountedAndAudited: a refused agents reload is
// counted, logged and audited the way a refused policy reload is, and the
// previous agents keep being served.
func TestServeXDSReloadFailureCountedAndAudited(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var auditOut lockedBuffer // the quickstart's audit sink is stdout
	ctx, lw, admin := serveXDSOnly(t, path, &auditOut)
	metrics := func() string { return scrapeMetrics(t, ctx, admin) }
	if m := metrics(); !strings.Contains(m, `meshward_config_reloads_total{component="xds",result="failure"} 0`) {
		t.Fatalf("reload counter not exported at 0:\n%s", m)
	}
	if err := os.WriteFile(path, append(slices.Clone(orig), "\n  bogus: [\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	lw.waitFor(t, "xds: reload failed; keeping the previous configuration", "error")
	for !strings.Contains(metrics(), `meshward_config_reloads_total{component="xds",result="failure"} 1`) {
		if ctx.Err() != nil {
			t.Fatal("the failed reload was not counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for !strings.Contains(auditOut.String(), `"kind":"config_reload_failure"`) {
		if ctx.Err() != nil {
			t.Fatalf("the failed reload was not audited:\n%s", auditOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(auditOut.String(), `"component":"xds"`) {
		t.Errorf("the audit event does not name the component:\n%s", auditOut.String())
	}
	// A good change is applied and counted.
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(metrics(), `meshward_config_reloads_total{component="xds",result="success"} 1`) {
		if ctx.Err() != nil {
			t.Fatal("the good reload was not counted")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveXDSOnly serves the xds component of the configuration at path in
// process until the test ends, and returns once it is ready: a context
// ending with the test's deadline, its log and its admin address.
func serveXDSOnly(t *testing.T, path string, stdout io.Writer) (context.Context, *logWatcher, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	lw, wait := serveInProcess(t, ctx, stdout, "--config", path, "--components", "xds")
	t.Cleanup(func() {
		cancel()
		wait()
	})
	admin := lw.waitFor(t, "admin server listening", "address")
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	waitReady(t, rctx, admin)
	return ctx, lw, admin
}

// scrapeMetrics returns the admin server's /metrics text.
func scrapeMetrics(t *testing.T, ctx context.Context, admin string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
