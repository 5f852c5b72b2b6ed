package schema

import (
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/meshward/meshward/policy/internal/body"
)

// Quick answers fast whether a message is certainly valid, certainly
// invalid, or neither (Verdict). It is compiled from a schema document
// that uses only a common subset of JSON Schema (type, const, enum,
// properties, required, additionalProperties, items, the size and length
// bounds, pattern, and integer numeric bounds), and walks a decoded
// message (a body.Tape) without allocating.
//
// It says Valid only when every constraint of the schema holds, and
// Invalid only when one certainly fails (the subset has no alternatives,
// so one failure is enough), each checked conservatively (a number that
// is not a plain integer, a const that is not a plain scalar, ... makes
// it Unsure); Unsure leaves the message to the full validator. A Valid or
// Invalid verdict never contradicts the full validator; it does not
// report violations (the full validator does, or Report for the schema
// step). The JSON-Schema-Test-Suite and fuzz targets check both verdicts
// against santhosh-tekuri/jsonschema, and, for ProfileOPA, against OPA's
// own json.match_schema. CompileQuick does not know every refusal of the
// ProfileOPA validator's compiler (minLength above maxLength, ...): its
// caller must also have that compiler accept the schema.
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
	// The keyword values as in the schema document, for reporting.
	constRaw any
	enumRaw  []any

	props        map[string]*qnode
	required     []string
	requiredAt   map[string]int // index in required
	additional   *qnode         // applies to members not in props; nil: anything
	noAdditional bool           // additionalProperties: false
	minProps     int
	maxProps     int

	items    *qnode // applies to every element; nil: anything
	minItems int
	maxItems int

	minLen  int
	maxLen  int
	pattern *pattern

	// Numeric bounds, kept only when they are plain integers; numUnsure
	// marks a bound that is not, so that numbers here defer.
	min, max, exMin, exMax, multipleOf int64
	hasMin, hasMax, hasExMin, hasExMax bool
	hasMultipleOf, numUnsure           bool
	// The bounds as the validator holds them, for reporting (by keyword).
	bounds map[string]*big.Rat
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
	n := &qnode{minProps: -1, maxProps: -1, minItems: -1, maxItems: -1, minLen: -1, maxLen: -1}
	if b, ok := v.(bool); ok {
		if c.p == ProfileOPA && !root {
			return nil
		}
		n.never = !b
		return n
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
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
		s, ok := scalar(v, c.p == ProfileOPA)
		n.hasConst, n.constVal, n.constRaw = true, s, v
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
		p, err := compilePattern(s)
		if err != nil {
			return false
		}
		n.pattern = p
		return true
	case "minimum":
		return c.bound(n, k, v, &n.min, &n.hasMin)
	case "maximum":
		return c.bound(n, k, v, &n.max, &n.hasMax)
	case "exclusiveMinimum":
		return c.bound(n, k, v, &n.exMin, &n.hasExMin)
	case "exclusiveMaximum":
		return c.bound(n, k, v, &n.exMax, &n.hasExMax)
	case "multipleOf":
		// A bound that must be positive.
		num, _ := v.(json.Number)
		f, err := strconv.ParseFloat(string(num), 64)
		return err == nil && f > 0 && c.bound(n, k, v, &n.multipleOf, &n.hasMultipleOf)
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
	n.hasEnum, n.enumRaw = true, arr
	n.enum = make([]qscalar, 0, len(arr))
	seen := map[qscalar]bool{}
	for _, e := range arr {
		s, ok := scalar(e, c.p == ProfileOPA)
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
	if len(arr) > 64 { // found ones are marked in a uint64 while walking
		return false
	}
	n.requiredAt = make(map[string]int, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if _, dup := n.requiredAt[s]; !ok || dup || !utf8.ValidString(s) {
			return false
		}
		n.requiredAt[s] = len(n.required)
		n.required = append(n.required, s)
	}
	return true
}

// bound keeps a numeric bound when it is a plain integer; another number
// is eligible but makes numbers at this node defer; anything else (such
// as draft-04's boolean exclusiveMaximum) is not eligible.
func (c *quickCompiler) bound(n *qnode, k string, v any, dst *int64, has *bool) bool {
	num, ok := v.(json.Number)
	if !ok || !jsonNumber(string(num)) {
		return false
	}
	if i, isInt := plainInt(string(num)); isInt {
		*dst, *has = i, true
		if n.bounds == nil {
			n.bounds = map[string]*big.Rat{}
		}
		n.bounds[k] = big.NewRat(i, 1)
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

// maxExactFloat is 2^53: gojsonschema compares const and enum values as
// float64 (after a JSON round trip), so past it distinct integers can be
// equal to it.
const maxExactFloat = 1 << 53

// scalar reads a const or enum value Quick can compare exactly; strict
// (ProfileOPA) also refuses integers past ±2^53.
func scalar(v any, strict bool) (qscalar, bool) {
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
		i, ok := plainInt(string(v))
		if strict && (i > maxExactFloat || i < -maxExactFloat) {
			ok = false
		}
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

// Verdict is what Quick can tell about a message.
type Verdict uint8

const (
	// Unsure: ask the full validator.
	Unsure Verdict = iota
	// Valid: the full validator accepts the message.
	Valid
	// Invalid: the full validator rejects the message.
	Invalid
)

// Valid reports whether v (as body.Decode returns it) is certainly valid.
// False means "ask the full validator", not "invalid".
func (q *Quick) Valid(v any) bool {
	return q.Verdict(v) == Valid
}

// Verdict tells whether v (as body.Decode returns it) is certainly valid,
// certainly invalid (some keyword of the subset certainly fails: the
// subset has no alternatives, so one failure is enough), or neither. It
// lays v out as a tape (pooled) and reads that; a message decoded by the
// schema step is a tape already (VerdictTape).
func (q *Quick) Verdict(v any) Verdict {
	if q == nil {
		return Unsure
	}
	t := body.AcquireTape()
	defer t.Release()
	if !t.FromValue(v, maxQuickDepth) {
		return Unsure
	}
	return q.VerdictTape(t)
}

// VerdictTape is Verdict of the document t holds.
func (q *Quick) VerdictTape(t *body.Tape) Verdict {
	if q == nil || len(t.Nodes) == 0 {
		return Unsure
	}
	w := walker{nodes: t.Nodes, strict: q.strict}
	ok := w.walk(q.root, 0, 0)
	switch {
	case !ok && q.strict && !strictJSON(t.Nodes):
		// gojsonschema could fail to read the document at all.
		return Unsure
	case !ok:
		return Invalid
	case w.unsure:
		return Unsure
	}
	return Valid
}

// walker walks a message against a compiled schema.
type walker struct {
	nodes  []body.Node
	strict bool
	unsure bool // some check could not be decided
}

// walk reports false when a keyword of n (or below it) certainly fails
// on node i; a check it cannot decide sets w.unsure and passes.
func (w *walker) walk(n *qnode, i, depth int) bool {
	if depth > maxQuickDepth {
		w.unsure = true
		return true
	}
	if !w.own(n, i) {
		return false
	}
	v := &w.nodes[i]
	switch v.Kind {
	case body.ObjectNode:
		for j := i + 1; j < int(v.End); j = int(w.nodes[j].End) {
			k := w.nodes[j].Key
			if w.strict && !utf8.ValidString(k) {
				w.unsure = true
				continue
			}
			sub := n.additional
			if p, found := n.props[k]; found {
				sub = p
			}
			if sub == nil {
				// n.noAdditional is one of n's own keywords.
				if w.strict && !strictJSON(w.nodes[j:w.nodes[j].End]) {
					w.unsure = true
				}
				continue
			}
			if !w.walk(sub, j, depth+1) {
				return false
			}
		}
	case body.ArrayNode:
		for j := i + 1; j < int(v.End); j = int(w.nodes[j].End) {
			if n.items == nil {
				if w.strict && !strictJSON(w.nodes[j:w.nodes[j].End]) {
					w.unsure = true
				}
				continue
			}
			if !w.walk(n.items, j, depth+1) {
				return false
			}
		}
	}
	return true
}

// own checks n's keywords that concern node i itself (not its members or
// items): false when one certainly fails.
func (w *walker) own(n *qnode, i int) bool {
	if n.never {
		return false
	}
	v := &w.nodes[i]
	kind, text := kindOf(v)
	if kind == 0 {
		w.unsure = true
		return true
	}
	if w.strict && (kind == tString && !utf8.ValidString(text) || kind == tNumber && !jsonNumber(text)) {
		w.unsure = true
		return true
	}
	_, isInt := plainInt(text)
	if n.types != 0 && n.types&kind == 0 {
		switch {
		case kind != tNumber || n.types&tInteger == 0:
			return false
		case strings.ContainsAny(text, ".eE"):
			w.unsure = true // 3.0 and 1e2 are integers to the validators
		}
	}
	if n.hasConst {
		switch n.constVal.match(kind, text, isInt, w.strict) {
		case Invalid:
			return false
		case Unsure:
			w.unsure = true
		}
	}
	if n.hasEnum {
		found, undecided := false, false
		for _, e := range n.enum {
			switch e.match(kind, text, isInt, w.strict) {
			case Valid:
				found = true
			case Unsure:
				undecided = true
			}
		}
		switch {
		case !found && !undecided:
			return false
		case !found:
			w.unsure = true
		}
	}
	switch kind {
	case tObject:
		if n.minProps >= 0 && int(v.Len) < n.minProps || n.maxProps >= 0 && int(v.Len) > n.maxProps {
			return false
		}
		if len(n.required) == 0 && !n.noAdditional {
			return true
		}
		var seen uint64 // bit r: required[r] is present
		for j := i + 1; j < int(v.End); j = int(w.nodes[j].End) {
			k := w.nodes[j].Key
			if r, ok := n.requiredAt[k]; ok {
				seen |= 1 << r
			}
			if n.noAdditional {
				if _, ok := n.props[k]; !ok {
					return false
				}
			}
		}
		return seen == 1<<len(n.required)-1
	case tArray:
		if n.minItems >= 0 && int(v.Len) < n.minItems || n.maxItems >= 0 && int(v.Len) > n.maxItems {
			return false
		}
	case tString:
		if n.minLen >= 0 || n.maxLen >= 0 {
			l := utf8.RuneCountInString(text)
			if n.minLen >= 0 && l < n.minLen || n.maxLen >= 0 && l > n.maxLen {
				return false
			}
		}
		if n.pattern != nil && !n.pattern.MatchString(text) {
			return false
		}
	case tNumber:
		return w.number(n, text, isInt)
	}
	return true
}

func (w *walker) number(n *qnode, text string, isInt bool) bool {
	if !n.hasMin && !n.hasMax && !n.hasExMin && !n.hasExMax && !n.hasMultipleOf && !n.numUnsure {
		return true
	}
	if n.numUnsure || !isInt {
		w.unsure = true
		return true
	}
	i, _ := plainInt(text)
	return (!n.hasMin || i >= n.min) && (!n.hasMax || i <= n.max) &&
		(!n.hasExMin || i > n.exMin) && (!n.hasExMax || i < n.exMax) &&
		(!n.hasMultipleOf || i%n.multipleOf == 0)
}

// kindOf is v's type bit and, for a scalar, its text: a string itself,
// a number's JSON text, "true" or "false".
func kindOf(v *body.Node) (uint8, string) {
	switch v.Kind {
	case body.NullNode:
		return tNull, ""
	case body.BoolNode:
		return tBool, v.Text
	case body.StringNode:
		return tString, v.Text
	case body.NumberNode:
		return tNumber, v.Text
	case body.ObjectNode:
		return tObject, ""
	case body.ArrayNode:
		return tArray, ""
	}
	return 0, ""
}

// match compares a value with a const or enum scalar: Valid when equal,
// Invalid when certainly not, Unsure for a number that is not a plain
// integer (1.0 equals 1 to the validators) or, strict, one past ±2^53
// (gojsonschema compares floats).
func (s qscalar) match(kind uint8, text string, isInt, strict bool) Verdict {
	switch {
	case kind == tNumber && s.kind == tInteger && !isInt:
		return Unsure
	case kind == tNumber && strict && isInt && !exactFloat(text):
		return Unsure
	case kind == tNumber && s.kind == tInteger && text == s.text:
		return Valid
	case kind == tNumber:
		return Invalid
	case s.kind == kind && s.text == text:
		return Valid
	}
	return Invalid
}

// exactFloat reports whether the plain integer text is within ±2^53.
func exactFloat(text string) bool {
	i, _ := plainInt(text)
	return i <= maxExactFloat && i >= -maxExactFloat
}

// strictJSON checks, for ProfileOPA, what no subschema looks at: that
// the nodes (a node and everything under it) hold only valid UTF-8 and
// JSON numbers.
func strictJSON(nodes []body.Node) bool {
	for i := range nodes {
		v := &nodes[i]
		if !utf8.ValidString(v.Key) ||
			v.Kind == body.StringNode && !utf8.ValidString(v.Text) ||
			v.Kind == body.NumberNode && !jsonNumber(v.Text) {
			return false
		}
	}
	return true
}
