package opa

import (
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
// `with input...`) needs the whole document. extra adds references
// relative to input (attributes.source.principal) that something else
// reads: the decision cache.
func inputNeeds(modules []*ast.Module, extra []ast.Ref) need {
	n := need{}
	all := false
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
		case *ast.Term:
			switch v := x.Value.(type) {
			case ast.Var:
				if v.Equal(ast.InputRootDocument.Value) {
					all = true // input itself, not through a reference
				}
			case ast.Ref:
				if !isInputRef(x) {
					return false
				}
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
	if all {
		return nil
	}
	for _, r := range extra {
		if n = n.add(constPrefix(r)); n == nil {
			return nil
		}
	}
	return n
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
