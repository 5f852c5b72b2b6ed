package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
)

// replicaMesh is a mesh of two agents as cluster objects: planner calls
// executor; viewer-create lets the viewer identity POST /v1/tasks.
const replicaMesh = `apiVersion: v1
kind: ServiceAccount
metadata: {name: planner, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: executor, namespace: default}
---
apiVersion: meshward.dev/v1alpha1
kind: MeshAgent
metadata: {name: planner, namespace: default}
spec:
  selector: {matchLabels: {app: planner}}
  serviceAccountName: planner
  inboundPort: 15001
  outboundPort: 15003
  app: 127.0.0.1:8080
  peers:
    - name: executor
      addresses: [executor.default.svc:15001]
---
apiVersion: meshward.dev/v1alpha1
kind: MeshAgent
metadata: {name: executor, namespace: default}
spec:
  selector: {matchLabels: {app: executor}}
  serviceAccountName: executor
  inboundPort: 15001
  app: 127.0.0.1:8080
---
apiVersion: meshward.dev/v1alpha1
kind: AuthorizationRule
metadata: {name: viewers, namespace: default}
spec:
  identities:
    - {spiffeID: "spiffe://mesh.local/ns/default/sa/viewer", roles: [viewer]}
  rules:
    - name: viewer-create
      match: {methods: [POST], path: /v1/tasks}
      require: {anyRole: [viewer]}
`

// kubeReplica is one serve process (in this test process) on the API server.
type kubeReplica struct {
	lw    *logWatcher
	xds   string // address
	admin string
	stop  func()
}

func startKubeReplica(t *testing.T, parent context.Context, path, kubeconfig string) *kubeReplica {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--source", "kubernetes", "--kubeconfig", kubeconfig)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wait()
		}
	}
	t.Cleanup(stop)
	r := &kubeReplica{lw: lw, stop: stop}
	r.xds = lw.waitFor(t, "xds serving", "address")
	r.admin = lw.waitFor(t, "admin server listening", "address")
	waitServing(t, parent, dialAuthz(t, lw))
	return r
}

// adsStream is a delta ADS stream as node, what an Envoy opens.
type adsStream struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *core.Node
	cancel func()
}

func openADS(t *testing.T, ctx context.Context, addr, node string) *adsStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	stop := func() {
		cancel()
		_ = conn.Close()
	}
	t.Cleanup(stop)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsStream{t: t, stream: stream, cancel: stop, node: &core.Node{Id: node, Cluster: node, UserAgentName: "envoy",
		UserAgentVersionType: &core.Node_UserAgentBuildVersion{UserAgentBuildVersion: &core.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 40}}}}}
}

// subscribe asks for every resource of typ (a wildcard subscription),
// telling the server which versions the client already holds.
func (a *adsStream) subscribe(typ string, have map[string]string) {
	a.t.Helper()
	if err := a.stream.Send(&discovery.DeltaDiscoveryRequest{Node: a.node, TypeUrl: typ, InitialResourceVersions: have}); err != nil {
		a.t.Fatal(err)
	}
}

// recv returns the next response, ACKed, its resources as name -> version.
func (a *adsStream) recv() (typ string, versions map[string]string, err error) {
	resp, err := a.recvRaw()
	if err != nil {
		return "", nil, err
	}
	versions = map[string]string{}
	for _, r := range resp.GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}
	return resp.GetTypeUrl(), versions, nil
}

func (a *adsStream) recvRaw() (*discovery.DeltaDiscoveryResponse, error) {
	resp, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if err := a.stream.Send(&discovery.DeltaDiscoveryRequest{Node: a.node, TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
		return nil, err
	}
	return resp, nil
}

func (a *adsStream) mustRecv() (string, map[string]string) {
	a.t.Helper()
	typ, v, err := a.recv()
	if err != nil {
		a.t.Fatalf("delta ADS: %v", err)
	}
	return typ, v
}

// fetch subscribes node to clusters and listeners on addr and returns
// their versions. Until the node's certificate is issued the server
// answers Unavailable, and the client tries again, as Envoy does.
func fetch(t *testing.T, ctx context.Context, addr, node string) (clusters, listeners map[string]string) {
	t.Helper()
	_, clusters, listeners = fetchStream(t, ctx, addr, node)
	return clusters, listeners
}

// fetchStream is fetch that also returns the stream, left open.
func fetchStream(t *testing.T, ctx context.Context, addr, node string) (a *adsStream, clusters, listeners map[string]string) {
	t.Helper()
	for {
		a = openADS(t, ctx, addr, node)
		a.subscribe(resourcev3.ClusterType, nil)
		typ, clusters, err := a.recv()
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			a.cancel()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("delta ADS: %v", err)
		}
		if typ != resourcev3.ClusterType || len(clusters) == 0 {
			t.Fatalf("first response %s with %d resources, want clusters", typ, len(clusters))
		}
		a.subscribe(resourcev3.ListenerType, nil)
		typ, listeners = a.mustRecv()
		if typ != resourcev3.ListenerType || len(listeners) == 0 {
			t.Fatalf("second response %s with %d resources, want listeners", typ, len(listeners))
		}
		return a, clusters, listeners
	}
}

