package policy_test

import (
	"testing"
	"testing/fstest"

	"github.com/meshward/meshward/policy"
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
