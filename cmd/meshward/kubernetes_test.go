package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
)

const kubeBaseConfig = `trustDomain: mesh.local
admin:
  address: 127.0.0.1:0
authz:
  address: 127.0.0.1:0
  plaintext: true
xds:
  address: 127.0.0.1:0
  insecure: true
`

// TestServeKubernetesSource serves ext_authz and xDS from a real API
// server's objects: an AuthorizationRule's create, update and delete
// change the served decision; an invalid one is refused in its status and
// changes nothing; a MeshAgent's create and delete register and retire
// its certificate and reload the xDS agents.
func TestServeKubernetesSource(t *testing.T) {
	srv := kubetest.Start(t)
	rc := srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(t, rc, crds...)
	dyn := dynamic.NewForConfigOrDie(rc)
	core := kubernetes.NewForConfigOrDie(rc)
	path := filepath.Join(t.TempDir(), "meshward.yaml")
	if err := os.WriteFile(path, []byte(kubeBaseConfig), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--source", "kubernetes", "--kubeconfig", srv.Kubeconfig(kubetest.Admin))
	defer func() {
		cancel()
		wait()
	}()
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	ac := authv3.NewAuthorizationClient(conn)
	admin := lw.waitFor(t, "admin server listening", "address")
	allowed := func() bool {
		t.Helper()
		r, err := ac.Check(ctx, viewerPost())
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return r.GetOkResponse() != nil
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if allowed() {
		t.Fatal("allowed with no AuthorizationRule")
	}

	apply := func(obj map[string]any) {
		t.Helper()
		u := &unstructured.Unstructured{Object: obj}
		res := dyn.Resource(kube.AuthorizationRules)
		if u.GetKind() == "MeshAgent" {
			res = dyn.Resource(kube.MeshAgents)
		}
		// Again on a conflict with serve's status write.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := res.Namespace("default").Get(ctx, u.GetName(), metav1.GetOptions{})
			if err == nil {
				u.SetResourceVersion(cur.GetResourceVersion())
				_, err = res.Namespace("default").Update(ctx, u, metav1.UpdateOptions{})
			} else {
				_, err = res.Namespace("default").Create(ctx, u, metav1.CreateOptions{})
			}
			return err
		})
		if err != nil {
			t.Fatalf("apply %s: %v", u.GetName(), err)
		}
	}
	rule := func(name, path string) map[string]any {
		return map[string]any{"apiVersion": "meshward.dev/v1alpha1", "kind": "AuthorizationRule",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"spec": map[string]any{
				"identities": []any{map[string]any{"spiffeID": "spiffe://mesh.local/ns/default/sa/viewer", "roles": []any{"viewer"}}},
				"rules": []any{map[string]any{"name": "viewer-create", "match": map[string]any{"methods": []any{"POST"}, "path": path},
					"require": map[string]any{"anyRole": []any{"viewer"}}}},
			}}
	}

	// Create: the rule allows.
	apply(rule("viewers", "/v1/tasks"))
	eventually("the new rule allows", allowed)

	// Invalid beside the others (a rule name taken, an identity listed
	// twice): refused in its status, the decision unchanged.
	apply(rule("zz-clash", "/v1/other"))
	for {
		u, err := dyn.Resource(kube.AuthorizationRules).Namespace("default").Get(ctx, "zz-clash", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		if len(conds) == 1 {
			c := conds[0].(map[string]any)
			if c["status"] != "False" || !strings.Contains(c["message"].(string), `spec.rules[0].name: rule "viewer-create" defined twice`) {
				t.Fatalf("zz-clash condition = %v", c)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("zz-clash never got a condition")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !allowed() {
		t.Fatal("an invalid object changed the decision")
	}
	if err := dyn.Resource(kube.AuthorizationRules).Namespace("default").Delete(ctx, "zz-clash", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// Update: the rule moves to another path.
	apply(rule("viewers", "/v1/other"))
	eventually("the updated rule no longer allows", func() bool { return !allowed() })
	apply(rule("viewers", "/v1/tasks"))
	eventually("the rule allows again", allowed)

	// Delete: nothing allows.
	if err := dyn.Resource(kube.AuthorizationRules).Namespace("default").Delete(ctx, "viewers", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("deleting the rule denies", func() bool { return !allowed() })

	// xDS: a MeshAgent whose pod runs as viewer is registered (its
	// certificate issued), and retired when deleted.
	if _, err := core.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "viewer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "viewer-0", Labels: map[string]string{"app": "viewer"}},
		Spec: corev1.PodSpec{ServiceAccountName: "viewer", AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/viewer"}}}}
	if _, err := core.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const viewerID = `id="spiffe://mesh.local/ns/default/sa/viewer"`
	metrics := func() string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if strings.Contains(metrics(), viewerID) {
		t.Fatal("viewer registered before its MeshAgent exists")
	}
	apply(map[string]any{"apiVersion": "meshward.dev/v1alpha1", "kind": "MeshAgent",
		"metadata": map[string]any{"name": "viewer", "namespace": "default"},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "viewer"}},
			"inboundPort": 15001, "app": "127.0.0.1:8080"}})
	lw.waitFor(t, "xds: agents reloaded", "")
	eventually("viewer's certificate issued", func() bool { return strings.Contains(metrics(), viewerID) })
	if err := dyn.Resource(kube.MeshAgents).Namespace("default").Delete(ctx, "viewer", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("viewer retired", func() bool { return !strings.Contains(metrics(), viewerID) })
}
