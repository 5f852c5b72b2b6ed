package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/extauthz/audit"
)

// kubeExecutorID is replicaMesh's executor agent's SPIFFE ID.
const kubeExecutorID = "spiffe://mesh.local/ns/default/sa/executor"

// msgQuarantined is the watch's log line of a new quarantine.
const msgQuarantined = "agent quarantined: every Check from or to it is denied"

// count is how many log lines have msg and, when field is set, that
// field equal to value.
func (lw *logWatcher) count(msg, field, value string) int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	n := 0
	for _, l := range lw.lines {
		if l["msg"] == msg && (field == "" || l[field] == value) {
			n++
		}
	}
	return n
}

// toExecutor is a Check the policy allows (viewer POST /v1/tasks) whose
// destination is the executor agent.
func toExecutor() *authv3.CheckRequest {
	r := viewerPost()
	r.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: kubeExecutorID}
	return r
}

// quarantineDenied reports whether resp is the 403 of a quarantine.
func quarantineDenied(resp *authv3.CheckResponse) bool {
	d := resp.GetDeniedResponse()
	return d.GetStatus().GetCode() == typev3.StatusCode_Forbidden && strings.Contains(d.GetBody(), `"quarantined"`)
}

// kubeQReplica is a serve replica of the quarantine test, with its audit
// stream.
type kubeQReplica struct {
	name  string
	lw    *logWatcher
	xds   string
	admin string
	ac    authv3.AuthorizationClient
	audit *lockedBuffer
}

func startKubeQReplica(t *testing.T, ctx context.Context, name, path, kubeconfig string) *kubeQReplica {
	t.Helper()
	r := &kubeQReplica{name: name, audit: &lockedBuffer{}}
	sctx, cancel := context.WithCancel(ctx)
	lw, wait := serveInProcess(t, sctx, r.audit, "--config", path, "--source", "kubernetes", "--kubeconfig", kubeconfig)
	t.Cleanup(func() {
		cancel()
		wait()
	})
	r.lw = lw
	r.xds = lw.waitFor(t, "xds serving", "address")
	r.admin = lw.waitFor(t, "admin server listening", "address")
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	r.ac = authv3.NewAuthorizationClient(conn)
	return r
}

// clusterWatch is planner's delta ADS stream of clusters on a replica:
// what a real Envoy of the planner holds.
type clusterWatch struct {
	a    *adsStream
	have map[string]string
}

func watchClusters(t *testing.T, ctx context.Context, addr, node string) *clusterWatch {
	t.Helper()
	for {
		a := openADS(t, ctx, addr, node)
		a.subscribe(resourcev3.ClusterType, nil)
		resp, err := a.recvRaw()
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil { // its certificate not issued yet
			a.cancel()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("delta ADS: %v", err)
		}
		w := &clusterWatch{a: a, have: map[string]string{}}
		w.apply(resp.GetResources(), resp.GetRemovedResources())
		return w
	}
}

func (w *clusterWatch) apply(res []*discovery.Resource, removed []string) {
	for _, r := range res {
		w.have[r.GetName()] = r.GetVersion()
	}
	for _, n := range removed {
		delete(w.have, n)
	}
}

// until reads pushes until the node holds (has) or does not hold the
// cluster.
func (w *clusterWatch) until(t *testing.T, cluster string, has bool) {
	t.Helper()
	for {
		if _, ok := w.have[cluster]; ok == has {
			return
		}
		resp, err := w.a.recvRaw()
		if err != nil {
			t.Fatalf("delta ADS waiting for %s present=%v: %v", cluster, has, err)
		}
		if resp.GetTypeUrl() == resourcev3.ClusterType {
			w.apply(resp.GetResources(), resp.GetRemovedResources())
		}
	}
}

