package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/meshward/meshward/policy/internal/schema"
)

// BodyChecker is the integration point of the JSON Schema step: every
// request allowed by a rule that names a schema (Rule.Schema or
// Rule.SchemaBy) has its body checked by it. A revision compiled without
// one denies such requests with 403 and code schema_unavailable (fail
// closed).
type BodyChecker interface {
	// CheckBody validates in.Body for rule r.
	CheckBody(r *Rule, in *Input) BodyResult
}

// BodyResult is the outcome of a BodyChecker.
type BodyResult struct {
	// OK reports a valid body; the other fields then do not matter.
	OK bool
	// Status (400, 413, 415), Code and Message describe the deny.
	Status  int
	Code    string
	Message string
	// Violations say where the body failed its schema.
	Violations []schema.Violation
	// Err is an internal failure: deny with status_on_error.
	Err error
}

// RegoEvaluator is the integration point of the Rego step, used when
// Config.Mode is "rego" or "both". NewOPARego is meshward's.
type RegoEvaluator interface {
	// Eval decides in for the caller c. An error is a deny with
	// status_on_error, counted as an error.
	Eval(ctx context.Context, in *Input, c Caller) (RegoResult, error)
}

// Caller is what the identity and rules steps know of the caller, given
// to Rego as input.meshward.
type Caller struct {
	// Roles and Attributes of the caller's identity entry (nil when none).
	Roles      []string
	Attributes map[string]string
	// Rule is the declarative rule that allowed, in mode "both".
	Rule string
}

// RegoResult is a Rego decision in opa-envoy-plugin's shape. An undefined
// decision is an error from Eval, never an allow.
type RegoResult struct {
	Allow bool
	// Status overrides the deny's HTTP status when not zero.
	Status    int
	Code      string
	Message   string
	Mutations *Mutations
}

// Options are what Compile needs beyond the configuration. Every field is
// optional.
type Options struct {
	// Dir resolves the relative file names of the configuration.
	Dir fs.FS
	// NewBodyChecker builds the schema step of a revision. Nil: rules that
	// name a schema deny with schema_unavailable.
	NewBodyChecker func(cfg *Config, dir fs.FS) (BodyChecker, error)
	// NewRego builds the Rego step of a revision. Required when the mode
	// is "rego" or "both": Compile fails without it.
	NewRego func(cfg *Config, dir fs.FS) (RegoEvaluator, error)
	// Now is the clock of quotas. Default time.Now.
	Now func() time.Time
}

// Revision is one compiled, immutable policy. It is safe for concurrent
// use and does no I/O while deciding.
type Revision struct {
	id          string
	trustDomain string
	mode        string
	exactIDs    map[string]*identity
	patternIDs  []idPattern
	byMethod    map[string]*methodIndex
	rules       []*rule
	body        BodyChecker
	rego        RegoEvaluator
	rpc         *rpcStep
	quotas      []*quota
	now         func() time.Time
}

type identity struct {
	roles       []string
	rolesJoined string
	attrs       map[string]string
}

type idPattern struct {
	segs []string // after spiffe://td/; "*" matches one segment
	id   *identity
}

type methodIndex struct {
	exact map[string][]*rule
	other []*rule // prefix, template and any-path rules
}

type pathKind uint8

const (
	pathAny pathKind = iota
	pathExact
	pathPrefix
	pathTemplate
)

type rule struct {
	idx      int
	name     string
	deny     bool
	dryRun   bool
	hosts    []string
	kind     pathKind
	path     string
	tmpl     []string // segments; "" stands for a {param}
	anyRole  []string
	attrs    []valueReq
	claims   []valueReq
	withBody bool
	rpc      *rpcMatch // nil: not narrowed to JSON-RPC messages
	// fold: a deny rule, matched against foldPath's spelling of the path
	// (its own path folded alike), so that a backend that ignores case
	// or a trailing slash cannot be reached around it.
	fold bool
	src  *Rule
}

type reqKind uint8

const (
	reqEquals reqKind = iota
	reqOneOf
	reqAtLeast
	reqContains
)

type valueReq struct {
	name   string
	kind   reqKind
	value  string
	set    []string
	rank   int            // for atLeast: index of value in levels
	levels map[string]int // for atLeast: value -> rank
}

// StandardMethods are the methods a rule without `methods` matches. Any
// other method (lowercase, TRACE, CONNECT, extensions) matches only rules
// that name it.
var StandardMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}

// ErrInvalid wraps every compile failure caused by the configuration.
var ErrInvalid = errors.New("invalid policy")

