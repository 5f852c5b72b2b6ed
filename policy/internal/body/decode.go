package body

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Limits bound what Decode accepts. The zero value means the defaults.
type Limits struct {
	// MaxBytes is the largest body accepted, in bytes. Zero or less means
	// DefaultMaxBytes.
	MaxBytes int
	// MaxDepth is the deepest nesting of objects and arrays accepted: 1
	// allows `{}` and `[1]` but not `[[1]]`. Zero or less means
	// DefaultMaxDepth; more than MaxDepthCeiling is lowered to it.
	MaxDepth int
	// MaxValues is the most JSON values (objects, arrays, strings,
	// numbers, literals, each counted once) accepted. It bounds what
	// validating the body can cost: a schema validator spends about a
	// microsecond per value. Zero or less means DefaultMaxValues.
	MaxValues int
}

// Limits' defaults and bounds.
const (
	DefaultMaxBytes = 1 << 20
	DefaultMaxDepth = 64
	// DefaultMaxValues is generous for messages (a 1536-float embedding
	// is 1537 values) and keeps the worst validation in milliseconds.
	DefaultMaxValues = 10000
	// MaxDepthCeiling is the deepest nesting ever accepted, whatever the
	// configuration says.
	MaxDepthCeiling = 1000
)

// withDefaults returns l with defaults filled in and the depth capped.
func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxValues <= 0 {
		l.MaxValues = DefaultMaxValues
	}
	if l.MaxDepth > MaxDepthCeiling {
		l.MaxDepth = MaxDepthCeiling
	}
	return l
}

// Kind classifies a decoding failure.
type Kind uint8

// Kinds of decoding failure.
const (
	// KindSyntax: not RFC 8259 JSON (including trailing data and an empty body).
	KindSyntax Kind = iota + 1
	// KindDuplicateKey: an object names the same key twice.
	KindDuplicateKey
	// KindCaseVariantKey: an object holds two keys that differ only in
	// case (Unicode simple case folding, as strings.EqualFold).
	KindCaseVariantKey
	// KindInvalidUTF8: a string holds invalid UTF-8 or a lone surrogate escape.
	KindInvalidUTF8
	// KindTooDeep: objects and arrays nest deeper than Limits.MaxDepth.
	KindTooDeep
	// KindTooLarge: the body is longer than Limits.MaxBytes.
	KindTooLarge
	// KindTooManyValues: the body holds more than Limits.MaxValues values.
	KindTooManyValues
)

