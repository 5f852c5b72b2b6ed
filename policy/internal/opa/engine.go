package opa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	ast "github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	rego "github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
)

// DefaultQuery is opa-envoy-plugin's default decision.
const DefaultQuery = "data.envoy.authz.allow"

// Config says where an Engine's policies and data come from and which
// decision it asks for.
type Config struct {
	// FS resolves relative Files and BundleFile (typically os.DirFS of the
	// configuration file's folder). Nil: the process's working directory.
	// Absolute paths are always read from the operating system.
	FS fs.FS
	// Files are .rego, .json and .yaml files or folders. Data files are
	// placed under data by their folder, like `opa run`.
	Files []string
	// BundleFile is an OPA bundle (.tar.gz). It may be combined with Files.
	BundleFile string
	// Query is the decision: a reference such as data.envoy.authz.allow,
	// or the path style envoy/authz/allow. Default [DefaultQuery].
	Query string
	// V0Compatible parses modules as Rego v0 (OPA < 1.0 syntax), like
	// opa's --v0-compatible. Default: Rego v1 (modules with
	// `import rego.v1` work either way).
	V0Compatible bool
	// Verification, when set, requires bundles to be signed and checks
	// the signature with OPA's bundle verification.
	Verification *Verification
	// MaxBundleBytes limits the size of a bundle read from a file or URL.
	// Default 64 MiB.
	MaxBundleBytes int64
	// Tuning turns the evaluation speed-ups off one by one; the zero
	// value (every speed-up on) is what meshward serves.
	Tuning Tuning
}

// Tuning turns off the speed-ups an Engine applies to a policy. Each
// decides exactly like OPA's plain evaluation; the tests check that by
// deciding with each turned off.
type Tuning struct {
	// FullInput builds the whole input document for every Eval, not
	// only the parts the policy can read (see inputNeeds).
	FullInput bool
	// NoPartialEval serves the plain prepared query: no partial
	// evaluation at load (see preparePartial).
	NoPartialEval bool
	// NoResidualCompile leaves the partially evaluated decision to
	// OPA's evaluator instead of compiling it to Go (see residual.go).
	NoResidualCompile bool
	// MaxPartialExprs bounds the output of the partial evaluation
	// (expressions over all rules): a policy that joins large data sets
	// can partially evaluate to a cross product, slower to compile and
	// evaluate than the original; over the bound the plain query serves.
	// Default DefaultMaxPartialExprs.
	MaxPartialExprs int
}

// DefaultMaxPartialExprs is the default Tuning.MaxPartialExprs.
const DefaultMaxPartialExprs = 20000

// Verification configures OPA bundle signature verification.
type Verification struct {
	// KeyID names the key; it must match the signature's kid when the
	// signature has one. Default "default".
	KeyID string
	// Key is the PEM public key (RS*, PS*, ES*) or the shared secret (HS*).
	Key string
	// Algorithm is the JWS algorithm. Default RS256.
	Algorithm string
	// Scope, when set, must equal the signature's scope claim.
	Scope string
	// Exclude lists bundle files left out of verification.
	Exclude []string
}

// DefaultMaxBundleBytes bounds a bundle read from a file or URL.
const DefaultMaxBundleBytes = 64 << 20

// Engine is one immutable policy revision, prepared once. It is safe for
// concurrent use.
type Engine struct {
	query    string
	revision string
	modules  []string
	pq       rego.PreparedEvalQuery
	// prepared says how pq was prepared: preparedPlain, preparedDeduped
	// or preparedPartialResult.
	prepared string
	// values caches what builtins compute from constant arguments across
	// evaluations (compiled JSON schemas of json.match_schema, like the
	// OPA server does); it lives and dies with the revision.
	values cache.InterQueryValueCache
	// needs are the parts of the input document the policy can read;
	// Eval builds only those.
	needs need
	// residual, when not nil, is the partially evaluated decision
	// compiled to Go (see residual.go); Eval asks it first.
	residual *residual
}

