package schema

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/meshward/meshward/policy/internal/body"
)

// Violation is one way a message fails its schema.
type Violation struct {
	// Path is the JSON pointer of the offending value in the message,
	// e.g. /task/priority; "" is the whole message.
	Path string `json:"path"`
	// Keyword is the schema keyword that failed, e.g. maximum, required.
	Keyword string `json:"keyword"`
	// Message says what is wrong, e.g. "12 > 9". It quotes the message's
	// own value only when short and not in a sensitive field.
	Message string `json:"message"`
}

// CodeViolation is the error code of a deny for a body that fails its
// schema (HTTP 400).
const CodeViolation = "schema_violation"

// maxCollect bounds the violations gathered before sorting and cutting to
// MaxViolations, so a huge invalid array costs little.
const maxCollect = 1000

// Validate validates doc (as body.Decode returns it) against the named
// schema. It returns nil when doc is valid, else at most MaxViolations
// violations sorted by path. An unknown name is a violation (keyword
// "schema"), so a caller that forgets to check Has still denies.
func (s *Set) Validate(name string, doc any) []Violation {
	t := body.AcquireTape()
	defer t.Release()
	if !t.FromValue(doc, body.MaxDepthCeiling) {
		t.Reset() // no fast path for this one
	}
	return s.validate(name, t, doc, true)
}

// ValidateTape is Validate for a message decoded by body.DecodeTapeString:
// the fast path reads the tape as is, and the full validator gets the
// message as maps only if it is needed.
func (s *Set) ValidateTape(name string, t *body.Tape) []Violation {
	return s.validate(name, t, nil, false)
}

// validate validates the message t holds (or, when t is empty, doc);
// hasDoc says whether doc is the message as maps already.
func (s *Set) validate(name string, t *body.Tape, doc any, hasDoc bool) (vs []Violation) {
	defer func() {
		// The validator is a dependency: whatever it does, deny.
		if r := recover(); r != nil {
			vs = []Violation{{Keyword: "schema", Message: "validation failed"}}
		}
	}()
	sch, ok := s.schemas[name]
	if !ok {
		return []Violation{{Keyword: "schema", Message: fmt.Sprintf("no schema named %q", name)}}
	}
	if len(t.Nodes) > 0 {
		q := s.quick[name]
		switch q.VerdictTape(t) {
		case Valid:
			return nil
		case Invalid:
			// The fast path reports what the validator would, when it can.
			if out := s.quickViolations(q, t); out != nil {
				return s.finish(out)
			}
		}
	}
	if !hasDoc {
		doc = t.Value(0)
	}
	err := sch.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Violation{{Keyword: "schema", Message: "validation failed"}}
	}
	var out []Violation
	get := func(loc []string) (any, bool) { return lookup(doc, loc) }
	s.collect(ve, get, &out)
	if len(out) == 0 { // cannot happen: an invalid doc has a leaf
		out = append(out, Violation{Keyword: "schema", Message: "validation failed"})
	}
	return s.finish(out)
}

// quickViolations is the violations of the message in t as q finds them
// (see Quick.failures), nil when q cannot tell them all.
func (s *Set) quickViolations(q *Quick, t *body.Tape) []Violation {
	fs, ok := q.failures(t, maxCollect)
	if !ok {
		return nil
	}
	get := func(loc []string) (any, bool) { return scalarAt(t, loc) }
	out := make([]Violation, 0, len(fs))
	for _, f := range fs {
		out = append(out, s.violation(f, get))
	}
	return out
}

// finish sorts violations by path and keyword, drops repeats and keeps
// at most MaxViolations.
func (s *Set) finish(out []Violation) []Violation {
	slices.SortStableFunc(out, func(a, b Violation) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Keyword, b.Keyword))
	})
	out = slices.Compact(out)
	if len(out) > s.maxViolations {
		out = out[:s.maxViolations]
	}
	return slices.Clip(out)
}

// scalarAt is the value at loc in t when it is a scalar (what
// Set.short can quote), else a value short does not quote.
func scalarAt(t *body.Tape, loc []string) (any, bool) {
	i := 0
	for _, tok := range loc {
		v := &t.Nodes[i]
		found := false
		switch v.Kind {
		case body.ObjectNode:
			for j := i + 1; j < int(v.End); j = int(t.Nodes[j].End) {
				if t.Nodes[j].Key == tok {
					i, found = j, true
					break
				}
			}
		case body.ArrayNode:
			k, err := strconv.Atoi(tok)
			for j := i + 1; err == nil && j < int(v.End); j, k = int(t.Nodes[j].End), k-1 {
				if k == 0 {
					i, found = j, true
					break
				}
			}
		}
		if !found {
			return nil, false
		}
	}
	switch t.Nodes[i].Kind {
	case body.ObjectNode, body.ArrayNode:
		return struct{}{}, true
	}
	return t.Value(i), true
}

