package policy_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/policy/internal/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const td = "mesh.local"

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func id(name string) string { return "spiffe://mesh.local/ns/default/sa/" + name }

// testConfig covers every rule feature.
func testConfig() policy.Config {
	return policy.Config{
		Identities: []policy.Identity{
			{SPIFFEID: id("planner"), Roles: []string{"operator"}, Attributes: map[string]string{"department": "engineering", "clearance": "high", "region": "us"}},
			{SPIFFEID: id("viewer"), Roles: []string{"viewer"}, Attributes: map[string]string{"department": "sales", "clearance": "low", "region": "eu"}},
			{SPIFFEID: id("executor"), Roles: []string{"executor"}, Attributes: map[string]string{"department": "engineering", "clearance": "medium", "region": "us"}},
			{SPIFFEID: "spiffe://mesh.local/ns/*/sa/batch", Roles: []string{"batch"}, Attributes: map[string]string{"clearance": "medium"}},
		},
		Levels: map[string][]string{"clearance": {"low", "medium", "high"}},
		Rules: []policy.Rule{
			{Name: "create-task", Match: policy.Match{Methods: []string{"post"}, Path: "/v1/tasks"},
				Require: policy.Require{AnyRole: []string{"admin", "operator"}, Attributes: map[string]policy.ValueRequirement{
					"department": {Equals: "engineering"}, "clearance": {AtLeast: "high"}, "region": {Equals: "us"}}}},
			{Name: "list-tasks", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/tasks"},
				Require: policy.Require{AnyRole: []string{"admin", "operator", "viewer"}}},
			{Name: "agent-tasks", Match: policy.Match{Methods: []string{"GET"}, PathTemplate: "/v1/agents/{id}/tasks"},
				Require: policy.Require{Attributes: map[string]policy.ValueRequirement{"clearance": {AtLeast: "medium"}}}},
			{Name: "reports", Match: policy.Match{PathPrefix: "/v1/reports", Hosts: []string{"reports.mesh.local", "*.internal"}},
				Require: policy.Require{Attributes: map[string]policy.ValueRequirement{"region": {OneOf: []string{"us", "ca"}}}}},
			{Name: "admin-mfa", Match: policy.Match{Methods: []string{"DELETE"}, PathPrefix: "/v1/admin/"},
				Require: policy.Require{Claims: map[string]policy.ValueRequirement{"amr": {Contains: "mfa"}, "scope": {Contains: "admin"}, "tier": {OneOf: []string{"gold", "platinum"}}}}},
			{Name: "no-batch-admin", Effect: policy.EffectDeny, Match: policy.Match{PathPrefix: "/v1/admin/"},
				Require: policy.Require{AnyRole: []string{"batch"}}},
			{Name: "debug", Match: policy.Match{Methods: []string{"TRACE"}, Path: "/debug"}},
			{Name: "trial", DryRun: true, Match: policy.Match{Methods: []string{"PUT"}, Path: "/v1/trial"},
				Require: policy.Require{AnyRole: []string{"admin"}}},
			{Name: "trial-deny", Effect: policy.EffectDeny, DryRun: true, Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/tasks"},
				Require: policy.Require{Attributes: map[string]policy.ValueRequirement{"region": {Equals: "eu"}}}},
			{Name: "open", Match: policy.Match{Methods: []string{"GET"}, Path: "/healthz"}},
			{Name: "blocked", Effect: policy.EffectDeny, Match: policy.Match{Path: "/healthz", Hosts: []string{"blocked.mesh.local"}}},
			{Name: "sub-claim", Match: policy.Match{Methods: []string{"GET"}, Path: "/v1/me"},
				Require: policy.Require{Claims: map[string]policy.ValueRequirement{"sub": {Equals: "alice"}, "email_verified": {Equals: "true"}}}},
		},
	}
}

