package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/meshward/meshward/cmd/meshward/internal/detect"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
)

// TestServeKubernetesDetection: in Kubernetes mode a detection rule in
// enforce mode quarantines by writing the MeshAgent's spec.quarantine on
// the real API server (by the detector, naming the rule), and the
// replica applies it from there: Checks to the agent are denied 403
// quarantined. Below the threshold nothing is written.
func TestServeKubernetesDetection(t *testing.T) {
	srv, rc, path := kubeMeshServer(t, replicaMesh,
		"detection:\n  rules:\n    - name: deny-burst\n      match: denies\n      threshold: 3\n      window: 1m\n      quarantine: enforce\n")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := startKubeQReplica(t, ctx, "a", path, srv.Kubeconfig(kubetest.Admin))
	executor := dynamic.NewForConfigOrDie(rc).Resource(kube.MeshAgents).Namespace("default")
	quarantineOf := func() map[string]any {
		t.Helper()
		u, err := executor.Get(ctx, "executor", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		q, _, _ := unstructured.NestedMap(u.Object, "spec", "quarantine")
		return q
	}

	// executor, which has no role, POSTs a task: denied 403 (not
	// quarantined), each one counted against executor.
	fromExecutor := viewerPost()
	fromExecutor.Attributes.Source.Principal = kubeExecutorID
	deny := func() {
		t.Helper()
		resp, err := r.ac.Check(ctx, fromExecutor)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil || quarantineDenied(resp) {
			t.Fatalf("executor's POST: %v, want a plain deny", resp)
		}
	}
	if resp, err := r.ac.Check(ctx, toExecutor()); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("before: Check to executor %v %v, want allowed", resp, err)
	}
	deny()
	deny()
	if q := quarantineOf(); q != nil {
		t.Fatalf("quarantined below the threshold: %v", q)
	}
	deny()
	for {
		q := quarantineOf()
		if q != nil {
			if q["by"] != detect.By || !strings.Contains(fmt.Sprint(q["reason"]), "deny-burst") {
				t.Fatalf("spec.quarantine %v, want by %s naming the rule", q, detect.By)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the detector never wrote spec.quarantine")
		}
		time.Sleep(20 * time.Millisecond) // polling, not timing
	}
	for {
		resp, err := r.ac.Check(ctx, toExecutor())
		if err != nil {
			t.Fatal(err)
		}
		if quarantineDenied(resp) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("Checks to executor never denied as quarantined")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