// collect appends the leaves of e: the failures that say what is wrong,
// not the groups ($ref, allOf, the root) that hold them. anyOf and oneOf
// are reported themselves: their branches' failures would mislead.
func (s *Set) collect(e *jsonschema.ValidationError, get valueAt, out *[]Violation) {
	if len(*out) >= maxCollect {
		return
	}
	switch e.ErrorKind.(type) {
	case *kind.AnyOf, *kind.OneOf:
		*out = append(*out, s.violation(e, get))
		return
	}
	if len(e.Causes) == 0 {
		*out = append(*out, s.violation(e, get))
		return
	}
	for _, c := range e.Causes {
		s.collect(c, get, out)
	}
}

// valueAt returns the message's value at an instance location.
type valueAt func(loc []string) (any, bool)

func (s *Set) violation(e *jsonschema.ValidationError, get valueAt) Violation {
	v := Violation{Path: pointer(e.InstanceLocation)}
	if kp := e.ErrorKind.KeywordPath(); len(kp) > 0 {
		v.Keyword = kp[0]
	}
	echo := !s.isSensitive(e.InstanceLocation)
	// value quotes the instance value at the violation, or "" when it
	// must not be echoed.
	value := func() string {
		if !echo {
			return ""
		}
		x, ok := get(e.InstanceLocation)
		if !ok {
			return ""
		}
		return s.short(x)
	}
	orValue := func(q string) string { return cmp.Or(q, "value") }
	name := func(k string) string { // a key of the message
		if !echo || s.isSensitiveName(k) || len(k)+2 > s.maxValueLen {
			return ""
		}
		return strconv.Quote(k)
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Type:
		v.Message = fmt.Sprintf("got %s, want %s", k.Got, strings.Join(k.Want, " or "))
	case *kind.Required:
		v.Message = "missing " + plural(len(k.Missing), "property", "properties") + " " + quoteList(k.Missing)
	case *kind.AdditionalProperties:
		var named []string
		// The validator lists them in map order; a message should not vary.
		for _, p := range slices.Sorted(slices.Values(k.Properties)) {
			if q := name(p); q != "" {
				named = append(named, q)
			}
		}
		if len(named) == len(k.Properties) && len(named) <= 5 {
			v.Message = plural(len(named), "property", "properties") + " " + strings.Join(named, ", ") + " not allowed"
		} else {
			v.Message = fmt.Sprintf("%d %s not allowed", len(k.Properties), plural(len(k.Properties), "property", "properties"))
		}
	case *kind.Maximum:
		v.Message = orValue(value()) + " > " + rat(k.Want)
	case *kind.Minimum:
		v.Message = orValue(value()) + " < " + rat(k.Want)
	case *kind.ExclusiveMaximum:
		v.Message = orValue(value()) + " >= " + rat(k.Want)
	case *kind.ExclusiveMinimum:
		v.Message = orValue(value()) + " <= " + rat(k.Want)
	case *kind.MultipleOf:
		v.Message = orValue(value()) + " is not a multiple of " + rat(k.Want)
	case *kind.MinLength:
		v.Message = fmt.Sprintf("shorter than %d characters", k.Want)
	case *kind.MaxLength:
		v.Message = fmt.Sprintf("longer than %d characters", k.Want)
	case *kind.Pattern:
		v.Message = orValue(value()) + " does not match " + schemaText(k.Want)
	case *kind.Format:
		v.Message = orValue(value()) + " is not a valid " + k.Want
	case *kind.Const:
		if w := schemaValue(k.Want); w != "" {
			v.Message = "must be " + w
		} else {
			v.Message = "does not equal the schema's const"
		}
	case *kind.Enum:
		var ws []string
		for _, w := range k.Want {
			ws = append(ws, schemaValue(w))
		}
		if all := strings.Join(ws, ", "); !slices.Contains(ws, "") && len(all) <= maxSchemaText {
			v.Message = "must be one of " + all
		} else {
			v.Message = "is not one of the allowed values"
		}
	case *kind.MinItems:
		v.Message = fmt.Sprintf("%d %s, want at least %d", k.Got, plural(k.Got, "item", "items"), k.Want)
	case *kind.MaxItems:
		v.Message = fmt.Sprintf("%d %s, want at most %d", k.Got, plural(k.Got, "item", "items"), k.Want)
	case *kind.MinProperties:
		v.Message = fmt.Sprintf("%d %s, want at least %d", k.Got, plural(k.Got, "property", "properties"), k.Want)
	case *kind.MaxProperties:
		v.Message = fmt.Sprintf("%d %s, want at most %d", k.Got, plural(k.Got, "property", "properties"), k.Want)
	case *kind.UniqueItems:
		v.Message = fmt.Sprintf("items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	case *kind.PropertyNames:
		if q := name(k.Property); q != "" {
			v.Message = "invalid property name " + q
		} else {
			v.Message = "invalid property name"
		}
	case *kind.DependentRequired:
		v.Message = fmt.Sprintf("%s %s required when %q is present", plural(len(k.Missing), "property", "properties"), quoteList(k.Missing), k.Prop)
	case *kind.Dependency:
		v.Keyword = "dependencies"
		v.Message = fmt.Sprintf("%s %s required when %q is present", plural(len(k.Missing), "property", "properties"), quoteList(k.Missing), k.Prop)
	case *kind.AdditionalItems:
		v.Message = fmt.Sprintf("%d more %s than allowed", k.Count, plural(k.Count, "item", "items"))
	case *kind.Contains:
		v.Message = "no item matches the contains schema"
	case *kind.MinContains:
		v.Message = fmt.Sprintf("%d %s match the contains schema, want at least %d", len(k.Got), plural(len(k.Got), "item", "items"), k.Want)
	case *kind.MaxContains:
		v.Message = fmt.Sprintf("%d %s match the contains schema, want at most %d", len(k.Got), plural(len(k.Got), "item", "items"), k.Want)
	case *kind.AnyOf:
		v.Message = "matches none of the alternatives"
	case *kind.OneOf:
		if len(k.Subschemas) == 2 {
			v.Message = fmt.Sprintf("matches alternatives %d and %d, want exactly one", k.Subschemas[0], k.Subschemas[1])
		} else {
			v.Message = "matches none of the alternatives"
		}
	case *kind.Not:
		v.Keyword = "not"
		v.Message = "matches the schema under not"
	case *kind.FalseSchema:
		// The false schema's place names the keyword that forbids the
		// value, e.g. unevaluatedProperties, or a property's own `false`.
		v.Keyword = "false"
		v.Message = "not allowed"
		_, frag, _ := strings.Cut(e.SchemaURL, "#")
		toks := strings.Split(frag, "/")
		if kw := toks[len(toks)-1]; kw == "unevaluatedProperties" || kw == "additionalProperties" ||
			kw == "unevaluatedItems" || kw == "items" {
			v.Keyword = kw
			if strings.HasSuffix(kw, "Properties") {
				v.Message = "property not allowed"
			} else {
				v.Message = "item not allowed"
			}
		}
	case *kind.RefCycle:
		v.Keyword = "$ref"
		v.Message = "reference cycle"
	case *kind.InvalidJsonValue:
		v.Keyword = "type"
		v.Message = fmt.Sprintf("a %T is not a JSON value", k.Value)
	default:
		v.Message = cmp.Or(v.Keyword, "schema") + " failed"
	}
	if v.Keyword == "" {
		v.Keyword = "schema"
	}
	return v
}

// short quotes an instance value when it is a scalar whose text fits
// maxValueLen; else "".
func (s *Set) short(x any) string {
	var q string
	switch x := x.(type) {
	case json.Number:
		q = string(x)
	case string:
		q = strconv.Quote(x)
	case bool:
		q = strconv.FormatBool(x)
	case nil:
		q = "null"
	case float64:
		q = strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		q = strconv.Itoa(x)
	case int64:
		q = strconv.FormatInt(x, 10)
	default:
		return ""
	}
	if len(q) > s.maxValueLen {
		return ""
	}
	return q
}

// maxSchemaText bounds text quoted from the schema itself (a const, an
// enum, a pattern).
const maxSchemaText = 80

func schemaText(s string) string {
	if len(s) > maxSchemaText {
		return "the pattern"
	}
	return s
}

func schemaValue(x any) string {
	b, err := json.Marshal(x)
	if err != nil || len(b) > maxSchemaText {
		return ""
	}
	return string(b)
}

func rat(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// lookup finds the value at tokens in doc.
func lookup(doc any, tokens []string) (any, bool) {
	for _, t := range tokens {
		switch d := doc.(type) {
		case map[string]any:
			v, ok := d[t]
			if !ok {
				return nil, false
			}
			doc = v
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(d) {
				return nil, false
			}
			doc = d[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// sensitiveField is one Options.Sensitive entry: a pointer (tokens) or a
// field name.
type sensitiveField struct {
	tokens []string // nil for a field name
	name   string
}

func parseSensitive(s string) sensitiveField {
	if !strings.HasPrefix(s, "/") {
		return sensitiveField{name: s}
	}
	toks := strings.Split(s[1:], "/")
	for i, t := range toks {
		toks[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(t)
	}
	return sensitiveField{tokens: toks}
}

// isSensitive: the value at loc is, or is inside, a sensitive field.
func (s *Set) isSensitive(loc []string) bool {
	for _, f := range s.sensitive {
		if f.tokens != nil {
			if len(loc) >= len(f.tokens) && slices.Equal(loc[:len(f.tokens)], f.tokens) {
				return true
			}
			continue
		}
		for _, t := range loc {
			if strings.EqualFold(t, f.name) {
				return true
			}
		}
	}
	return false
}

// isSensitiveName: a key is named like a sensitive field.
func (s *Set) isSensitiveName(k string) bool {
	for _, f := range s.sensitive {
		if f.tokens == nil && strings.EqualFold(k, f.name) {
			return true
		}
	}
	return false
}
