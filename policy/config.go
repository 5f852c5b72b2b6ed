package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Config is the policy part of meshward's configuration (the `authz`
// section, beside the extauthz server settings): who is who, and the rules.
type Config struct {
	// Identities map SPIFFE IDs (exact, or with `*` standing for one whole
	// path segment) to roles and attributes.
	Identities []Identity `yaml:"identities"`
	// Levels declares ordered attribute values, lowest first, so that a
	// rule can require e.g. clearance >= high.
	Levels map[string][]string `yaml:"levels"`
	// Rules are evaluated in full: any matching deny rule wins, else a
	// matching allow rule whose requirements hold allows; nothing matched
	// is a deny.
	Rules []Rule `yaml:"rules"`
	// Schemas are the JSON Schemas rules validate message bodies against.
	Schemas []SchemaConfig `yaml:"schemas"`
	// Body bounds how the bodies of schema routes are read and how their
	// violations are reported.
	Body BodyLimits `yaml:"body"`
	// Rego optionally adds OPA policies evaluated on the same input
	// document as opa-envoy-plugin.
	Rego *RegoConfig `yaml:"rego"`
	// Mode combines rules and Rego: "rules", "rego" or "both" (both must
	// allow). Default: "both" when Rego is configured and rules exist,
	// else whichever is configured.
	Mode string `yaml:"mode"`
	// JSONRPC makes routes JSON-RPC (MCP, A2A) aware; see JSONRPCConfig.
	JSONRPC *JSONRPCConfig `yaml:"jsonrpc"`
	// Quotas are token buckets per caller; see QuotaConfig.
	Quotas []QuotaConfig `yaml:"quotas"`
}

// Identity gives a workload, named by SPIFFE ID, its roles and attributes.
type Identity struct {
	SPIFFEID   string            `yaml:"spiffeID"`
	Roles      []string          `yaml:"roles"`
	Attributes map[string]string `yaml:"attributes"`
}

// Rule is one declarative authorization rule.
type Rule struct {
	Name string `yaml:"name"`
	// Effect is "allow" (default) or "deny". Deny rules win.
	Effect  string  `yaml:"effect"`
	Match   Match   `yaml:"match"`
	Require Require `yaml:"require"`
	// Schema names the JSON Schema the request body must satisfy.
	Schema string `yaml:"schema"`
	// SchemaBy selects the schema by a discriminator field of the body.
	SchemaBy *SchemaSelector `yaml:"schemaBy"`
	// DryRun decides and reports, but allows.
	DryRun bool `yaml:"dryRun"`
}

// Match selects the requests a rule applies to. Empty lists match all.
type Match struct {
	Methods []string `yaml:"methods"`
	Hosts   []string `yaml:"hosts"`
	// Exactly one of Path, PathPrefix and PathTemplate may be set; none
	// matches every path. A template is like /v1/agents/{id}/tasks.
	Path         string `yaml:"path"`
	PathPrefix   string `yaml:"pathPrefix"`
	PathTemplate string `yaml:"pathTemplate"`
	// JSONRPC narrows the rule to JSON-RPC messages by method and MCP tool.
	JSONRPC *JSONRPCMatch `yaml:"jsonrpc"`
}

// Require lists what a caller must satisfy for an allow rule to allow (or
// for a deny rule to deny). All listed requirements must hold.
type Require struct {
	// AnyRole: the caller must hold at least one of these roles.
	AnyRole []string `yaml:"anyRole"`
	// Attributes of the caller's identity, by name.
	Attributes map[string]ValueRequirement `yaml:"attributes"`
	// Claims of the verified end-user JWT, by name.
	Claims map[string]ValueRequirement `yaml:"claims"`
}

// ValueRequirement constrains one attribute or claim. Exactly one field is set.
type ValueRequirement struct {
	Equals string   `yaml:"equals"`
	OneOf  []string `yaml:"oneOf"`
	// AtLeast compares on the order declared in Config.Levels.
	AtLeast string `yaml:"atLeast"`
	// Contains: the claim (a list, or a space-separated string) holds it.
	Contains string `yaml:"contains"`
}

