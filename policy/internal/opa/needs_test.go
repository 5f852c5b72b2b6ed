package opa

import (
	"os"
	"reflect"
	"testing"

	ast "github.com/open-policy-agent/opa/v1/ast"
)

// TestFullInputCompatibility runs the compatibility tests with the whole
// input document built for every Check, so that both ways decide alike.
func TestFullInputCompatibility(t *testing.T) {
	for _, tc := range compatibilityTests {
		t.Run(tc.name, func(t *testing.T) {
			withTuning(t, Tuning{FullInput: true})
			tc.test(t)
		})
	}
}

func TestInputNeeds(t *testing.T) {
	refload, err := os.ReadFile("testdata/refload/policy.rego")
	if err != nil {
		t.Fatal(err)
	}
	all := need(nil)
	for _, tc := range []struct {
		name, module string
		want         need
	}{
		{"reference policy", string(refload), need{
			"attributes":  {"source": {"principal": nil}, "request": {"http": {"method": nil}}},
			"parsed_path": nil, "parsed_body": nil,
		}},
		{"variable key needs the whole map", `package p
allow if input.attributes.request.http.headers[k] == "x"`, need{"attributes": {"request": {"http": {"headers": nil}}}}},
		{"reference inside a reference", `package p
allow if input.a[input.b.c] == 1`, need{"a": nil, "b": {"c": nil}}},
		{"reference inside data", `package p
allow if data.routes[input.m]`, need{"m": nil}},
		{"shorter path wins", `package p
allow if { input.a.b == 1; input.a == {} }`, need{"a": nil}},
		{"input as a value", `package p
allow if { x := input; x.a == 1 }`, all},
		{"input as an argument", `package p
allow if { walk(input, [p, v]); v == 1 }`, all},
		{"import of input", `package p
import input.attributes as attrs
allow if attrs.x == 1`, all},
		{"with input", `package p
allow if { f with input.a as 1 }
f if input.b == 1`, all},
		{"whole input in the head", `package p
echo := input`, all},
		{"reference in a rule head's reference", `package p
caller[input.attributes.source.principal].seen := true
allow if { input.attributes.request.http.method == "GET"; count(caller) == 0 }`, need{
			"attributes": {"source": {"principal": nil}, "request": {"http": {"method": nil}}},
		}},
		{"reference in an else chain", `package p
allow := false if input.a == 1 else := true if input.b == 2`, need{"a": nil, "b": nil}},
		{"reference in every and a template string", `package p
allow if { every x in input.xs { x > input.min } ; $"{input.t}" == "a" }`, need{"xs": nil, "min": nil, "t": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ast.MustParseModuleWithOpts(tc.module, ast.ParserOptions{RegoVersion: ast.RegoV1})
			got := inputNeeds([]*ast.Module{m})
			if (got == nil) != (tc.want == nil) || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("needs = %v, want %v", got, tc.want)
			}
		})
	}
}
