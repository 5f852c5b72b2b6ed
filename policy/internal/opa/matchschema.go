package opa

import (
	"context"
	"sync"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/meshward/meshward/policy/internal/schema"
)

// json.match_schema is the most expensive builtin opa-envoy-plugin
// policies call on every request: OPA's implementation converts the
// document to JSON, back to Go values and into gojsonschema's own model
// before it validates, even when the compiled schema is cached (three
// quarters of the reference policy's evaluation time).
//
// meshward keeps OPA's implementation and puts a fast path in front of
// it: for a schema that uses only a common keyword subset (see
// schema.Quick, profile ProfileOPA) and that OPA's own schema compiler
// accepts, a document that schema.Quick finds certainly valid gets
// [true, []] straight away, which is what OPA's implementation answers
// for it. Every other call, and every document that is not certainly
// valid, goes to OPA's implementation, so errors, their wording and every
// edge case stay OPA's. Tests compare the two on the JSON-Schema-Test-
// Suite and by fuzzing documents and schemas.
//
// The fast path is not registered process-wide: the modules an Engine
// serves have their json.match_schema calls rewritten to
// matchSchemaFastName (see useFastMatchSchema), a function only their
// prepared queries know. Any other OPA evaluation in the process (policy
// tests, a library user's own rego.New) gets OPA's builtin unchanged.
var opaMatchSchema = topdown.GetBuiltin(ast.JSONMatchSchema.Name)

// opaVerifySchema is OPA's json.verify_schema: it compiles a schema the
// way json.match_schema does (patterns included) and says whether it is
// accepted.
var opaVerifySchema = topdown.GetBuiltin(ast.JSONSchemaVerify.Name)

// matchSchemaFastName is what the served modules call instead of
// json.match_schema.
const matchSchemaFastName = "meshward.internal.json_match_schema"

var matchSchemaFastDecl = &rego.Function{
	Name: matchSchemaFastName,
	Decl: ast.JSONMatchSchema.Decl,
}

// matchSchemaFast implements matchSchemaFastName: json.match_schema with
// the fast path.
func matchSchemaFast(bctx rego.BuiltinContext, doc, sch *ast.Term) (*ast.Term, error) {
	if quickMatch(doc.Value, sch.Value) {
		return resultWithoutErrors(true), nil
	}
	return callOPAMatchSchema(bctx, doc, sch)
}

// callOPAMatchSchema is OPA's own json.match_schema on doc and sch.
func callOPAMatchSchema(bctx rego.BuiltinContext, doc, sch *ast.Term) (*ast.Term, error) {
	var out *ast.Term
	err := opaMatchSchema(bctx, []*ast.Term{doc, sch}, func(t *ast.Term) error {
		out = t
		return nil
	})
	return out, err
}

// useFastMatchSchema rewrites, in modules, every two-argument call of
// json.match_schema (`json.match_schema(d, s)` or the output form
// `json.match_schema(d, s, out)`) to matchSchemaFastName, and reports
// whether it rewrote any. Calls of another arity keep OPA's name, so that
// the compile error names what the author wrote. Modules that replace
// json.match_schema with `with` (mocks) are left as they are.
func useFastMatchSchema(modules []*ast.Module) bool {
	target := ast.JSONMatchSchema.Ref()
	isMatch := func(t *ast.Term) bool {
		r, ok := t.Value.(ast.Ref)
		return ok && r.Equal(target)
	}
	mocked := false
	for _, m := range modules {
		ast.WalkWiths(m, func(w *ast.With) bool {
			mocked = mocked || isMatch(w.Target)
			return mocked
		})
	}
	if mocked {
		return false
	}
	fast := ast.NewTerm(ast.MustParseRef(matchSchemaFastName))
	rewrote := false
	for _, m := range modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if ts, ok := e.Terms.([]*ast.Term); ok && len(ts) == 4 && isMatch(ts[0]) {
				ts[0] = fast.Copy()
				rewrote = true
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) == 3 && isMatch(c[0]) {
				c[0] = fast.Copy()
				rewrote = true
			}
			return false
		})
	}
	return rewrote
}