// Effects of a rule.
const (
	EffectAllow = "allow"
	EffectDeny  = "deny"
)

// Modes combining rules and Rego.
const (
	ModeRules = "rules"
	ModeRego  = "rego"
	ModeBoth  = "both"
)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	for i := range c.Rules {
		if c.Rules[i].Effect == "" {
			c.Rules[i].Effect = EffectAllow
		}
		for j, m := range c.Rules[i].Match.Methods {
			c.Rules[i].Match.Methods[j] = strings.ToUpper(m)
		}
	}
	c.Body.SetDefaults()
	if c.Rego != nil {
		c.Rego.SetDefaults()
	}
	if c.JSONRPC != nil {
		c.JSONRPC.SetDefaults()
	}
	for i := range c.Quotas {
		c.Quotas[i].SetDefaults()
	}
	if c.Mode == "" {
		switch {
		case c.Rego != nil && len(c.Rules) > 0:
			c.Mode = ModeBoth
		case c.Rego != nil:
			c.Mode = ModeRego
		default:
			c.Mode = ModeRules
		}
	}
}

// Validate reports every problem in c, each named by its field path under
// path, joined with errors.Join. trustDomain is the mesh's trust domain.
func (c *Config) Validate(path, trustDomain string) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for i, id := range c.Identities {
		p := fmt.Sprintf("%s.identities[%d]", path, i)
		if err := validateIDPattern(id.SPIFFEID, trustDomain); err != nil {
			add("%s.spiffeID: %v", p, err)
		}
		for j, role := range id.Roles {
			if role == "" || strings.ContainsAny(role, ", \t\r\n") {
				add("%s.roles[%d]: %q must be non-empty without commas or spaces (roles travel comma-joined in a header)", p, j, role)
			}
		}
	}
	for name, lv := range c.Levels {
		if len(lv) < 2 {
			add("%s.levels.%s: needs at least two ordered values", path, name)
		}
		seen := map[string]bool{}
		for _, v := range lv {
			if seen[v] {
				add("%s.levels.%s: value %q listed twice", path, name, v)
			}
			seen[v] = true
		}
	}
	schemas := map[string]bool{}
	for i, s := range c.Schemas {
		p := fmt.Sprintf("%s.schemas[%d]", path, i)
		if s.Name == "" {
			add("%s.name: required", p)
		} else if schemas[s.Name] {
			add("%s.name: schema %q defined twice", p, s.Name)
		}
		schemas[s.Name] = true
		if err := s.validate(p); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.Body.Validate(path+".body"))
	names := map[string]bool{}
	for i, r := range c.Rules {
		p := fmt.Sprintf("%s.rules[%d]", path, i)
		if r.Name == "" {
			add("%s.name: required", p)
		} else if names[r.Name] {
			add("%s.name: rule %q defined twice", p, r.Name)
		}
		names[r.Name] = true
		if r.Effect != EffectAllow && r.Effect != EffectDeny {
			add("%s.effect: must be %q or %q, not %q", p, EffectAllow, EffectDeny, r.Effect)
		}
		errs = append(errs, r.Match.validate(p+".match")...)
		if r.Match.JSONRPC != nil {
			errs = append(errs, r.Match.JSONRPC.validate(p+".match.jsonrpc", c.JSONRPC != nil && len(c.JSONRPC.Routes) > 0)...)
		}
		for name, req := range r.Require.Attributes {
			errs = append(errs, req.validate(fmt.Sprintf("%s.require.attributes.%s", p, name), c.Levels[name])...)
		}
		for name, req := range r.Require.Claims {
			if req.AtLeast != "" {
				add("%s.require.claims.%s.atLeast: not supported for claims", p, name)
				continue
			}
			errs = append(errs, req.validate(fmt.Sprintf("%s.require.claims.%s", p, name), nil)...)
		}
		if r.Schema != "" && r.SchemaBy != nil {
			add("%s: schema and schemaBy are exclusive", p)
		}
		if r.Schema != "" && !schemas[r.Schema] {
			add("%s.schema: unknown schema %q", p, r.Schema)
		}
		if r.SchemaBy != nil {
			errs = append(errs, r.SchemaBy.validate(p+".schemaBy", schemas))
		}
		if r.Effect == EffectDeny && (r.Schema != "" || r.SchemaBy != nil) {
			add("%s: a deny rule cannot name a schema", p)
		}
	}
	if c.Rego != nil {
		errs = append(errs, c.Rego.Validate(path+".rego"))
	}
	if c.JSONRPC != nil {
		errs = append(errs, c.JSONRPC.Validate(path+".jsonrpc"))
	}
	errs = append(errs, validateQuotas(c, path, trustDomain))
	switch c.Mode {
	case ModeRules, ModeBoth, ModeRego:
	default:
		add("%s.mode: must be one of rules, rego, both, not %q", path, c.Mode)
	}
	if (c.Mode == ModeRego || c.Mode == ModeBoth) && c.Rego == nil {
		add("%s.mode: %q needs a rego section", path, c.Mode)
	}
	return errors.Join(errs...)
}

