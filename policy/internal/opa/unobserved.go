package opa

import (
	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/meshward/meshward/policy/internal/schema"
)

// matchSchemaOKName is the builtin a partially evaluated rule calls
// instead of json.match_schema when it never reads the error list:
// `[ok, _] := json.match_schema(doc, schema)`, as opa-envoy-plugin
// policies usually write it. It answers like json.match_schema except
// that for a document schema.Quick finds certainly invalid it answers
// [false, []] without asking gojsonschema for the errors nobody reads.
// It exists only in the rules meshward generates at load.
const matchSchemaOKName = "meshward.internal.json_match_schema_ok"

var matchSchemaFastRef = ast.MustParseRef(matchSchemaFastName)

var matchSchemaOKDecl = &rego.Function{
	Name: matchSchemaOKName,
	Decl: types.NewFunction(
		types.Args(types.A, types.A),
		types.NewArray([]types.Type{types.B, types.NewArray(nil, types.A)}, nil),
	),
}

// matchSchemaOK implements matchSchemaOKName.
func matchSchemaOK(bctx rego.BuiltinContext, doc, sch *ast.Term) (*ast.Term, error) {
	switch quickVerdict(doc.Value, sch.Value) {
	case schema.Valid:
		return resultWithoutErrors(true), nil
	case schema.Invalid:
		return resultWithoutErrors(false), nil
	}
	return callOPAMatchSchema(bctx, doc, sch)
}

// useMatchSchemaOK rewrites, in rule r, each json.match_schema call whose
// error list is bound to a variable used nowhere else in the rule, to
// matchSchemaOKName. It reports whether it rewrote any.
func useMatchSchemaOK(r *ast.Rule) bool {
	counts := map[ast.Var]int{}
	ast.WalkVars(r, func(v ast.Var) bool {
		counts[v]++
		return false
	})
	rewrote := false
	for _, e := range r.Body {
		call, errs := matchSchemaCall(e)
		if call == nil {
			continue
		}
		if v, ok := errs.Value.(ast.Var); !ok || counts[v] != 1 {
			continue
		}
		call[0] = ast.NewTerm(ast.MustParseRef(matchSchemaOKName))
		rewrote = true
	}
	return rewrote
}

// matchSchemaCall finds `[ok, errs] = json.match_schema(d, s)` (either
// side) or `json.match_schema(d, s, [ok, errs])` in e, returning the
// call's terms and the errs term.
func matchSchemaCall(e *ast.Expr) ([]*ast.Term, *ast.Term) {
	if e.Negated || len(e.With) > 0 {
		return nil, nil
	}
	isMatch := func(ts []*ast.Term) bool {
		return len(ts) > 0 && (ts[0].Value.Compare(ast.JSONMatchSchema.Ref()) == 0 ||
			ts[0].Value.Compare(matchSchemaFastRef) == 0)
	}
	pair := func(t *ast.Term) *ast.Term {
		if a, ok := t.Value.(*ast.Array); ok && a.Len() == 2 {
			return a.Elem(1)
		}
		return nil
	}
	ts, ok := e.Terms.([]*ast.Term)
	if !ok {
		return nil, nil
	}
	switch {
	case isMatch(ts) && len(ts) == 4: // call with its output
		if errs := pair(ts[3]); errs != nil {
			return ts, errs
		}
	case e.IsEquality() && len(ts) == 3:
		for _, i := range []int{1, 2} {
			call, ok := ts[i].Value.(ast.Call)
			if ok && isMatch(call) && len(call) == 3 {
				if errs := pair(ts[3-i]); errs != nil {
					return call, errs
				}
			}
		}
	}
	return nil, nil
}
