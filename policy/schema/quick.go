package schema

import (
	"encoding/json"
	"regexp"
	"strconv"
	"unicode/utf8"
)

// Quick answers one question fast: "is this message certainly valid?".
// It is compiled from a schema document that uses only a common subset of
// JSON Schema (type, const, enum, properties, required,
// additionalProperties, items, the size and length bounds, pattern, and
// integer numeric bounds), and walks a decoded message without allocating.
//
// Quick never says "invalid": when it does not say "valid" the full
// validator decides and reports the violations. It says "valid" only when
// every constraint of the schema holds, checked conservatively (a number
// that is not a plain integer, a const that is not a plain scalar, ...
// makes it defer to the validator), so that Valid(v) implies the full
// validator accepts v. The JSON-Schema-Test-Suite and a fuzz target check
// that implication against santhosh-tekuri/jsonschema, and, for
// ProfileOPA, against OPA's own json.match_schema.
type Quick struct {
	root *qnode
	// strict (ProfileOPA) also defers on strings or keys that are not
	// valid UTF-8 and on number text that is not JSON: OPA's documents
	// need not come from a strict decoder, and gojsonschema sees them
	// only after a JSON round trip that would rewrite them.
	strict bool
}

// QuickProfile names the validator a Quick must never contradict, and so
// which schema documents it accepts.
type QuickProfile uint8

const (
	// ProfileSet: schemas compiled by Compile (santhosh-tekuri/jsonschema,
	// draft 2020-12 unless $schema names another draft). $id, $anchor and
	// definitions ($defs) are allowed, as they change nothing without $ref.
	ProfileSet QuickProfile = iota
	// ProfileOPA: schemas given to OPA's json.match_schema (gojsonschema,
	// drafts 4 to 7). Stricter: no $id or definitions (gojsonschema
	// compiles them, and could reject them), no boolean subschemas other
	// than additionalProperties, and $schema only draft-06 or draft-07.
	ProfileOPA
)

// Type bits of qnode.types.
const (
	tNull uint8 = 1 << iota
	tBool
	tObject
	tArray
	tNumber
	tInteger
	tString
)

var typeBits = map[string]uint8{
	"null": tNull, "boolean": tBool, "object": tObject, "array": tArray,
	"number": tNumber, "integer": tInteger, "string": tString,
}

// qnode is one compiled (sub)schema. Absent bounds are -1.
type qnode struct {
	never bool  // the false schema
	types uint8 // 0: any type

	hasConst bool
	constVal qscalar
	hasEnum  bool
	enum     []qscalar

	props        map[string]*qnode
	required     []string
	additional   *qnode // applies to members not in props; nil: anything
	noAdditional bool   // additionalProperties: false
	minProps     int
	maxProps     int

	items    *qnode // applies to every element; nil: anything
	minItems int
	maxItems int

	minLen  int
	maxLen  int
	pattern *regexp.Regexp

	// Numeric bounds, kept only when they are plain integers; numUnsure
	// marks a bound that is not, so that numbers here defer.
	min, max, exMin, exMax, multipleOf int64
	hasMin, hasMax, hasExMin, hasExMax bool
	hasMultipleOf, numUnsure           bool
}

// qscalar is a const or enum value: a string, a boolean, null, or a
// number written as a plain integer (its exact text).
type qscalar struct {
	kind uint8 // tString, tBool, tNull or tInteger
	text string
}

// maxQuickDepth bounds how deep a schema or a message Quick walks.
const maxQuickDepth = 256

// CompileQuick compiles doc (a schema document as Compile decodes it:
// map[string]any, []any, json.Number, string, bool, nil) for profile p. It
// returns nil when the document uses anything outside the subset, or a
// keyword value the profile's validator might reject: that schema is then
// always validated in full.
func CompileQuick(doc any, p QuickProfile) *Quick {
	c := quickCompiler{p: p}
	root := c.node(doc, 0, true)
	if root == nil {
		return nil
	}
	return &Quick{root: root, strict: p == ProfileOPA}
}

type quickCompiler struct {
	p QuickProfile
}