func mustCompile(t testing.TB, cfg policy.Config, opts policy.Options) *policy.Revision {
	t.Helper()
	r, err := policy.Compile(&cfg, td, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return r
}

func TestDecide(t *testing.T) {
	rev := mustCompile(t, testConfig(), policy.Options{})
	mfa := map[string]any{"amr": []any{"pwd", "mfa"}, "scope": "read admin write", "tier": "gold"}
	tests := []struct {
		name     string
		in       policy.Input
		allow    bool
		dryRun   bool
		status   int
		reason   string
		rule     string
		msg      string // must appear in Message
		notInMsg string // must not appear in Message
	}{
		{name: "all requirements met", in: policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("planner")},
			allow: true, status: 200, reason: policy.ReasonAllowed, rule: "create-task"},
		{name: "missing role", in: policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("viewer")},
			status: 403, reason: policy.ReasonMissingRole, rule: "create-task", msg: "none of the roles admin, operator", notInMsg: "planner"},
		{name: "level below atLeast", in: policy.Input{Method: "GET", Path: "/v1/agents/a1/tasks", Principal: id("viewer")},
			status: 403, reason: policy.ReasonAttribute, rule: "agent-tasks", msg: "attribute clearance is low, needs >= medium"},
		{name: "level equal to atLeast", in: policy.Input{Method: "GET", Path: "/v1/agents/a1/tasks", Principal: id("executor")},
			allow: true, status: 200, rule: "agent-tasks", reason: policy.ReasonAllowed},
		{name: "level above atLeast", in: policy.Input{Method: "GET", Path: "/v1/agents/a1/tasks", Principal: id("planner")},
			allow: true, status: 200, rule: "agent-tasks", reason: policy.ReasonAllowed},
		{name: "template needs every segment", in: policy.Input{Method: "GET", Path: "/v1/agents/tasks", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "template no extra segment", in: policy.Input{Method: "GET", Path: "/v1/agents/a/tasks/x", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "attribute equals fails", in: policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("executor")},
			status: 403, reason: policy.ReasonMissingRole, rule: "create-task"},
		{name: "oneOf and host exact", in: policy.Input{Method: "GET", Host: "reports.mesh.local", Path: "/v1/reports/q3", Principal: id("executor")},
			allow: true, status: 200, rule: "reports", reason: policy.ReasonAllowed},
		{name: "oneOf fails", in: policy.Input{Method: "GET", Host: "reports.mesh.local", Path: "/v1/reports", Principal: id("viewer")},
			status: 403, reason: policy.ReasonAttribute, msg: "attribute region is eu, needs one of us, ca"},
		{name: "host wildcard", in: policy.Input{Method: "GET", Host: "a.internal", Path: "/v1/reports", Principal: id("planner")},
			allow: true, status: 200, rule: "reports", reason: policy.ReasonAllowed},
		{name: "host mismatch", in: policy.Input{Method: "GET", Host: "internal", Path: "/v1/reports", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "prefix is segment-aware", in: policy.Input{Method: "GET", Host: "reports.mesh.local", Path: "/v1/reportsx", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "no rule for path", in: policy.Input{Method: "GET", Path: "/nothing", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "lowercase method matches nothing", in: policy.Input{Method: "get", Path: "/healthz", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "TRACE denied without a rule", in: policy.Input{Method: "TRACE", Path: "/healthz", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "CONNECT denied", in: policy.Input{Method: "CONNECT", Path: "/v1/reports", Host: "a.internal", Principal: id("planner")},
			status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "TRACE allowed when a rule names it", in: policy.Input{Method: "TRACE", Path: "/debug", Principal: id("planner")},
			allow: true, status: 200, rule: "debug", reason: policy.ReasonAllowed},
		{name: "claims contain list and space string", in: policy.Input{Method: "DELETE", Path: "/v1/admin/x", Principal: id("planner"), Claims: mfa},
			allow: true, status: 200, rule: "admin-mfa", reason: policy.ReasonAllowed},
		{name: "claim contains fails", in: policy.Input{Method: "DELETE", Path: "/v1/admin/x", Principal: id("planner"),
			Claims: map[string]any{"amr": []any{"pwd"}, "scope": "admin", "tier": "gold"}},
			status: 403, reason: policy.ReasonClaim, msg: "claim amr does not satisfy to contain mfa"},
		{name: "claim missing", in: policy.Input{Method: "DELETE", Path: "/v1/admin/x", Principal: id("planner")},
			status: 403, reason: policy.ReasonClaim, msg: "claim amr is missing"},
		{name: "claim oneOf fails", in: policy.Input{Method: "DELETE", Path: "/v1/admin/x", Principal: id("planner"),
			Claims: map[string]any{"amr": "mfa", "scope": "admin", "tier": "bronze"}},
			status: 403, reason: policy.ReasonClaim},
		{name: "claim equals string and bool", in: policy.Input{Method: "GET", Path: "/v1/me", Principal: id("viewer"), Claims: map[string]any{"sub": "alice", "email_verified": true}},
			allow: true, status: 200, rule: "sub-claim", reason: policy.ReasonAllowed},
		{name: "claim equals on a list fails closed", in: policy.Input{Method: "GET", Path: "/v1/me", Principal: id("viewer"), Claims: map[string]any{"sub": []any{"alice"}, "email_verified": true}},
			status: 403, reason: policy.ReasonClaim},
		{name: "deny rule wins", in: policy.Input{Method: "DELETE", Path: "/v1/admin/x", Principal: "spiffe://mesh.local/ns/jobs/sa/batch", Claims: mfa},
			status: 403, reason: policy.ReasonDeniedByRule, rule: "no-batch-admin"},
		{name: "deny rule wins over requirement-free allow", in: policy.Input{Method: "GET", Path: "/healthz", Host: "blocked.mesh.local", Principal: id("planner")},
			status: 403, reason: policy.ReasonDeniedByRule, rule: "blocked"},
		{name: "wildcard identity", in: policy.Input{Method: "GET", Path: "/v1/agents/a/tasks", Principal: "spiffe://mesh.local/ns/jobs/sa/batch"},
			allow: true, status: 200, rule: "agent-tasks", reason: policy.ReasonAllowed},
		{name: "wildcard is one segment only", in: policy.Input{Method: "GET", Path: "/v1/agents/a/tasks", Principal: "spiffe://mesh.local/ns/a/b/sa/batch"},
			status: 403, reason: policy.ReasonAttribute, msg: "attribute clearance is not set"},
		{name: "unknown identity has no roles", in: policy.Input{Method: "GET", Path: "/v1/tasks", Principal: id("stranger")},
			status: 403, reason: policy.ReasonMissingRole},
		{name: "dry-run allow rule failing allows", in: policy.Input{Method: "PUT", Path: "/v1/trial", Principal: id("viewer")},
			allow: true, dryRun: true, status: 403, reason: policy.ReasonMissingRole, rule: "trial"},
		{name: "dry-run deny rule reports but allows", in: policy.Input{Method: "GET", Path: "/v1/tasks", Principal: id("viewer")},
			allow: true, dryRun: true, status: 403, reason: policy.ReasonDeniedByRule, rule: "trial-deny"},
		{name: "requirement-free rule allows any caller", in: policy.Input{Method: "GET", Path: "/healthz", Principal: id("stranger")},
			allow: true, status: 200, rule: "open", reason: policy.ReasonAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := rev.Decide(ctx(t), &tt.in)
			if d.Allow != tt.allow || d.DryRun != tt.dryRun || d.Status != tt.status || d.Reason != tt.reason {
				t.Errorf("Decide = allow %v dryRun %v status %d reason %q (%s); want allow %v dryRun %v status %d reason %q",
					d.Allow, d.DryRun, d.Status, d.Reason, d.Message, tt.allow, tt.dryRun, tt.status, tt.reason)
			}
			if tt.rule != "" && d.Rule != tt.rule {
				t.Errorf("rule = %q, want %q", d.Rule, tt.rule)
			}
			if !strings.Contains(d.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", d.Message, tt.msg)
			}
			if tt.notInMsg != "" && strings.Contains(d.Message, tt.notInMsg) {
				t.Errorf("message %q leaks %q", d.Message, tt.notInMsg)
			}
			if d.Err != nil {
				t.Errorf("Err = %v", d.Err)
			}
			if d.Revision != rev.ID() {
				t.Errorf("revision = %q, want %q", d.Revision, rev.ID())
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *policy.Config)
		want string
	}{
		{"bad template", func(c *policy.Config) { c.Rules[2].Match.PathTemplate = "/v1/{id" }, "must be a literal or a whole {param}"},
		{"duplicate identity", func(c *policy.Config) { c.Identities = append(c.Identities, c.Identities[0]) }, "listed twice"},
		{"rego without evaluator", func(c *policy.Config) { c.Rego = &policy.RegoConfig{Files: []string{"p.rego"}} }, "no Rego evaluator"},
		{"invalid config", func(c *policy.Config) { c.Rules[0].Effect = "maybe" }, "effect"},
		{"role with a comma", func(c *policy.Config) { c.Identities[0].Roles = []string{"a,b"} }, "without commas"},
		{"outside trust domain", func(c *policy.Config) { c.Identities[0].SPIFFEID = "spiffe://other/x" }, "trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			_, err := policy.Compile(&c, td, policy.Options{})
			if err == nil || !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRevisionIDIsContentHash(t *testing.T) {
	a := mustCompile(t, testConfig(), policy.Options{})
	b := mustCompile(t, testConfig(), policy.Options{})
	if a.ID() != b.ID() || a.ID() == "" {
		t.Fatalf("same config gave IDs %q and %q", a.ID(), b.ID())
	}
	c := testConfig()
	c.Rules[0].Require.AnyRole = []string{"admin"}
	if mustCompile(t, c, policy.Options{}).ID() == a.ID() {
		t.Fatal("a changed rule kept the same revision ID")
	}
}

func TestCompileDoesNotMutateConfig(t *testing.T) {
	c := testConfig()
	mustCompile(t, c, policy.Options{})
	if c.Rules[0].Match.Methods[0] != "post" || c.Rules[1].Effect != "" {
		t.Fatal("Compile changed the caller's configuration")
	}
}

type fakeBody struct {
	res   policy.BodyResult
	calls int
}

func (f *fakeBody) CheckBody(r *policy.Rule, in *policy.Input) policy.BodyResult {
	f.calls++
	return f.res
}

type fakeRego struct {
	res policy.RegoResult
	err error
}

func (f fakeRego) Eval(ctx context.Context, in *policy.Input, c policy.Caller) (policy.RegoResult, error) {
	return f.res, f.err
}

func schemaConfig(dryRun bool) policy.Config {
	c := testConfig()
	c.Schemas = []policy.SchemaConfig{{Name: "task", Inline: map[string]any{"type": "object"}}}
	c.Rules[0].Schema = "task"
	c.Rules[0].DryRun = dryRun
	return c
}

func TestBodyStep(t *testing.T) {
	planner := policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("planner"), Body: []byte(`{}`)}
	viewer := policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("viewer"), Body: []byte(`{}`)}
	tests := []struct {
		name      string
		body      *fakeBody // nil: no schema step wired
		dryRun    bool
		in        policy.Input
		allow     bool
		status    int
		reason    string
		err       bool
		wantCalls int
	}{
		{name: "no schema step fails closed", in: planner, status: 403, reason: policy.ReasonSchemaUnavailable},
		{name: "valid body allows", body: &fakeBody{res: policy.BodyResult{OK: true}}, in: planner, allow: true, status: 200, reason: policy.ReasonAllowed, wantCalls: 1},
		{name: "invalid body denies with its status", body: &fakeBody{res: policy.BodyResult{Status: 400, Code: "schema_violation", Message: "/task/priority: maximum", Violations: []schema.Violation{{Path: "/task/priority", Keyword: "maximum", Message: "12 > 9"}}}},
			in: planner, status: 400, reason: "schema_violation", wantCalls: 1},
		{name: "body step error is an internal error", body: &fakeBody{res: policy.BodyResult{Err: errors.New("boom")}}, in: planner, status: 403, reason: policy.ReasonEvalError, err: true, wantCalls: 1},
		{name: "body not checked when the rule denies", body: &fakeBody{res: policy.BodyResult{OK: true}}, in: viewer, status: 403, reason: policy.ReasonMissingRole},
		{name: "dry-run rule with invalid body allows", body: &fakeBody{res: policy.BodyResult{Status: 400, Code: "schema_violation"}}, dryRun: true, in: planner, allow: true, status: 400, reason: "schema_violation", wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts policy.Options
			if tt.body != nil {
				opts.NewBodyChecker = func(*policy.Config, fs.FS) (policy.BodyChecker, error) { return tt.body, nil }
			}
			rev := mustCompile(t, schemaConfig(tt.dryRun), opts)
			in := tt.in
			d := rev.Decide(ctx(t), &in)
			if d.Allow != tt.allow || d.Status != tt.status || d.Reason != tt.reason || (d.Err != nil) != tt.err {
				t.Errorf("Decide = allow %v status %d reason %q err %v; want allow %v status %d reason %q err %v",
					d.Allow, d.Status, d.Reason, d.Err, tt.allow, tt.status, tt.reason, tt.err)
			}
			if tt.body != nil && tt.body.calls != tt.wantCalls {
				t.Errorf("body checked %d times, want %d", tt.body.calls, tt.wantCalls)
			}
		})
	}
}

func TestRegoStep(t *testing.T) {
	planner := policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("planner")}
	viewer := policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("viewer")}
	tests := []struct {
		name   string
		mode   string
		rego   fakeRego
		in     policy.Input
		allow  bool
		status int
		err    bool
	}{
		{"both: rules and rego allow", policy.ModeBoth, fakeRego{res: policy.RegoResult{Allow: true}}, planner, true, 200, false},
		{"both: rego denies", policy.ModeBoth, fakeRego{res: policy.RegoResult{Status: 451}}, planner, false, 451, false},
		{"both: rules deny, rego not asked", policy.ModeBoth, fakeRego{err: errors.New("must not be called")}, viewer, false, 403, false},
		{"both: rego error", policy.ModeBoth, fakeRego{err: errors.New("undefined decision")}, planner, false, 403, true},
		{"rego only: allow ignores rules", policy.ModeRego, fakeRego{res: policy.RegoResult{Allow: true}}, viewer, true, 200, false},
		{"rego only: deny", policy.ModeRego, fakeRego{}, planner, false, 403, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			c.Rego = &policy.RegoConfig{Files: []string{"p.rego"}}
			c.Mode = tt.mode
			rev := mustCompile(t, c, policy.Options{NewRego: func(*policy.Config, fs.FS) (policy.RegoEvaluator, error) { return tt.rego, nil }})
			in := tt.in
			d := rev.Decide(ctx(t), &in)
			if d.Allow != tt.allow || d.Status != tt.status || (d.Err != nil) != tt.err {
				t.Errorf("Decide = allow %v status %d err %v; want allow %v status %d err %v", d.Allow, d.Status, d.Err, tt.allow, tt.status, tt.err)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	rev := mustCompile(t, testConfig(), policy.Options{})
	steps := rev.Explain(&policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("viewer")})
	if len(steps) != len(testConfig().Rules) {
		t.Fatalf("Explain gave %d steps, want one per rule", len(steps))
	}
	if s := steps[0]; !s.Matched || s.Satisfied || !strings.Contains(s.Why, "roles") {
		t.Errorf("create-task step = %+v, want matched, failed on roles", s)
	}
	if s := steps[1]; s.Matched || !strings.Contains(s.Why, "method POST") {
		t.Errorf("list-tasks step = %+v, want not matched on method", s)
	}
}

func TestStoreReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := policy.NewStore(policy.StoreOptions{Registry: reg, Samples: []policy.Sample{
		{Name: "planner creates", Input: policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("planner")}, Allow: true},
		{Name: "viewer cannot", Input: policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("viewer")}, Allow: false},
	}})
	if err != nil {
		t.Fatal(err)
	}
	in := policy.Input{Method: "POST", Path: "/v1/tasks", Principal: id("planner")}
	if d := s.Decide(ctx(t), &in); d.Allow || d.Err == nil || s.RevisionID() != "" {
		t.Fatalf("empty store decided %+v, want an error deny", d)
	}
	good := mustCompile(t, testConfig(), policy.Options{})
	count := func(result string) float64 {
		return testutil.ToFloat64(mustVec(t, reg, result))
	}
	steps := []struct {
		name    string
		build   func() (*policy.Revision, error)
		wantErr bool
		wantID  string
		result  string
	}{
		{"first load", func() (*policy.Revision, error) { return good, nil }, false, good.ID(), "success"},
		{"same content", func() (*policy.Revision, error) { return mustCompile(t, testConfig(), policy.Options{}), nil }, false, good.ID(), "unchanged"},
		{"build error keeps old", func() (*policy.Revision, error) { return nil, errors.New("bad file") }, true, good.ID(), "failure"},
		{"sample failure keeps old", func() (*policy.Revision, error) {
			c := testConfig()
			c.Rules[0].Require = policy.Require{}
			return mustCompile(t, c, policy.Options{}), nil
		}, true, good.ID(), "failure"},
	}
	for _, st := range steps {
		before := count(st.result)
		err := s.Reload(ctx(t), st.build)
		if (err != nil) != st.wantErr {
			t.Errorf("%s: Reload error = %v, want error %v", st.name, err, st.wantErr)
		}
		if s.RevisionID() != st.wantID {
			t.Errorf("%s: serving %q, want %q", st.name, s.RevisionID(), st.wantID)
		}
		if got := count(st.result); got != before+1 {
			t.Errorf("%s: reloads{result=%s} = %v, want %v", st.name, st.result, got, before+1)
		}
	}
	if d := s.Decide(ctx(t), &in); !d.Allow {
		t.Fatalf("after reloads: %+v, want allow", d)
	}
}

func mustVec(t *testing.T, reg *prometheus.Registry, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "meshward_policy_reloads_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no meshward_policy_reloads_total{result=%q}", result)
	return nil
}
