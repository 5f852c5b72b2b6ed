package opa

import (
	"sync"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/meshward/meshward/policy/schema"
)

// json.match_schema is the most expensive builtin opa-envoy-plugin
// policies call on every request: OPA's implementation converts the
// document to JSON, back to Go values and into gojsonschema's own model
// before it validates, even when the compiled schema is cached (three
// quarters of the reference policy's evaluation time).
//
// meshward keeps OPA's implementation and puts a fast path in front of
// it: for a schema that uses only a common keyword subset (see
// schema.Quick, profile ProfileOPA), a document that schema.Quick finds
// certainly valid gets [true, []] straight away, which is what OPA's
// implementation answers for it. Every other call, and every document
// that is not certainly valid, goes to OPA's implementation, so errors,
// their wording and every edge case stay OPA's. Tests compare the two on
// the JSON-Schema-Test-Suite and by fuzzing.
//
// OPA's builtins are registered process-wide, so this applies to every
// OPA evaluation in the process; it changes no result.
var opaMatchSchema = topdown.GetBuiltin(ast.JSONMatchSchema.Name)

func init() {
	if opaMatchSchema != nil {
		topdown.RegisterBuiltinFunc(ast.JSONMatchSchema.Name, matchSchema)
	}
}

// matchSchema is json.match_schema with the fast path.
func matchSchema(bctx topdown.BuiltinContext, operands []*ast.Term, iter func(*ast.Term) error) error {
	if len(operands) >= 2 && quickMatch(operands[0].Value, operands[1].Value) {
		return iter(resultWithoutErrors(true))
	}
	return opaMatchSchema(bctx, operands, iter)
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxQuickSchemas {
		c.m, c.n = map[int][]quickEntry{}, 0
	}
	c.m[h] = append(c.m[h], quickEntry{schema: so, text: text, q: q})
	c.n++
	return q
}