// Query returns the decision the engine evaluates, as a data reference.
func (e *Engine) Query() string { return e.query }

// Revision returns the bundle revision ("" for plain files).
func (e *Engine) Revision() string { return e.revision }

// Modules returns the names of the loaded policy files, sorted.
func (e *Engine) Modules() []string { return append([]string(nil), e.modules...) }

// New loads cfg's files and bundle and prepares the query. Compile errors
// name file:line. On error the caller keeps whatever engine it had.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	var b *bundle.Bundle
	if cfg.BundleFile != "" {
		f, err := openFile(cfg.FS, cfg.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("opa: bundle: %w", err)
		}
		defer func() { _ = f.Close() }() // read-only
		rb, err := readBundle(f, cfg)
		if err != nil {
			return nil, fmt.Errorf("opa: bundle %s: %w", cfg.BundleFile, err)
		}
		b = &rb
	}
	return build(ctx, cfg, b)
}

// NewFromBundle reads an OPA bundle (.tar.gz) from r, verifying its
// signature when cfg.Verification is set, and prepares it together with
// cfg.Files (cfg.BundleFile is ignored).
func NewFromBundle(ctx context.Context, r io.Reader, cfg Config) (*Engine, error) {
	b, err := readBundle(r, cfg)
	if err != nil {
		return nil, fmt.Errorf("opa: bundle: %w", err)
	}
	return build(ctx, cfg, &b)
}

func openFile(fsys fs.FS, name string) (io.ReadCloser, error) {
	if fsys == nil || filepath.IsAbs(name) {
		return os.Open(name)
	}
	return fsys.Open(filepath.ToSlash(filepath.Clean(name)))
}

func regoVersion(cfg Config) ast.RegoVersion {
	if cfg.V0Compatible {
		return ast.RegoV0
	}
	return ast.RegoV1
}

func readBundle(r io.Reader, cfg Config) (bundle.Bundle, error) {
	limit := cfg.MaxBundleBytes
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	rd := bundle.NewReader(r).
		WithSizeLimitBytes(limit).
		WithRegoVersion(regoVersion(cfg)).
		WithProcessAnnotations(true)
	if v := cfg.Verification; v != nil {
		vc, err := verificationConfig(v)
		if err != nil {
			return bundle.Bundle{}, err
		}
		rd = rd.WithBundleVerificationConfig(vc)
	}
	return rd.Read()
}

func verificationConfig(v *Verification) (*bundle.VerificationConfig, error) {
	id := v.KeyID
	if id == "" {
		id = "default"
	}
	alg := v.Algorithm
	if alg == "" {
		alg = "RS256"
	}
	keys := map[string]*bundle.KeyConfig{id: {Key: v.Key, Algorithm: alg, Scope: v.Scope}}
	vc := bundle.NewVerificationConfig(keys, id, v.Scope, v.Exclude)
	if err := vc.ValidateAndInjectDefaults(keys); err != nil {
		return nil, fmt.Errorf("verification: %w", err)
	}
	return vc, nil
}

// ParseQuery turns a query in either style into a data reference:
// "data.envoy.authz.allow" stays, "envoy/authz/allow" becomes it.
func ParseQuery(q string) (string, error) {
	if q == "" {
		return DefaultQuery, nil
	}
	if q == "data" {
		return "", fmt.Errorf("query %q names no decision", q)
	}
	if !strings.HasPrefix(q, "data.") && !strings.HasPrefix(q, "data[") {
		ref := ast.Ref{ast.DefaultRootDocument}
		for seg := range strings.SplitSeq(q, "/") {
			if seg != "" {
				ref = append(ref, ast.StringTerm(seg))
			}
		}
		if len(ref) == 1 {
			return "", fmt.Errorf("query %q names no decision", q)
		}
		return ref.String(), nil
	}
	ref, err := ast.ParseRef(q)
	if err != nil {
		return "", fmt.Errorf("query %q: %w", q, err)
	}
	if !ref.HasPrefix(ast.DefaultRootRef) || len(ref) < 2 {
		return "", fmt.Errorf("query %q must be a reference under data", q)
	}
	return ref.String(), nil
}

