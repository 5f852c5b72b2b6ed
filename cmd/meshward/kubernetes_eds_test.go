package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/envoy"
)

// edsMesh: planner calls executor, whose endpoints are discovered (no
// addresses); bystander calls nobody.
const edsMesh = `apiVersion: v1
kind: ServiceAccount
metadata: {name: planner, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: executor, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bystander, namespace: default}
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
---
apiVersion: meshward.dev/v1alpha1
kind: MeshAgent
metadata: {name: executor, namespace: default}
spec:
  selector: {matchLabels: {app: executor}}
  serviceAccountName: executor
  inboundPort: 15002
  app: 127.0.0.1:8080
---
apiVersion: meshward.dev/v1alpha1
kind: MeshAgent
metadata: {name: bystander, namespace: default}
spec:
  selector: {matchLabels: {app: bystander}}
  serviceAccountName: bystander
  inboundPort: 15001
  outboundPort: 15003
  app: 127.0.0.1:8080
`

// sotwStream is a state-of-the-world ADS stream as node, ACKing every
// response.
type sotwStream struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	names  map[string][]string // type -> the names subscribed (none: wildcard)
}

func openSotW(t *testing.T, ctx context.Context, addr, node string) *sotwStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := openADS(t, ctx, addr, node) // only for its Node
	d.cancel()
	return &sotwStream{t: t, stream: stream, node: d.node, names: map[string][]string{}}
}

func (s *sotwStream) subscribe(typ string, names ...string) {
	s.t.Helper()
	s.names[typ] = names
	if err := s.stream.Send(&discovery.DiscoveryRequest{Node: s.node, TypeUrl: typ, ResourceNames: names}); err != nil {
		s.t.Fatal(err)
	}
}

// recv returns the next response, ACKed.
func (s *sotwStream) recv() *discovery.DiscoveryResponse {
	s.t.Helper()
	resp, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("SotW ADS: %v", err)
	}
	if err := s.stream.Send(&discovery.DiscoveryRequest{Node: s.node, TypeUrl: resp.GetTypeUrl(), ResourceNames: s.names[resp.GetTypeUrl()],
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		s.t.Fatal(err)
	}
	return resp
}

// loadAssignment decodes a ClusterLoadAssignment and checks it as Envoy
// would (ValidateAll).
func loadAssignment(t *testing.T, raw []byte) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(raw, cla); err != nil {
		t.Fatal(err)
	}
	if err := cla.ValidateAll(); err != nil {
		t.Fatalf("load assignment: %v", err)
	}
	return cla
}

// endpointsOf lists a load assignment's endpoints as "ip:port HEALTH",
// in order.
func endpointsOf(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d %s", sa.GetAddress(), sa.GetPortValue(), e.GetHealthStatus()))
		}
	}
	return out
}

// pushCounts reads meshward_xds_pushes_total by type from /metrics.
func pushCounts(t *testing.T, ctx context.Context, admin string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for line := range strings.SplitSeq(scrapeMetrics(t, ctx, admin), "\n") {
		rest, ok := strings.CutPrefix(line, `meshward_xds_pushes_total{type="`)
		if !ok {
			continue
		}
		typ, v, _ := strings.Cut(rest, `"} `)
		n, _ := strconv.ParseFloat(v, 64)
		out[typ] = int(n)
	}
	return out
}

