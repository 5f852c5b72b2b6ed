package schema

import (
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/meshward/meshward/policy/internal/body"
)

// failures lists, for a message Quick found certainly invalid, every
// failure santhosh-tekuri/jsonschema reports on it, as it reports them:
// the same instance locations and error kinds (values included), which
// Set.violation then words. The subset Quick compiles has no
// alternatives, references or conditionals, so the validator's report is
// a plain walk: at each value, a failing type, const or enum is the one
// failure there (the validator stops at it); otherwise each failing
// keyword of the value's kind (object, array, string, number), then the
// members and items. ok is false when any part is not certain (a check
// Quick defers, a false subschema, whose wording depends on its place, or
// more than limit failures): the validator then reports instead.
//
// Only ProfileSet Quicks report: OPA's errors come from gojsonschema.
func (q *Quick) failures(t *body.Tape, limit int) (out []*jsonschema.ValidationError, ok bool) {
	if q == nil || q.strict || len(t.Nodes) == 0 {
		return nil, false
	}
	// Room for the usual depths, so that the location stack grows once.
	r := reporter{t: t, limit: limit, loc: make([]string, 0, 4)}
	r.node(q.root, 0, 0)
	if r.unsure || len(r.out) == 0 {
		return nil, false
	}
	return r.out, true
}

type reporter struct {
	t      *body.Tape
	loc    []string
	out    []*jsonschema.ValidationError
	limit  int
	unsure bool
}

func (r *reporter) fail(k jsonschema.ErrorKind) {
	if len(r.out) >= r.limit {
		r.unsure = true
		return
	}
	r.out = append(r.out, &jsonschema.ValidationError{
		InstanceLocation: append([]string(nil), r.loc...),
		ErrorKind:        k,
	})
}

// typeNames are the validator's names of Quick's type bits, in the
// validator's order.
var typeNames = []struct {
	bit  uint8
	name string
}{
	{tNull, "null"}, {tBool, "boolean"}, {tNumber, "number"}, {tInteger, "integer"},
	{tString, "string"}, {tArray, "array"}, {tObject, "object"},
}

func typeName(bit uint8) string {
	for _, t := range typeNames {
		if t.bit == bit {
			return t.name
		}
	}
	return ""
}

// node reports the failures of node i against n and under it. It is
// recursive, so it keeps a small frame: the failure cases are in helpers.
func (r *reporter) node(n *qnode, i, depth int) {
	if r.unsure {
		return
	}
	if depth > maxQuickDepth || n.never {
		r.unsure = true
		return
	}
	v := &r.t.Nodes[i]
	kd, text := kindOf(v)
	if kd == 0 {
		r.unsure = true
		return
	}
	if r.stopsHere(n, i, kd, text) {
		return
	}
	switch kd {
	case tObject:
		r.object(n, i, depth)
	case tArray:
		r.array(n, i, depth)
	case tString:
		r.str(n, text)
	case tNumber:
		_, isInt := plainInt(text)
		r.number(n, text, isInt)
	}
}

// stopsHere reports a failing type, const or enum at node i, the one
// failure there (true), or gives up on an unsure one (true).
func (r *reporter) stopsHere(n *qnode, i int, kd uint8, text string) bool {
	if n.types != 0 && n.types&kd == 0 {
		switch {
		case kd != tNumber || n.types&tInteger == 0:
			var want []string
			for _, t := range typeNames {
				if n.types&t.bit != 0 {
					want = append(want, t.name)
				}
			}
			r.fail(&kind.Type{Got: typeName(kd), Want: want})
			return true
		case strings.ContainsAny(text, ".eE"):
			r.unsure = true
			return true
		}
	}
	if !n.hasConst && !n.hasEnum {
		return false
	}
	_, isInt := plainInt(text)
	if n.hasConst {
		switch n.constVal.match(kd, text, isInt, false) {
		case Invalid:
			r.fail(&kind.Const{Got: r.t.Value(i), Want: n.constRaw})
			return true
		case Unsure:
			r.unsure = true
			return true
		}
	}
	if n.hasEnum {
		found := false
		for _, e := range n.enum {
			switch e.match(kd, text, isInt, false) {
			case Valid:
				found = true
			case Unsure:
				r.unsure = true
				return true
			}
		}
		if !found {
			r.fail(&kind.Enum{Got: r.t.Value(i), Want: n.enumRaw})
			return true
		}
	}
	return false
}

