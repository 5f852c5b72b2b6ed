package opa

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// TestOPAEvaluatorCompatibility runs the compatibility tests with the
// residual decisions left to OPA's evaluator, so that both ways decide
// alike.
func TestOPAEvaluatorCompatibility(t *testing.T) {
	for _, tc := range compatibilityTests {
		t.Run(tc.name, func(t *testing.T) {
			withoutResiduals(t)
			tc.test(t)
		})
	}
}

func withoutResiduals(t testing.TB) {
	withTuning(t, Tuning{NoResidualCompile: true})
}

// bothWays builds an engine with and one without the residual decision.
func bothWays(build func() *Engine) (compiled, opa *Engine) {
	compiled = build()
	saved := testTuning
	testTuning.NoResidualCompile = true
	defer func() { testTuning = saved }()
	return compiled, build()
}

// residualPolicies are decided both ways by the tests below. Each
// compiles to a residual decision (checked), and together they use every
// kind of condition, constant values of both shapes, conflicts and
// undefined decisions.
var residualPolicies = map[string]string{
	"comparisons": `
default allow := false
allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_body.n == 1
}
allow if {
	input.parsed_path[1] != "admin"
	input.parsed_body.flag
}
allow if {
	input.parsed_body.list[1] = "x"
	input.parsed_body.nothing == null
}`,
	"objects, conflicts": `
default allow := {"allowed": false, "body": "no"}
allow := {"allowed": true, "headers": {"x-a": "1"}} if input.parsed_path[0] == "a"
allow := {"allowed": false, "http_status": 418} if input.parsed_body.kind == "teapot"
allow := {"allowed": false, "http_status": 418} if input.parsed_body.kind == false`,
	"schema": `
default allow := false
allow if {
	[ok, _] := json.match_schema(input.parsed_body, {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "maximum": 5}}})
	ok
	input.attributes.source.principal == "spiffe://mesh.local/ns/default/sa/planner"
}`,
}

// residualRequests are the requests the policies are decided on.
func residualRequests() map[string]*authv3.CheckRequest {
	json := map[string]string{"content-type": "application/json"}
	reqs := map[string]*authv3.CheckRequest{
		"no body":          checkRequest("GET", "/a/b", nil, ""),
		"n 1":              checkRequest("POST", "/v1/tasks", json, `{"n":1}`),
		"n 1.0":            checkRequest("POST", "/v1/tasks", json, `{"n":1.0}`),
		"n 1e0":            checkRequest("POST", "/v1/tasks", json, `{"n":1e0}`),
		"n string":         checkRequest("POST", "/v1/tasks", json, `{"n":"1"}`),
		"n 6":              checkRequest("POST", "/v1/tasks", json, `{"n":6}`),
		"flag":             checkRequest("PUT", "/v1/x", json, `{"flag":true}`),
		"flag false":       checkRequest("PUT", "/v1/x", json, `{"flag":false}`),
		"flag object":      checkRequest("PUT", "/v1/x", json, `{"flag":{}}`),
		"admin flag":       checkRequest("PUT", "/v1/admin", json, `{"flag":1}`),
		"short path":       checkRequest("PUT", "/", json, `{"flag":true}`),
		"list":             checkRequest("GET", "/", json, `{"list":["w","x"],"nothing":null}`),
		"list, no null":    checkRequest("GET", "/", json, `{"list":["w","x"]}`),
		"list too short":   checkRequest("GET", "/", json, `{"list":["w"],"nothing":null}`),
		"path a":           checkRequest("GET", "/a", nil, ""),
		"teapot":           checkRequest("POST", "/b", json, `{"kind":"teapot"}`),
		"kind false":       checkRequest("POST", "/b", json, `{"kind":false}`),
		"conflict":         checkRequest("POST", "/a", json, `{"kind":"teapot"}`),
		"array body":       checkRequest("POST", "/a", json, `[1,2]`),
		"string body":      checkRequest("POST", "/a", json, `"n"`),
		"form body":        checkRequest("POST", "/a", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "n=1&kind=teapot"),
		"truncated":        checkRequest("POST", "/a", map[string]string{"content-type": "application/json", "content-length": "100"}, `{"n":1}`),
		"huge number":      checkRequest("POST", "/v1/tasks", json, `{"n":1e400}`),
		"unicode key path": checkRequest("GET", "/%C3%A9/admin", nil, ""),
	}
	viewer := checkRequest("POST", "/v1/tasks", json, `{"n":1}`)
	viewer.Attributes.Source.Principal = "spiffe://mesh.local/ns/default/sa/viewer"
	reqs["viewer n 1"] = viewer
	return reqs
}

