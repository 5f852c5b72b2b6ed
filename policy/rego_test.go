package policy_test

import (
	"context"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/policy/internal/opa"
)

// TestRegoContentInRevisionID: an edited policy file is a new revision
// (else a reload would keep the old policy as "unchanged").
func TestRegoContentInRevisionID(t *testing.T) {
	cfg := policy.Config{Rego: &policy.RegoConfig{Files: []string{"rego"}}}
	ids := map[string]string{}
	for name, src := range map[string]string{
		"v1": "package envoy.authz\nimport rego.v1\ndefault allow := false\n",
		"v2": "package envoy.authz\nimport rego.v1\ndefault allow := true\n",
	} {
		dir := fstest.MapFS{"rego/p.rego": {Data: []byte(src)}}
		rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir, NewRego: policy.NewOPARego})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = rev.ID()
	}
	if ids["v1"] == ids["v2"] {
		t.Errorf("both policies have revision %s", ids["v1"])
	}
}

func TestRegoCompileErrors(t *testing.T) {
	cfg := policy.Config{Rego: &policy.RegoConfig{Files: []string{"p.rego"}}}
	for name, dir := range map[string]fstest.MapFS{
		"syntax error": {"p.rego": {Data: []byte("package envoy.authz\nallow if {\n")}},
		"missing file": {},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir, NewRego: policy.NewOPARego}); err == nil {
				t.Error("compiled")
			}
		})
	}
}

// TestOPARegoEngine: a revision built around a given engine (a bundle
// poller's) decides with it; its digest is part of the revision ID; no
// engine is no revision; NewOPARego refuses a bundleURL it cannot fetch.
func TestOPARegoEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\nimport rego.v1\ndefault allow := true\n")}}
	e, err := opa.New(ctx, opa.Config{FS: dir, Files: []string{"p.rego"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := policy.Config{Rego: &policy.RegoConfig{BundleURL: "https://bundles.example/b.tar.gz"}, Mode: policy.ModeRego}
	getRoot := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/"},
	}}}
	ids := map[string]bool{}
	for _, digest := range []string{"a", "b"} {
		rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{NewRego: policy.NewOPARegoEngine(e, digest)})
		if err != nil {
			t.Fatal(err)
		}
		ids[rev.ID()] = true
		if d := rev.Decide(ctx, &policy.Input{Method: "GET", Path: "/", Principal: "spiffe://mesh.local/a", Request: getRoot}); !d.Allow {
			t.Errorf("digest %s: denied (%+v), want the engine's allow", digest, d)
		}
	}
	if len(ids) != 2 {
		t.Errorf("two bundle digests, revision IDs %v", ids)
	}
	for name, newRego := range map[string]func(*policy.Config, fs.FS) (policy.RegoEvaluator, error){
		"no engine":              policy.NewOPARegoEngine(nil, "a"),
		"NewOPARego a bundleURL": policy.NewOPARego,
	} {
		if _, err := policy.Compile(&cfg, "mesh.local", policy.Options{NewRego: newRego}); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}
