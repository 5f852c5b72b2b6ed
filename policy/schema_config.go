package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/schema"
)

// SchemaConfig names one JSON Schema, from a file or inline.
type SchemaConfig struct {
	Name string `yaml:"name"`
	// File is read relative to the configuration file.
	File string `yaml:"file"`
	// Inline is the schema itself, as YAML or JSON.
	Inline map[string]any `yaml:"inline"`
}

// SchemaSelector picks a body's schema by one of its fields.
type SchemaSelector struct {
	// Field is a top-level field of the JSON body, e.g. "type".
	Field string `yaml:"field"`
	// Schemas maps the field's values to schema names; any other value is denied.
	Schemas map[string]string `yaml:"schemas"`
}

func (s SchemaConfig) validate(p string) error {
	if (s.File == "") == (s.Inline == nil) {
		return fmt.Errorf("%s: set exactly one of file and inline", p)
	}
	return nil
}

func (s *SchemaSelector) validate(p string, known map[string]bool) error {
	var errs []error
	if s.Field == "" {
		errs = append(errs, fmt.Errorf("%s.field: required", p))
	}
	if len(s.Schemas) == 0 {
		errs = append(errs, fmt.Errorf("%s.schemas: required", p))
	}
	for v, name := range s.Schemas {
		if !known[name] {
			errs = append(errs, fmt.Errorf("%s.schemas.%s: unknown schema %q", p, v, name))
		}
	}
	return errors.Join(errs...)
}

// BodyLimits bounds how request bodies are read and how schema failures
// are reported. The zero value is the documented defaults.
type BodyLimits struct {
	// MaxBytes is the largest body accepted (400 body_too_large above).
	// Default 1 MiB (body.DefaultMaxBytes).
	MaxBytes int `yaml:"maxBytes"`
	// MaxDepth is the deepest nesting of objects and arrays accepted
	// (400 invalid_json deeper). Default 64, at most 1000.
	MaxDepth int `yaml:"maxDepth"`
	// MaxValues is the most JSON values a body may hold (400
	// body_too_large above): it bounds the cost of validating it.
	// Default 10000 (body.DefaultMaxValues).
	MaxValues int `yaml:"maxValues"`
	// MaxViolations caps the violations in a deny. Default 10.
	MaxViolations int `yaml:"maxViolations"`
	// Sensitive fields are never quoted in violation messages: JSON
	// pointers (/credentials/token) or field names at any depth (password).
	Sensitive []string `yaml:"sensitive"`
}

// SetDefaults fills in defaults.
func (l *BodyLimits) SetDefaults() {
	if l.MaxBytes == 0 {
		l.MaxBytes = body.DefaultMaxBytes
	}
	if l.MaxDepth == 0 {
		l.MaxDepth = body.DefaultMaxDepth
	}
	if l.MaxValues == 0 {
		l.MaxValues = body.DefaultMaxValues
	}
	if l.MaxViolations == 0 {
		l.MaxViolations = schema.DefaultMaxViolations
	}
}

// Validate reports problems in l under path.
func (l *BodyLimits) Validate(path string) error {
	var errs []error
	if l.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%s.maxBytes: must be positive", path))
	}
	if l.MaxDepth < 0 || l.MaxDepth > body.MaxDepthCeiling {
		errs = append(errs, fmt.Errorf("%s.maxDepth: must be between 1 and %d", path, body.MaxDepthCeiling))
	}
	if l.MaxValues < 0 {
		errs = append(errs, fmt.Errorf("%s.maxValues: must be positive", path))
	}
	if l.MaxViolations < 0 {
		errs = append(errs, fmt.Errorf("%s.maxViolations: must be positive", path))
	}
	for i, s := range l.Sensitive {
		if s == "" || s == "/" {
			errs = append(errs, fmt.Errorf("%s.sensitive[%d]: empty field", path, i))
		}
	}
	return errors.Join(errs...)
}

// CompileSchemas compiles cfg.Schemas with lim's reporting options, and
// returns the set and a digest of the schema files and limits (for the
// revision ID). Files are read from dir (absolute names from disk),
// inline schemas taken as they are. Errors name the schema, its file (or
// configuration path) and the JSON pointer; `meshward validate` can call
// it to compile schemas no rule uses yet.
func CompileSchemas(cfg *Config, dir fs.FS, lim BodyLimits) (*schema.Set, []byte, error) {
	srcs := make([]schema.Source, 0, len(cfg.Schemas))
	h := sha256.New()
	var errs []error
	for i, s := range cfg.Schemas {
		src := schema.Source{Name: s.Name}
		if s.File != "" {
			var data []byte
			var err error
			if filepath.IsAbs(s.File) {
				data, err = os.ReadFile(s.File)
			} else if dir == nil {
				err = errors.New("no configuration folder to read it from")
			} else {
				data, err = fs.ReadFile(dir, filepath.ToSlash(filepath.Clean(s.File)))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("schema %q (%s): %w", s.Name, s.File, err))
				continue
			}
			src.Origin, src.Data = s.File, data
			_, _ = fmt.Fprintf(h, "%q %q %d\n", s.Name, s.File, len(data))
			_, _ = h.Write(data)
		} else {
			src.Origin, src.Doc = fmt.Sprintf("authz.schemas[%d].inline", i), s.Inline
		}
		srcs = append(srcs, src)
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	_, _ = fmt.Fprintf(h, "%+v\n", lim)
	set, err := schema.Compile(srcs, schema.Options{MaxViolations: lim.MaxViolations, Sensitive: lim.Sensitive})
	if err != nil {
		return nil, nil, err
	}
	return set, h.Sum(nil), nil
}