// decideBothWays evaluates req on the engines with and without the
// residual decision and fails unless they give the same result or the
// same error.
func decideBothWays(t *testing.T, compiled, opa *Engine, req *authv3.CheckRequest) {
	t.Helper()
	got, gotErr := compiled.Eval(testContext(t), &Input{Check: req})
	want, wantErr := opa.Eval(testContext(t), &Input{Check: req})
	switch {
	case gotErr != nil || wantErr != nil:
		if gotErr == nil || wantErr == nil || gotErr.Error() != wantErr.Error() {
			t.Fatalf("compiled: %v, %v\nOPA: %v, %v", got, gotErr, want, wantErr)
		}
	case !resultEqual(got, want):
		t.Fatalf("compiled %+v\nOPA %+v", got, want)
	}
}

func TestResidualDecidesLikeOPA(t *testing.T) {
	for name, src := range residualPolicies {
		t.Run(name, func(t *testing.T) {
			compiled, opa := bothWays(func() *Engine { return engineFor(t, src) })
			if compiled.residual == nil {
				t.Fatal("policy not compiled to a residual decision")
			}
			if opa.residual != nil {
				t.Fatal("residual compiled while switched off")
			}
			for rname, req := range residualRequests() {
				t.Run(rname, func(t *testing.T) { decideBothWays(t, compiled, opa, req) })
			}
		})
	}
}

// TestResidualDecidesRefload checks that the reference policy is
// compiled and that the compiled decision answers each reference request
// itself (no fallback to OPA), with OPA's decision.
func TestResidualDecidesRefload(t *testing.T) {
	e, opa := bothWays(func() *Engine { return refloadEngine(t) })
	if e.residual == nil {
		t.Fatal("reference policy not compiled to a residual decision")
	}
	for _, f := range []string{"allow.json", "allow_get.json", "deny_abac.json", "deny_schema.json"} {
		t.Run(f, func(t *testing.T) {
			req := loadCheck(t, filepath.Join("testdata", "refload", f))
			doc, err := buildNativeInput(&Input{Check: req}, e.needs)
			if err != nil {
				t.Fatal(err)
			}
			if _, sure := e.residual.eval(doc); !sure {
				t.Fatal("compiled decision left the reference request to OPA")
			}
			decideBothWays(t, e, opa, req)
		})
	}
}

// TestResidualOutsideSubset checks that policies whose residual rules
// the compiler does not handle are left to OPA, and still decide alike.
func TestResidualOutsideSubset(t *testing.T) {
	for name, src := range map[string]string{
		"negation":          `allow if not input.parsed_path[0] == "admin"`,
		"other builtin":     `allow if startswith(input.attributes.request.http.path, "/a")`,
		"ordering":          `allow if input.parsed_body.n > 1`,
		"value from input":  `allow := input.parsed_path[0] if input.parsed_path[0] != ""`,
		"errors read":       "allow if {\n[ok, errs] := json.match_schema(input.parsed_body, {\"type\": \"object\"})\nok\ncount(errs) == 0\n}",
		"variable key":      `allow if input.attributes.request.http.headers[_] == "x"`,
		"composite compare": `allow if input.parsed_body.list == ["w", "x"]`,
		"no default":        "allow if input.parsed_path[0] == \"a\"\nallow if input.parsed_body.kind == \"teapot\"",
	} {
		t.Run(name, func(t *testing.T) {
			compiled, opa := bothWays(func() *Engine { return engineFor(t, src) })
			if compiled.residual != nil {
				t.Fatal("compiled a residual decision outside the subset")
			}
			for rname, req := range residualRequests() {
				t.Run(rname, func(t *testing.T) { decideBothWays(t, compiled, opa, req) })
			}
		})
	}
}

// FuzzResidual: the compiled decision and OPA's agree on any request.
func FuzzResidual(f *testing.F) {
	f.Add("POST", "/v1/tasks", "spiffe://mesh.local/ns/default/sa/planner", `{"type":"task.request","id":"0123456789abcdef0123456789abcdef0123","sender":"a","task":{"name":"x","priority":3}}`)
	f.Add("POST", "/v1/tasks", "spiffe://mesh.local/ns/default/sa/planner", `{"type":"task.request","task":{"name":"x","priority":12}}`)
	f.Add("GET", "/v1/tasks", "spiffe://mesh.local/ns/default/sa/viewer", ``)
	f.Add("POST", "/a", "", `{"kind":"teapot","n":1.0,"flag":true,"list":["w","x"],"nothing":null}`)
	f.Add("PUT", "/v1/admin/%2F", "x", `[{"n":1}]`)
	var engines [][2]*Engine // compiled, OPA
	f.Fuzz(func(t *testing.T, method, path, principal, body string) {
		if engines == nil {
			c, o := bothWays(func() *Engine { return refloadEngine(t) })
			engines = append(engines, [2]*Engine{c, o})
			for _, src := range residualPolicies {
				c, o := bothWays(func() *Engine { return engineFor(t, src) })
				engines = append(engines, [2]*Engine{c, o})
			}
		}
		if !utf8.ValidString(method + path + principal + body) {
			return // proto3 strings arriving over gRPC are valid UTF-8
		}
		req := checkRequest(method, path, map[string]string{"content-type": "application/json"}, body)
		req.Attributes.Source.Principal = principal
		for _, p := range engines {
			decideBothWays(t, p[0], p[1], req)
		}
	})
}

