package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
)

// failoverClient sends Checks the way Envoy's ext_authz cluster with the
// replicas as its endpoints does with a retry policy on connection
// failure and outlier detection: to the first endpoint not ejected; a
// call that fails for want of a connection (Unavailable: refused, reset;
// DeadlineExceeded: no answer) ejects that endpoint and is sent again to
// the next. Any other error is returned: it is not retried away.
type failoverClient struct {
	clients []authv3.AuthorizationClient
	timeout time.Duration // per call

	mu      sync.Mutex
	ejected []bool

	answered []atomic.Int64 // by endpoint
	retried  atomic.Int64
}

func newFailoverClient(timeout time.Duration, conns ...*grpc.ClientConn) *failoverClient {
	f := &failoverClient{timeout: timeout, ejected: make([]bool, len(conns)), answered: make([]atomic.Int64, len(conns))}
	for _, c := range conns {
		f.clients = append(f.clients, authv3.NewAuthorizationClient(c))
	}
	return f
}

func (f *failoverClient) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	err := errors.New("every endpoint ejected")
	failed := false // on an endpoint before this one
	for i, c := range f.clients {
		f.mu.Lock()
		out := f.ejected[i]
		f.mu.Unlock()
		if out {
			continue
		}
		if failed {
			f.retried.Add(1)
		}
		cctx, cancel := context.WithTimeout(ctx, f.timeout)
		var resp *authv3.CheckResponse
		resp, err = c.Check(cctx, req)
		cancel()
		if err == nil {
			f.answered[i].Add(1)
			return resp, nil
		}
		if c := status.Code(err); (c != codes.Unavailable && c != codes.DeadlineExceeded) || ctx.Err() != nil {
			return nil, err
		}
		f.mu.Lock()
		f.ejected[i] = true
		f.mu.Unlock()
		failed = true
	}
	return nil, err
}

// TestServeKubernetesReplicaKilled: two serve processes on one API server.
// A client sends ext_authz Checks without pause to replica a, failing
// over to b (failoverClient), and an Envoy's delta ADS stream is on a.
// Mid-run a is killed (SIGKILL: no graceful stop, connections cut). Every
// Check issued is decided, and decided right (allowed or denied as the
// rules say): the ones a did not answer are answered by b. The Envoy's
// stream to a ends; reconnected to b with the versions it holds, it is
// sent nothing new for them. b stays ready throughout.
func TestServeKubernetesReplicaKilled(t *testing.T) {
	_, path, kc := replicaCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	type replica struct {
		proc              *serveChild
		xds, admin, authz string
		conn              *grpc.ClientConn
	}
	start := func() *replica {
		c := serveProcess(t, "--config", path, "--source", "kubernetes", "--kubeconfig", kc)
		r := &replica{proc: c,
			xds:   c.lw.waitForWithin(t, 60*time.Second, "xds serving", "address"),
			admin: c.lw.waitFor(t, "admin server listening", "address"),
			authz: c.lw.waitFor(t, "ext_authz server listening", "address")}
		conn, err := grpc.NewClient(r.authz, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		r.conn = conn
		waitServing(t, ctx, conn)
		return r
	}
	a, b := start(), start()

	stream, clusters, listeners := fetchStream(t, ctx, a.xds, "planner")

	// The Checks: viewer may POST /v1/tasks, nothing else.
	allow := viewerPost()
	deny := viewerPost()
	deny.Attributes.Request.Http.Path = "/v1/other"
	fc := newFailoverClient(2*time.Second, a.conn, b.conn)
	var (
		issued, right atomic.Int64
		wrongMu       sync.Mutex
		wrong         []string // what went wrong, by Check
		stop          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, wantAllow := allow, true
				if i%2 == 1 {
					req, wantAllow = deny, false
				}
				issued.Add(1)
				resp, err := fc.check(ctx, req)
				switch {
				case err != nil:
					wrongMu.Lock()
					wrong = append(wrong, fmt.Sprintf("Check %d: no decision: %v", i, err))
					wrongMu.Unlock()
				case (resp.GetOkResponse() != nil) != wantAllow || (!wantAllow && resp.GetDeniedResponse().GetStatus().GetCode() != 403):
					wrongMu.Lock()
					wrong = append(wrong, fmt.Sprintf("Check %d (allow %v): %v", i, wantAllow, resp.GetStatus()))
					wrongMu.Unlock()
				default:
					right.Add(1)
				}
			}
		})
	}
	stopChecks := func() {
		close(stop)
		wg.Wait()
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopChecks()
		}
	}()
	until := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	until("a answered 300 Checks", func() bool { return fc.answered[0].Load() >= 300 })
	a.proc.kill()
	killedAt := issued.Load()

	// The Envoy's stream to a is cut; it reconnects to b.
	if _, _, err := stream.recv(); err == nil {
		t.Fatal("the ADS stream to the killed replica still answers")
	}
	resumeWithoutChurn(t, ctx, b.xds, "planner", clusters, listeners)

	until("b answered 300 Checks", func() bool { return fc.answered[1].Load() >= 300 })
	stopChecks()
	waitReady(t, ctx, b.admin)

	t.Logf("%d Checks issued (%d before the kill): %d answered by a, %d by b, %d sent again to b after failing on a",
		issued.Load(), killedAt, fc.answered[0].Load(), fc.answered[1].Load(), fc.retried.Load())
	for _, w := range wrong {
		t.Error(w)
	}
	if got := fc.answered[0].Load() + fc.answered[1].Load(); got != issued.Load() || right.Load() != issued.Load() {
		t.Errorf("%d Checks issued, %d answered, %d decided right", issued.Load(), got, right.Load())
	}
	if fc.retried.Load() == 0 {
		t.Error("no Check failed on a and was sent to b: the kill was not mid-run")
	}
}

