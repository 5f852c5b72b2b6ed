package schema

import (
	"regexp"
	"regexp/syntax"
)

// pattern is a compiled "pattern" keyword. Most patterns in message
// schemas are anchored runs of ASCII character classes and literals
// (`^[a-f0-9-]{36}$`, `^[a-z][a-z0-9_]*$`); those are matched by a
// single scan that gives the same answer as Go's regexp (the validator's
// engine) at a fraction of its cost. Anything else uses the regexp.
type pattern struct {
	re    *regexp.Regexp
	spans []span // nil: use re
}

// span is one element of a simple pattern: between min and max (-1:
// unbounded) bytes, each in set.
type span struct {
	set      asciiSet
	min, max int
}

// asciiSet is a set of ASCII bytes; a byte >= 0x80 is never in it.
type asciiSet [2]uint64

func (s *asciiSet) add(lo, hi rune) {
	for c := lo; c <= hi; c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

func (s *asciiSet) has(c byte) bool {
	return c < 0x80 && s[c>>6]&(1<<(c&63)) != 0
}

func (s *asciiSet) overlaps(t *asciiSet) bool {
	return s[0]&t[0] != 0 || s[1]&t[1] != 0
}

func compilePattern(expr string) (*pattern, error) {
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	return &pattern{re: re, spans: simpleSpans(expr)}, nil
}

// String is the pattern as written.
func (p *pattern) String() string { return p.re.String() }

// MatchString reports whether s holds a match of p, as regexp does.
func (p *pattern) MatchString(s string) bool {
	if p.spans == nil {
		return p.re.MatchString(s)
	}
	i := 0
	for k := range p.spans {
		sp := &p.spans[k]
		n := 0
		for i < len(s) && (sp.max < 0 || n < sp.max) && sp.set.has(s[i]) {
			i++
			n++
		}
		if n < sp.min {
			return false
		}
	}
	return i == len(s)
}

// simpleSpans returns the spans of expr when it is ^, then literals and
// ASCII classes, each optionally repeated, then $, and a greedy scan
// decides it exactly; else nil.
//
// Greedy is exact when no variable-length span can take a byte that the
// spans after it could start with: each byte a span takes greedily could
// not have been taken by any later span (disjoint sets), so every match
// gives each span exactly what the scan gives it.
func simpleSpans(expr string) []span {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil || re.Op != syntax.OpConcat || len(re.Sub) < 2 {
		return nil
	}
	subs := re.Sub
	if subs[0].Op != syntax.OpBeginText || subs[len(subs)-1].Op != syntax.OpEndText {
		return nil
	}
	var spans []span
	for _, sub := range subs[1 : len(subs)-1] {
		switch sub.Op {
		case syntax.OpLiteral:
			if sub.Flags&syntax.FoldCase != 0 {
				return nil
			}
			for _, r := range sub.Rune {
				var set asciiSet
				if r >= 0x80 {
					return nil
				}
				set.add(r, r)
				spans = append(spans, span{set: set, min: 1, max: 1})
			}
		case syntax.OpCharClass:
			set, ok := classSet(sub)
			if !ok {
				return nil
			}
			spans = append(spans, span{set: set, min: 1, max: 1})
		case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
			set, ok := classSet(sub.Sub[0])
			if !ok {
				return nil
			}
			sp := span{set: set}
			switch sub.Op {
			case syntax.OpStar:
				sp.min, sp.max = 0, -1
			case syntax.OpPlus:
				sp.min, sp.max = 1, -1
			case syntax.OpQuest:
				sp.min, sp.max = 0, 1
			default:
				sp.min, sp.max = sub.Min, sub.Max
			}
			spans = append(spans, sp)
		default:
			return nil
		}
	}
	for i := range spans {
		if spans[i].min == spans[i].max {
			continue
		}
		for j := i + 1; j < len(spans); j++ {
			if spans[i].set.overlaps(&spans[j].set) {
				return nil
			}
			if spans[j].min > 0 {
				break
			}
		}
	}
	if spans == nil {
		spans = []span{} // ^$: only the empty string
	}
	return spans
}

// classSet is the set of a one-byte literal or an ASCII-only class.
func classSet(re *syntax.Regexp) (asciiSet, bool) {
	var set asciiSet
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) != 1 || re.Flags&syntax.FoldCase != 0 || re.Rune[0] >= 0x80 {
			return set, false
		}
		set.add(re.Rune[0], re.Rune[0])
	case syntax.OpCharClass:
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i+1] >= 0x80 {
				return set, false
			}
			set.add(re.Rune[i], re.Rune[i+1])
		}
	default:
		return set, false
	}
	return set, true
}
