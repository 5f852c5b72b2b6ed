package opa

import (
	"encoding/json"

	ast "github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshward/meshward/policy/internal/schema"
)

// A residual decision is the partially evaluated policy (see
// preparePartial) compiled to plain Go, for policies whose residual rules
// are simple enough. opa-envoy-plugin-style policies usually are: once
// data look-ups are done at load, what is left of the reference policy is
// five rules, each a few comparisons of input values with constants and
// one schema check, which OPA's evaluator spends some 15 µs and a hundred
// allocations on and Go a fraction of a microsecond.
//
// The subset compiled is small, and everything outside it leaves the
// decision to OPA:
//
//   - the decision is one name of complete rules (and its default) whose
//     values are constants; no else, functions, partial sets or objects;
//   - each body expression is one of: a comparison (=, ==, !=) of an
//     input reference with constant keys and a constant scalar; such an
//     input reference alone (true unless undefined or false);
//     `[ok, _] = meshward.internal.json_match_schema_ok(<input reference>,
//     <constant schema>)` with two distinct fresh variables, the second
//     read nowhere else; and ok alone after it;
//   - no negation, `with`, data references or other builtins.
//
// Evaluation reads the input document's plain Go values (see
// buildNativeInput) exactly as OPA's lazy object would present them. When
// a request steps outside what it can answer with certainty (a value of a
// type it does not know, a document schema.Quick is unsure of, two rules
// giving different values), it reports unsure, and OPA evaluates that
// request: the decision is always OPA's.
type residual struct {
	rules []residualRule
	// def is the default rule's value (nil: no default).
	def ast.Value
	// oneValue: every rule has the same value, so the first rule that
	// holds decides (no conflict is possible).
	oneValue bool
}

type residualRule struct {
	value ast.Value
	conds []residualCond
}

// residualCond is one body expression.
type residualCond struct {
	op  condOp
	ref []*ast.Term // input reference, without `input`
	// val is the constant compared with (condEqual, condNotEqual).
	val ast.Value
	// quick is the schema's fast path (condSchema; nil: not eligible,
	// always unsure); slot is where ok goes (condSchema) or is read from
	// (condTrue).
	quick *schema.Quick
	slot  int
}

type condOp uint8

const (
	condEqual    condOp = iota // ref = val, ref == val
	condNotEqual               // ref != val
	condDefined                // ref (defined and not false)
	condSchema                 // [ok, _] = json_match_schema_ok(ref, schema)
	condTrue                   // ok
)

// maxResidualSlots bounds the schema checks of one rule (each binds one
// variable, kept in a fixed array during evaluation).
const maxResidualSlots = 8

// compileResidual compiles the rules of name (a ref under
// data.<partialNamespace>) in modules, or returns nil when they are
// outside the subset above.
func compileResidual(modules []*ast.Module, name ast.Ref) *residual {
	res := &residual{oneValue: true}
	var first ast.Value
	for _, m := range modules {
		for _, r := range m.Rules {
			if !m.Package.Path.Extend(r.Head.Ref()).Equal(name) || r.Else != nil || len(r.Head.Args) > 0 ||
				r.Head.Key != nil || r.Head.Value == nil || !r.Head.Value.IsGround() ||
				r.Head.RuleKind() != ast.SingleValue {
				return nil
			}
			if r.Default {
				if res.def != nil {
					return nil
				}
				res.def = r.Head.Value.Value
				continue
			}
			rr, ok := compileBody(r.Body)
			if !ok {
				return nil
			}
			rr.value = r.Head.Value.Value
			if first == nil {
				first = rr.value
			} else if !ast.ValueEqual(first, rr.value) {
				res.oneValue = false
			}
			res.rules = append(res.rules, rr)
		}
	}
	if len(res.rules) == 0 && res.def == nil {
		return nil
	}
	return res
}