// resultWithoutErrors is json.match_schema's [ok, []]: what OPA answers
// for a valid document, and the unread-errors builtin for an invalid one.
func resultWithoutErrors(ok bool) *ast.Term {
	return ast.ArrayTerm(ast.InternedTerm(ok), ast.ArrayTerm())
}

// quickMatch reports whether doc is certainly valid against sch. Like
// OPA's implementation it reads an object or array document through
// ast.JSON (free for the lazily converted input meshward builds: it hands
// back the decoded body itself).
func quickMatch(doc, sch ast.Value) bool {
	return quickVerdict(doc, sch) == schema.Valid
}

// quickVerdict is schema.Quick's verdict on doc against sch, Unsure
// unless both are of a kind OPA's implementation reads as this does.
func quickVerdict(doc, sch ast.Value) schema.Verdict {
	so, ok := sch.(ast.Object)
	if !ok {
		return schema.Unsure // a JSON text schema: OPA's implementation parses it
	}
	q := quickSchemas.get(so)
	if q == nil {
		return schema.Unsure
	}
	switch doc.(type) {
	case ast.Object, *ast.Array:
	default:
		return schema.Unsure // a string document is JSON text to OPA; others are errors
	}
	native, err := ast.JSON(doc)
	if err != nil {
		return schema.Unsure
	}
	return q.Verdict(native)
}

// quickSchemas caches the compiled fast path of each schema value (nil
// when the schema is not eligible). An entry matches the same object, or
// one that is equal and prints the same: OPA's equality holds 2.0 and 2
// equal, which gojsonschema does not (maxItems 2.0 is an error to it). It
// is emptied when full, so a policy that builds schemas on the fly cannot
// grow it without bound.
var quickSchemas = &quickCache{m: map[int][]quickEntry{}}

const maxQuickSchemas = 256

type quickCache struct {
	mu sync.RWMutex
	m  map[int][]quickEntry
	n  int
}

type quickEntry struct {
	schema ast.Object
	text   string // schema.String()
	q      *schema.Quick
}

func (c *quickCache) get(so ast.Object) *schema.Quick {
	h := so.Hash()
	text := ""
	c.mu.RLock()
	for _, e := range c.m[h] {
		if e.schema == so {
			c.mu.RUnlock()
			return e.q
		}
		if e.schema.Compare(so) == 0 {
			if text == "" {
				text = so.String()
			}
			if e.text == text {
				c.mu.RUnlock()
				return e.q
			}
		}
	}
	c.mu.RUnlock()
	if text == "" {
		text = so.String()
	}
	var q *schema.Quick
	if native, err := ast.JSON(so); err == nil {
		q = schema.CompileQuick(native, schema.ProfileOPA)
	}
	if q != nil && !opaAccepts(so) {
		q = nil // OPA refuses it (minLength > maxLength, ...): its error decides
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxQuickSchemas {
		c.m, c.n = map[int][]quickEntry{}, 0
	}
	c.m[h] = append(c.m[h], quickEntry{schema: so, text: text, q: q})
	c.n++
	return q
}

// opaAccepts reports whether OPA's json.match_schema compiles the schema
// sch: schema.Quick knows the keywords, gojsonschema also refuses some
// combinations of them (minLength > maxLength, minProperties >
// maxProperties, ...) with an error, which leaves the call undefined.
// Asking OPA's own compiler, once per schema, matches every refusal it
// has, present and future.
func opaAccepts(sch ast.Object) bool {
	if opaVerifySchema == nil {
		return false
	}
	ok := false
	bctx := topdown.BuiltinContext{Context: context.Background()}
	err := opaVerifySchema(bctx, []*ast.Term{ast.NewTerm(sch)}, func(t *ast.Term) error {
		if a, isArr := t.Value.(*ast.Array); isArr && a.Len() == 2 {
			ok = a.Elem(0).Equal(ast.InternedTerm(true))
		}
		return nil
	})
	return err == nil && ok
}