// TestResidualEval checks the compiled decision against OPA on residual
// rules written by hand, read over input documents with every kind of
// value: wherever the compiled decision is sure, it must equal OPA's
// (undefined included), and it must be sure where the test says so.
func TestResidualEval(t *testing.T) {
	module := ast.MustParseModule(`package __meshward_partial__.p
allow = "a" if { "x" = input.s; input.list[1] = 2 }
allow = "a" if { input.b; input.s != "x" }
allow = "n" if { input.n == 1 }
allow = "s" if { [ok, e] = meshward.internal.json_match_schema_ok(input.doc, {"type": "object", "required": ["k"]}); ok }
allow = "z" if { input.z = null }`)
	res := compileResidual([]*ast.Module{module}, ast.MustParseRef("data.__meshward_partial__.p.allow"))
	if res == nil || res.oneValue || res.def != nil || len(res.rules) != 5 {
		t.Fatalf("compiled %+v", res)
	}
	pq, err := rego.New(rego.ParsedModule(module), rego.Query("data.__meshward_partial__.p.allow"),
		rego.Function2(matchSchemaOKDecl, matchSchemaOK)).PrepareForEval(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	n := func(s string) any { return json.Number(s) }
	for _, tc := range []struct {
		name string
		doc  map[string]any
		sure bool
	}{
		{"nothing: undefined", map[string]any{}, true},
		{"equal and index", map[string]any{"s": "x", "list": []any{1, n("2")}}, true},
		{"index past the end", map[string]any{"s": "x", "list": []any{n("2")}}, true},
		{"index into an object", map[string]any{"s": "x", "list": map[string]any{"1": n("2")}}, true},
		{"number equal as 2.0", map[string]any{"s": "x", "list": []any{nil, n("2.0")}}, true},
		{"string is not a number", map[string]any{"s": "x", "list": []any{nil, "2"}}, true},
		{"ref into a string", map[string]any{"s": "x", "list": "ab"}, true},
		{"true and not equal", map[string]any{"b": true, "s": "y"}, true},
		{"null is true", map[string]any{"b": nil, "s": "y"}, true},
		{"object is true", map[string]any{"b": map[string]any{}, "s": "y"}, true},
		{"false is false", map[string]any{"b": false, "s": "y"}, true},
		{"not equal needs a value", map[string]any{"b": true}, true},
		{"composite is not equal", map[string]any{"b": true, "s": []any{"x"}}, true},
		{"number 1e0", map[string]any{"n": n("1e0")}, true},
		{"null equal", map[string]any{"z": nil}, true},
		{"missing is not null", map[string]any{"y": nil}, true},
		{"schema valid", map[string]any{"doc": map[string]any{"k": n("1")}}, true},
		{"schema invalid", map[string]any{"doc": map[string]any{"j": n("1")}}, true},
		{"schema on an array", map[string]any{"doc": []any{}}, true},
		{"schema on a string: OPA decides", map[string]any{"doc": "{}"}, false},
		{"conflict: OPA decides", map[string]any{"n": n("1"), "z": nil}, false},
		{"unknown type: OPA decides", map[string]any{"n": 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, sure := res.eval(tc.doc)
			if sure != tc.sure {
				t.Fatalf("sure %v, want %v", sure, tc.sure)
			}
			rs, err := pq.Eval(testContext(t), rego.EvalParsedInput(ast.LazyObject(tc.doc)))
			if !sure {
				return
			}
			if err != nil {
				t.Fatalf("OPA failed where the compiled decision is sure: %v", err)
			}
			var want ast.Value
			if len(rs) == 1 {
				if want, err = ast.InterfaceToValue(rs[0].Expressions[0].Value); err != nil {
					t.Fatal(err)
				}
			}
			if (got == nil) != (want == nil) || got != nil && !ast.ValueEqual(got, want) {
				t.Fatalf("compiled %v, OPA %v", got, want)
			}
		})
	}
}