// TestServeKubernetesQuarantineReplicas: two serve replicas on one API
// server share the quarantine through the MeshAgent's spec.quarantine.
// Setting the field (as kubectl patch does) makes both deny every Check
// to the agent 403 quarantined, withdraw the planner's cluster to it
// over their real xDS streams and stop keeping its SVID, with the same
// xDS versions; `meshward release --source kubernetes` restores both;
// the admin API of one replica quarantines on both. Checks running on
// both replicas meanwhile never fail, none is lost, and every one that
// starts after both replicas logged the quarantine is denied.
func TestServeKubernetesQuarantineReplicas(t *testing.T) {
	srv := kubetest.Start(t)
	rc := srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(t, rc, crds...)
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	path := filepath.Join(dir, "meshward.yaml")
	if err := os.WriteFile(mesh, []byte(replicaMesh), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "kube-quarantine-token"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No state file: with --source kubernetes none is needed, for the
	// API either.
	base := strings.Replace(kubeBaseConfig, "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.meshward.svc:9191\n", 1) +
		"quarantine:\n  api:\n    tokenFile: token\n"
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	kubetest.Apply(t, rc, mesh)

	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	kc := srv.Kubeconfig(kubetest.Admin)
	replicas := []*kubeQReplica{startKubeQReplica(t, ctx, "a", path, kc), startKubeQReplica(t, ctx, "b", path, kc)}
	const peer = "peer-executor"
	watches := make([]*clusterWatch, len(replicas))
	for i, r := range replicas {
		watches[i] = watchClusters(t, ctx, r.xds, "planner")
		watches[i].until(t, peer, true)
	}
	svid := `id="` + kubeExecutorID + `"`
	waitSVID := func(kept bool, what string) {
		t.Helper()
		for _, r := range replicas {
			for strings.Contains(scrapeMetrics(t, ctx, r.admin), svid) != kept {
				if ctx.Err() != nil {
					t.Fatalf("replica %s: %s", r.name, what)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	waitSVID(true, "executor's SVID never issued")
	// agree: both replicas decide alike and serve the planner the same
	// versions (the push is done on both once their streams saw it).
	agree := func(allowed bool, what string) {
		t.Helper()
		for _, r := range replicas {
			resp, err := r.ac.Check(ctx, toExecutor())
			if err != nil {
				t.Fatalf("%s: replica %s: Check: %v", what, r.name, err)
			}
			if got := resp.GetOkResponse() != nil; got != allowed || (!allowed && !quarantineDenied(resp)) {
				t.Fatalf("%s: replica %s: allowed %v (%v), want %v", what, r.name, got, resp.GetDeniedResponse().GetBody(), allowed)
			}
		}
		va, vb := nodeVersions(t, ctx, replicas[0].admin), nodeVersions(t, ctx, replicas[1].admin)
		if len(va["planner"]) == 0 || !maps.Equal(va["planner"], vb["planner"]) {
			t.Fatalf("%s: planner's snapshot versions differ: %v and %v", what, va["planner"], vb["planner"])
		}
		if !maps.Equal(watches[0].have, watches[1].have) {
			t.Fatalf("%s: planner's clusters differ: %v and %v", what, watches[0].have, watches[1].have)
		}
	}
	agree(true, "before")
	// acked waits until both replicas logged n quarantines of the executor.
	acked := func(n int) {
		t.Helper()
		for _, r := range replicas {
			for r.lw.count(msgQuarantined, logSPIFFEID, kubeExecutorID) < n {
				if ctx.Err() != nil {
					t.Fatalf("replica %s never logged the quarantine", r.name)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}

	// Round 1: the field set by hand, with Checks in flight.
	load := startCheckLoad(ctx, replicas, 4)
	dyn := dynamic.NewForConfigOrDie(rc)
	patch := `{"spec":{"quarantine":{"reason":"incident 42","by":"oncall@example.com"}}}`
	if _, err := dyn.Resource(kube.MeshAgents).Namespace("default").Patch(ctx, "executor", types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "kubectl-patch"}); err != nil {
		t.Fatal(err)
	}
	acked(1)
	load.ack()
	load.waitAfter(ctx, 400)
	n := load.stop()
	t.Logf("in-flight Checks: %d started, %d done, %d after the acknowledgement (all denied)", n.started, n.done, n.after)
	if n.started != n.done || n.errs > 0 || n.wrong > 0 || n.after < 400 {
		t.Fatalf("in-flight Checks: %+v (first error %v, first wrong answer %v)", n, n.firstErr, n.firstWrong)
	}
	for i := range watches {
		watches[i].until(t, peer, false)
	}
	waitSVID(false, "quarantined executor's SVID is still kept")
	agree(false, "quarantined by the field")
	for _, r := range replicas {
		// The quarantined node's own Envoy is refused.
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		a := openADS(t, actx, r.xds, "executor")
		a.subscribe(resourcev3.ClusterType, nil)
		if _, v, err := a.recv(); err == nil && len(v) > 0 {
			t.Errorf("replica %s serves the quarantined executor %d clusters", r.name, len(v))
		}
		a.cancel()
		acancel()
	}

	// Release with the CLI, as an operator with a kubeconfig.
	if out, err := runCLI(ctx, "release", "--config", path, "--source", "kubernetes", "--kubeconfig", kc, "default/executor"); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	for i := range watches {
		watches[i].until(t, peer, true)
	}
	waitSVID(true, "released executor's SVID never issued again")
	agree(true, "released by the CLI")
	if out, err := runCLI(ctx, "release", "--config", path, "--source", "kubernetes", "--kubeconfig", kc, "executor"); err == nil || !strings.Contains(err.Error(), "not quarantined") {
		t.Errorf("second release: %v\n%s", err, out)
	}

	// Round 2: one replica's admin API; the other lists and releases it.
	api := func(r *kubeQReplica, method, route, body string) apiCall {
		t.Helper()
		return callAPI(t, ctx, method, "http://"+r.admin+route, token, body)
	}
	if got := api(replicas[0], "POST", "/admin/quarantine", `{"identity":"`+kubeExecutorID+`","reason":"api"}`); got.code != 200 {
		t.Fatalf("API quarantine: %d %v", got.code, got.body)
	}
	acked(2)
	for i := range watches {
		watches[i].until(t, peer, false)
	}
	agree(false, "quarantined by the API")
	if got := api(replicas[1], "GET", "/admin/quarantine", ""); got.code != 200 || !strings.Contains(fmt.Sprint(got.body), kubeExecutorID) {
		t.Fatalf("API list on the other replica: %d %v", got.code, got.body)
	}
	if got := api(replicas[1], "POST", "/admin/quarantine", `{"identity":"executor"}`); got.code != 409 {
		t.Errorf("API quarantine again: %d %v, want 409", got.code, got.body)
	}
	if got := api(replicas[1], "POST", "/admin/quarantine", `{"identity":"nobody"}`); got.code != 400 {
		t.Errorf("API quarantine of no MeshAgent: %d %v, want 400", got.code, got.body)
	}
	if got := api(replicas[1], "POST", "/admin/release", `{"identity":"executor"}`); got.code != 200 {
		t.Fatalf("API release: %d %v", got.code, got.body)
	}
	for i := range watches {
		watches[i].until(t, peer, true)
	}
	agree(true, "released by the API")

	// Audited on both, with who did it.
	me, err := operator()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		want := []string{`"kind":"` + audit.KindAgentQuarantined + `"`, `"kind":"` + audit.KindAgentReleased + `"`,
			`"by":"oncall@example.com"`, `"reason":"incident 42"`, `"agent":"default/executor"`, `"by":"` + me + `"`, `"by":"admin-api"`}
		deadline := time.Now().Add(20 * time.Second)
		for {
			a := r.audit.String()
			missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(a, w) })
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s: audit stream lacks %v:\n%s", r.name, missing, a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// checkLoad runs Checks to the executor on every replica until stopped.
type checkLoad struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	acked   atomic.Bool
	started atomic.Int64
	done    atomic.Int64
	after   atomic.Int64 // started after ack, answered
	errs    atomic.Int64
	wrong   atomic.Int64 // started after ack, not denied quarantined

	mu         sync.Mutex
	firstErr   error
	firstWrong string
}

type checkCounts struct {
	started, done, after, errs, wrong int64
	firstErr                          error
	firstWrong                        string
}

func startCheckLoad(ctx context.Context, replicas []*kubeQReplica, perReplica int) *checkLoad {
	ctx, cancel := context.WithCancel(ctx)
	l := &checkLoad{cancel: cancel}
	for _, r := range replicas {
		for range perReplica {
			l.wg.Go(func() {
				for ctx.Err() == nil {
					after := l.acked.Load()
					l.started.Add(1)
					// Not ctx: a Check is never cut short by the stop.
					resp, err := r.ac.Check(context.WithoutCancel(ctx), toExecutor())
					l.done.Add(1)
					l.mu.Lock()
					switch {
					case err != nil:
						l.errs.Add(1)
						if l.firstErr == nil {
							l.firstErr = fmt.Errorf("replica %s: %w", r.name, err)
						}
					case after && !quarantineDenied(resp):
						l.wrong.Add(1)
						if l.firstWrong == "" {
							l.firstWrong = fmt.Sprintf("replica %s: %v", r.name, resp.GetStatus())
						}
					}
					if after && err == nil {
						l.after.Add(1)
					}
					l.mu.Unlock()
				}
			})
		}
	}
	return l
}

// ack marks that every Check starting from now must be denied.
func (l *checkLoad) ack() { l.acked.Store(true) }

// waitAfter waits until n Checks that started after ack were answered.
func (l *checkLoad) waitAfter(ctx context.Context, n int64) {
	for l.after.Load() < n && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *checkLoad) stop() checkCounts {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return checkCounts{started: l.started.Load(), done: l.done.Load(), after: l.after.Load(), errs: l.errs.Load(),
		wrong: l.wrong.Load(), firstErr: l.firstErr, firstWrong: l.firstWrong}
}