func compileBody(body ast.Body) (residualRule, bool) {
	var rr residualRule
	slots := map[ast.Var]int{}
	uses := map[ast.Var]int{}
	ast.WalkVars(body, func(v ast.Var) bool {
		uses[v]++
		return false
	})
	for _, e := range body {
		if e.Negated || len(e.With) > 0 {
			return rr, false
		}
		c, ok := compileExpr(e, slots, uses)
		if !ok {
			return rr, false
		}
		rr.conds = append(rr.conds, c)
	}
	return rr, true
}

func compileExpr(e *ast.Expr, slots map[ast.Var]int, uses map[ast.Var]int) (residualCond, bool) {
	switch ts := e.Terms.(type) {
	case *ast.Term:
		if v, ok := ts.Value.(ast.Var); ok {
			slot, bound := slots[v]
			return residualCond{op: condTrue, slot: slot}, bound
		}
		ref, ok := inputRef(ts)
		return residualCond{op: condDefined, ref: ref}, ok
	case []*ast.Term:
		if len(ts) != 3 {
			return residualCond{}, false
		}
		op, ok := ts[0].Value.(ast.Ref)
		if !ok {
			return residualCond{}, false
		}
		a, b := ts[1], ts[2]
		switch {
		case op.Equal(ast.Equality.Ref()):
			if c, ok := compileSchemaCheck(a, b, slots, uses); ok {
				return c, true
			}
			if c, ok := compileSchemaCheck(b, a, slots, uses); ok {
				return c, true
			}
			return compileComparison(condEqual, a, b)
		case op.Equal(ast.Equal.Ref()):
			return compileComparison(condEqual, a, b)
		case op.Equal(ast.NotEqual.Ref()):
			return compileComparison(condNotEqual, a, b)
		}
	}
	return residualCond{}, false
}

// compileComparison compiles an input reference compared with a constant
// scalar, either way round.
func compileComparison(op condOp, a, b *ast.Term) (residualCond, bool) {
	if _, ok := a.Value.(ast.Ref); !ok {
		a, b = b, a
	}
	ref, ok := inputRef(a)
	if !ok {
		return residualCond{}, false
	}
	switch b.Value.(type) {
	case ast.String, ast.Number, ast.Boolean, ast.Null:
		return residualCond{op: op, ref: ref, val: b.Value}, true
	}
	return residualCond{}, false
}

// compileSchemaCheck compiles `[ok, errs] = json_match_schema_ok(ref,
// schema)` where pattern is [ok, errs] and call the call.
func compileSchemaCheck(pattern, call *ast.Term, slots map[ast.Var]int, uses map[ast.Var]int) (residualCond, bool) {
	c, ok := call.Value.(ast.Call)
	if !ok || len(c) != 3 || c[0].String() != matchSchemaOKName {
		return residualCond{}, false
	}
	arr, ok := pattern.Value.(*ast.Array)
	if !ok || arr.Len() != 2 {
		return residualCond{}, false
	}
	okVar, ok1 := arr.Elem(0).Value.(ast.Var)
	errVar, ok2 := arr.Elem(1).Value.(ast.Var)
	if !ok1 || !ok2 || okVar == errVar || uses[errVar] != 1 || len(slots) >= maxResidualSlots {
		return residualCond{}, false
	}
	if _, bound := slots[okVar]; bound {
		return residualCond{}, false
	}
	ref, ok := inputRef(c[1])
	sch, isObj := c[2].Value.(ast.Object)
	if !ok || !isObj || !sch.IsGround() {
		return residualCond{}, false
	}
	slot := len(slots)
	slots[okVar] = slot
	return residualCond{op: condSchema, ref: ref, quick: quickSchemas.get(sch), slot: slot}, true
}