func build(ctx context.Context, cfg Config, b *bundle.Bundle) (*Engine, error) {
	query, err := ParseQuery(cfg.Query)
	if err != nil {
		return nil, fmt.Errorf("opa: %w", err)
	}
	modules, docs, err := loadFiles(cfg)
	if err != nil {
		return nil, err
	}
	cc, err := cache.ParseCachingConfig(nil)
	if err != nil {
		return nil, fmt.Errorf("opa: cache config: %w", err)
	}
	e := &Engine{query: query, values: cache.NewInterQueryValueCache(ctx, cc)}
	if b != nil {
		e.revision = b.Manifest.Revision
		for _, m := range b.Modules {
			name := m.Path
			if _, dup := modules[name]; dup {
				return nil, fmt.Errorf("opa: module %s is both in the bundle and in files", name)
			}
			modules[name] = m.Parsed
		}
		if b.Data != nil {
			if docs, err = mergeDocs(docs, b.Data, "data"); err != nil {
				return nil, fmt.Errorf("opa: bundle data: %w", err)
			}
		}
	}
	if len(modules) == 0 {
		return nil, errors.New("opa: no policy modules loaded")
	}
	opts := []func(*rego.Rego){
		rego.SetRegoVersion(regoVersion(cfg)),
		rego.Store(inmem.NewFromObjectWithOpts(docs, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))),
		rego.StoreReadAST(true),
	}
	parsed := make([]*ast.Module, 0, len(modules))
	for name, m := range modules {
		e.modules = append(e.modules, name)
		opts = append(opts, rego.ParsedModule(m))
		parsed = append(parsed, m)
	}
	sort.Strings(e.modules)
	if useFastMatchSchema(parsed) {
		opts = append(opts, rego.Function2(matchSchemaFastDecl, matchSchemaFast))
	}
	if !cfg.Tuning.FullInput {
		e.needs = inputNeeds(parsed)
	}
	pq, err := rego.New(append(opts, rego.Query(query))...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("opa: compile: %w", err)
	}
	e.pq = pq
	e.prepared = preparedPlain
	if cfg.Tuning.NoPartialEval {
		return e, nil
	}
	if ppq, how, res, ok := preparePartial(ctx, query, opts, cfg.Tuning); ok {
		e.pq, e.prepared, e.residual = ppq, how, res
	}
	return e, nil
}

// Bounds of the partial evaluation done at load.
const (
	// partialTimeout bounds the partial evaluation of one revision.
	partialTimeout = 5 * time.Second
	// partialNamespace is where OPA puts the partially evaluated rules;
	// no hand-written policy uses this package.
	partialNamespace = "__meshward_partial__"
)

