package opa

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/meshward/meshward/policy/internal/body"
	schemapkg "github.com/meshward/meshward/policy/internal/schema"
)

// matchSchema is the served matchSchemaFast as a topdown builtin, so that
// tests call it and OPA's implementation the same way.
func matchSchema(bctx topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
	out, err := matchSchemaFast(bctx, operands[0], operands[1])
	if err != nil {
		return err
	}
	return iter(out)
}

// callMatch runs a json.match_schema implementation on doc and schema and
// returns its result, or the error as a string.
func callMatch(t testing.TB, f topdown.BuiltinFunc, doc, schema ast.Value) (*ast.Term, string) {
	t.Helper()
	var out *ast.Term
	bctx := topdown.BuiltinContext{Context: context.Background()}
	err := f(bctx, []*ast.Term{ast.NewTerm(doc), ast.NewTerm(schema)}, func(r *ast.Term) error {
		out = r
		return nil
	})
	if err != nil {
		return nil, err.Error()
	}
	return out, ""
}

// sameMatch compares two json.match_schema outcomes: the same error, or
// the same validity and the same errors in any order (gojsonschema lists
// them in map order, which varies from call to call).
func sameMatch(want *ast.Term, wantErr string, got *ast.Term, gotErr string) bool {
	if wantErr != "" || gotErr != "" {
		return wantErr == gotErr
	}
	wa, ok1 := want.Value.(*ast.Array)
	ga, ok2 := got.Value.(*ast.Array)
	if !ok1 || !ok2 || wa.Len() != 2 || ga.Len() != 2 || !wa.Elem(0).Equal(ga.Elem(0)) {
		return false
	}
	we, ok1 := wa.Elem(1).Value.(*ast.Array)
	ge, ok2 := ga.Elem(1).Value.(*ast.Array)
	if !ok1 || !ok2 || we.Len() != ge.Len() {
		return false
	}
	ws, gs := ast.NewSet(), ast.NewSet()
	we.Foreach(func(x *ast.Term) { ws.Add(x) })
	ge.Foreach(func(x *ast.Term) { gs.Add(x) })
	return ws.Compare(gs) == 0
}

// docValues are the forms a document reaches the builtin in: an eager
// AST value, and for an object the lazily converted object meshward's
// input holds. None when OPA cannot hold the document.
func docValues(t testing.TB, doc any) []ast.Value {
	t.Helper()
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil // OPA cannot hold it (e.g. 1E70000: number too big)
	}
	vs := []ast.Value{v}
	if m, ok := doc.(map[string]any); ok {
		vs = append(vs, ast.LazyObject(m))
	}
	return vs
}

