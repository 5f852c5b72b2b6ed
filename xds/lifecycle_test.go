package xds_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"testing"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

// A rotated certificate reaches its node, and only its node.
func TestRotationReachesOnlyTheAffectedNode(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	a, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), true, "a")
	b, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "b")), true, "b")
	_, va := syncTypes(t, a, allSubs("a"), nil)
	syncTypes(t, b, allSubs("b"), nil)
	before := metric(t, e.reg, "meshward_xds_pushes_total", "type", "secret")

	e.mesh.Rotate("a")
	if err := e.srv.Update(ctx); err != nil { // every node: b's content is unchanged
		t.Fatal(err)
	}
	r, err := a.Next()
	if err != nil {
		t.Fatal(err)
	}
	if r.typ != resource.SecretType || !slices.Equal(r.names, []string{xdstest.CertName}) || r.version == va[resource.SecretType] {
		t.Fatalf("got %s %v version %s, want the new %q only", r.typ, r.names, r.version, xdstest.CertName)
	}
	if err := a.ACK(); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "rotation ACKed", func() bool { return allAcked(e.srv, "a") })
	if got := metric(t, e.reg, "meshward_xds_pushes_total", "type", "secret") - before; got != 1 {
		t.Errorf("secret pushes = %v, want 1 (b unchanged)", got)
	}
	// b's next response is its own change, not a secret push.
	e.mesh.Change("b")
	if err := e.srv.Update(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Next(); err != nil || r.typ != resource.ListenerType {
		t.Fatalf("b got %s (%v), want its listener change", r.typ, err)
	}
}

// The same content has the same versions after a restart; changed content
// a new version, and a resuming client receives exactly what changed.
func TestRestart(t *testing.T) {
	mesh := xdstest.NewMesh(td, "a", "b")
	ca, err := xdstest.NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T) (map[string]string, map[string]map[string]string) {
		e := startEnv(t, envOpts{mesh: mesh, ca: ca})
		defer e.stop()
		c, stop := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), true, "a")
		defer stop()
		byName := map[string]map[string]string{}
		for _, s := range allSubs("a") {
			if err := c.Subscribe(s.typ, s.names...); err != nil {
				t.Fatal(err)
			}
		}
		for len(byName) < 4 {
			r, err := c.Next()
			if err != nil {
				t.Fatal(err)
			}
			byName[r.typ] = r.versions
			if err := c.ACK(); err != nil {
				t.Fatal(err)
			}
		}
		ns, _ := nodeStatus(e.srv, "a")
		return ns.Versions, byName
	}
	v1, have := run(t)
	v2, _ := run(t)
	if !mapsEqual(v1, v2) {
		t.Fatalf("same content, different versions after restart: %v vs %v", v1, v2)
	}

	mesh.Change("a")
	e := startEnv(t, envOpts{mesh: mesh, ca: ca})
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	c, err := xdsclient.NewDelta(ctx, e.dial(t, xdstest.SPIFFEID(td, "a")), "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range allSubs("a") {
		if err := c.Resume(s.typ, s.names, have[s.typ]); err != nil {
			t.Fatal(err)
		}
	}
	for {
		r, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.ACK(r); err != nil {
			t.Fatal(err)
		}
		if r.GetTypeUrl() != resource.ListenerType {
			if n := len(r.GetResources()); n != 0 {
				t.Errorf("%s: %d unchanged resources resent", r.GetTypeUrl(), n)
			}
			continue
		}
		if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "inbound" {
			t.Fatalf("resumed listeners: got %d resources, want only the changed \"inbound\"", len(r.GetResources()))
		}
		break
	}
	// Unchanged non-wildcard types get no response on resume, so only the
	// listeners are ACKed.
	waitFor(ctx, t, "resync ACKed", func() bool {
		ns, _ := nodeStatus(e.srv, "a")
		return ns.Acked["listener"].Version != "" && ns.Acked["listener"].Version == ns.Versions["listener"]
	})
	ns, _ := nodeStatus(e.srv, "a")
	for typ, v := range ns.Versions {
		if changed := v != v1[typ]; changed != (typ == "listener") {
			t.Errorf("%s: version %s -> %s; only listeners changed", typ, v1[typ], v)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A node's snapshot lives exactly while it has streams.
func TestSnapshotClearedOnLastStreamClose(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	cc := e.dial(t, xdstest.SPIFFEID(td, "a"))
	c1, stop1 := connect(t, cc, true, "a")
	c2, stop2 := connect(t, cc, false, "a")
	syncTypes(t, c1, allSubs("a"), nil)
	syncTypes(t, c2, allSubs("a"), nil)
	stop1()
	waitFor(ctx, t, "one stream left", func() bool { ns, ok := nodeStatus(e.srv, "a"); return ok && ns.Streams == 1 })
	stop2()
	waitFor(ctx, t, "node cleared", func() bool { return len(e.srv.Status()) == 0 })
	if v := metric(t, e.reg, "meshward_xds_connected_proxies"); v != 0 {
		t.Errorf("connected proxies = %v, want 0", v)
	}
	c3, _ := connect(t, cc, true, "a")
	got, _ := syncTypes(t, c3, allSubs("a"), nil)
	if len(got[resource.SecretType]) != 3 {
		t.Errorf("reconnect: secrets %v", got[resource.SecretType])
	}
}

// A snapshot that references a secret it lacks is never set: a first
// connect is refused with Unavailable, a connected node keeps its last
// good snapshot.
func TestMissingSecretReferenceIsNotPushed(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	e.mesh.Break("b", true)
	b, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "b")), true, "b")
	if err := b.Subscribe(resource.ListenerType); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Next(); status.Code(err) != codes.Unavailable {
		t.Fatalf("broken node: got %v, want Unavailable", err)
	}
	if n := metric(t, e.reg, "meshward_xds_snapshot_errors_total", "stage", "check"); n != 1 {
		t.Errorf("snapshot check errors = %v, want 1", n)
	}

	a, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), true, "a")
	syncTypes(t, a, allSubs("a"), nil)
	good, _ := nodeStatus(e.srv, "a")
	e.mesh.Break("a", true)
	if err := e.srv.Update(ctx, "a"); !errors.Is(err, xds.ErrInconsistent) {
		t.Fatalf("Update of a broken node: %v, want ErrInconsistent", err)
	}
	if now, _ := nodeStatus(e.srv, "a"); !mapsEqual(now.Versions, good.Versions) {
		t.Errorf("broken snapshot replaced the good one: %v -> %v", good.Versions, now.Versions)
	}
	e.mesh.Fail("a", errors.New("vault down"))
	if err := e.srv.Update(ctx, "a"); err == nil {
		t.Fatal("Update with failing resources: no error")
	}
	e.mesh.Fail("a", nil)
	e.mesh.Break("a", false)
	e.mesh.Change("a")
	if err := e.srv.Update(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if r, err := a.Next(); err != nil || r.typ != resource.ListenerType {
		t.Fatalf("after repair got %s (%v), want listeners", r.typ, err)
	}
}