// preparePartial prepares the decision the way OPA's high-throughput
// paths do: the query is partially evaluated once per revision with the
// input unknown, so that data look-ups, rules that depend only on data,
// and rule bodies that cannot match any data are resolved ahead of time,
// and each Check evaluates only the residual conditions on the input. The
// decision is the same by construction (OPA's partial evaluation). When
// the result is a single reference to the generated rules (the usual
// case), conditions that partial evaluation repeats within a rule body are
// dropped before compiling them (see dedupeBody); otherwise OPA's own
// rego.PartialResult is used. When neither can be done within the bounds
// (partialTimeout, t.MaxPartialExprs), ok is false and the plain prepared
// query serves.
func preparePartial(ctx context.Context, query string, opts []func(*rego.Rego), t Tuning) (rego.PreparedEvalQuery, string, *residual, bool) {
	maxExprs := t.MaxPartialExprs
	if maxExprs <= 0 {
		maxExprs = DefaultMaxPartialExprs
	}
	ctx, cancel := context.WithTimeout(ctx, partialTimeout)
	defer cancel()
	with := func(extra ...func(*rego.Rego)) []func(*rego.Rego) {
		return append(append([]func(*rego.Rego){}, opts...), extra...)
	}
	unknowns := rego.Unknowns([]string{"input"})
	ns := rego.PartialNamespace(partialNamespace)
	pqs, err := rego.New(with(rego.Query(query), unknowns, ns)...).Partial(ctx)
	if err != nil || partialExprs(pqs) > maxExprs {
		return rego.PreparedEvalQuery{}, "", nil, false
	}
	if ref, ok := singleRef(pqs); ok {
		extra := []func(*rego.Rego){rego.Query(ref.String())}
		okOnly := false
		for _, m := range pqs.Support {
			m.Rules = dropContradictions(m.Rules)
			for _, r := range m.Rules {
				for ; r != nil; r = r.Else {
					r.Body = dedupeBody(r.Body)
					okOnly = useMatchSchemaOK(r) || okOnly
				}
			}
			extra = append(extra, rego.ParsedModule(m))
		}
		if okOnly {
			extra = append(extra, rego.Function2(matchSchemaOKDecl, matchSchemaOK))
		}
		if pq, err := rego.New(with(extra...)...).PrepareForEval(ctx); err == nil {
			var res *residual
			if !t.NoResidualCompile {
				res = compileResidual(pqs.Support, ref)
			}
			return pq, preparedDeduped, res, true
		}
	}
	pr, err := rego.New(with(rego.Query(query), unknowns, ns)...).PartialResult(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, "", nil, false
	}
	pq, err := pr.Rego(rego.StoreReadAST(true)).PrepareForEval(ctx)
	if err != nil {
		return rego.PreparedEvalQuery{}, "", nil, false
	}
	return pq, preparedPartialResult, nil, true
}

// How an Engine's query was prepared.
const (
	preparedPlain         = "plain"
	preparedDeduped       = "partial+dedupe"
	preparedPartialResult = "partial"
)

// singleRef returns the partially evaluated query when it is one
// reference into the generated rules, data.<partialNamespace>....
func singleRef(pqs *rego.PartialQueries) (ast.Ref, bool) {
	if len(pqs.Queries) != 1 || len(pqs.Queries[0]) != 1 {
		return nil, false
	}
	e := pqs.Queries[0][0]
	t, ok := e.Terms.(*ast.Term)
	if !ok || e.Negated || len(e.With) > 0 {
		return nil, false
	}
	ref, ok := t.Value.(ast.Ref)
	prefix := ast.Ref{ast.DefaultRootDocument, ast.StringTerm(partialNamespace)}
	if !ok || !ref.IsGround() || !ref.HasPrefix(prefix) {
		return nil, false
	}
	return ref, true
}

