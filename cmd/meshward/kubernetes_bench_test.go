package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/cmd/meshward/internal/envoysim"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/envoy"
)

// Scale of BenchmarkKubernetesScale (make bench-kube AGENTS=... PODS=...).
const (
	envBenchAgents = "MESHWARD_BENCH_KUBE_AGENTS" // default 1000
	envBenchPods   = "MESHWARD_BENCH_KUBE_PODS"   // default 5
)

// kubeScale is a replica serving a ScaleMesh from a real API server to
// one simulated Envoy per pod: the setup of the Kubernetes benchmarks.
type kubeScale struct {
	srv     *kubetest.Server
	rc      *rest.Config
	mesh    *kubetest.ScaleMesh
	config  string // the replicas' configuration file
	replica *serveChild
	admin   string
	fleet   *envoysim.Fleet
	byAgent [][]*envoysim.Envoy // the Envoys of mesh.Agents[i]'s pods

	created, converged time.Duration // objects created; all Envoys hold every type and their peer's endpoints
	watches            [2]int64      // the API server's WATCH requests before the replica and once it converged
}

// scaleNode is the node id of an agent's pod's Envoy: one per pod,
// <agent>.<pod>.<namespace>.
func scaleNode(b *testing.B, agent, pod, namespace string) string {
	b.Helper()
	id, err := envoy.PodNodeID(agent, pod, namespace)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

// startKubeScale starts the API server, creates agents x pods, starts one
// serve process (this test binary re-executed, so that its RSS is its
// own) and connects the Envoys, and waits until every one holds
// clusters, listeners, routes and secrets. Without the kube binaries it
// skips.
func startKubeScale(b *testing.B, ctx context.Context, agents, pods int) *kubeScale {
	b.Helper()
	if os.Getenv(envBenchAgents) == "" {
		// Minutes of setup at the default scale: not part of `make bench`.
		b.Skipf("%s is not set: run `make bench-kube` (AGENTS=1000 PODS=5 by default)", envBenchAgents)
	}
	for _, env := range []string{kubetest.EnvAPIServer, kubetest.EnvEtcd} {
		if _, err := os.Stat(os.Getenv(env)); os.Getenv(env) == "" || err != nil {
			b.Skipf("%s does not name a kube binary (%v): run `make bench-kube`, which builds them", env, err)
		}
	}
	s := &kubeScale{srv: kubetest.Start(b)}
	s.rc = s.srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(b, s.rc, crds...)
	t0 := time.Now()
	s.mesh = kubetest.CreateScaleMesh(b, ctx, s.rc, "default", agents, pods)
	s.created = time.Since(t0)
	s.watches[0] = apiserverWatches(b, ctx, s.rc)

	s.config = filepath.Join(b.TempDir(), "meshward.yaml")
	base := strings.Replace(kubeBaseConfig, "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.meshward.svc:9191\n", 1)
	if err := os.WriteFile(s.config, []byte(base), 0o600); err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	s.replica = s.startReplica(b)
	xdsAddr := s.replica.lw.waitForWithin(b, 10*time.Minute, "xds serving", "address")
	s.admin = s.replica.lw.waitFor(b, "admin server listening", "address")
	var nodes []string
	for i, a := range s.mesh.Agents {
		for _, p := range s.mesh.Pods[i] {
			nodes = append(nodes, scaleNode(b, a, p, s.mesh.Namespace))
		}
	}
	s.fleet = envoysim.Start(ctx, xdsAddr, nodes)
	b.Cleanup(s.fleet.Stop)
	for i := range s.mesh.Agents {
		s.byAgent = append(s.byAgent, s.fleet.Envoys[i*pods:(i+1)*pods])
	}
	// Every Envoy holds every type, and the load assignment of its one
	// peer (EDS).
	if err := s.fleet.Wait(ctx, s.fleet.Envoys, func(e *envoysim.Envoy) bool {
		return e.Has() && len(e.Versions(resourcev3.EndpointType)) == 1
	}); err != nil {
		b.Fatal(err)
	}
	s.converged = time.Since(t0)
	s.watches[1] = apiserverWatches(b, ctx, s.rc)
	return s
}

// responses is how many responses each Envoy has had so far.
func (s *kubeScale) responses() []int {
	n := make([]int, len(s.fleet.Envoys))
	for i, e := range s.fleet.Envoys {
		n[i] = e.Responses()
	}
	return n
}

// acked waits until every Envoy of envoys ACKed typ after t0 and returns
// the time from t0 to the last of those ACKs.
func (s *kubeScale) acked(b *testing.B, ctx context.Context, envoys []*envoysim.Envoy, typ string, t0 time.Time) time.Duration {
	b.Helper()
	if err := s.fleet.Wait(ctx, envoys, func(e *envoysim.Envoy) bool { return e.AckedAt(typ).After(t0) }); err != nil {
		b.Fatal(err)
	}
	var last time.Duration
	for _, e := range envoys {
		last = max(last, e.AckedAt(typ).Sub(t0))
	}
	return last
}

// unaffected is how many responses the Envoys of agents not in concerned
// had since start (responses). Pushes no change was about would come
// with a rebuild, a debounce after the change: it waits a second for
// them first.
func (s *kubeScale) unaffected(start []int, concerned map[int]bool) int {
	time.Sleep(time.Second)
	pods := len(s.mesh.Pods[0])
	n := 0
	for i, e := range s.fleet.Envoys {
		if !concerned[i/pods] {
			n += e.Responses() - start[i]
		}
	}
	return n
}

func (s *kubeScale) startReplica(b *testing.B) *serveChild {
	b.Helper()
	return serveProcess(b, "--config", s.config, "--source", "kubernetes", "--kubeconfig", s.srv.Kubeconfig(kubetest.Admin))
}

// BenchmarkKubernetesScale: 1,000 MeshAgents x 5 pods (5,000 simulated
// Envoys, one delta ADS stream each) on a real API server and one serve
// process. Each iteration changes one MeshAgent's spec (its outboundPort)
// and waits until every Envoy of its pods ACKed the new listeners; it
// reports that time from the API write (median and p99 over the
// iterations), the replica's RSS, the API server's WATCH requests the
// replica opened, a second replica's, and the responses sent to Envoys
// no change concerned (0 when only the affected nodes are pushed). Run
// with `make bench-kube`; the scale from MESHWARD_BENCH_KUBE_AGENTS and
// MESHWARD_BENCH_KUBE_PODS.
func BenchmarkKubernetesScale(b *testing.B) {
	agents, pods := envInt(b, envBenchAgents, 1000), envInt(b, envBenchPods, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	s := startKubeScale(b, ctx, agents, pods)
	rssConverged := s.replica.rss()
	b.Logf("%d MeshAgents x %d pods: objects created in %s; replica converged (all %d Envoys hold clusters, listeners, routes, secrets and their peer's endpoints) in %s; RSS %s",
		agents, pods, s.created.Round(time.Millisecond), len(s.fleet.Envoys), s.converged.Round(time.Millisecond), mibOf(rssConverged))

	dyn := dynamic.NewForConfigOrDie(s.rc)
	res := dyn.Resource(kube.MeshAgents).Namespace(s.mesh.Namespace)
	start := s.responses()
	changed := map[int]bool{} // agents changed
	var lat []time.Duration
	round := 0
	for b.Loop() {
		k := (round * 7919) % agents // spread over the mesh
		round++
		changed[k] = true
		t0 := time.Now()
		toggleOutboundPort(b, ctx, res, s.mesh.Agents[k])
		lat = append(lat, s.acked(b, ctx, s.byAgent[k], resourcev3.ListenerType, t0))
	}
	b.StopTimer()
	unaffected := s.unaffected(start, changed)
	rssAfter := s.replica.rss()
	heap := promValue(b, ctx, "http://"+s.admin+"/metrics", "go_memstats_heap_inuse_bytes")

	// A second replica, no Envoys: its own informer set.
	second := s.startReplica(b)
	second.lw.waitForWithin(b, 10*time.Minute, "xds serving", "address")
	watches2 := apiserverWatches(b, ctx, s.rc)
	rssIdle := second.rss()
	second.stop()

	slices.Sort(lat)
	b.ReportMetric(pctOf(lat, 50).Seconds(), "p50-ack-s")
	b.ReportMetric(pctOf(lat, 99).Seconds(), "p99-ack-s")
	b.ReportMetric(float64(rssAfter)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(s.watches[1]-s.watches[0]), "watches/replica")
	b.ReportMetric(float64(unaffected), "unaffected-pushes")
	b.Logf("MeshAgent change -> ACKed by its %d Envoys, over %d changes: p50 %s p99 %s max %s (a change = one API write; the replica debounces %s)",
		pods, len(lat), pctOf(lat, 50).Round(time.Millisecond), pctOf(lat, 99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), kube.DefaultDebounce)
	b.Logf("replica with %d Envoys: RSS %s at convergence, %s after the changes (Go heap in use %s); a second replica with no Envoys: RSS %s",
		len(s.fleet.Envoys), mibOf(rssConverged), mibOf(rssAfter), mibOf(int64(heap)), mibOf(rssIdle))
	b.Logf("API server WATCH requests (apiserver_longrunning_requests): %d before the replicas, %d with one, %d with two",
		s.watches[0], s.watches[1], watches2)
	b.Logf("responses to the %d Envoys of agents no change was about: %d", len(s.fleet.Envoys)-len(changed)*pods, unaffected)
}

// BenchmarkKubernetesEDS: on the mesh of BenchmarkKubernetesScale (each
// agent's one peer over EDS, 5,000 Envoys with a node id per pod), each
// iteration turns one pod's Ready condition over (ready -> not ready, or
// back) with one status write, as a kubelet would, and waits until every
// Envoy of the agent calling that pod's agent ACKed the new load
// assignment. It reports that time from the API write (median and p99),
// and the responses sent to every other Envoy (0 when only the callers
// are pushed). Run with `make bench-kube`.
func BenchmarkKubernetesEDS(b *testing.B) {
	agents, pods := envInt(b, envBenchAgents, 1000), envInt(b, envBenchPods, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	s := startKubeScale(b, ctx, agents, pods)
	b.Logf("%d MeshAgents x %d pods: objects created in %s; replica converged (all %d Envoys hold every type and their peer's endpoints) in %s; RSS %s",
		agents, pods, s.created.Round(time.Millisecond), len(s.fleet.Envoys), s.converged.Round(time.Millisecond), mibOf(s.replica.rss()))

	podsAPI := kubernetes.NewForConfigOrDie(s.rc).CoreV1().Pods(s.mesh.Namespace)
	start := s.responses()
	callers := map[int]bool{} // agents whose peer's endpoints changed
	var lat []time.Duration
	round := 0
	for b.Loop() {
		k := (round * 7919) % agents
		pod := s.mesh.Pods[k][round%pods]
		round++
		caller := (k - 1 + agents) % agents // agent k-1's peer is agent k
		callers[caller] = true
		p, err := podsAPI.Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range p.Status.Conditions {
			if c := &p.Status.Conditions[i]; c.Type == corev1.PodReady {
				if c.Status == corev1.ConditionTrue {
					c.Status = corev1.ConditionFalse
				} else {
					c.Status = corev1.ConditionTrue
				}
			}
		}
		t0 := time.Now()
		if _, err := podsAPI.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, s.acked(b, ctx, s.byAgent[caller], resourcev3.EndpointType, t0))
	}
	b.StopTimer()
	unaffected := s.unaffected(start, callers)
	slices.Sort(lat)
	b.ReportMetric(pctOf(lat, 50).Seconds(), "p50-ack-s")
	b.ReportMetric(pctOf(lat, 99).Seconds(), "p99-ack-s")
	b.ReportMetric(float64(s.replica.rss())/(1<<20), "rss-MiB")
	b.ReportMetric(float64(unaffected), "unaffected-pushes")
	b.Logf("pod readiness change -> load assignment ACKed by the caller's %d Envoys, over %d changes: p50 %s p99 %s max %s (one status write each; no debounce)",
		pods, len(lat), pctOf(lat, 50).Round(time.Millisecond), pctOf(lat, 99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	b.Logf("responses to the %d Envoys of agents whose peer did not change: %d", len(s.fleet.Envoys)-len(callers)*pods, unaffected)
}

// toggleOutboundPort moves a MeshAgent's outboundPort between 15003 and
// 15004 (a change of its own listeners only), retrying on a conflict
// with a status write.
func toggleOutboundPort(b *testing.B, ctx context.Context, res dynamic.ResourceInterface, name string) {
	b.Helper()
	for {
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		port, _, _ := unstructured.NestedInt64(u.Object, "spec", "outboundPort")
		port = 15003 + (port-15003+1)%2
		if err := unstructured.SetNestedField(u.Object, port, "spec", "outboundPort"); err != nil {
			b.Fatal(err)
		}
		_, err = res.Update(ctx, u, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || ctx.Err() != nil {
			b.Fatalf("update %s: %v", name, err)
		}
	}
}

// apiserverWatches is the number of WATCH requests the API server is
// serving (apiserver_longrunning_requests, summed over resources).
func apiserverWatches(b *testing.B, ctx context.Context, rc *rest.Config) int64 {
	b.Helper()
	raw, err := kubernetes.NewForConfigOrDie(rc).CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "apiserver_longrunning_requests{") && strings.Contains(line, `verb="WATCH"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				n += v
			}
		}
	}
	return int64(n)
}

// promValue reads one unlabelled metric from a Prometheus text endpoint.
func promValue(b *testing.B, ctx context.Context, url, name string) float64 {
	b.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(rest, 64)
			return v
		}
	}
	return 0
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 2 {
		b.Fatalf("%s=%q: want a number of at least 2", name, s)
	}
	return n
}

func mibOf(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func pctOf(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