// TestServeKubernetesAPIServerOutage: with kube-apiserver stopped, serve
// keeps deciding and serving xDS from the last generation and stays ready
// (docs/kubernetes.md: readiness does not follow the API server); when it
// is back, a change made then is served.
func TestServeKubernetesAPIServerOutage(t *testing.T) {
	srv, path, kc := replicaCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	r := startKubeReplica(t, ctx, path, kc)
	ac := authv3.NewAuthorizationClient(dialAuthz(t, r.lw))
	other := viewerPost()
	other.Attributes.Request.Http.Path = "/v1/other"
	decides := func(when string, tasks, others bool) {
		t.Helper()
		for req, want := range map[*authv3.CheckRequest]bool{viewerPost(): tasks, other: others} {
			resp, err := ac.Check(ctx, req)
			if err != nil {
				t.Fatalf("%s: Check %s: %v", when, req.GetAttributes().GetRequest().GetHttp().GetPath(), err)
			}
			if (resp.GetOkResponse() != nil) != want {
				t.Fatalf("%s: Check %s allowed %v, want %v", when, req.GetAttributes().GetRequest().GetHttp().GetPath(), !want, want)
			}
		}
	}
	decides("before the outage", true, false)
	clusters, _ := fetch(t, ctx, r.xds, "planner")

	srv.StopAPIServer()
	// While it is down (the informers' watches fail and retry): the same
	// decisions, ready, and a new Envoy stream gets the same configuration.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		decides("with the API server down", true, false)
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		waitReady(t, rctx, r.admin)
		rcancel()
	}
	if c, _ := fetch(t, ctx, r.xds, "planner"); !maps.Equal(c, clusters) {
		t.Fatalf("clusters with the API server down %v, before %v", c, clusters)
	}

	srv.StartAPIServer()
	// Back: the rule moves to /v1/other, and serve follows.
	dyn := dynamic.NewForConfigOrDie(srv.Config(kubetest.Admin))
	res := dyn.Resource(kube.AuthorizationRules).Namespace("default")
	for {
		u, err := res.Get(ctx, "viewers", metav1.GetOptions{})
		if err == nil {
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			rules[0].(map[string]any)["match"].(map[string]any)["path"] = "/v1/other"
			_ = unstructured.SetNestedSlice(u.Object, rules, "spec", "rules")
			if _, err = res.Update(ctx, u, metav1.UpdateOptions{}); err == nil {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("update the rule after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // a conflict with a status write
	}
	for {
		resp, err := ac.Check(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the change made after the restart never served")
		}
		time.Sleep(50 * time.Millisecond)
	}
	decides("after the restart", false, true)
}