func (m Match) validate(p string) []error {
	var errs []error
	set := 0
	for _, s := range []string{m.Path, m.PathPrefix, m.PathTemplate} {
		if s != "" {
			set++
			if !strings.HasPrefix(s, "/") {
				errs = append(errs, fmt.Errorf("%s: path %q must start with /", p, s))
			}
		}
	}
	if set > 1 {
		errs = append(errs, fmt.Errorf("%s: path, pathPrefix and pathTemplate are exclusive", p))
	}
	for i, h := range m.Hosts {
		if h == "" || h != strings.ToLower(h) || strings.ContainsAny(h, ": ") {
			errs = append(errs, fmt.Errorf("%s.hosts[%d]: %q must be a lowercase host name without port", p, i, h))
		}
	}
	for i, meth := range m.Methods {
		if meth == "" || strings.ContainsAny(meth, " \t/") {
			errs = append(errs, fmt.Errorf("%s.methods[%d]: invalid method %q", p, i, meth))
		}
	}
	return errs
}

func (v ValueRequirement) validate(p string, levels []string) []error {
	set := 0
	if v.Equals != "" {
		set++
	}
	if len(v.OneOf) > 0 {
		set++
	}
	if v.AtLeast != "" {
		set++
	}
	if v.Contains != "" {
		set++
	}
	if set != 1 {
		return []error{fmt.Errorf("%s: set exactly one of equals, oneOf, atLeast, contains", p)}
	}
	if v.AtLeast != "" {
		if levels == nil {
			return []error{fmt.Errorf("%s.atLeast: no levels declared for this attribute (add it under levels)", p)}
		}
		if !slices.Contains(levels, v.AtLeast) {
			return []error{fmt.Errorf("%s.atLeast: %q is not one of the declared levels %v", p, v.AtLeast, levels)}
		}
	}
	return nil
}

// validateIDPattern checks a SPIFFE ID pattern: spiffe://<trustDomain>/path
// where a path segment may be `*`.
func validateIDPattern(id, trustDomain string) error {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return fmt.Errorf("%q is not a spiffe:// ID", id)
	}
	td, p, _ := strings.Cut(rest, "/")
	if td != trustDomain {
		return fmt.Errorf("%q is not in trust domain %q", id, trustDomain)
	}
	if p == "" {
		return fmt.Errorf("%q has no path", id)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%q has an empty or dot path segment", id)
		}
		if strings.Contains(seg, "*") && seg != "*" {
			return fmt.Errorf("%q: `*` must stand for a whole segment", id)
		}
	}
	return nil
}