// dedupeBody drops the repeats of an equality (a = b) in a rule body:
// partial evaluation inlines each rule it expands, so a body often tests
// the same input value against the same constant several times. Unifying
// the same two terms again binds nothing new and cannot fail where the
// first succeeded, so the body means the same without the repeats. Only
// plain equalities are dropped: not negated, no `with`, no function calls
// or comprehensions inside (which could have effects or be expensive in a
// way that is not a pure test).
func dedupeBody(body ast.Body) ast.Body {
	seen := map[string]bool{}
	out := make(ast.Body, 0, len(body))
	for _, e := range body {
		if pureEquality(e) {
			k := e.String()
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		e.Index = len(out)
		out = append(out, e)
	}
	return out
}

// dropContradictions removes the rules whose body tests one input value
// against two different constants (`"GET" = input.m; "POST" = input.m`):
// partial evaluation produces one rule per combination of the rules it
// expands, most of them such dead ends, and each is a candidate OPA
// evaluates on every request. Such a body can never succeed, so without
// it the policy decides the same. Rules in an else chain, functions and
// default rules are kept, and so is every rule of a name whose rules
// would all go.
func dropContradictions(rules []*ast.Rule) []*ast.Rule {
	dead := map[*ast.Rule]bool{}
	live := map[string]int{}
	for _, r := range rules {
		name := r.Head.Ref().String()
		if r.Else == nil && !r.Default && len(r.Head.Args) == 0 && contradicts(r.Body) {
			dead[r] = true
			continue
		}
		live[name]++
	}
	if len(dead) == 0 {
		return rules
	}
	out := make([]*ast.Rule, 0, len(rules))
	for _, r := range rules {
		if !dead[r] || live[r.Head.Ref().String()] == 0 {
			out = append(out, r)
		}
	}
	return out
}

// contradicts reports whether body holds two plain equalities that
// compare the same ground input reference with different scalars.
func contradicts(body ast.Body) bool {
	seen := map[string]ast.Value{}
	for _, e := range body {
		if !pureEquality(e) {
			continue
		}
		ops := e.Operands()
		if len(ops) != 2 {
			continue
		}
		ref, c := ops[0], ops[1]
		if _, ok := c.Value.(ast.Ref); ok {
			ref, c = c, ref
		}
		r, ok := ref.Value.(ast.Ref)
		if !ok || !r.IsGround() || !r.HasPrefix(ast.InputRootRef) {
			continue
		}
		switch c.Value.(type) {
		case ast.String, ast.Number, ast.Boolean, ast.Null:
		default:
			continue
		}
		k := r.String()
		if prev, ok := seen[k]; ok && ast.Compare(prev, c.Value) != 0 {
			return true
		}
		seen[k] = c.Value
	}
	return false
}

func pureEquality(e *ast.Expr) bool {
	if !e.IsEquality() || e.Negated || len(e.With) > 0 {
		return false
	}
	pure := true
	for _, t := range e.Operands() {
		ast.WalkTerms(t, func(x *ast.Term) bool {
			switch x.Value.(type) {
			case ast.Call, *ast.ArrayComprehension, *ast.SetComprehension, *ast.ObjectComprehension:
				pure = false
			}
			return !pure
		})
	}
	return pure
}

func partialExprs(pqs *rego.PartialQueries) int {
	n := 0
	for _, q := range pqs.Queries {
		n += len(q)
	}
	for _, m := range pqs.Support {
		for _, r := range m.Rules {
			n += len(r.Body) + 1
		}
	}
	return n
}

// loadFiles loads cfg.Files: relative ones through cfg.FS, absolute ones
// from the operating system.
func loadFiles(cfg Config) (map[string]*ast.Module, map[string]any, error) {
	modules := map[string]*ast.Module{}
	docs := map[string]any{}
	var rel, abs []string
	for _, f := range cfg.Files {
		if cfg.FS == nil || filepath.IsAbs(f) {
			abs = append(abs, f)
		} else {
			rel = append(rel, filepath.ToSlash(filepath.Clean(f)))
		}
	}
	for _, group := range []struct {
		fsys  fs.FS
		paths []string
	}{{cfg.FS, rel}, {nil, abs}} {
		if len(group.paths) == 0 {
			continue
		}
		l := loader.NewFileLoader().WithRegoVersion(regoVersion(cfg)).WithProcessAnnotation(true)
		if group.fsys != nil {
			l = l.WithFS(group.fsys)
		}
		res, err := l.Filtered(group.paths, onlyPolicyFiles)
		if err != nil {
			return nil, nil, fmt.Errorf("opa: load: %w", err)
		}
		for name, m := range res.Modules {
			modules[name] = m.Parsed
		}
		if docs, err = mergeDocs(docs, res.Documents, "data"); err != nil {
			return nil, nil, fmt.Errorf("opa: load: %w", err)
		}
	}
	return modules, docs, nil
}

// onlyPolicyFiles skips, inside folders, files that are neither policy nor
// data (READMEs, bundles, hidden files) and Rego test files, which
// `meshward policy test` runs but a serving engine does not need.
func onlyPolicyFiles(path string, info fs.FileInfo, depth int) bool {
	if info.IsDir() {
		return depth > 0 && strings.HasPrefix(info.Name(), ".")
	}
	if depth == 0 {
		return false // named explicitly: load it whatever it is
	}
	name := info.Name()
	switch {
	case strings.HasPrefix(name, "."):
		return true
	case strings.HasSuffix(name, "_test.rego"):
		return true
	case strings.HasSuffix(name, ".rego"), strings.HasSuffix(name, ".json"),
		strings.HasSuffix(name, ".yaml"), strings.HasSuffix(name, ".yml"):
		return false
	}
	return true
}

// mergeDocs merges b into a; two different non-object values at one path
// are a conflict.
func mergeDocs(a, b map[string]any, path string) (map[string]any, error) {
	for k, bv := range b {
		av, ok := a[k]
		if !ok {
			a[k] = bv
			continue
		}
		am, aok := av.(map[string]any)
		bm, bok := bv.(map[string]any)
		if !aok || !bok {
			return nil, fmt.Errorf("%s.%s defined twice", path, k)
		}
		merged, err := mergeDocs(am, bm, path+"."+k)
		if err != nil {
			return nil, err
		}
		a[k] = merged
	}
	return a, nil
}

// Eval decides in: it builds the input document, evaluates the prepared
// query and validates the decision. Any error means deny; see the package
// documentation for how to answer each.
func (e *Engine) Eval(ctx context.Context, in *Input) (*Result, error) {
	doc, err := buildNativeInput(in, e.needs)
	if err != nil {
		return nil, err
	}
	return e.evalValue(ctx, ast.LazyObject(doc), doc)
}

// EvalValue evaluates the prepared query on an input document built by
// [BuildInput] (or any other ast.Value) and validates the decision.
func (e *Engine) EvalValue(ctx context.Context, input ast.Value) (*Result, error) {
	return e.evalValue(ctx, input, nil)
}

// evalValue decides on input; doc, when not nil, is the plain Go values
// under it (Eval's lazy object), which the residual decision reads.
func (e *Engine) evalValue(ctx context.Context, input ast.Value, doc map[string]any) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opa: eval: %w", err)
	}
	if e.residual != nil && doc != nil {
		if v, sure := e.residual.eval(doc); sure {
			return e.result(ctx, v)
		}
	}
	return e.eval(ctx, input)
}

