package kubetest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Apply creates every object of the YAML files (documents separated by
// "---" lines) in order, as `kubectl create -f` would: the API server
// validates each, and the test fails on the first it refuses.
func Apply(t testing.TB, rc *rest.Config, files ...string) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, f := range files {
		data, err := os.ReadFile(f) //nolint:gosec // G304: the test names its own files
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split("\n"+string(data), "\n---\n") {
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if len(u.Object) == 0 {
				continue // comments only
			}
			gvk := u.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				mapper.Reset() // a CRD created just before
				if m, err = mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
					t.Fatalf("%s: %s %s: %v", f, gvk, u.GetName(), err)
				}
			}
			res := dyn.Resource(m.Resource)
			var ri dynamic.ResourceInterface = res
			if m.Scope.Name() == "namespace" {
				ri = res.Namespace(u.GetNamespace())
			}
			if _, err := ri.Create(ctx, u, metav1.CreateOptions{}); err != nil {
				t.Fatalf("%s: create %s %s/%s: %v", f, gvk.Kind, u.GetNamespace(), u.GetName(), err)
			}
		}
	}
}