// Only the ADS streams are served: per-type services and unary Fetch are
// not registered.
func TestOnlyADSIsServed(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	cc := e.dial(t, xdstest.SPIFFEID(td, "a"))
	req := &discovery.DiscoveryRequest{Node: nil, TypeUrl: resource.SecretType, ResourceNames: secretNames("a")}
	_, err := secretservice.NewSecretDiscoveryServiceClient(cc).FetchSecrets(ctx, req)
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchSecrets: %v, want Unimplemented", err)
	}
	if _, err := clusterservice.NewClusterDiscoveryServiceClient(cc).FetchClusters(ctx, req); status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchClusters: %v, want Unimplemented", err)
	}
	st, err := listenerservice.NewListenerDiscoveryServiceClient(cc).StreamListeners(ctx)
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamListeners: %v, want Unimplemented", err)
	}
	sd, err := secretservice.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
	if err == nil {
		_, err = sd.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamSecrets: %v, want Unimplemented", err)
	}
}

func TestDebugHandler(t *testing.T) {
	e := startEnv(t, envOpts{})
	ctx := testCtx(t)
	c, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), false, "a")
	syncTypes(t, c, allSubs("a"), map[string]bool{resource.RouteType: true})
	waitFor(ctx, t, "NACK recorded", func() bool { ns, _ := nodeStatus(e.srv, "a"); return ns.LastNACK != nil })
	waitFor(ctx, t, "listeners ACKed", func() bool { ns, _ := nodeStatus(e.srv, "a"); return ns.Acked["listener"].Version != "" })

	rec := httptest.NewRecorder()
	e.srv.DebugHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/xds", nil))
	var body struct {
		Nodes []xds.NodeStatus `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("%v: %s", err, rec.Body.String())
	}
	if len(body.Nodes) != 1 || body.Nodes[0].Node != "a" {
		t.Fatalf("nodes = %+v", body.Nodes)
	}
	n := body.Nodes[0]
	if n.Acked["listener"].Version != n.Versions["listener"] || n.LastNACK == nil || n.LastNACK.Type != "route" {
		t.Errorf("status = %+v", n)
	}
}

// A node removed from the mesh has its streams ended on the next Update
// and cannot reconnect.
func TestRemovedNodeStreamsEnd(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			e := startEnv(t, envOpts{})
			ctx := testCtx(t)
			cc := e.dial(t, xdstest.SPIFFEID(td, "a"))
			c, _ := connect(t, cc, p.delta, "a")
			syncTypes(t, c, allSubs("a"), nil)
			e.mesh.Remove("a")
			if err := e.srv.Update(ctx); err != nil {
				t.Fatal(err)
			}
			for {
				r, err := c.Next()
				if err != nil {
					if status.Code(err) != codes.PermissionDenied {
						t.Fatalf("got %v, want PermissionDenied", err)
					}
					break
				}
				if len(r.names) > 0 {
					t.Fatalf("removed node received %s %v", r.typ, r.names)
				}
			}
			waitFor(ctx, t, "node state gone", func() bool { return len(e.srv.Status()) == 0 })
			if n := metric(t, e.reg, "meshward_xds_refused_total", "reason", xds.ReasonNodeRemoved); n != 1 {
				t.Errorf("refused{node_removed} = %v, want 1", n)
			}
			again, _ := connect(t, cc, p.delta, "a")
			if err := again.Subscribe(resource.ClusterType); err != nil {
				t.Fatal(err)
			}
			if _, err := again.Next(); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("reconnect: got %v, want PermissionDenied", err)
			}
		})
	}
}
