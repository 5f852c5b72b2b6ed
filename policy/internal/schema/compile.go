package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/meshward/meshward/policy/internal/body"
)

// Source is one schema to compile, named for the rules that use it.
// Exactly one of Doc and Data is set.
type Source struct {
	// Name is what rules call the schema (schema: / schemaBy:).
	Name string
	// Origin says where the schema came from, for messages: the file name
	// (relative to the configuration folder) for a file, or a
	// configuration path for an inline schema. A source with Data and an
	// Origin has the base URL file:///<Origin>, so relative $refs in it
	// resolve to sibling files (see Options.Local).
	Origin string
	// Doc is the schema already decoded, e.g. inline YAML: maps with
	// string keys, slices, strings, bools, nil and numbers (Go ints and
	// floats become exact JSON numbers).
	Doc any
	// Data is the schema as JSON text, decoded strictly (duplicate keys
	// are an error).
	Data []byte
}

// Options tune Compile and the Set it returns. The zero value is the
// documented defaults.
type Options struct {
	// Local serves $ref targets that are not among the sources from
	// folders, by URL prefix: {"file:///": os.DirFS(configDir)} lets
	// schema files reference sibling files by relative path; the
	// JSON-Schema-Test-Suite uses {"http://localhost:1234/": remotes}.
	// Nothing is ever fetched from the network: a $ref to any other URL
	// is a compile error.
	Local map[string]fs.FS
	// MaxViolations caps the violations Validate returns. Default 10.
	MaxViolations int
	// Sensitive lists fields whose values are never echoed in violation
	// messages: a JSON pointer ("/credentials/token", covering what is
	// under it) or a field name matched at any depth, ignoring case
	// ("password").
	Sensitive []string
	// MaxValueLen is the longest value (as quoted in a message) echoed
	// from the message; longer values are not echoed. Default 32.
	MaxValueLen int
	// AssertFormat makes `format` an assertion (the 2020-12 default is an
	// annotation only; draft-07 always asserts it).
	AssertFormat bool
	// NoQuick turns off the fast path (see Quick), so every message goes
	// through the full validator; tests use it to compare the two.
	NoQuick bool
}

// Defaults of Options.
const (
	DefaultMaxViolations = 10
	DefaultMaxValueLen   = 32
)

// Set is a compiled, immutable set of named schemas, safe for concurrent use.
type Set struct {
	schemas map[string]*jsonschema.Schema
	// quick holds a Quick for each schema that has one: a message it
	// finds valid skips the full validator.
	quick         map[string]*Quick
	maxViolations int
	maxValueLen   int
	sensitive     []sensitiveField
}

// ErrInvalidSchema wraps every compile failure.
var ErrInvalidSchema = errors.New("invalid schema")

// CompileError is why one schema did not compile.
type CompileError struct {
	Name   string // the source's name
	Origin string // the source's origin (file name or configuration path)
	// Pointer locates the problem in the schema document (a JSON pointer,
	// "" for the whole document or when unknown).
	Pointer string
	Err     error
}