// inputRef returns the keys of t when it is a reference into input whose
// keys are all constant strings or numbers.
func inputRef(t *ast.Term) ([]*ast.Term, bool) {
	ref, ok := t.Value.(ast.Ref)
	if !ok || len(ref) == 0 || !ref[0].Equal(ast.InputRootDocument) {
		return nil, false
	}
	for _, k := range ref[1:] {
		switch k.Value.(type) {
		case ast.String, ast.Number:
		default:
			return nil, false
		}
	}
	return ref[1:], true
}

// eval decides on the input document doc (buildNativeInput's). sure is
// false when OPA must decide; otherwise value is the decision, nil when
// undefined.
func (r *residual) eval(doc map[string]any) (value ast.Value, sure bool) {
	for i := range r.rules {
		holds, sure := r.rules[i].holds(doc)
		if !sure {
			return nil, false
		}
		if !holds {
			continue
		}
		if r.oneValue {
			return r.rules[i].value, true
		}
		if value != nil && !ast.ValueEqual(value, r.rules[i].value) {
			return nil, false // a conflict: OPA reports it
		}
		value = r.rules[i].value
	}
	if value == nil {
		value = r.def
	}
	return value, true
}

func (rr *residualRule) holds(doc map[string]any) (holds, sure bool) {
	var slots [maxResidualSlots]bool
	for i := range rr.conds {
		c := &rr.conds[i]
		if c.op == condTrue {
			if !slots[c.slot] {
				return false, true
			}
			continue
		}
		v, defined, sure := lookup(doc, c.ref)
		if !sure {
			return false, false
		}
		if !defined {
			return false, true
		}
		switch c.op {
		case condEqual, condNotEqual:
			eq, ok := scalarEqual(c.val, v)
			if !ok {
				return false, false
			}
			if eq != (c.op == condEqual) {
				return false, true
			}
		case condDefined:
			if b, ok := v.(bool); ok && !b {
				return false, true
			}
		case condSchema:
			if c.quick == nil {
				return false, false
			}
			switch v.(type) {
			case map[string]any, []any:
			default:
				return false, false // not a document Quick reads like OPA does
			}
			switch c.quick.Verdict(v) {
			case schema.Valid:
				slots[c.slot] = true
			case schema.Invalid:
				slots[c.slot] = false
			default:
				return false, false
			}
		}
	}
	return true, true
}

// lookup follows keys in doc the way OPA reads a lazy object: object
// members by string, array elements by integer; anything else is
// undefined. sure is false at a value of a type the input document does
// not hold.
func lookup(doc any, keys []*ast.Term) (v any, defined, sure bool) {
	v = doc
	for _, k := range keys {
		switch x := v.(type) {
		case map[string]any:
			s, ok := k.Value.(ast.String)
			if !ok {
				return nil, false, true
			}
			if v, ok = x[string(s)]; !ok {
				return nil, false, true
			}
		case []any:
			n, ok := k.Value.(ast.Number)
			if !ok {
				return nil, false, true
			}
			i, ok := n.Int()
			if !ok || i < 0 || i >= len(x) {
				return nil, false, true
			}
			v = x[i]
		case string, json.Number, bool, nil:
			return nil, false, true
		default:
			return nil, false, false
		}
	}
	return v, true, true
}

// scalarEqual reports whether the constant scalar c equals v, as
// ast.ValueEqual does on v converted by OPA's lazy object (by which OPA
// unifies and compares scalars): same type and value, numbers compared
// numerically; a composite value equals no scalar. ok is false for a type
// the input document does not hold.
func scalarEqual(c ast.Value, v any) (eq, ok bool) {
	switch x := v.(type) {
	case string:
		s, isStr := c.(ast.String)
		return isStr && string(s) == x, true
	case json.Number:
		n, isNum := c.(ast.Number)
		return isNum && ast.NumberCompare(n, ast.Number(x)) == 0, true
	case bool:
		b, isBool := c.(ast.Boolean)
		return isBool && bool(b) == x, true
	case nil:
		_, isNull := c.(ast.Null)
		return isNull, true
	case map[string]any, []any:
		return false, true
	}
	return false, false
}