var kindNames = [...]string{
	KindSyntax:         "syntax",
	KindDuplicateKey:   "duplicate_key",
	KindCaseVariantKey: "case_variant_key",
	KindInvalidUTF8:    "invalid_utf8",
	KindTooDeep:        "too_deep",
	KindTooLarge:       "too_large",
	KindTooManyValues:  "too_many_values",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Error is why Decode rejected a body, and where.
type Error struct {
	Kind Kind
	// Offset is the 0-based byte offset of the problem in the body.
	Offset int
	// Line and Column (1-based; the column counts bytes) locate Offset.
	Line, Column int
	// Msg says what is wrong, without the position.
	Msg string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid JSON at line %d, column %d (byte %d): %s", e.Line, e.Column, e.Offset, e.Msg)
}

// Problem is the deny the failure maps to: 400 with code invalid_json, or
// 400 with code body_too_large for KindTooLarge and KindTooManyValues.
func (e *Error) Problem() *Problem {
	code := CodeInvalidJSON
	if e.Kind == KindTooLarge || e.Kind == KindTooManyValues {
		code = CodeBodyTooLarge
	}
	return &Problem{Status: 400, Code: code, Message: e.Error()}
}

// Decode parses data as one strict RFC 8259 JSON text and returns it as
// map[string]any, []any, json.Number (the number's exact text), string,
// bool or nil: the shape JSON Schema validators and OPA consume. Strings
// and numbers share one copy of data, so the result holds no reference to
// data itself.
//
// It rejects, with an *Error: duplicate object keys and keys that differ
// only in case within one object (encoding/json would keep the last one or
// fold case, so two readers would see different messages); invalid UTF-8
// and lone surrogate escapes in strings; control characters in strings;
// nesting deeper than lim.MaxDepth; bodies longer than lim.MaxBytes or
// with more than lim.MaxValues values; a
// byte order mark; anything after the value; and everything else RFC 8259
// does not allow (leading zeros, NaN, single quotes, comments, ...).
func Decode(data []byte, lim Limits) (any, error) {
	lim = lim.withDefaults()
	if len(data) > lim.MaxBytes {
		return nil, newError(data, lim.MaxBytes, KindTooLarge,
			fmt.Sprintf("body is %d bytes, more than the limit of %d", len(data), lim.MaxBytes))
	}
	return decodeValue(string(data), lim)
}

// DecodeString is Decode for a body held as a string (Envoy's `body`
// field): the result's strings and numbers are slices of s itself, so
// the body is not copied.
func DecodeString(s string, lim Limits) (any, error) {
	lim = lim.withDefaults()
	if len(s) > lim.MaxBytes {
		return nil, newError(s, lim.MaxBytes, KindTooLarge,
			fmt.Sprintf("body is %d bytes, more than the limit of %d", len(s), lim.MaxBytes))
	}
	return decodeValue(s, lim)
}

// DecodeTapeString is DecodeString into t (emptied first), without
// converting to maps and slices: t.Nodes[0] is the document. It accepts
// and refuses exactly what DecodeString does; t's strings and numbers are
// slices of s.
func DecodeTapeString(s string, lim Limits, t *Tape) error {
	lim = lim.withDefaults()
	t.Reset()
	if len(s) > lim.MaxBytes {
		return newError(s, lim.MaxBytes, KindTooLarge,
			fmt.Sprintf("body is %d bytes, more than the limit of %d", len(s), lim.MaxBytes))
	}
	if err := decode(s, lim, t); err != nil {
		t.Reset()
		return err
	}
	return nil
}

// decodeValue decodes s into a pooled tape and converts it.
func decodeValue(s string, lim Limits) (any, error) {
	t := AcquireTape()
	defer t.Release()
	if err := decode(s, lim, t); err != nil {
		return nil, err
	}
	return t.Value(0), nil
}

// scratch is a decoder's reusable stacks, pooled across requests.
type scratch struct {
	keys   []string
	frames []frame
	buf    []byte
}

var scratchPool = sync.Pool{New: func() any { return &scratch{keys: make([]string, 0, 16)} }}

// maxPooledScratch bounds the stacks and tapes kept in pools (in elements
// or bytes), so one huge body does not pin its memory.
const maxPooledScratch = 4096

// decode parses s (at most lim.MaxBytes long, lim with defaults),
// appending its nodes to t.
func decode(s string, lim Limits, t *Tape) *Error {
	sc := scratchPool.Get().(*scratch)
	d := decoder{s: s, t: t, maxDepth: lim.MaxDepth, valuesLeft: lim.MaxValues, maxValues: lim.MaxValues,
		keys: sc.keys[:0], frames: sc.frames[:0], buf: sc.buf[:0]}
	defer func() {
		// What a failure left on the stacks is dropped, for the garbage
		// collector (each object clears its keys as it completes); the
		// string scratch holds body bytes.
		clear(d.keys)
		clear(d.frames)
		clear(d.buf[:cap(d.buf)])
		if cap(d.keys) <= maxPooledScratch && cap(d.frames) <= maxPooledScratch && cap(d.buf) <= maxPooledScratch {
			sc.keys, sc.frames, sc.buf = d.keys[:0], d.frames[:0], d.buf[:0]
			scratchPool.Put(sc)
		}
	}()
	d.skipWS()
	if d.pos >= len(d.s) {
		d.fail(KindSyntax, "empty body, want a JSON value")
		return d.err
	}
	if !d.parse() {
		return d.err
	}
	d.skipWS()
	if d.pos < len(d.s) {
		d.fail(KindSyntax, "data after the JSON value")
		return d.err
	}
	return nil
}

// foldMapMin is the member count from which case-variant keys are found
// with a map of folded keys instead of comparing each pair.
const foldMapMin = 16

type decoder struct {
	s        string // the body: every string and number is a slice of it
	pos      int
	maxDepth int
	// valuesLeft counts down from maxValues (Limits.MaxValues).
	valuesLeft, maxValues int
	t                     *Tape    // where the nodes go
	frames                []frame  // the objects and arrays being parsed, innermost last
	keys                  []string // keys of the objects being parsed, innermost last
	key                   string   // the key of the next node appended
	buf                   []byte   // scratch for strings with escapes
	err                   *Error
}

func newError[T ~string | ~[]byte](data T, off int, k Kind, msg string) *Error {
	off = min(max(off, 0), len(data))
	line, col := 1, 1
	for i := range off {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &Error{Kind: k, Offset: off, Line: line, Column: col, Msg: msg}
}

// failAt records the error at byte offset off in d.err; the caller then
// returns false (or d.err) to stop decoding.
func (d *decoder) failAt(off int, k Kind, msg string) {
	d.err = newError(d.s, off, k, msg)
}

// fail records the error at the current position in d.err.
func (d *decoder) fail(k Kind, msg string) { d.failAt(d.pos, k, msg) }

func (d *decoder) skipWS() {
	for d.pos < len(d.s) {
		switch d.s[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// unexpected reports the byte at d.pos (or the end) when want was expected.
func (d *decoder) unexpected(want string) bool {
	if d.pos >= len(d.s) {
		d.fail(KindSyntax, "unexpected end of body, want "+want)
		return false
	}
	c := d.s[d.pos]
	var got string
	switch {
	case c == 0xEF && strings.HasPrefix(d.s[d.pos:], "\uFEFF"):
		got = "a byte order mark"
	case c >= 0x20 && c < 0x7F:
		got = strconv.QuoteRune(rune(c))
	default:
		got = fmt.Sprintf("byte 0x%02x", c)
	}
	d.fail(KindSyntax, "unexpected "+got+", want "+want)
	return false
}

// parse parses the value at d.pos (whitespace before it skipped) and
// everything nested in it. It keeps the objects and arrays being parsed
// on d.frames instead of recursing, so the goroutine's stack stays the
// same size whatever the nesting: a request handler's stack is not grown
// (and copied) for a deep body.
func (d *decoder) parse() bool {
	for {
		if !d.value() {
			return false
		}
		for {
			if len(d.frames) == 0 {
				return true
			}
			more, ok := d.next()
			if !ok {
				return false
			}
			if more {
				break
			}
		}
	}
}

// value parses one value at d.pos, appending its node with key d.key; an
// object or array is opened on d.frames for parse to fill.
func (d *decoder) value() bool {
	if d.pos >= len(d.s) {
		return d.unexpected("a value")
	}
	d.valuesLeft--
	if d.valuesLeft < 0 {
		d.fail(KindTooManyValues, fmt.Sprintf("more JSON values than the limit of %d", d.maxValues))
		return false
	}
	switch c := d.s[d.pos]; {
	case c == '{':
		return d.open(ObjectNode)
	case c == '[':
		return d.open(ArrayNode)
	case c == '"':
		s, ok := d.str()
		if ok {
			d.scalar(StringNode, s)
		}
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	case c == 't':
		return d.literal("true", BoolNode)
	case c == 'f':
		return d.literal("false", BoolNode)
	case c == 'n':
		return d.literal("null", NullNode)
	default:
		return d.unexpected("a value")
	}
}

// scalar appends a string, number or literal node.
func (d *decoder) scalar(k NodeKind, text string) {
	i := int32(len(d.t.Nodes)) //nolint:gosec // bounded by MaxValues
	d.t.Nodes = append(d.t.Nodes, Node{Kind: k, Key: d.key, Text: text, End: i + 1})
}

// frame is an object or array being parsed.
type frame struct {
	at int // its node
	n  int // members or items begun
	// base: an object's keys so far are d.keys[base:].
	base int
	// folded holds an object's keys case-folded, once it has foldMapMin.
	folded map[string]struct{}
	object bool
}

// open appends the object or array node at d.pos (on its bracket) and
// pushes its frame.
func (d *decoder) open(k NodeKind) bool {
	if len(d.frames) >= d.maxDepth {
		d.fail(KindTooDeep, fmt.Sprintf("nesting deeper than the limit of %d", d.maxDepth))
		return false
	}
	d.pos++
	d.t.Nodes = append(d.t.Nodes, Node{Kind: k, Key: d.key})
	d.frames = append(d.frames, frame{at: len(d.t.Nodes) - 1, base: len(d.keys), object: k == ObjectNode})
	return true
}

// next continues the innermost open object or array after its bracket or
// after its last member or item. It either closes it (more false), or
// reads up to its next member's value, setting d.key (more true).
func (d *decoder) next() (more, ok bool) {
	f := &d.frames[len(d.frames)-1]
	closer, want := byte(']'), "',' or ']'"
	if f.object {
		closer, want = '}', "',' or '}'"
	}
	d.skipWS()
	switch {
	case f.n == 0:
		if d.pos < len(d.s) && d.s[d.pos] == closer {
			d.pos++
			d.close(f)
			return false, true
		}
	case d.pos >= len(d.s):
		return false, d.unexpected(want)
	case d.s[d.pos] == ',':
		d.pos++
		d.skipWS()
	case d.s[d.pos] == closer:
		d.pos++
		d.close(f)
		return false, true
	default:
		return false, d.unexpected(want)
	}
	f.n++
	d.key = ""
	if f.object {
		return true, d.member(f)
	}
	return true, true
}

// close completes the object or array of f, the innermost frame, and
// pops it.
func (d *decoder) close(f *frame) {
	d.t.Nodes[f.at].Len = int32(f.n)            //nolint:gosec // bounded by MaxValues
	d.t.Nodes[f.at].End = int32(len(d.t.Nodes)) //nolint:gosec // bounded by MaxValues
	if f.object {
		clear(d.keys[f.base:]) // drop references for the garbage collector
		d.keys = d.keys[:f.base]
	}
	*f = frame{}
	d.frames = d.frames[:len(d.frames)-1]
}

func (d *decoder) literal(lit string, k NodeKind) bool {
	if !strings.HasPrefix(d.s[d.pos:], lit) {
		d.fail(KindSyntax, "invalid literal, want "+lit)
		return false
	}
	d.pos += len(lit)
	if k == NullNode {
		lit = ""
	}
	d.scalar(k, lit)
	return true
}

// member reads an object member's key and colon, refusing a key the
// object already has (or has in another case), and sets d.key.
func (d *decoder) member(f *frame) bool {
	if d.pos >= len(d.s) || d.s[d.pos] != '"' {
		return d.unexpected("a string key")
	}
	keyAt := d.pos
	k, ok := d.str()
	if !ok {
		return false
	}
	switch keys := d.keys[f.base:]; {
	case len(keys) < foldMapMin:
		for _, m := range keys {
			if m == k {
				d.failAt(keyAt, KindDuplicateKey, "duplicate key "+quoteShort(k))
				return false
			}
			if strings.EqualFold(m, k) {
				d.failAt(keyAt, KindCaseVariantKey,
					"keys "+quoteShort(m)+" and "+quoteShort(k)+" differ only in case")
				return false
			}
		}
	default:
		if f.folded == nil {
			f.folded = make(map[string]struct{}, 2*foldMapMin)
			for _, m := range keys {
				f.folded[foldKey(m)] = struct{}{}
			}
		}
		fk := foldKey(k)
		if _, dup := f.folded[fk]; dup {
			for _, m := range keys {
				if m == k {
					d.failAt(keyAt, KindDuplicateKey, "duplicate key "+quoteShort(k))
					return false
				}
			}
			d.failAt(keyAt, KindCaseVariantKey, "key "+quoteShort(k)+" differs only in case from another key")
			return false
		}
		f.folded[fk] = struct{}{}
	}
	d.keys = append(d.keys, k)
	d.skipWS()
	if d.pos >= len(d.s) || d.s[d.pos] != ':' {
		return d.unexpected("':' after an object key")
	}
	d.pos++
	d.skipWS()
	d.key = k
	return true
}

// str parses a string at d.pos (on its opening quote).
func (d *decoder) str() (string, bool) {
	start := d.pos + 1
	ascii := true
	i := start
	for ; i < len(d.s); i++ {
		c := d.s[i]
		if c == '"' {
			break
		}
		if c == '\\' {
			return d.strEscaped(start, i)
		}
		if c < 0x20 {
			d.failAt(i, KindSyntax, fmt.Sprintf("control character 0x%02x in a string (escape it)", c))
			return "", false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if i >= len(d.s) {
		d.failAt(len(d.s), KindSyntax, "unexpected end of body in a string")
		return "", false
	}
	s := d.s[start:i]
	if !ascii && !utf8.ValidString(s) {
		d.failAt(start+firstInvalid(s), KindInvalidUTF8, "invalid UTF-8 in a string")
		return "", false
	}
	d.pos = i + 1
	return s, true
}

// strEscaped continues str from the first backslash at i.
func (d *decoder) strEscaped(start, i int) (string, bool) {
	b := append(d.buf[:0], d.s[start:i]...)
	defer func() { d.buf = b[:0] }()
	for i < len(d.s) {
		c := d.s[i]
		switch {
		case c == '"':
			if !utf8.Valid(b) {
				// Escapes are ASCII and lone surrogates are rejected
				// below, so the raw bytes hold the invalid sequence.
				d.failAt(start+firstInvalid(d.s[start:i]), KindInvalidUTF8, "invalid UTF-8 in a string")
				return "", false
			}
			d.pos = i + 1
			return string(b), true
		case c < 0x20:
			d.failAt(i, KindSyntax, fmt.Sprintf("control character 0x%02x in a string (escape it)", c))
			return "", false
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(d.s) {
			break
		}
		switch e := d.s[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(d.s, i+2)
			if !ok {
				d.failAt(i, KindSyntax, `invalid \u escape, want 4 hex digits`)
				return "", false
			}
			switch {
			case r >= 0xD800 && r < 0xDC00:
				lo, ok := rune(0), false
				if i+7 < len(d.s) && d.s[i+6] == '\\' && d.s[i+7] == 'u' {
					lo, ok = hex4(d.s, i+8)
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					d.failAt(i, KindInvalidUTF8, "lone surrogate escape in a string")
					return "", false
				}
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			case r >= 0xDC00 && r <= 0xDFFF:
				d.failAt(i, KindInvalidUTF8, "lone surrogate escape in a string")
				return "", false
			}
			b = utf8.AppendRune(b, r)
			i += 6
			continue
		default:
			d.failAt(i, KindSyntax, "invalid escape "+strconv.Quote(d.s[i:i+2]))
			return "", false
		}
		i += 2
	}
	d.failAt(len(d.s), KindSyntax, "unexpected end of body in a string")
	return "", false
}

func hex4(s string, at int) (rune, bool) {
	if at+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[at : at+4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number parses an RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() bool {
	s, start, i := d.s, d.pos, d.pos
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(s, i)
	default:
		d.failAt(i, KindSyntax, "invalid number, want a digit")
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		j := digits(s, i)
		if j == i {
			d.failAt(i, KindSyntax, "invalid number, want a digit after '.'")
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(s, i)
		if j == i {
			d.failAt(i, KindSyntax, "invalid number, want a digit in the exponent")
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] >= '0' && s[i] <= '9') {
		d.failAt(i, KindSyntax, "invalid number: leading zero")
		return false
	}
	d.pos = i
	d.scalar(NumberNode, s[start:i])
	return true
}

// smallNumbers holds json.Number("0") to json.Number("99") already boxed:
// small integers are the commonest numbers in messages (priorities,
// counts), and returning a shared immutable value saves an allocation.
var smallNumbers = func() (t [100]any) {
	for i := range t {
		t[i] = json.Number(strconv.Itoa(i))
	}
	return t
}()

// atoi2 converts one or two decimal digits.
func atoi2(v string) int {
	if len(v) == 1 {
		return int(v[0] - '0')
	}
	return int(v[0]-'0')*10 + int(v[1]-'0')
}

func digits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

func firstInvalid(s string) int {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(s)
}

// foldKey maps s to a key equal for exactly the strings strings.EqualFold
// holds equal: each rune becomes the smallest rune of its simple-fold orbit.
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// quoteShort quotes s for a message, cut to a readable length.
func quoteShort(s string) string {
	const maxLen = 40
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}