// resumeWithoutChurn opens a delta ADS stream to addr as node, telling it
// the clusters and listeners the node holds (as Envoy's delta xDS does
// on a new stream), and fails the test unless the server sends nothing
// for them: no resource, none removed. The server answers a stream's
// requests in order, through one queue; routes, which the node holds
// none of, are asked for last and must come, so that "nothing" is not
// mistaken for a server that did not answer.
func resumeWithoutChurn(t *testing.T, ctx context.Context, addr, node string, clusters, listeners map[string]string) {
	t.Helper()
	moved := openADS(t, ctx, addr, node)
	moved.subscribe(resourcev3.ClusterType, clusters)
	moved.subscribe(resourcev3.ListenerType, listeners)
	moved.subscribe(resourcev3.RouteType, nil)
	for _, want := range []string{resourcev3.ClusterType, resourcev3.ListenerType} {
		// A first wildcard request is always answered, so that Envoy
		// completes its initialisation: with nothing in it.
		resp, err := moved.recvRaw()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != want || len(resp.GetResources()) != 0 || len(resp.GetRemovedResources()) != 0 {
			t.Fatalf("after moving: %s with %d resources and %d removed, want %s with none: churn",
				resp.GetTypeUrl(), len(resp.GetResources()), len(resp.GetRemovedResources()), want)
		}
	}
	if typ, routes := moved.mustRecv(); typ != resourcev3.RouteType || len(routes) == 0 {
		t.Fatalf("after moving: %s (%d resources), want %s's routes", typ, len(routes), node)
	}
}

// nodeVersions reads a replica's /debug/xds: node -> type -> version of
// its current snapshot.
func nodeVersions(t *testing.T, ctx context.Context, admin string) map[string]map[string]string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/debug/xds", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Nodes []struct {
			Node     string            `json:"node"`
			Versions map[string]string `json:"versions"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, n := range doc.Nodes {
		delete(n.Versions, "secret") // each replica issues its own certificates
		out[n.Node] = n.Versions
	}
	return out
}

// replicaCluster starts an API server holding replicaMesh and writes the
// configuration file the replicas share; it returns the server, the
// file's path and an admin kubeconfig.
func replicaCluster(t *testing.T) (srv *kubetest.Server, path, kubeconfig string) {
	t.Helper()
	srv = kubetest.Start(t)
	rc := srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(t, rc, crds...)
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	path = filepath.Join(dir, "meshward.yaml")
	if err := os.WriteFile(mesh, []byte(replicaMesh), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every replica tells the Envoys the same ext_authz address (the Service's).
	base := strings.Replace(kubeBaseConfig, "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.meshward.svc:9191\n", 1)
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	kubetest.Apply(t, rc, mesh)
	return srv, path, srv.Kubeconfig(kubetest.Admin)
}

// TestServeKubernetesTwoReplicas: two serve processes on one API server
// give a node the same clusters and listeners with the same version
// strings; an Envoy that moves from one to the other (telling it the
// versions it holds, as Envoy's delta xDS does) is sent nothing new for
// them; and both decide alike.
func TestServeKubernetesTwoReplicas(t *testing.T) {
	_, path, kc := replicaCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := startKubeReplica(t, ctx, path, kc)
	b := startKubeReplica(t, ctx, path, kc)

	// The same resources and versions from both, over the wire.
	ca, la := fetch(t, ctx, a.xds, "planner")
	cb, lb := fetch(t, ctx, b.xds, "planner")
	if !maps.Equal(ca, cb) || !maps.Equal(la, lb) {
		t.Fatalf("replicas differ:\nclusters %v\n      vs %v\nlisteners %v\n       vs %v", ca, cb, la, lb)
	}
	if _, ok := ca["peer-executor"]; !ok {
		t.Errorf("planner's clusters %v: no executor", ca)
	}
	// And in each replica's snapshots (per type, secrets apart).
	va, vb := nodeVersions(t, ctx, a.admin), nodeVersions(t, ctx, b.admin)
	if len(va["planner"]) == 0 || !maps.Equal(va["planner"], vb["planner"]) {
		t.Fatalf("snapshot versions of planner: %v and %v", va["planner"], vb["planner"])
	}

	// Both decide alike.
	for name, r := range map[string]*kubeReplica{"a": a, "b": b} {
		resp, err := authv3.NewAuthorizationClient(dialAuthz(t, r.lw)).Check(ctx, viewerPost())
		if err != nil || resp.GetOkResponse() == nil {
			t.Errorf("replica %s: Check %v %v, want allowed", name, resp.GetStatus(), err)
		}
	}

	// planner's Envoy moves from a (stopped) to b, holding a's versions.
	a.stop()
	resumeWithoutChurn(t, ctx, b.xds, "planner", ca, la)
}