func (e *CompileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema %q", e.Name)
	if e.Origin != "" && e.Origin != e.Name {
		fmt.Fprintf(&b, " (%s)", e.Origin)
	}
	if e.Pointer != "" {
		fmt.Fprintf(&b, " at %s", e.Pointer)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *CompileError) Unwrap() []error { return []error{ErrInvalidSchema, e.Err} }

// maxSchemaBytes bounds a schema file or a document a $ref loads.
const maxSchemaBytes = 8 << 20

// Compile decodes and compiles srcs into a Set. Schemas are draft 2020-12
// unless their $schema names draft-07 (or another draft the validator
// knows); a schema may $ref any other source by its $id, or, when the
// source came from a file, by a path relative to it. Every problem is
// reported, joined, each a *CompileError naming the schema, its origin and
// where possible the JSON pointer of the problem; all wrap
// ErrInvalidSchema.
func Compile(srcs []Source, opts Options) (*Set, error) {
	set := &Set{
		schemas:       make(map[string]*jsonschema.Schema, len(srcs)),
		quick:         map[string]*Quick{},
		maxViolations: opts.MaxViolations,
		maxValueLen:   opts.MaxValueLen,
	}
	if set.maxViolations <= 0 {
		set.maxViolations = DefaultMaxViolations
	}
	if set.maxValueLen <= 0 {
		set.maxValueLen = DefaultMaxValueLen
	}
	for _, s := range opts.Sensitive {
		set.sensitive = append(set.sensitive, parseSensitive(s))
	}

	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if opts.AssertFormat {
		c.AssertFormat()
	}
	c.UseLoader(localLoader(opts.Local))

	var errs []error
	type entry struct {
		src Source
		loc string
		doc any
	}
	entries := make([]*entry, 0, len(srcs))
	names := map[string]bool{}
	for _, src := range srcs {
		fail := func(ptr string, err error) {
			errs = append(errs, &CompileError{Name: src.Name, Origin: src.Origin, Pointer: ptr, Err: err})
		}
		switch {
		case src.Name == "":
			fail("", errors.New("no name"))
			continue
		case names[src.Name]:
			fail("", errors.New("defined twice"))
			continue
		case (src.Doc == nil) == (src.Data == nil):
			fail("", errors.New("set exactly one of Doc and Data"))
			continue
		}
		names[src.Name] = true
		var doc any
		if src.Data != nil {
			v, err := body.Decode(src.Data, body.Limits{MaxBytes: maxSchemaBytes, MaxDepth: body.MaxDepthCeiling})
			if err != nil {
				fail("", err)
				continue
			}
			doc = v
		} else {
			v, err := normalize(src.Doc, "")
			if err != nil {
				var ne *normalizeError
				if errors.As(err, &ne) {
					fail(ne.ptr, ne.err)
				} else {
					fail("", err)
				}
				continue
			}
			doc = v
		}
		loc := location(src, doc)
		if err := c.AddResource(loc, doc); err != nil {
			var re *jsonschema.ResourceExistsError
			if errors.As(err, &re) {
				err = fmt.Errorf("another schema already has the URL %s (its $id)", loc)
			}
			fail("", err)
			continue
		}
		entries = append(entries, &entry{src: src, loc: loc, doc: doc})
	}
	for _, e := range entries {
		sch, err := c.Compile(e.loc)
		if err != nil {
			errs = append(errs, compileError(e.src, e.loc, e.doc, err))
			continue
		}
		set.schemas[e.src.Name] = sch
		if opts.NoQuick {
			continue
		}
		if q := CompileQuick(e.doc, ProfileSet); q != nil {
			set.quick[e.src.Name] = q
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

// Names lists the set's schema names, sorted.
func (s *Set) Names() []string { return slices.Sorted(maps.Keys(s.schemas)) }

// Has says whether the set holds a schema of that name.
func (s *Set) Has(name string) bool {
	_, ok := s.schemas[name]
	return ok
}

// location is the URL a source is registered under: its top-level $id
// when absolute, else file:///<Origin> for a file, else a URN naming it.
func location(src Source, doc any) string {
	if obj, ok := doc.(map[string]any); ok {
		if id, ok := obj["$id"].(string); ok {
			if u, err := url.Parse(id); err == nil && u.IsAbs() {
				u.Fragment, u.RawFragment = "", ""
				return u.String()
			}
		}
	}
	if src.Data != nil && src.Origin != "" {
		return (&url.URL{Scheme: "file", Path: "/" + strings.TrimPrefix(path.Clean("/"+src.Origin), "/")}).String()
	}
	return "urn:meshward:schema:" + url.PathEscape(src.Name)
}

// compileError turns a jsonschema error into a *CompileError with the best
// JSON pointer it can find.
func compileError(src Source, loc string, doc any, err error) *CompileError {
	ce := &CompileError{Name: src.Name, Origin: src.Origin, Err: err}
	var (
		sve  *jsonschema.SchemaValidationError
		lue  *jsonschema.LoadURLError
		rxe  *jsonschema.InvalidRegexError
		ane  *jsonschema.AnchorNotFoundError
		jpe  *jsonschema.JSONPointerNotFoundError
		ipe  *jsonschema.InvalidJsonPointerError
		pie  *jsonschema.ParseIDError
		pae  *jsonschema.ParseAnchorError
		die  *jsonschema.DuplicateIDError
		dae  *jsonschema.DuplicateAnchorError
		puee *jsonschema.ParseURLError
	)
	switch {
	case errors.As(err, &sve):
		ce.Pointer, ce.Err = metaschemaViolation(sve, doc)
	case errors.As(err, &lue):
		ce.Err = fmt.Errorf("$ref %s: %w", lue.URL, unwrapLoad(lue.Err))
		ce.Pointer = findRef(doc, loc, lue.URL)
	case errors.As(err, &rxe):
		ce.Pointer = fragment(rxe.URL)
		ce.Err = fmt.Errorf("invalid regular expression %q: %w", rxe.Regex, rxe.Err)
	case errors.As(err, &ane):
		ce.Pointer = findRef(doc, loc, ane.Reference)
		ce.Err = fmt.Errorf("$ref %s: anchor not found", ane.Reference)
	case errors.As(err, &jpe):
		ce.Pointer = findRef(doc, loc, jpe.URL)
		ce.Err = fmt.Errorf("$ref %s: JSON pointer not found", jpe.URL)
	case errors.As(err, &ipe):
		ce.Pointer = findRef(doc, loc, ipe.URL)
		ce.Err = fmt.Errorf("$ref %s: invalid JSON pointer", ipe.URL)
	case errors.As(err, &pie):
		ce.Pointer = fragment(pie.URL)
		ce.Err = errors.New("invalid $id")
	case errors.As(err, &pae):
		ce.Pointer = fragment(pae.URL)
		ce.Err = errors.New("invalid anchor")
	case errors.As(err, &die):
		ce.Pointer = die.Ptr2
		ce.Err = fmt.Errorf("$id %q also used at %s", die.ID, die.Ptr1)
	case errors.As(err, &dae):
		ce.Pointer = dae.Ptr2
		ce.Err = fmt.Errorf("anchor %q also used at %s", dae.Anchor, dae.Ptr1)
	case errors.As(err, &puee):
		ce.Pointer = findRef(doc, loc, puee.URL)
	}
	return ce
}

// metaschemaViolation reports the first violation of the metaschema.
func metaschemaViolation(sve *jsonschema.SchemaValidationError, doc any) (string, error) {
	base := fragment(sve.URL)
	var ve *jsonschema.ValidationError
	if !errors.As(sve.Err, &ve) {
		return base, fmt.Errorf("not a valid schema: %w", sve.Err)
	}
	leaf := ve
	for len(leaf.Causes) > 0 {
		leaf = leaf.Causes[0]
	}
	// The leaf's location is within the document when the failing
	// resource is the document itself, the usual case.
	v := (&Set{maxValueLen: DefaultMaxValueLen}).violation(leaf, func(loc []string) (any, bool) { return lookup(doc, loc) })
	ptr := strings.TrimSuffix(base, "/") + v.Path
	return ptr, fmt.Errorf("not a valid schema: %s: %s", v.Keyword, v.Message)
}

// fragment is the JSON pointer in u's fragment. For a resource with its
// own $id inside the document it is relative to that resource.
func fragment(u string) string {
	_, frag, _ := strings.Cut(u, "#")
	if f, err := url.PathUnescape(frag); err == nil {
		frag = f
	}
	if strings.HasPrefix(frag, "/") {
		return frag
	}
	return ""
}

// findRef finds the JSON pointer of a $ref (or $dynamicRef, or $schema)
// in doc whose value refers to target.
func findRef(doc any, loc, target string) string {
	tbase, tfrag, _ := strings.Cut(target, "#")
	var found string
	var walk func(v any, ptr string) bool
	walk = func(v any, ptr string) bool {
		switch v := v.(type) {
		case map[string]any:
			for _, kw := range []string{"$ref", "$dynamicRef", "$schema"} {
				if s, ok := v[kw].(string); ok {
					rbase, rfrag, _ := strings.Cut(s, "#")
					if (rbase != "" && strings.HasSuffix(tbase, rbase) || rbase == "" && tbase == loc) &&
						(rfrag == tfrag || tfrag == "") {
						found = ptr + "/" + escapeToken(kw)
						return true
					}
				}
			}
			for _, k := range slices.Sorted(maps.Keys(v)) {
				if walk(v[k], ptr+"/"+escapeToken(k)) {
					return true
				}
			}
		case []any:
			for i, e := range v {
				if walk(e, ptr+"/"+strconv.Itoa(i)) {
					return true
				}
			}
		}
		return false
	}
	walk(doc, "")
	return found
}

func unwrapLoad(err error) error {
	if err == nil {
		return errors.New("cannot load")
	}
	return err
}

// ErrRemoteRef: a $ref names a document that is neither a compiled
// source nor in a local folder; meshward never fetches schemas.
var ErrRemoteRef = errors.New("not among the loaded schemas, and schemas are never fetched from the network")

// localLoader serves URLs under the prefixes of local from their folders
// and refuses everything else.
func localLoader(local map[string]fs.FS) jsonschema.URLLoader {
	prefixes := slices.Collect(maps.Keys(local))
	// Longest prefix first.
	slices.SortFunc(prefixes, func(a, b string) int { return len(b) - len(a) })
	return loaderFunc(func(u string) (any, error) {
		for _, p := range prefixes {
			rest, ok := strings.CutPrefix(u, p)
			if !ok {
				continue
			}
			name, err := url.PathUnescape(rest)
			if err != nil || !fs.ValidPath(name) {
				return nil, fmt.Errorf("%q is not a valid file name under %s", rest, p)
			}
			data, err := fs.ReadFile(local[p], name)
			if err != nil {
				return nil, fmt.Errorf("%w (local folder for %s: %w)", ErrRemoteRef, p, err)
			}
			if len(data) > maxSchemaBytes {
				return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSchemaBytes)
			}
			doc, err := body.Decode(data, body.Limits{MaxBytes: maxSchemaBytes, MaxDepth: body.MaxDepthCeiling})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			return doc, nil
		}
		return nil, ErrRemoteRef
	})
}

type loaderFunc func(string) (any, error)

func (f loaderFunc) Load(u string) (any, error) { return f(u) }

type normalizeError struct {
	ptr string
	err error
}

func (e *normalizeError) Error() string { return e.ptr + ": " + e.err.Error() }

// normalize converts a decoded YAML (or Go) value into the JSON shape the
// validator reads: map[string]any, []any, json.Number, string, bool, nil.
func normalize(v any, ptr string) (any, error) {
	switch v := v.(type) {
	case nil, bool, string, json.Number:
		return v, nil
	case int:
		return json.Number(strconv.FormatInt(int64(v), 10)), nil
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), nil
	case int32:
		return json.Number(strconv.FormatInt(int64(v), 10)), nil
	case uint:
		return json.Number(strconv.FormatUint(uint64(v), 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(v, 10)), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, &normalizeError{ptr, fmt.Errorf("%v is not a JSON number", v)}
		}
		return json.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			n, err := normalize(e, ptr+"/"+escapeToken(k))
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, &normalizeError{ptr, fmt.Errorf("key %v is not a string", k)}
			}
			n, err := normalize(e, ptr+"/"+escapeToken(ks))
			if err != nil {
				return nil, err
			}
			out[ks] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			n, err := normalize(e, ptr+"/"+strconv.Itoa(i))
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	default:
		return nil, &normalizeError{ptr, fmt.Errorf("a %T is not a JSON value (quote it)", v)}
	}
}

func escapeToken(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapeToken(t))
	}
	return b.String()
}