// draftsSet and draftsOPA are the $schema values each profile accepts.
var (
	draftsSet = map[string]bool{
		"http://json-schema.org/draft-06/schema#": true, "http://json-schema.org/draft-06/schema": true,
		"http://json-schema.org/draft-07/schema#": true, "http://json-schema.org/draft-07/schema": true,
		"https://json-schema.org/draft/2019-09/schema": true, "https://json-schema.org/draft/2019-09/schema#": true,
		"https://json-schema.org/draft/2020-12/schema": true, "https://json-schema.org/draft/2020-12/schema#": true,
	}
	draftsOPA = map[string]bool{
		"http://json-schema.org/draft-06/schema#": true, "http://json-schema.org/draft-06/schema": true,
		"http://json-schema.org/draft-07/schema#": true, "http://json-schema.org/draft-07/schema": true,
	}
)

// node compiles one schema; nil means not eligible.
func (c *quickCompiler) node(v any, depth int, root bool) *qnode {
	if depth > maxQuickDepth {
		return nil
	}
	if b, ok := v.(bool); ok {
		if c.p == ProfileOPA && !root {
			return nil
		}
		return &qnode{never: !b, minProps: -1, maxProps: -1, minItems: -1, maxItems: -1, minLen: -1, maxLen: -1}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	n := &qnode{minProps: -1, maxProps: -1, minItems: -1, maxItems: -1, minLen: -1, maxLen: -1}
	for k, kv := range m {
		if !c.keyword(n, k, kv, depth, root) {
			return nil
		}
	}
	return n
}

// keyword compiles one keyword of a schema into n; false means not eligible.
func (c *quickCompiler) keyword(n *qnode, k string, v any, depth int, root bool) bool {
	switch k {
	case "$schema":
		s, ok := v.(string)
		drafts := draftsSet
		if c.p == ProfileOPA {
			drafts = draftsOPA
		}
		return ok && root && drafts[s]
	case "title", "description", "$comment":
		s, ok := v.(string)
		return ok && utf8.ValidString(s)
	case "default":
		return true
	case "examples":
		_, ok := v.([]any)
		return ok
	case "deprecated", "readOnly", "writeOnly":
		_, ok := v.(bool)
		return ok
	case "$id", "$anchor":
		_, ok := v.(string)
		return ok && c.p == ProfileSet
	case "$defs", "definitions":
		_, ok := v.(map[string]any)
		return ok && c.p == ProfileSet
	case "type":
		return c.types(n, v)
	case "const":
		s, ok := scalar(v)
		n.hasConst, n.constVal = true, s
		return ok
	case "enum":
		return c.enum(n, v)
	case "properties":
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		n.props = make(map[string]*qnode, len(m))
		for name, sub := range m {
			if _, isObj := sub.(map[string]any); !isObj && c.p == ProfileOPA {
				return false
			}
			q := c.node(sub, depth+1, false)
			if q == nil || !utf8.ValidString(name) {
				return false
			}
			n.props[name] = q
		}
		return true
	case "required":
		return c.required(n, v)
	case "additionalProperties":
		if b, ok := v.(bool); ok {
			n.noAdditional = !b
			return true
		}
		if _, ok := v.(map[string]any); !ok {
			return false
		}
		n.additional = c.node(v, depth+1, false)
		return n.additional != nil
	case "items":
		if _, isObj := v.(map[string]any); !isObj && c.p == ProfileOPA {
			return false
		}
		n.items = c.node(v, depth+1, false)
		return n.items != nil
	case "minProperties":
		return count(v, &n.minProps)
	case "maxProperties":
		return count(v, &n.maxProps)
	case "minItems":
		return count(v, &n.minItems)
	case "maxItems":
		return count(v, &n.maxItems)
	case "minLength":
		return count(v, &n.minLen)
	case "maxLength":
		return count(v, &n.maxLen)
	case "pattern":
		s, ok := v.(string)
		if !ok || !utf8.ValidString(s) {
			return false
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return false
		}
		n.pattern = re
		return true
	case "minimum":
		return c.bound(n, v, &n.min, &n.hasMin)
	case "maximum":
		return c.bound(n, v, &n.max, &n.hasMax)
	case "exclusiveMinimum":
		return c.bound(n, v, &n.exMin, &n.hasExMin)
	case "exclusiveMaximum":
		return c.bound(n, v, &n.exMax, &n.hasExMax)
	case "multipleOf":
		num, ok := v.(json.Number)
		if !ok || !jsonNumber(string(num)) {
			return false
		}
		if i, isInt := plainInt(string(num)); isInt {
			n.multipleOf, n.hasMultipleOf = i, true
			return i > 0
		}
		// A fraction: valid if positive, and numbers here defer.
		f, err := strconv.ParseFloat(string(num), 64)
		n.numUnsure = true
		return err == nil && f > 0
	default:
		return false
	}
}

func (c *quickCompiler) types(n *qnode, v any) bool {
	switch t := v.(type) {
	case string:
		n.types = typeBits[t]
		return n.types != 0
	case []any:
		if len(t) == 0 {
			return false
		}
		for _, e := range t {
			s, ok := e.(string)
			b := typeBits[s]
			if !ok || b == 0 || n.types&b != 0 {
				return false
			}
			n.types |= b
		}
		return true
	}
	return false
}

func (c *quickCompiler) enum(n *qnode, v any) bool {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return false
	}
	n.hasEnum = true
	n.enum = make([]qscalar, 0, len(arr))
	seen := map[qscalar]bool{}
	for _, e := range arr {
		s, ok := scalar(e)
		if !ok {
			return false
		}
		key := s
		if s.kind == tInteger {
			// "0" and "-0" are the same number to the validators.
			i, _ := plainInt(s.text)
			key.text = strconv.FormatInt(i, 10)
		}
		if seen[key] {
			return false
		}
		seen[key] = true
		n.enum = append(n.enum, s)
	}
	return true
}