// NewSchemaBodyChecker returns the Options.NewBodyChecker that runs the
// JSON Schema step with the given limits:
//
//	policy.Options{Dir: cfg.Dir, NewBodyChecker: policy.NewSchemaBodyChecker(limits)}
func NewSchemaBodyChecker(lim BodyLimits) func(cfg *Config, dir fs.FS) (BodyChecker, error) {
	lim.SetDefaults()
	return func(cfg *Config, dir fs.FS) (BodyChecker, error) {
		set, digest, err := CompileSchemas(cfg, dir, lim)
		if err != nil {
			return nil, err
		}
		return &schemaChecker{set: set, digest: hex.EncodeToString(digest),
			lim: body.Limits{MaxBytes: lim.MaxBytes, MaxDepth: lim.MaxDepth, MaxValues: lim.MaxValues}}, nil
	}
}

// schemaChecker is the BodyChecker of a revision: headers, strict
// decoding, schema selection and validation.
type schemaChecker struct {
	set    *schema.Set
	digest string
	lim    body.Limits
}

// Digest makes schema file contents part of the revision ID.
func (c *schemaChecker) Digest() string { return c.digest }

// CheckBody checks in's body for rule r: 413 for a partial body, 415 for
// a non-JSON content type or any content encoding, 400 invalid_json or
// body_too_large for a body Decode refuses, 400 schema_violation for an
// unknown discriminator or a schema violation.
func (c *schemaChecker) CheckBody(r *Rule, in *Input) BodyResult {
	if in.BodyTruncated {
		return BodyResult{Status: 413, Code: body.CodePartialBody,
			Message: "the request body was cut at the proxy's buffer limit; send a smaller body"}
	}
	if p := body.CheckHeaders(body.HeadersFrom(func(n string) string { return in.Headers[n] })); p != nil {
		return BodyResult{Status: p.Status, Code: p.Code, Message: p.Message}
	}
	t, err := c.decode(in)
	if err != nil {
		var e *body.Error
		if !errors.As(err, &e) {
			return BodyResult{Err: err}
		}
		p := e.Problem()
		return BodyResult{Status: p.Status, Code: p.Code, Message: p.Message}
	}
	name := r.Schema
	if r.SchemaBy != nil {
		sel := schema.Selector(*r.SchemaBy)
		var n string
		if t != nil {
			n, err = sel.SelectTape(t)
		} else {
			n, err = sel.Select(in.ParsedBody)
		}
		if err != nil {
			var se *schema.SelectError
			if !errors.As(err, &se) {
				return BodyResult{Err: err}
			}
			return violationResult("no schema for this message", []schema.Violation{se.Violation})
		}
		name = n
	}
	if !c.set.Has(name) {
		return BodyResult{Err: fmt.Errorf("rule %q: schema %q not compiled", r.Name, name)}
	}
	var vs []schema.Violation
	if t != nil {
		vs = c.set.ValidateTape(name, t)
	} else {
		vs = c.set.Validate(name, in.ParsedBody)
	}
	if vs != nil {
		return violationResult("body does not match schema "+strconv.Quote(name), vs)
	}
	return BodyResult{OK: true}
}

// decode parses the body once per request into a tape kept in in, which
// a later step (another rule's check, Rego, audit) reuses. A body the
// caller decoded already (in.HasParsedBody) gives a nil tape: it is
// validated as values.
func (c *schemaChecker) decode(in *Input) (*body.Tape, error) {
	if in.HasParsedBody {
		return nil, nil
	}
	if in.tape != nil {
		return in.tape, nil
	}
	text := in.BodyText
	if text == "" {
		text = string(in.Body)
	}
	t := body.AcquireTape()
	if err := body.DecodeTapeString(text, c.lim, t); err != nil {
		t.Release()
		return nil, err
	}
	in.tape = t
	return t, nil
}

func violationResult(msg string, vs []schema.Violation) BodyResult {
	res := BodyResult{Status: 400, Code: schema.CodeViolation, Violations: vs}
	n := len(msg)
	for _, v := range vs {
		n += len(v.Path) + len(v.Keyword) + len(v.Message) + 6
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(msg)
	for i, v := range vs {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		b.WriteString(sep)
		b.WriteString(cmp.Or(v.Path, "/"))
		b.WriteByte(' ')
		b.WriteString(v.Keyword)
		b.WriteString(": ")
		b.WriteString(v.Message)
	}
	res.Message = b.String()
	return res
}
