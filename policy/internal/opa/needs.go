package opa

import (
	"reflect"

	ast "github.com/open-policy-agent/opa/v1/ast"
)

// need says which parts of the input document a policy can read, so that
// only those are built for each Check (most of a CheckRequest, such as
// the destination peer or all the headers, is never read by a typical
// policy). A nil need is the whole document; otherwise each key present
// is built, its value saying which of its parts (nil: all of it).
type need map[string]need

// has reports whether key k is needed, and which of its parts.
func (n need) has(k string) (need, bool) {
	if n == nil {
		return nil, true
	}
	sub, ok := n[k]
	return sub, ok
}

// add marks path (and everything under it) as needed. It returns the
// need, which is nil (all) when path is empty.
func (n need) add(path []string) need {
	if n == nil || len(path) == 0 {
		return nil
	}
	sub, ok := n[path[0]]
	switch {
	case ok && sub == nil:
		// already all of it
	case len(path) == 1:
		n[path[0]] = nil
	default:
		if !ok {
			sub = need{}
		}
		n[path[0]] = sub.add(path[1:])
	}
	return n
}

// inputNeeds finds every reference to the input document in modules and
// returns the parts they can read: for each reference, everything under
// its longest constant prefix (input.attributes.request.http.headers[k]
// needs all the headers). Partial evaluation and inlining only make such
// references more specific, so the modules as written cover the prepared
// query too. Any other use of input (input as a whole, an import of it,
// `with input...`) needs the whole document.
//
// The walk is checked for completeness: every occurrence of the input
// variable anywhere in the modules' syntax trees (found by reflection, so
// a node kind the walk does not know, such as a rule head's reference
// before it was handled, cannot hide one) must be one the walk accounted
// for; otherwise the whole document is built.
func inputNeeds(modules []*ast.Module) need {
	n := need{}
	all := false
	seen := 0                      // occurrences of input accounted for
	walked := map[*ast.Term]bool{} // a term shared by two nodes counts once
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		if all {
			return true
		}
		switch x := x.(type) {
		case *ast.Import:
			if isInputRef(x.Path) {
				all = true
			}
			return true
		case *ast.With:
			if isInputRef(x.Target) {
				all = true
				return true
			}
		case *ast.Head:
			// OPA's visitor does not walk a rule head's reference
			// (p[input.x].y := ...): its first term is the rule name,
			// the others may read input.
			if len(x.Reference) > 1 {
				for _, t := range x.Reference[1:] {
					vis.Walk(t)
				}
			}
		case *ast.Term:
			if walked[x] {
				return true
			}
			walked[x] = true
			switch v := x.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					all = true // input itself, not through a reference
				}
			case ast.Ref:
				if !isInputRef(x) {
					return false
				}
				seen++
				if n = n.add(constPrefix(v[1:])); n == nil {
					all = true
					return true
				}
				// Terms inside the reference (input.a[input.b]) are
				// references too.
				for _, t := range v[1:] {
					vis.Walk(t)
				}
				return true
			}
		}
		return false
	})
	for _, m := range modules {
		vis.Walk(m)
	}
	if all || seen != countInputVars(modules) {
		return nil
	}
	return n
}

// countInputVars counts the occurrences of the input variable in the
// modules' syntax trees by reflection, visiting every field of every node
// (shared nodes once), except annotations and comments, which OPA does
// not evaluate.
func countInputVars(modules []*ast.Module) int {
	c := inputCounter{seen: map[uintptr]bool{}}
	for _, m := range modules {
		c.walk(reflect.ValueOf(m))
	}
	return c.n
}

var (
	varType         = reflect.TypeFor[ast.Var]()
	skippedASTTypes = map[reflect.Type]bool{
		reflect.TypeFor[*ast.Annotations](): true,
		reflect.TypeFor[*ast.Comment]():     true,
		reflect.TypeFor[*ast.Location]():    true,
	}
)

type inputCounter struct {
	seen map[uintptr]bool
	n    int
}

func (c *inputCounter) walk(v reflect.Value) {
	if !v.IsValid() || skippedASTTypes[v.Type()] {
		return
	}
	if v.Type() == varType {
		if v.String() == string(ast.InputRootDocument.Value.(ast.Var)) {
			c.n++
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Map:
		if v.IsNil() {
			return
		}
		if c.seen[v.Pointer()] {
			return
		}
		c.seen[v.Pointer()] = true
		if v.Kind() == reflect.Pointer {
			c.walk(v.Elem())
			return
		}
		it := v.MapRange()
		for it.Next() {
			c.walk(it.Key())
			c.walk(it.Value())
		}
	case reflect.Interface:
		c.walk(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			c.walk(v.Field(i))
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			c.walk(v.Index(i))
		}
	}
}

// constPrefix is the path of r's leading string keys.
func constPrefix(r ast.Ref) []string {
	var path []string
	for _, t := range r {
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		path = append(path, string(s))
	}
	return path
}

// isInputRef reports whether t is a reference rooted at input.
func isInputRef(t *ast.Term) bool {
	r, ok := t.Value.(ast.Ref)
	return ok && len(r) > 0 && r[0].Value.Compare(ast.InputRootDocument.Value) == 0
}
