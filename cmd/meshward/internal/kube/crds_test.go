package kube_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// controllerGen is the pinned generator, as the Makefile's crds target runs it.
const controllerGen = "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"

// TestCRDsUpToDate regenerates the CRDs and the deepcopy code from the Go
// types and compares them with the committed files: run `make crds` when
// it fails.
func TestCRDsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen: skipped in -short mode")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// The deepcopy code is written beside the types: generate it in a
	// copy of the package.
	api := filepath.Join(out, "src")
	if err := os.CopyFS(api, os.DirFS(filepath.Join(root, "cmd", "meshward", "internal", "kube", "api", "v1alpha1"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(api, "zz_generated.deepcopy.go")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "run", controllerGen, "object", "paths=./src/...", //nolint:gosec // G204: fixed arguments
		"crd:crdVersions=v1", "output:crd:artifacts:config="+filepath.Join(out, "crds"))
	cmd.Dir = out
	// A throwaway module beside the main one, so that the packages load
	// with the main module's dependency versions.
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gosum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "go.mod"), gomod, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "go.sum"), gosum, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	want, _ := filepath.Glob(filepath.Join(root, "examples", "kubernetes", "crds", "*.yaml"))
	got, _ := filepath.Glob(filepath.Join(out, "crds", "*.yaml"))
	if len(got) != len(want) {
		t.Errorf("controller-gen wrote %d CRDs, %d are committed: run make crds", len(got), len(want))
	}
	pairs := map[string]string{
		filepath.Join(api, "zz_generated.deepcopy.go"): filepath.Join(root, "cmd", "meshward", "internal", "kube", "api", "v1alpha1", "zz_generated.deepcopy.go"),
	}
	for _, w := range want {
		pairs[filepath.Join(out, "crds", filepath.Base(w))] = w
	}
	for gen, committed := range pairs {
		g, err := os.ReadFile(gen)
		if err != nil {
			t.Errorf("%s: not generated: run make crds", filepath.Base(committed))
			continue
		}
		c, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g, c) {
			t.Errorf("%s is stale: run make crds", committed)
		}
	}
}