// refloadSchema is data.schemas["task.request"] of the reference workload.
func refloadSchema(t testing.TB) ast.Value {
	t.Helper()
	raw, err := os.ReadFile("testdata/refload/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Schemas map[string]json.RawMessage `json:"schemas"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	return mustValue(t, string(data.Schemas["task.request"]))
}

func mustValue(t testing.TB, s string) ast.Value {
	t.Helper()
	doc, err := body.Decode([]byte(s), body.Limits{})
	if err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMatchSchemaAgreesWithOPA: on every schema of the JSON-Schema-Test-
// Suite (with $schema dropped, so that OPA's gojsonschema reads them in
// its default mode) and every test document, meshward's json.match_schema
// answers exactly what OPA's does: the same result, or an error both
// times. The fast path must actually be taken on a good share of them.
func TestMatchSchemaAgreesWithOPA(t *testing.T) {
	if opaMatchSchema == nil {
		t.Fatal("OPA has no json.match_schema")
	}
	if got := topdown.GetBuiltin(ast.JSONMatchSchema.Name); got == nil {
		t.Fatal("json.match_schema is not registered")
	}
	dir := "../schema/testdata/json-schema-test-suite/tests/draft2020-12"
	files, err := filepath.Glob(dir + "/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no suite files in %s: %v", dir, err)
	}
	var calls, fast, invalid int
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var groups []struct {
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Tests       []struct {
				Description string          `json:"description"`
				Data        json.RawMessage `json:"data"`
			} `json:"tests"`
		}
		if err := json.Unmarshal(raw, &groups); err != nil {
			t.Fatal(err)
		}
		for _, g := range groups {
			sdoc, err := body.Decode(g.Schema, body.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if m, ok := sdoc.(map[string]any); ok {
				delete(m, "$schema")
			}
			schema, err := ast.InterfaceToValue(sdoc)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range g.Tests {
				doc, err := body.Decode(tc.Data, body.Limits{})
				if err != nil {
					continue
				}
				for _, d := range docValues(t, doc) {
					calls++
					if quickMatch(d, schema) {
						fast++
					}
					want, wantErr := callMatch(t, opaMatchSchema, d, schema)
					got, gotErr := callMatch(t, matchSchema, d, schema)
					if quickVerdict(d, schema) == schemapkg.Invalid {
						invalid++
						if wantErr != "" || !want.Value.(*ast.Array).Elem(0).Equal(ast.InternedTerm(false)) {
							t.Errorf("%s %q / %q (%T): certainly invalid, OPA says %v %s", filepath.Base(file), g.Description, tc.Description, d, want, wantErr)
						}
					}
					if !sameMatch(want, wantErr, got, gotErr) {
						t.Errorf("%s %q / %q (%T): meshward %v %s, OPA %v %s", filepath.Base(file), g.Description, tc.Description, d, got, gotErr, want, wantErr)
					}
				}
			}
		}
	}
	t.Logf("%d calls, %d answered by the fast path, %d found certainly invalid", calls, fast, invalid)
	if fast < 50 || invalid < 50 {
		t.Errorf("only %d (valid) and %d (invalid) of %d calls had a certain verdict", fast, invalid, calls)
	}
}

func TestMatchSchemaFastPath(t *testing.T) {
	schema := refloadSchema(t)
	valid := `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`
	for _, tc := range []struct {
		name   string
		doc    ast.Value
		schema ast.Value
		fast   bool
	}{
		{"valid eager document", mustValue(t, valid), schema, true},
		{"valid lazy document", docValues(t, mustDecodeAny(t, valid))[1], schema, true},
		{"invalid document", mustValue(t, strings.Replace(valid, `"priority":3`, `"priority":12`, 1)), schema, false},
		{"fractional integer", mustValue(t, strings.Replace(valid, `"priority":3`, `"priority":3.0`, 1)), schema, false},
		{"document as JSON text", ast.String(valid), schema, false},
		{"schema as JSON text", mustValue(t, valid), ast.String(`{}`), false},
		{"ineligible schema", mustValue(t, valid), mustValue(t, `{"anyOf":[{}]}`), false},
		{"set document", ast.NewSet(ast.StringTerm("a")), mustValue(t, `{}`), false},
		{"invalid UTF-8 key", ast.NewObject([2]*ast.Term{ast.StringTerm("\xff"), ast.IntNumberTerm(1)}), mustValue(t, `{}`), false},
		{"non-JSON number", ast.NewObject([2]*ast.Term{ast.StringTerm("a"), ast.NumberTerm("0x10")}), mustValue(t, `{}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quickMatch(tc.doc, tc.schema); got != tc.fast {
				t.Errorf("fast path taken = %v, want %v", got, tc.fast)
			}
			want, wantErr := callMatch(t, opaMatchSchema, tc.doc, tc.schema)
			got, gotErr := callMatch(t, matchSchema, tc.doc, tc.schema)
			if !sameMatch(want, wantErr, got, gotErr) {
				t.Errorf("meshward %v %q, OPA %v %q", got, gotErr, want, wantErr)
			}
		})
	}
}

func mustDecodeAny(t testing.TB, s string) any {
	t.Helper()
	v, err := body.Decode([]byte(s), body.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestQuickSchemaCacheBounded: schemas built on the fly do not grow the
// cache without bound.
func TestQuickSchemaCacheBounded(t *testing.T) {
	for i := range 3 * maxQuickSchemas {
		s := ast.NewObject([2]*ast.Term{ast.StringTerm("maxLength"), ast.IntNumberTerm(i)})
		if quickSchemas.get(s) == nil {
			t.Fatalf("schema %v has no fast path", s)
		}
	}
	quickSchemas.mu.RLock()
	n := quickSchemas.n
	quickSchemas.mu.RUnlock()
	if n > maxQuickSchemas {
		t.Errorf("cache holds %d schemas, limit %d", n, maxQuickSchemas)
	}
}

// FuzzMatchSchema: whatever the document, meshward's json.match_schema
// answers what OPA's does.
func FuzzMatchSchema(f *testing.F) {
	schemas := []ast.Value{
		refloadSchema(f),
		mustValue(f, `{"type":["object","array","integer"],"properties":{"s":{"type":"string","minLength":1,"maxLength":4,"pattern":"^[a-z]*$"},
			"n":{"type":"integer","minimum":-5,"exclusiveMaximum":100,"multipleOf":5},"e":{"enum":["x",1,null,true]},"c":{"const":0},
			"o":{"type":"object","required":["k"],"additionalProperties":{"type":"boolean"},"minProperties":1,"maxProperties":3}},
			"items":{"type":["number","string"],"maximum":3},"minItems":1,"maxItems":4,"additionalProperties":{"type":"array","items":{"type":"null"}}}`),
	}
	for _, s := range schemas {
		if quickSchemas.get(s.(ast.Object)) == nil {
			f.Fatalf("schema %v has no fast path", s)
		}
	}
	for _, s := range []string{
		`{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`,
		`{"s":"ab","n":95,"e":null,"c":0,"o":{"k":true},"z":[null]}`, `[1,2.5,"abc",-1e3]`, `{"n":-0}`, `{"c":-0}`, `{"e":1.0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := body.Decode(data, body.Limits{MaxDepth: 16})
		if err != nil {
			return
		}
		for _, d := range docValues(t, doc) {
			for _, s := range schemas {
				want, wantErr := callMatch(t, opaMatchSchema, d, s)
				got, gotErr := callMatch(t, matchSchema, d, s)
				if quickVerdict(d, s) == schemapkg.Invalid && (wantErr != "" || !want.Value.(*ast.Array).Elem(0).Equal(ast.InternedTerm(false))) {
					t.Fatalf("%s: certainly invalid, OPA says %v %s", data, want, wantErr)
				}
				if !sameMatch(want, wantErr, got, gotErr) {
					t.Fatalf("%s: meshward %v %s, OPA %v %s", data, got, gotErr, want, wantErr)
				}
			}
		}
	})
}

// TestFastPathDefersToOPAsCompiler: a schema built only of keywords the
// fast path knows, but one OPA's schema compiler refuses, never gets the
// fast path's answer: OPA's error (an undefined call) decides.
func TestFastPathDefersToOPAsCompiler(t *testing.T) {
	for _, s := range []string{
		`{"type":"string","minLength":5,"maxLength":2}`,
		`{"type":"object","minProperties":3,"maxProperties":1}`,
		`{"properties":{"a":{"minLength":2,"maxLength":1}}}`,
		`{"items":{"type":"object","minProperties":2,"maxProperties":0}}`,
	} {
		sch := mustValue(t, s)
		if q := quickSchemas.get(sch.(ast.Object)); q != nil {
			t.Errorf("%s: fast path compiled a schema OPA refuses", s)
		}
		_, wantErr := callMatch(t, opaMatchSchema, mustValue(t, `{}`), sch)
		_, gotErr := callMatch(t, matchSchema, mustValue(t, `{}`), sch)
		if wantErr == "" || gotErr != wantErr {
			t.Errorf("%s: meshward error %q, OPA error %q (want both the same, non-empty)", s, gotErr, wantErr)
		}
	}
}

// TestMatchSchemaNotReplacedProcessWide: OPA's json.match_schema stays
// OPA's in this process; only an Engine's own modules call the fast path.
func TestMatchSchemaNotReplacedProcessWide(t *testing.T) {
	got := topdown.GetBuiltin(ast.JSONMatchSchema.Name)
	if got == nil || reflect.ValueOf(got).Pointer() != reflect.ValueOf(opaMatchSchema).Pointer() {
		t.Fatal("json.match_schema is not OPA's own implementation")
	}
	mods := []*ast.Module{ast.MustParseModuleWithOpts(`package p
a if { [ok, _] := json.match_schema(input, {}); ok }
b if json.match_schema(input, {}, [true, _])
c if {
	json.match_schema(input, {}, x) with json.match_schema as mock
	x[0]
}
mock(_, _) := [true, []]`, ast.ParserOptions{RegoVersion: ast.RegoV1})}
	if useFastMatchSchema(mods) {
		t.Error("rewrote modules that mock json.match_schema with `with`")
	}
	mods = []*ast.Module{ast.MustParseModuleWithOpts(`package p
a if { [ok, _] := json.match_schema(input, {}); ok }
b if json.match_schema(input, {}, [true, _])`, ast.ParserOptions{RegoVersion: ast.RegoV1})}
	if !useFastMatchSchema(mods) {
		t.Fatal("nothing rewritten")
	}
	if s := mods[0].String(); strings.Contains(s, "json.match_schema(") || strings.Count(s, matchSchemaFastName) != 2 {
		t.Errorf("rewritten module:\n%s", s)
	}
}

// FuzzMatchSchemaSchemas fuzzes the schema as well as the document:
// whatever keywords, values and combinations a schema holds (bounds that
// cross, duplicate enum values, odd types), meshward's json.match_schema
// answers what OPA's does, and the fast path never answers for a schema
// OPA's compiler refuses.
func FuzzMatchSchemaSchemas(f *testing.F) {
	for _, s := range [][2]string{
		{`{"type":"string","minLength":5,"maxLength":2}`, `"abc"`},
		{`{"type":"object","minProperties":3,"maxProperties":1}`, `{}`},
		{`{"properties":{"a":{"enum":[1,1]}}}`, `{"a":1}`},
		{`{"required":["a","a"]}`, `{"a":1}`},
		{`{"type":["string","string"]}`, `"x"`},
		{`{"minItems":3,"maxItems":1}`, `[1,2]`},
		{`{"multipleOf":0}`, `4`},
		{`{"pattern":"(("}`, `{"a":"b"}`},
		{`{"$schema":"http://json-schema.org/draft-04/schema#","exclusiveMaximum":true,"maximum":3}`, `[]`},
		{`{"items":{"type":"integer","minimum":1.5}}`, `[2]`},
		{`{"additionalProperties":{"maxLength":-1}}`, `{"k":"v"}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, schemaText, docText []byte) {
		sdoc, err := body.Decode(schemaText, body.Limits{MaxDepth: 12})
		if err != nil {
			return
		}
		sch, err := ast.InterfaceToValue(sdoc)
		if err != nil {
			return
		}
		so, ok := sch.(ast.Object)
		if !ok {
			return
		}
		doc, err := body.Decode(docText, body.Limits{MaxDepth: 12})
		if err != nil {
			return
		}
		_, verifyErr := callMatch(t, opaMatchSchema, mustValue(t, `{}`), sch)
		if verifyErr != "" && quickSchemas.get(so) != nil {
			t.Fatalf("%s: OPA refuses the schema (%s), the fast path compiled it", schemaText, verifyErr)
		}
		for _, d := range docValues(t, doc) {
			want, wantErr := callMatch(t, opaMatchSchema, d, sch)
			got, gotErr := callMatch(t, matchSchema, d, sch)
			if !sameMatch(want, wantErr, got, gotErr) {
				t.Fatalf("schema %s doc %s: meshward %v %s, OPA %v %s", schemaText, docText, got, gotErr, want, wantErr)
			}
			okGot, okErr := matchSchemaOK(topdown.BuiltinContext{Context: context.Background()}, ast.NewTerm(d), ast.NewTerm(sch))
			if wantErr != "" {
				if okErr == nil {
					t.Fatalf("schema %s doc %s: OPA errs (%s), the unread-errors path answers %v", schemaText, docText, wantErr, okGot)
				}
				continue
			}
			if okErr != nil || !okGot.Value.(*ast.Array).Elem(0).Equal(want.Value.(*ast.Array).Elem(0)) {
				t.Fatalf("schema %s doc %s: unread-errors path %v %v, OPA %v", schemaText, docText, okGot, okErr, want)
			}
		}
	})
}