func (e *Engine) eval(ctx context.Context, input ast.Value) (*Result, error) {
	growStack() // before OPA's deep recursion (see stack.go)
	// OPA's per-evaluation metrics are never read: its no-op
	// implementation saves their timers and maps on every Check.
	rs, err := e.pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalInterQueryBuiltinValueCache(e.values),
		rego.EvalMetrics(metrics.NoOp()))
	if err != nil {
		return nil, fmt.Errorf("opa: eval: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return e.decision(ctx, nil, false)
	}
	return e.decision(ctx, rs[0].Expressions[0].Value, true)
}

// result is the residual decision's value v (nil: undefined) as a Result,
// exactly as eval gives OPA's.
func (e *Engine) result(ctx context.Context, v ast.Value) (*Result, error) {
	if v == nil {
		return e.decision(ctx, nil, false)
	}
	d, err := ast.JSON(v)
	if err != nil {
		return nil, fmt.Errorf("opa: eval: %w", err)
	}
	return e.decision(ctx, d, true)
}

// decision validates the decision d (defined false: undefined) into a
// Result, for OPA's evaluation and the residual one alike.
func (e *Engine) decision(ctx context.Context, d any, defined bool) (*Result, error) {
	// OPA checks the context only now and then, so a short evaluation can
	// finish after a cancellation or deadline. Such a result is not a
	// decision: fail closed, deterministically.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opa: eval: %w", err)
	}
	if !defined {
		return nil, fmt.Errorf("opa: %s: %w", e.query, ErrUndefined)
	}
	r, err := decisionToResult(d)
	if err != nil {
		return nil, fmt.Errorf("opa: %s: %w", e.query, err)
	}
	return r, nil
}
