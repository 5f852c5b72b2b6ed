package kube

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/policy"
)

// objects is what one generation is built from: the informers' contents.
type objects struct {
	agents          []*v1alpha1.MeshAgent
	rules           []*v1alpha1.AuthorizationRule
	schemas         []*v1alpha1.MessageSchema
	pods            []*corev1.Pod
	serviceAccounts map[string]bool // namespace/name
}

// ref names an object of one of the three kinds.
type ref struct {
	kind, namespace, name string
}

func (r ref) String() string { return r.kind + " " + r.namespace + "/" + r.name }

// verdict is what one object's generation came to: accepted, or the
// problems (each "field.path: message") that kept it out.
type verdict struct {
	generation int64
	problems   []string
	spiffeID   string // MeshAgent only
}

// generation is one built configuration and the verdict on every object.
type generation struct {
	cfg      *config.Config
	verdicts map[ref]*verdict
	pods     map[string]podSelector // of every agent served, by name: where its endpoints are
}

// owner maps the field paths of the merged configuration back to the
// objects they came from: agents[i] to a MeshAgent, authz.rules[i] and
// authz.identities[i] to an AuthorizationRule and its own index there,
// authz.levels.<name> to the AuthorizationRule defining it,
// authz.schemas[i] to a MessageSchema.
type owner struct {
	agents     []ref
	identities []indexRef
	rules      []indexRef
	levels     map[string]ref
	schemas    []ref
}

type ruleIn struct {
	ref
	spec v1alpha1.AuthorizationRuleSpec
}

type indexRef struct {
	ref
	i int // index within the object's spec list
}

var pathRE = regexp.MustCompile(`^(agents|authz\.identities|authz\.rules|authz\.schemas)\[(\d+)\](.*)$`)

// attribute finds the object a problem of the merged configuration is
// about and rewrites its field path into the object's: "authz.rules[7].match:
// ..." becomes "spec.rules[1].match: ..." of the object holding rule 7.
func (o *owner) attribute(msg string) (ref, string, bool) {
	path, rest, _ := strings.Cut(msg, ": ")
	if name, ok := strings.CutPrefix(path, "authz.levels."); ok {
		key, _, _ := strings.Cut(name, ".")
		if r, ok := o.levels[key]; ok {
			return r, "spec.levels." + name + ": " + rest, true
		}
		return ref{}, "", false
	}
	m := pathRE.FindStringSubmatch(path)
	if m == nil {
		return ref{}, "", false
	}
	i, _ := strconv.Atoi(m[2])
	switch m[1] {
	case "agents":
		if i < len(o.agents) {
			return o.agents[i], "spec" + agentField(m[3]) + ": " + rest, true
		}
	case "authz.identities":
		if i < len(o.identities) {
			r := o.identities[i]
			return r.ref, fmt.Sprintf("spec.identities[%d]%s: %s", r.i, m[3], rest), true
		}
	case "authz.rules":
		if i < len(o.rules) {
			r := o.rules[i]
			return r.ref, fmt.Sprintf("spec.rules[%d]%s: %s", r.i, m[3], rest), true
		}
	case "authz.schemas":
		if i < len(o.schemas) {
			return o.schemas[i], "spec.schema: " + rest, true
		}
	}
	return ref{}, "", false
}

// agentField maps the field of an agents entry to the MeshAgent's: the
// name is metadata.name, the SPIFFE ID comes from the ServiceAccount.
func agentField(f string) string {
	switch f {
	case ".name":
		return ".metadata.name"
	case ".spiffeID":
		return ".serviceAccountName"
	}
	return f
}