func (c *quickCompiler) required(n *qnode, v any) bool {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return false
	}
	seen := map[string]bool{}
	for _, e := range arr {
		s, ok := e.(string)
		if !ok || seen[s] || !utf8.ValidString(s) {
			return false
		}
		seen[s] = true
		n.required = append(n.required, s)
	}
	return true
}

// bound keeps a numeric bound when it is a plain integer; another number
// is eligible but makes numbers at this node defer; anything else (such
// as draft-04's boolean exclusiveMaximum) is not eligible.
func (c *quickCompiler) bound(n *qnode, v any, dst *int64, has *bool) bool {
	num, ok := v.(json.Number)
	if !ok || !jsonNumber(string(num)) {
		return false
	}
	if i, isInt := plainInt(string(num)); isInt {
		*dst, *has = i, true
		return true
	}
	if _, err := strconv.ParseFloat(string(num), 64); err != nil {
		return false
	}
	n.numUnsure = true
	return true
}

// count reads a non-negative integer keyword value.
func count(v any, dst *int) bool {
	num, ok := v.(json.Number)
	if !ok {
		return false
	}
	i, isInt := plainInt(string(num))
	if !isInt || i < 0 || i > 1<<31 {
		return false
	}
	*dst = int(i)
	return true
}

// scalar reads a const or enum value Quick can compare exactly.
func scalar(v any) (qscalar, bool) {
	switch v := v.(type) {
	case nil:
		return qscalar{kind: tNull}, true
	case bool:
		if v {
			return qscalar{kind: tBool, text: "true"}, true
		}
		return qscalar{kind: tBool, text: "false"}, true
	case string:
		return qscalar{kind: tString, text: v}, utf8.ValidString(v)
	case json.Number:
		_, ok := plainInt(string(v))
		return qscalar{kind: tInteger, text: string(v)}, ok
	}
	return qscalar{}, false
}

// plainInt parses s when it is an integer in plain notation (no fraction,
// no exponent, no "-0") that fits in an int64.
func plainInt(s string) (int64, bool) {
	if s == "" || s == "-0" {
		return 0, false
	}
	digits := s
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if digits == "" || len(digits) > 18 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	var n int64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if s[0] == '-' {
		n = -n
	}
	return n, true
}

// jsonNumber reports whether s is a number in RFC 8259 syntax.
func jsonNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

// Valid reports whether v (as body.Decode returns it) is certainly valid.
// False means "ask the full validator", not "invalid".
func (q *Quick) Valid(v any) bool {
	if q == nil {
		return false
	}
	return q.root.valid(v, 0, q.strict)
}

