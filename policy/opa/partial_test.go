package opa

import (
	"path/filepath"
	"reflect"
	"testing"
)

// withoutPartialEval runs a test with the plain prepared query, so that
// the compatibility tests check both ways of preparing a decision.
func withoutPartialEval(t *testing.T, test func(*testing.T)) {
	t.Helper()
	partialEval = false
	t.Cleanup(func() { partialEval = true })
	test(t)
}

func TestPlainQueryCompatibility(t *testing.T) {
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"refload", TestRefload},
		{"decisions", TestDecisions},
		{"envoy responses", TestEnvoyResponses},
		{"input fields", TestInputFields},
		{"meshward input", TestMeshwardInput},
		{"header map body", TestHeaderMapBody},
		{"undefined", TestUndefinedIsError},
	} {
		t.Run(tc.name, func(t *testing.T) { withoutPartialEval(t, tc.test) })
	}
}

// TestPartialEval checks that the reference policy is served partially
// evaluated and decides exactly like the plain query on the reference
// requests, and that a policy partial evaluation cannot handle falls back
// to the plain query.
func TestPartialEval(t *testing.T) {
	partial := refloadEngine(t)
	if !partial.partial {
		t.Fatal("reference policy not partially evaluated")
	}
	var plain *Engine
	withoutPartialEval(t, func(t *testing.T) { plain = refloadEngine(t) })
	if plain.partial {
		t.Fatal("plain engine is partially evaluated")
	}
	for _, f := range []string{"allow.json", "allow_get.json", "deny_abac.json", "deny_schema.json"} {
		t.Run(f, func(t *testing.T) {
			req := loadCheck(t, filepath.Join("testdata", "refload", f))
			want, err := plain.Eval(testContext(t), &Input{Check: req})
			if err != nil {
				t.Fatal(err)
			}
			got, err := partial.Eval(testContext(t), &Input{Check: req})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("partial %+v, plain %+v", got, want)
			}
		})
	}
	t.Run("too large falls back", func(t *testing.T) {
		saved := maxPartialExprs
		maxPartialExprs = 1
		t.Cleanup(func() { maxPartialExprs = saved })
		e := refloadEngine(t)
		if e.partial {
			t.Fatal("partial evaluation over the bound kept")
		}
		r, err := e.Eval(testContext(t), &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", "allow.json"))})
		if err != nil || !r.Allowed {
			t.Fatalf("Eval = %+v, %v", r, err)
		}
	})
}