// Compile builds a revision from cfg (defaults are applied to a copy, then
// it is validated) for the mesh's trust domain.
func Compile(cfg *Config, trustDomain string, opts Options) (*Revision, error) {
	c := *cfg
	c.Rules = slices.Clone(cfg.Rules)
	for i := range c.Rules {
		c.Rules[i].Match.Methods = slices.Clone(c.Rules[i].Match.Methods)
	}
	if c.JSONRPC != nil {
		j := *c.JSONRPC
		j.Routes = slices.Clone(j.Routes)
		c.JSONRPC = &j
	}
	c.Quotas = slices.Clone(c.Quotas)
	if c.Rego != nil {
		rego := *c.Rego
		c.Rego = &rego
	}
	c.SetDefaults()
	if err := c.Validate("authz", trustDomain); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	r := &Revision{
		trustDomain: trustDomain,
		mode:        c.Mode,
		exactIDs:    map[string]*identity{},
		byMethod:    map[string]*methodIndex{},
		now:         opts.Now,
	}
	if r.now == nil {
		r.now = time.Now
	}
	for _, in := range c.Identities {
		id := &identity{roles: slices.Clone(in.Roles), rolesJoined: strings.Join(in.Roles, ","), attrs: in.Attributes}
		if !strings.Contains(in.SPIFFEID, "*") {
			if _, dup := r.exactIDs[in.SPIFFEID]; dup {
				return nil, fmt.Errorf("%w: identity %s listed twice", ErrInvalid, in.SPIFFEID)
			}
			r.exactIDs[in.SPIFFEID] = id
			continue
		}
		rest := strings.TrimPrefix(in.SPIFFEID, "spiffe://"+trustDomain+"/")
		r.patternIDs = append(r.patternIDs, idPattern{segs: strings.Split(rest, "/"), id: id})
	}
	ranks := map[string]map[string]int{}
	for name, lv := range c.Levels {
		m := map[string]int{}
		for i, v := range lv {
			m[v] = i
		}
		ranks[name] = m
	}
	for i := range c.Rules {
		src := &c.Rules[i]
		ru := &rule{
			idx: i, name: src.Name, deny: src.Effect == EffectDeny, dryRun: src.DryRun,
			hosts: src.Match.Hosts, anyRole: src.Require.AnyRole, src: src,
			withBody: src.Schema != "" || src.SchemaBy != nil,
		}
		ru.fold = ru.deny
		if m := src.Match.JSONRPC; m != nil {
			ru.rpc = &rpcMatch{method: m.Method, prefix: m.MethodPrefix, tool: m.Tool}
			if m.Tool != "" {
				ru.rpc.method = MethodToolsCall
			}
		}
		spell := func(p string) string {
			if ru.fold {
				return foldPath(p)
			}
			return p
		}
		switch {
		case src.Match.Path != "":
			ru.kind, ru.path = pathExact, spell(src.Match.Path)
		case src.Match.PathPrefix != "":
			ru.kind, ru.path = pathPrefix, spell(src.Match.PathPrefix)
		case src.Match.PathTemplate != "":
			ru.kind, ru.path = pathTemplate, src.Match.PathTemplate
			segs, err := compileTemplate(spell(src.Match.PathTemplate))
			if err != nil {
				return nil, fmt.Errorf("%w: authz.rules[%d].match.pathTemplate: %w", ErrInvalid, i, err)
			}
			ru.tmpl = segs
		}
		for _, name := range sortedKeys(src.Require.Attributes) {
			ru.attrs = append(ru.attrs, compileValueReq(name, src.Require.Attributes[name], ranks[name]))
		}
		for _, name := range sortedKeys(src.Require.Claims) {
			ru.claims = append(ru.claims, compileValueReq(name, src.Require.Claims[name], nil))
		}
		methods := src.Match.Methods
		if len(methods) == 0 {
			methods = StandardMethods
		}
		for _, m := range methods {
			mi := r.byMethod[m]
			if mi == nil {
				mi = &methodIndex{exact: map[string][]*rule{}}
				r.byMethod[m] = mi
			}
			if ru.kind == pathExact && !ru.fold {
				mi.exact[ru.path] = append(mi.exact[ru.path], ru)
			} else {
				mi.other = append(mi.other, ru)
			}
		}
		r.rules = append(r.rules, ru)
	}
	h := sha256.New()
	doc, err := json.Marshal(struct {
		TrustDomain string
		Config      *Config
	}{trustDomain, &c})
	if err != nil {
		return nil, fmt.Errorf("compile policy: %w", err)
	}
	h.Write(doc)
	if opts.NewBodyChecker != nil && needsBody(&c) {
		b, err := opts.NewBodyChecker(&c, opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: schemas: %w", ErrInvalid, err)
		}
		r.body = b
		writeDigest(h, b)
	}
	if c.JSONRPC != nil {
		st, data, err := compileRPC(&c, opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: jsonrpc: %w", ErrInvalid, err)
		}
		r.rpc = st
		_, _ = h.Write(data)
	}
	r.quotas = compileQuotas(&c, trustDomain)
	if c.Mode == ModeRego || c.Mode == ModeBoth {
		if opts.NewRego == nil {
			return nil, fmt.Errorf("%w: mode %q: this build has no Rego evaluator wired in", ErrInvalid, c.Mode)
		}
		e, err := opts.NewRego(&c, opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: rego: %w", ErrInvalid, err)
		}
		r.rego = e
		writeDigest(h, e)
	}
	r.id = hex.EncodeToString(h.Sum(nil)[:8])
	return r, nil
}