func (n *qnode) valid(v any, depth int, strict bool) bool {
	if n.never || depth > maxQuickDepth {
		return false
	}
	var kind uint8
	var text string
	switch x := v.(type) {
	case nil:
		kind = tNull
	case bool:
		kind, text = tBool, "false"
		if x {
			text = "true"
		}
	case string:
		kind, text = tString, x
	case json.Number:
		kind, text = tNumber, string(x)
	case map[string]any:
		kind = tObject
	case []any:
		kind = tArray
	default:
		return false
	}
	if strict && (kind == tString && !utf8.ValidString(text) || kind == tNumber && !jsonNumber(text)) {
		return false
	}
	if n.types != 0 && n.types&kind == 0 {
		if kind != tNumber || n.types&tInteger == 0 {
			return false
		}
		if _, isInt := plainInt(text); !isInt {
			return false
		}
	}
	if n.hasConst && !n.constVal.matches(kind, text) {
		return false
	}
	if n.hasEnum {
		found := false
		for _, e := range n.enum {
			if e.matches(kind, text) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	switch kind {
	case tObject:
		return n.validObject(v.(map[string]any), depth, strict)
	case tArray:
		arr := v.([]any)
		if n.minItems >= 0 && len(arr) < n.minItems || n.maxItems >= 0 && len(arr) > n.maxItems {
			return false
		}
		for _, e := range arr {
			if n.items != nil && !n.items.valid(e, depth+1, strict) || n.items == nil && strict && !strictJSON(e, depth+1) {
				return false
			}
		}
		return true
	case tString:
		if n.minLen >= 0 || n.maxLen >= 0 {
			l := utf8.RuneCountInString(text)
			if n.minLen >= 0 && l < n.minLen || n.maxLen >= 0 && l > n.maxLen {
				return false
			}
		}
		return n.pattern == nil || n.pattern.MatchString(text)
	case tNumber:
		return n.validNumber(text)
	}
	return true
}

func (n *qnode) validObject(obj map[string]any, depth int, strict bool) bool {
	if n.minProps >= 0 && len(obj) < n.minProps || n.maxProps >= 0 && len(obj) > n.maxProps {
		return false
	}
	for _, r := range n.required {
		if _, ok := obj[r]; !ok {
			return false
		}
	}
	if n.props == nil && n.additional == nil && !n.noAdditional && !strict {
		return true
	}
	for k, e := range obj {
		if strict && !utf8.ValidString(k) {
			return false
		}
		if p, ok := n.props[k]; ok {
			if !p.valid(e, depth+1, strict) {
				return false
			}
			continue
		}
		if n.noAdditional {
			return false
		}
		if n.additional != nil {
			if !n.additional.valid(e, depth+1, strict) {
				return false
			}
		} else if strict && !strictJSON(e, depth+1) {
			return false
		}
	}
	return true
}

// strictJSON checks, for ProfileOPA, what no subschema looks at: that v
// holds only valid UTF-8 and JSON numbers.
func strictJSON(v any, depth int) bool {
	if depth > maxQuickDepth {
		return false
	}
	switch x := v.(type) {
	case nil, bool:
		return true
	case string:
		return utf8.ValidString(x)
	case json.Number:
		return jsonNumber(string(x))
	case []any:
		for _, e := range x {
			if !strictJSON(e, depth+1) {
				return false
			}
		}
		return true
	case map[string]any:
		for k, e := range x {
			if !utf8.ValidString(k) || !strictJSON(e, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

func (n *qnode) validNumber(text string) bool {
	if !n.hasMin && !n.hasMax && !n.hasExMin && !n.hasExMax && !n.hasMultipleOf && !n.numUnsure {
		return true
	}
	if n.numUnsure {
		return false
	}
	i, isInt := plainInt(text)
	if !isInt {
		return false
	}
	return (!n.hasMin || i >= n.min) && (!n.hasMax || i <= n.max) &&
		(!n.hasExMin || i > n.exMin) && (!n.hasExMax || i < n.exMax) &&
		(!n.hasMultipleOf || i%n.multipleOf == 0)
}

// matches compares exactly: the same kind and text (a number only when
// it is a plain integer, written the same).
func (s qscalar) matches(kind uint8, text string) bool {
	if kind == tNumber {
		_, isInt := plainInt(text)
		return s.kind == tInteger && isInt && s.text == text
	}
	return s.kind == kind && s.text == text
}
