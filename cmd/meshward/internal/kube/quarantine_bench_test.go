package kube_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/policy"
)

// BenchmarkQuarantinePropagation: the time from `meshward quarantine
// --source kubernetes` (the Editor's patch of spec.quarantine) to two
// replicas' Sources handing the new state to serve, on a real API server
// with 100 MeshAgents; each op is one quarantine and its release.
func BenchmarkQuarantinePropagation(b *testing.B) {
	srv := kubetest.Start(b)
	rc := srv.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join("..", "..", "..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	kubetest.InstallCRDs(b, rc, crds...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dyn := dynamic.NewForConfigOrDie(rc)
	const n = 100
	for i := range n {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "meshward.dev/v1alpha1", "kind": "MeshAgent",
			"metadata": map[string]any{"name": fmt.Sprintf("agent-%d", i), "namespace": "default"},
			"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": fmt.Sprintf("agent-%d", i)}},
				"serviceAccountName": fmt.Sprintf("agent-%d", i), "inboundPort": int64(15001), "app": "127.0.0.1:8080"},
		}}
		if _, err := dyn.Resource(kube.MeshAgents).Namespace("default").Create(ctx, u, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	base, err := config.Parse([]byte("trustDomain: mesh.local\nauthz:\n  plaintext: true\n"), fstest.MapFS{}, "base.yaml")
	if err != nil {
		b.Fatal(err)
	}
	const target = "spiffe://mesh.local/ns/default/sa/agent-7"
	var seen []chan bool // per replica: the target's quarantine as applied
	for range 2 {
		src, err := kube.New(rc, base, policy.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := src.Start(ctx); err != nil {
			b.Fatal(err)
		}
		ch := make(chan bool, 16)
		seen = append(seen, ch)
		go func() {
			_ = src.WatchQuarantine(ctx, func(st *quarantine.State) {
				_, ok := st.Find(target)
				ch <- ok
			})
		}()
	}
	ed := kube.NewEditor(dyn, base.TrustDomain)
	wait := func(want bool) {
		for _, ch := range seen {
			for {
				select {
				case got := <-ch:
					if got == want {
						goto next
					}
				case <-ctx.Done():
					b.Fatal("a replica never applied the change")
				}
			}
		next:
		}
	}
	for b.Loop() {
		if _, err := ed.Quarantine(ctx, "agent-7", "bench", "bench", time.Now()); err != nil {
			b.Fatal(err)
		}
		wait(true)
		if _, err := ed.Release(ctx, "default/agent-7", "bench", time.Now()); err != nil {
			b.Fatal(err)
		}
		wait(false)
	}
}