// digester is implemented by steps whose content (schema or policy files)
// is part of the revision's identity.
type digester interface{ Digest() string }

func writeDigest(h interface{ Write([]byte) (int, error) }, v any) {
	if d, ok := v.(digester); ok {
		_, _ = h.Write([]byte(d.Digest()))
	}
}

func needsBody(c *Config) bool {
	for _, r := range c.Rules {
		if r.Schema != "" || r.SchemaBy != nil {
			return true
		}
	}
	return false
}

func compileTemplate(t string) ([]string, error) {
	segs := strings.Split(strings.TrimPrefix(t, "/"), "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") && len(s) > 2 && !strings.ContainsAny(s[1:len(s)-1], "{}/") {
			segs[i] = ""
			continue
		}
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "{}") {
			return nil, fmt.Errorf("%q: segment %q must be a literal or a whole {param}", t, s)
		}
	}
	return segs, nil
}

func compileValueReq(name string, v ValueRequirement, levels map[string]int) valueReq {
	switch {
	case v.Equals != "":
		return valueReq{name: name, kind: reqEquals, value: v.Equals}
	case len(v.OneOf) > 0:
		return valueReq{name: name, kind: reqOneOf, set: v.OneOf}
	case v.AtLeast != "":
		return valueReq{name: name, kind: reqAtLeast, value: v.AtLeast, rank: levels[v.AtLeast], levels: levels}
	default:
		return valueReq{name: name, kind: reqContains, value: v.Contains}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ID is the revision's content hash: the same configuration (and schema
// and Rego content) gives the same ID on every replica.
func (r *Revision) ID() string { return r.id }

// TrustDomain is the trust domain the revision was compiled for.
func (r *Revision) TrustDomain() string { return r.trustDomain }

// lookup finds the caller's identity: an exact SPIFFE ID first, else the
// first pattern in configuration order.
func (r *Revision) lookup(principal string) *identity {
	if id, ok := r.exactIDs[principal]; ok {
		return id
	}
	if len(r.patternIDs) == 0 {
		return nil
	}
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return nil
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || td != r.trustDomain {
		return nil
	}
	for _, p := range r.patternIDs {
		if matchSegments(p.segs, path, true) {
			return p.id
		}
	}
	return nil
}

// matchSegments matches path (without its leading slash) against segs,
// where "*" (wild) or "" (template param) stands for one non-empty segment.
func matchSegments(segs []string, path string, wild bool) bool {
	for i, s := range segs {
		seg, rest, more := strings.Cut(path, "/")
		if seg == "" {
			return false
		}
		if !(wild && s == "*") && !(!wild && s == "") && s != seg {
			return false
		}
		if i == len(segs)-1 {
			return !more
		}
		if !more {
			return false
		}
		path = rest
	}
	return false
}

// foldPath is the spelling deny rules compare paths in: lowercase,
// without one trailing slash ("/" stays). Allow rules compare the path as
// it is, so a spelling variant can only be denied more, never allowed.
func foldPath(p string) string {
	if len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return strings.ToLower(p)
}

func (ru *rule) matchPath(path string) bool {
	if ru.fold {
		path = foldPath(path)
	}
	switch ru.kind {
	case pathAny:
		return true
	case pathExact:
		return path == ru.path
	case pathPrefix:
		if !strings.HasPrefix(path, ru.path) {
			return false
		}
		return len(path) == len(ru.path) || strings.HasSuffix(ru.path, "/") || path[len(ru.path)] == '/'
	default:
		if len(path) == 0 || path[0] != '/' {
			return false
		}
		return matchSegments(ru.tmpl, path[1:], false)
	}
}

func (ru *rule) matchHost(host string) bool {
	if len(ru.hosts) == 0 {
		return true
	}
	for _, h := range ru.hosts {
		if h == host {
			return true
		}
		if suffix, ok := strings.CutPrefix(h, "*"); ok && strings.HasPrefix(suffix, ".") && len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
			return true
		}
	}
	return false
}
