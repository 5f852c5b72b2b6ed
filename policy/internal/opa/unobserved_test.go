package opa

import (
	"context"
	"strings"
	"testing"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

func TestUseMatchSchemaOK(t *testing.T) {
	for _, tc := range []struct {
		name, rule string
		rewrite    bool
	}{
		{"errors unused", `allow if { [ok, e] = json.match_schema(input.b, {}); ok }`, true},
		{"call on the left", `allow if { json.match_schema(input.b, {}) = [ok, e]; ok }`, true},
		{"call form with output", `allow if { json.match_schema(input.b, {}, [ok, e]); ok }`, true},
		{"errors read in the body", `allow if { [ok, e] = json.match_schema(input.b, {}); count(e) = 0 }`, false},
		{"errors in the head", `errs := e if { [ok, e] = json.match_schema(input.b, {}) }`, false},
		{"whole result kept", `allow if { r = json.match_schema(input.b, {}); r[0] }`, false},
		{"negated", `allow if { not json.match_schema(input.b, {}, [true, e]) }`, false},
		{"with", `allow if { [ok, e] = json.match_schema(input.b, {}) with input.x as 1; ok }`, false},
		{"other builtin", `allow if { [ok, e] = json.verify_schema({}); ok }`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := ast.MustParseModuleWithOpts("package p\n"+tc.rule, ast.ParserOptions{RegoVersion: ast.RegoV1})
			r := m.Rules[0]
			if got := useMatchSchemaOK(r); got != tc.rewrite {
				t.Fatalf("rewrote = %v, want %v", got, tc.rewrite)
			}
			if got := strings.Contains(r.String(), matchSchemaOKName); got != tc.rewrite {
				t.Fatalf("rule after: %v", r)
			}
		})
	}
}

// TestMatchSchemaOK: the rewritten call answers like json.match_schema,
// but with no error list for a certainly invalid document.
func TestMatchSchemaOK(t *testing.T) {
	schema := ast.NewTerm(refloadSchema(t))
	valid := `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`
	bctx := rego.BuiltinContext{Context: context.Background()}
	for _, tc := range []struct {
		name, doc string
		want      string // the result, "" for OPA's own
	}{
		{"valid", valid, `[true, []]`},
		{"certainly invalid", strings.Replace(valid, `"priority":3`, `"priority":12`, 1), `[false, []]`},
		{"missing property", `{"type":"task.request"}`, `[false, []]`},
		{"unsure", strings.Replace(valid, `"priority":3`, `"priority":3.5`, 1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := ast.NewTerm(mustValue(t, tc.doc))
			got, err := matchSchemaOK(bctx, doc, schema)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				want, _ := callMatch(t, opaMatchSchema, doc.Value, schema.Value)
				if !sameMatch(want, "", got, "") {
					t.Fatalf("got %v, OPA %v", got, want)
				}
				return
			}
			if !got.Equal(ast.MustParseTerm(tc.want)) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			// OPA agrees on validity.
			want, _ := callMatch(t, opaMatchSchema, doc.Value, schema.Value)
			if !want.Value.(*ast.Array).Elem(0).Equal(got.Value.(*ast.Array).Elem(0)) {
				t.Fatalf("got %v, OPA %v", got, want)
			}
		})
	}
}

// TestMatchSchemaOKLargeIntegers: gojsonschema compares const and enum
// values as floats, so past 2^53 distinct integers are equal to it; the
// fast path must then not call a document invalid.
func TestMatchSchemaOKLargeIntegers(t *testing.T) {
	bctx := rego.BuiltinContext{Context: context.Background()}
	schema := ast.NewTerm(mustValue(t, `{"properties":{"n":{"const":9007199254740992}, "e":{"enum":[1, 9007199254740992]}}}`))
	for _, doc := range []string{`{"n":9007199254740993}`, `{"e":9007199254740993}`, `{"n":-9007199254740993}`} {
		d := ast.NewTerm(mustValue(t, doc))
		want, wantErr := callMatch(t, opaMatchSchema, d.Value, schema.Value)
		got, err := matchSchemaOK(bctx, d, schema)
		if err != nil || wantErr != "" {
			t.Fatalf("%s: %v / %s", doc, err, wantErr)
		}
		if !want.Value.(*ast.Array).Elem(0).Equal(got.Value.(*ast.Array).Elem(0)) {
			t.Errorf("%s: meshward %v, OPA %v", doc, got, want)
		}
	}
	if quickSchemas.get(mustValue(t, `{"const":9007199254740993}`).(ast.Object)) != nil {
		t.Error("a const past 2^53 has a fast path")
	}
}