// TestServeKubernetesEDS: the pods of executor, which planner calls,
// scale 1 -> 5 -> 0 and one turns unready; each change reaches planner's
// Envoy (a delta and a SotW stream) as a new load assignment and nothing
// else: no cluster, listener or route is sent again and their versions
// stay; bystander, which calls nobody, is sent nothing; every load
// assignment passes ValidateAll.
func TestServeKubernetesEDS(t *testing.T) {
	srv, rc, path := kubeMeshServer(t, edsMesh, "")
	kc := kubernetes.NewForConfigOrDie(rc)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := startKubeReplica(t, ctx, path, srv.Kubeconfig(kubetest.Admin))

	pods := kc.CoreV1().Pods("default")
	// A pod of executor: created, then given an IP and a Ready condition
	// as a kubelet would (no kubelet runs).
	addPod := func(i int, ready bool) {
		t.Helper()
		name := fmt.Sprintf("executor-%d", i)
		p, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "executor"}},
			Spec: corev1.PodSpec{ServiceAccountName: "executor", AutomountServiceAccountToken: new(bool),
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/executor"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := fmt.Sprintf("10.1.0.%d", i+1)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		setReady(p, ready)
		if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	addPod(0, true)

	// planner's Envoy: a delta stream (clusters, listeners, routes, then
	// the EDS cluster's load assignment by name, as Envoy asks) and a SotW one.
	delta, clusters, _ := fetchStream(t, ctx, r.xds, "planner.planner-0.default")
	if _, ok := clusters[envoy.PeerClusterPrefix+"executor"]; !ok {
		t.Fatalf("planner's clusters %v: no peer-executor", clusters)
	}
	delta.subscribe(resourcev3.RouteType, nil)
	if typ, _ := delta.mustRecv(); typ != resourcev3.RouteType {
		t.Fatalf("got %s, want routes", typ)
	}
	if err := delta.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{envoy.PeerClusterPrefix + "executor"}}); err != nil {
		t.Fatal(err)
	}
	deltaEDS := func() []string {
		t.Helper()
		resp, err := delta.recvRaw()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != resourcev3.EndpointType || len(resp.GetResources()) != 1 {
			t.Fatalf("delta: %s with %d resources, want one load assignment (only endpoints change)", resp.GetTypeUrl(), len(resp.GetResources()))
		}
		cla := loadAssignment(t, resp.GetResources()[0].GetResource().GetValue())
		if cla.GetClusterName() != envoy.PeerClusterPrefix+"executor" {
			t.Fatalf("load assignment of %q", cla.GetClusterName())
		}
		return endpointsOf(cla)
	}
	sotw := openSotW(t, ctx, r.xds, "planner.planner-1.default")
	sotw.subscribe(resourcev3.ClusterType)
	sotw.subscribe(resourcev3.ListenerType)
	sotw.subscribe(resourcev3.EndpointType, envoy.PeerClusterPrefix+"executor")
	sotwEDS := func() []string {
		t.Helper()
		for {
			resp := sotw.recv()
			switch resp.GetTypeUrl() {
			case resourcev3.ClusterType, resourcev3.ListenerType:
				continue // the first answers
			case resourcev3.EndpointType:
			default:
				t.Fatalf("SotW: %s", resp.GetTypeUrl())
			}
			if len(resp.GetResources()) != 1 {
				t.Fatalf("SotW: %d load assignments", len(resp.GetResources()))
			}
			return endpointsOf(loadAssignment(t, resp.GetResources()[0].GetValue()))
		}
	}
	// bystander's Envoy: its clusters and listeners, then nothing.
	by, _, _ := fetchStream(t, ctx, r.xds, "bystander.bystander-0.default")
	// A pod's node id names its agent's namespace, and nothing else.
	for _, node := range []string{"planner.planner-0.kube-system", "planner.planner-0", "nobody.nobody-0.default", "planner..default"} {
		a := openADS(t, ctx, r.xds, node)
		a.subscribe(resourcev3.ClusterType, nil)
		if _, _, err := a.recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("node %q: %v, want PermissionDenied", node, err)
		}
		a.cancel()
	}

	one := []string{"10.1.0.1:15002 HEALTHY"}
	if got := deltaEDS(); !equal(got, one) {
		t.Fatalf("delta, 1 pod: %v, want %v", got, one)
	}
	if got := sotwEDS(); !equal(got, one) {
		t.Fatalf("SotW, 1 pod: %v, want %v", got, one)
	}
	// From here on, SotW's first cluster and listener answers are in.
	sotwOnlyEDS := func() []string {
		t.Helper()
		resp := sotw.recv()
		if resp.GetTypeUrl() != resourcev3.EndpointType || len(resp.GetResources()) != 1 {
			t.Fatalf("SotW: %s with %d resources, want one load assignment (only endpoints change)", resp.GetTypeUrl(), len(resp.GetResources()))
		}
		return endpointsOf(loadAssignment(t, resp.GetResources()[0].GetValue()))
	}
	before := nodeVersions(t, ctx, r.admin)
	pushes := pushCounts(t, ctx, r.admin)

	// waitFor reads both streams' load assignments until they are want
	// (each change of a pod may come alone); the count of pushes of each.
	edsPushes := 0
	waitFor := func(what string, want []string) {
		t.Helper()
		for got := deltaEDS(); !equal(got, want); got = deltaEDS() {
			edsPushes++
			if ctx.Err() != nil {
				t.Fatalf("delta, %s: %v, want %v", what, got, want)
			}
		}
		edsPushes++
		for got := sotwOnlyEDS(); !equal(got, want); got = sotwOnlyEDS() {
			edsPushes++
		}
		edsPushes++
	}

	// 1 -> 5.
	for i := 1; i < 5; i++ {
		addPod(i, true)
	}
	var five []string
	for i := range 5 {
		five = append(five, fmt.Sprintf("10.1.0.%d:15002 HEALTHY", i+1))
	}
	waitFor("5 pods", five)

	// One turns unready: UNHEALTHY, still listed.
	p, err := pods.Get(ctx, "executor-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setReady(p, false)
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	five[2] = "10.1.0.3:15002 UNHEALTHY"
	waitFor("one unready", five)

	// 5 -> 0.
	for i := range 5 {
		if err := pods.Delete(ctx, fmt.Sprintf("executor-%d", i), metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("0 pods", nil)

	// Clusters, listeners and routes were not sent again, to anyone, and
	// their versions stayed; only planner's two streams got endpoints.
	after := pushCounts(t, ctx, r.admin)
	for _, typ := range []string{"cluster", "listener", "route", "secret"} {
		if after[typ] != pushes[typ] {
			t.Errorf("%s pushes %d -> %d while only pods changed", typ, pushes[typ], after[typ])
		}
	}
	if d := after["endpoint"] - pushes["endpoint"]; d != edsPushes {
		t.Errorf("endpoint pushes: %d, want %d (planner's load assignments read), none to anyone else", d, edsPushes)
	}
	now := nodeVersions(t, ctx, r.admin)
	for _, node := range []string{"planner.planner-0.default", "planner.planner-1.default", "bystander.bystander-0.default"} {
		for _, typ := range []string{"cluster", "listener", "route"} {
			if before[node][typ] == "" || now[node][typ] != before[node][typ] {
				t.Errorf("%s's %s version %q -> %q", node, typ, before[node][typ], now[node][typ])
			}
		}
	}
	for _, node := range []string{"planner.planner-0.default", "planner.planner-1.default"} {
		if before[node]["endpoint"] == now[node]["endpoint"] {
			t.Errorf("%s's endpoint version did not move", node)
		}
	}
	if _, ok := now["bystander.bystander-0.default"]["endpoint"]; ok {
		t.Error("bystander, which calls nobody, has an endpoint version")
	}
	// bystander's stream: the next response is the routes it asks for
	// now, nothing before it.
	by.subscribe(resourcev3.RouteType, nil)
	if typ, _ := by.mustRecv(); typ != resourcev3.RouteType {
		t.Fatalf("bystander was sent %s", typ)
	}
}

// kubeMeshServer starts an API server with the CRDs and the objects of
// mesh applied, and writes a replica's configuration (kubeBaseConfig with
// an ext_authz address for the Envoys, then extra); it returns the
// server, an admin client configuration and the configuration's path.
func kubeMeshServer(t *testing.T, mesh, extra string) (*kubetest.Server, *rest.Config, string) {
	t.Helper()
	srv := kubetest.Start(t)
	rc := srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(t, rc, crds...)
	dir := t.TempDir()
	meshPath, path := filepath.Join(dir, "mesh.yaml"), filepath.Join(dir, "meshward.yaml")
	base := strings.Replace(kubeBaseConfig, "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.meshward.svc:9191\n", 1) + extra
	for p, s := range map[string]string{meshPath: mesh, path: base} {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.Apply(t, rc, meshPath)
	return srv, rc, path
}

func setReady(p *corev1.Pod, ready bool) {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}}
}

func equal(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}