func (r *reporter) array(n *qnode, i, depth int) {
	v := &r.t.Nodes[i]
	if n.minItems >= 0 && int(v.Len) < n.minItems {
		r.fail(&kind.MinItems{Got: int(v.Len), Want: n.minItems})
	}
	if n.maxItems >= 0 && int(v.Len) > n.maxItems {
		r.fail(&kind.MaxItems{Got: int(v.Len), Want: n.maxItems})
	}
	if n.items != nil {
		for j, k := i+1, 0; j < int(v.End); j, k = int(r.t.Nodes[j].End), k+1 {
			r.loc = append(r.loc, strconv.Itoa(k))
			r.node(n.items, j, depth+1)
			r.loc = r.loc[:len(r.loc)-1]
		}
	}
}

func (r *reporter) str(n *qnode, text string) {
	if n.minLen >= 0 || n.maxLen >= 0 {
		l := utf8.RuneCountInString(text)
		if n.minLen >= 0 && l < n.minLen {
			r.fail(&kind.MinLength{Got: l, Want: n.minLen})
		}
		if n.maxLen >= 0 && l > n.maxLen {
			r.fail(&kind.MaxLength{Got: l, Want: n.maxLen})
		}
	}
	if n.pattern != nil && !n.pattern.MatchString(text) {
		r.fail(&kind.Pattern{Got: text, Want: n.pattern.String()})
	}
}

func (r *reporter) object(n *qnode, i, depth int) {
	v := &r.t.Nodes[i]
	if n.minProps >= 0 && int(v.Len) < n.minProps {
		r.fail(&kind.MinProperties{Got: int(v.Len), Want: n.minProps})
	}
	if n.maxProps >= 0 && int(v.Len) > n.maxProps {
		r.fail(&kind.MaxProperties{Got: int(v.Len), Want: n.maxProps})
	}
	var seen uint64 // bit r: required[r] is present
	for j := i + 1; j < int(v.End); j = int(r.t.Nodes[j].End) {
		if at, ok := n.requiredAt[r.t.Nodes[j].Key]; ok {
			seen |= 1 << at
		}
	}
	var missing []string
	for at, k := range n.required {
		if seen&(1<<at) == 0 {
			missing = append(missing, k)
		}
	}
	if missing != nil {
		r.fail(&kind.Required{Missing: missing})
	}
	var extra []string
	for j := i + 1; j < int(v.End); j = int(r.t.Nodes[j].End) {
		k := r.t.Nodes[j].Key
		sub := n.additional
		if p, found := n.props[k]; found {
			sub = p
		}
		if sub == nil {
			if n.noAdditional {
				extra = append(extra, k)
			}
			continue
		}
		r.loc = append(r.loc, k)
		r.node(sub, j, depth+1)
		r.loc = r.loc[:len(r.loc)-1]
	}
	if extra != nil {
		r.fail(&kind.AdditionalProperties{Properties: extra})
	}
}

// number reports the failing numeric bounds, each of them, as the
// validator does; only plain integers against integer bounds are
// certain.
func (r *reporter) number(n *qnode, text string, isInt bool) {
	if !n.hasMin && !n.hasMax && !n.hasExMin && !n.hasExMax && !n.hasMultipleOf && !n.numUnsure {
		return
	}
	if n.numUnsure || !isInt {
		r.unsure = true
		return
	}
	i, _ := plainInt(text)
	got := func() *big.Rat { return big.NewRat(i, 1) }
	if n.hasMin && i < n.min {
		r.fail(&kind.Minimum{Got: got(), Want: n.bounds["minimum"]})
	}
	if n.hasMax && i > n.max {
		r.fail(&kind.Maximum{Got: got(), Want: n.bounds["maximum"]})
	}
	if n.hasExMin && i <= n.exMin {
		r.fail(&kind.ExclusiveMinimum{Got: got(), Want: n.bounds["exclusiveMinimum"]})
	}
	if n.hasExMax && i >= n.exMax {
		r.fail(&kind.ExclusiveMaximum{Got: got(), Want: n.bounds["exclusiveMaximum"]})
	}
	if n.hasMultipleOf && i%n.multipleOf != 0 {
		r.fail(&kind.MultipleOf{Got: got(), Want: n.bounds["multipleOf"]})
	}
}
