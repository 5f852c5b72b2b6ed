package opa

import (
	"path/filepath"
	"reflect"
	"testing"

	ast "github.com/open-policy-agent/opa/v1/ast"
)

// withoutPartialEval runs a test with the plain prepared query, so that
// the compatibility tests check both ways of preparing a decision.
func withoutPartialEval(t *testing.T, test func(*testing.T)) {
	t.Helper()
	withTuning(t, Tuning{NoPartialEval: true})
	test(t)
}

// compatibilityTests are the tests that decide on policies and inputs
// the way opa-envoy-plugin does; they are run again with each speed-up
// switched off.
var compatibilityTests = []struct {
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
}

func TestPlainQueryCompatibility(t *testing.T) {
	for _, tc := range compatibilityTests {
		t.Run(tc.name, func(t *testing.T) { withoutPartialEval(t, tc.test) })
	}
}

// TestPartialEval checks that the reference policy is served partially
// evaluated and decides exactly like the plain query on the reference
// requests, and that a policy partial evaluation cannot handle falls back
// to the plain query.
func TestPartialEval(t *testing.T) {
	partial := refloadEngine(t)
	if partial.prepared != preparedDeduped {
		t.Fatalf("reference policy prepared %q, want %q", partial.prepared, preparedDeduped)
	}
	var plain *Engine
	withoutPartialEval(t, func(t *testing.T) { plain = refloadEngine(t) })
	if plain.prepared != preparedPlain {
		t.Fatalf("plain engine prepared %q", plain.prepared)
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
		withTuning(t, Tuning{MaxPartialExprs: 1})
		e := refloadEngine(t)
		if e.prepared != preparedPlain {
			t.Fatalf("partial evaluation over the bound kept (%q)", e.prepared)
		}
		r, err := e.Eval(testContext(t), &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", "allow.json"))})
		if err != nil || !r.Allowed {
			t.Fatalf("Eval = %+v, %v", r, err)
		}
	})
}

// TestPartialResultPath: a decision partial evaluation reduces to a
// constant is served through OPA's PartialResult.
func TestPartialResultPath(t *testing.T) {
	e := engineFor(t, "allow := true")
	if e.prepared != preparedPartialResult {
		t.Fatalf("prepared %q, want %q", e.prepared, preparedPartialResult)
	}
	r, err := e.Eval(testContext(t), &Input{Check: checkRequest("GET", "/", nil, "")})
	if err != nil || !r.Allowed {
		t.Fatalf("Eval = %+v, %v", r, err)
	}
}

func TestDedupeBody(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"repeated equalities", `"GET" = input.m; x = input.p[1]; "GET" = input.m; x = input.p[1]; true`, `"GET" = input.m; x = input.p[1]; true`},
		{"different equalities kept", `"GET" = input.m; "POST" = input.m`, `"GET" = input.m; "POST" = input.m`},
		{"negations kept", `not input.a = 1; not input.a = 1`, `not input.a = 1; not input.a = 1`},
		{"with kept", `input.a = 1 with input.b as 2; input.a = 1 with input.b as 2`, `input.a = 1 with input.b as 2; input.a = 1 with input.b as 2`},
		{"calls kept", `x = count(input.a); x = count(input.a)`, `x = count(input.a); x = count(input.a)`},
		{"comprehensions kept", `x = [y | y = input.a[_]]; x = [y | y = input.a[_]]`, `x = [y | y = input.a[_]]; x = [y | y = input.a[_]]`},
		{"other expressions kept", `input.a > 1; input.a > 1`, `input.a > 1; input.a > 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := dedupeBody(ast.MustParseBody(tc.body))
			want := ast.MustParseBody(tc.want)
			if !got.Equal(want) {
				t.Fatalf("dedupeBody = %v, want %v", got, want)
			}
			for i, e := range got {
				if e.Index != i {
					t.Fatalf("expression %d has index %d", i, e.Index)
				}
			}
		})
	}
}

func TestDropContradictions(t *testing.T) {
	for _, tc := range []struct {
		name, module string
		want         int // rules left
	}{
		{"contradiction dropped", `package p
allow if { "GET" = input.m; "tasks" = input.p[1] }
allow if { "GET" = input.m; "POST" = input.m }`, 1},
		{"reversed operands", `package p
allow if { input.m = "GET" }
allow if { input.m = "GET"; "POST" = input.m }`, 1},
		{"different types", `package p
allow if { input.m = "1" }
allow if { input.m = "1"; input.m = 1 }`, 1},
		{"equal numbers kept", `package p
allow if { input.n = 1; input.n = 1.0 }`, 1},
		{"different references kept", `package p
allow if { input.a = 1; input.b = 2 }`, 1},
		{"non-input references kept", `package p
allow if { data.a = 1; data.a = 2 }
allow if { input.a = 1 }`, 2},
		{"negation kept", `package p
allow if { input.m = "GET"; not input.m = "POST" }`, 1},
		{"last rule of a name kept", `package p
allow if { input.m = "GET"; input.m = "POST" }`, 1},
		{"default kept, the dead rule beside it dropped", `package p
default allow := false
allow if { input.m = "GET"; input.m = "POST" }`, 1},
		{"functions kept", `package p
f(x) if { input.m = "GET"; input.m = "POST" }
f(x) if { x = 1 }`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ast.MustParseModuleWithOpts(tc.module, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if got := len(dropContradictions(m.Rules)); got != tc.want {
				t.Errorf("%d rules left, want %d", got, tc.want)
			}
		})
	}
}