// build makes one generation from base (the file's settings) and objs.
// Objects are merged oldest first (creation time, then namespace/name)
// and validated together as the file path validates a file; of the objects its problems are about,
// the newest is left out with them, and the rest are built again without
// it until what remains is valid (an agent whose peer was left out is
// left out too, naming the peer). So a new object that clashes with a
// served one (a rule name, a SPIFFE ID) is refused and the served one
// stays. An
// error means a problem no object could be blamed for: nothing is served
// from this generation.
func build(base *config.Config, objs objects, opts policy.Options) (*generation, error) {
	g := &generation{verdicts: map[ref]*verdict{}}
	rank := map[ref]age{}
	for _, o := range objs.agents {
		rank[ref{"MeshAgent", o.Namespace, o.Name}] = ageOf(o)
	}
	for _, o := range objs.rules {
		rank[ref{"AuthorizationRule", o.Namespace, o.Name}] = ageOf(o)
	}
	for _, o := range objs.schemas {
		rank[ref{"MessageSchema", o.Namespace, o.Name}] = ageOf(o)
	}
	reject := func(r ref, problem string) {
		v := g.verdicts[r]
		v.problems = append(v.problems, problem)
	}
	td := base.TrustDomain

	// Schemas: each must compile alone; names are unique across namespaces.
	type schemaIn struct {
		ref
		sc policy.SchemaConfig
	}
	var schemas []schemaIn
	seen := map[string]ref{}
	for _, s := range oldestFirst(objs.schemas) {
		r := ref{"MessageSchema", s.Namespace, s.Name}
		g.verdicts[r] = &verdict{generation: s.Generation}
		if prev, dup := seen[s.Name]; dup {
			reject(r, fmt.Sprintf("metadata.name: schema %q is already defined by %s", s.Name, prev))
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(s.Spec.Schema.Raw, &doc); err != nil || doc == nil {
			reject(r, "spec.schema: must be a JSON object")
			continue
		}
		sc := policy.SchemaConfig{Name: s.Name, Inline: doc}
		// Compile reaches the schema step only for a rule naming a
		// schema: compile the schema itself, unused or not.
		if opts.NewBodyChecker != nil {
			alone := &policy.Config{Schemas: []policy.SchemaConfig{sc}, Body: base.Authz.Policy.Body}
			if _, err := opts.NewBodyChecker(alone, opts.Dir); err != nil {
				reject(r, "spec.schema: "+err.Error())
				continue
			}
		}
		seen[s.Name] = r
		schemas = append(schemas, schemaIn{r, sc})
	}

	// Agents: the SPIFFE ID from the ServiceAccount of the selected pods.
	type agentIn struct {
		ref
		a envoy.Agent
	}
	var agents []agentIn
	sels := map[ref]podSelector{}
	for _, ma := range oldestFirst(objs.agents) {
		r := ref{"MeshAgent", ma.Namespace, ma.Name}
		v := &verdict{generation: ma.Generation}
		g.verdicts[r] = v
		sa, sel, problem := serviceAccount(ma, objs)
		if problem != "" {
			reject(r, problem)
			continue
		}
		v.spiffeID = "spiffe://" + td + "/ns/" + ma.Namespace + "/sa/" + sa
		sels[r] = podSelector{namespace: ma.Namespace, selector: sel}
		agents = append(agents, agentIn{r, toAgent(ma, v.spiffeID)})
	}

	// Rules: levels are unique across objects.
	var rules []ruleIn
	levelOwner := map[string]ref{}
	for _, ar := range oldestFirst(objs.rules) {
		r := ref{"AuthorizationRule", ar.Namespace, ar.Name}
		g.verdicts[r] = &verdict{generation: ar.Generation}
		dup := false
		for _, name := range sortedKeys(ar.Spec.Levels) {
			if prev, ok := levelOwner[name]; ok {
				reject(r, fmt.Sprintf("spec.levels.%s: level %q is already defined by %s", name, name, prev))
				dup = true
			}
		}
		if dup {
			continue
		}
		for name := range ar.Spec.Levels {
			levelOwner[name] = r
		}
		rules = append(rules, ruleIn{r, ar.Spec})
	}

	// Merge what is left and validate it as the file path does, leaving
	// out the objects it blames, until it is valid.
	for {
		c := *base
		c.Agents = nil
		c.Authz.Policy.Identities, c.Authz.Policy.Rules, c.Authz.Policy.Schemas = nil, nil, nil
		c.Authz.Policy.Levels = map[string][]string{}
		own := &owner{levels: map[string]ref{}}
		for _, a := range agents {
			if len(g.verdicts[a.ref].problems) > 0 {
				continue
			}
			c.Agents = append(c.Agents, a.a)
			own.agents = append(own.agents, a.ref)
		}
		for _, s := range schemas {
			if len(g.verdicts[s.ref].problems) > 0 {
				continue
			}
			c.Authz.Policy.Schemas = append(c.Authz.Policy.Schemas, s.sc)
			own.schemas = append(own.schemas, s.ref)
		}
		for _, ru := range rules {
			if len(g.verdicts[ru.ref].problems) > 0 {
				continue
			}
			for i, id := range ru.spec.Identities {
				c.Authz.Policy.Identities = append(c.Authz.Policy.Identities, toIdentity(id))
				own.identities = append(own.identities, indexRef{ru.ref, i})
			}
			for i, rl := range ru.spec.Rules {
				c.Authz.Policy.Rules = append(c.Authz.Policy.Rules, toRule(rl))
				own.rules = append(own.rules, indexRef{ru.ref, i})
			}
			for name, lv := range ru.spec.Levels {
				c.Authz.Policy.Levels[name] = slices.Clone(lv)
				own.levels[name] = ru.ref
			}
		}
		c.SetDefaults()
		err := c.Validate()
		if err == nil {
			// What Validate cannot see (a path template that does not
			// parse, an identity listed twice) Compile finds.
			if _, cerr := policy.Compile(&c.Authz.Policy, td, opts); cerr != nil {
				err = blameCompile(cerr, rules, g, &c, td, opts)
				if err == nil {
					continue // the objects to blame were left out: build again
				}
			}
		}
		if err == nil {
			g.cfg = &c
			g.pods = make(map[string]podSelector, len(c.Agents))
			for i, r := range own.agents {
				g.pods[c.Agents[i].Name] = sels[r]
			}
			return g, nil
		}
		// Leave out the newest object blamed (a conflict between a served
		// object and a new one is the new one's), with what was said of
		// it; the others blamed are built again without it.
		blamed := map[ref][]string{}
		var newest ref
		for _, e := range config.Flatten(err) {
			r, msg, ok := own.attribute(e.Error())
			if !ok {
				return nil, fmt.Errorf("kubernetes: %w", err)
			}
			if len(blamed[r]) == 0 && (newest == ref{} || rank[r].after(rank[newest])) {
				newest = r
			}
			blamed[r] = append(blamed[r], msg)
		}
		if len(blamed) == 0 {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		for _, msg := range blamed[newest] {
			reject(newest, msg)
		}
	}
}

// age orders objects oldest first: by creation time, then namespace/name,
// the same on every replica.
type age struct {
	created time.Time
	key     string
}

func (a age) after(b age) bool {
	if !a.created.Equal(b.created) {
		return a.created.After(b.created)
	}
	return a.key > b.key
}

func ageOf(o metav1.Object) age {
	return age{o.GetCreationTimestamp().Time, o.GetNamespace() + "/" + o.GetName()}
}

// blameCompile finds the AuthorizationRules that fail to compile beside
// the accepted schemas and levels and leaves them out; nil when it found
// one, the error when none alone fails.
func blameCompile(cerr error, rules []ruleIn, g *generation, c *config.Config, td string, opts policy.Options) error {
	found := false
	for _, ru := range rules {
		if len(g.verdicts[ru.ref].problems) > 0 {
			continue
		}
		p := policy.Config{Schemas: c.Authz.Policy.Schemas, Levels: c.Authz.Policy.Levels, Body: c.Authz.Policy.Body}
		for _, id := range ru.spec.Identities {
			p.Identities = append(p.Identities, toIdentity(id))
		}
		for _, rl := range ru.spec.Rules {
			p.Rules = append(p.Rules, toRule(rl))
		}
		p.SetDefaults()
		if _, err := policy.Compile(&p, td, opts); err != nil {
			g.verdicts[ru.ref].problems = append(g.verdicts[ru.ref].problems, "spec: "+err.Error())
			found = true
		}
	}
	if found {
		return nil
	}
	return fmt.Errorf("kubernetes: %w", cerr)
}

// serviceAccount is the MeshAgent's ServiceAccount and its parsed pod
// selector, or the problem that leaves it without one.
func serviceAccount(ma *v1alpha1.MeshAgent, objs objects) (string, labels.Selector, string) {
	sel, err := metav1.LabelSelectorAsSelector(&ma.Spec.Selector)
	if err != nil {
		return "", nil, "spec.selector: " + err.Error()
	}
	if sel.Empty() {
		return "", nil, "spec.selector: must select pods (an empty selector selects every pod of the namespace)"
	}
	var sas []string
	for _, p := range objs.pods {
		if p.Namespace != ma.Namespace || !sel.Matches(labels.Set(p.Labels)) || p.DeletionTimestamp != nil {
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if !slices.Contains(sas, sa) {
			sas = append(sas, sa)
		}
	}
	slices.Sort(sas)
	sa := ma.Spec.ServiceAccountName
	switch {
	case sa != "" && len(sas) > 0 && (len(sas) > 1 || sas[0] != sa):
		return "", nil, fmt.Sprintf("spec.selector: selects pods of ServiceAccounts %s, not only spec.serviceAccountName %q", strings.Join(sas, ", "), sa)
	case sa == "" && len(sas) > 1:
		return "", nil, fmt.Sprintf("spec.selector: selects pods of several ServiceAccounts (%s): an agent has one SPIFFE ID", strings.Join(sas, ", "))
	case sa == "" && len(sas) == 0:
		return "", nil, "spec.selector: selects no pod, so the ServiceAccount is unknown: set spec.serviceAccountName"
	case sa == "":
		sa = sas[0]
	}
	if !objs.serviceAccounts[ma.Namespace+"/"+sa] {
		return "", nil, fmt.Sprintf("spec.serviceAccountName: ServiceAccount %s/%s not found", ma.Namespace, sa)
	}
	return sa, sel, ""
}

func toAgent(ma *v1alpha1.MeshAgent, spiffeID string) envoy.Agent {
	s := ma.Spec
	a := envoy.Agent{
		Name:               ma.Name,
		SPIFFEID:           spiffeID,
		InboundPort:        uint32(s.InboundPort), //nolint:gosec // G115: validated range 1-65535
		App:                s.App,
		OutboundPort:       uint32(s.OutboundPort), //nolint:gosec // G115: validated range
		OutboundSocket:     s.OutboundSocket,
		OutboundSocketMode: uint32(s.OutboundSocketMode), //nolint:gosec // G115: validated range
		AdminPort:          uint32(s.AdminPort),          //nolint:gosec // G115: validated range
		SharedSPIFFEID:     s.SharedSPIFFEID,
		// Each agent runs in its own pods: its ports are its own.
		Host: "pod of " + ma.Namespace + "/" + ma.Name,
	}
	for _, p := range s.Peers {
		// Without addresses, the peer's endpoints are its pods' (EDS).
		ep := envoy.Peer{Name: p.Name, Addresses: slices.Clone(p.Addresses), Discovered: len(p.Addresses) == 0}
		if c := p.Credential; c != nil {
			ep.Credential = &envoy.Credential{Header: c.Header, Secret: c.Secret, Format: c.Format}
		}
		a.Peers = append(a.Peers, ep)
	}
	for _, j := range s.JWTProviders {
		a.JWTProviders = append(a.JWTProviders, envoy.JWTProvider{Name: j.Name, Issuer: j.Issuer,
			Audiences: slices.Clone(j.Audiences), RemoteJWKS: j.RemoteJWKS, LocalJWKS: j.LocalJWKS})
	}
	return a
}

func toIdentity(id v1alpha1.Identity) policy.Identity {
	out := policy.Identity{SPIFFEID: id.SPIFFEID, Roles: slices.Clone(id.Roles)}
	if id.Attributes != nil {
		out.Attributes = map[string]string{}
		for k, v := range id.Attributes {
			out.Attributes[k] = v
		}
	}
	return out
}

func toRule(r v1alpha1.Rule) policy.Rule {
	out := policy.Rule{
		Name:   r.Name,
		Effect: r.Effect,
		Match: policy.Match{Methods: slices.Clone(r.Match.Methods), Hosts: slices.Clone(r.Match.Hosts),
			Path: r.Match.Path, PathPrefix: r.Match.PathPrefix, PathTemplate: r.Match.PathTemplate},
		Require: policy.Require{AnyRole: slices.Clone(r.Require.AnyRole),
			Attributes: toValues(r.Require.Attributes), Claims: toValues(r.Require.Claims)},
		Schema: r.Schema,
		DryRun: r.DryRun,
	}
	if s := r.SchemaBy; s != nil {
		out.SchemaBy = &policy.SchemaSelector{Field: s.Field, Schemas: map[string]string{}}
		for k, v := range s.Schemas {
			out.SchemaBy.Schemas[k] = v
		}
	}
	return out
}

func toValues(in map[string]v1alpha1.ValueRequirement) map[string]policy.ValueRequirement {
	if in == nil {
		return nil
	}
	out := make(map[string]policy.ValueRequirement, len(in))
	for k, v := range in {
		out[k] = policy.ValueRequirement{Equals: v.Equals, OneOf: slices.Clone(v.OneOf), AtLeast: v.AtLeast, Contains: v.Contains}
	}
	return out
}

// oldestFirst orders objects by age (creation time, then namespace/name),
// the same on every replica.
func oldestFirst[T metav1.Object](in []T) []T {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b T) int {
		x, y := ageOf(a), ageOf(b)
		switch {
		case x.after(y):
			return 1
		case y.after(x):
			return -1
		}
		return 0
	})
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
