package policy

import (
	"context"
	"strings"
)

// Step is one rule considered by Explain.
type Step struct {
	Rule   string `json:"rule"`
	Effect string `json:"effect"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Matched reports whether method, host and path matched.
	Matched bool `json:"matched"`
	// Satisfied reports whether the caller met the requirements (only
	// meaningful when Matched).
	Satisfied bool `json:"satisfied"`
	// Why says what did not match, or which requirement failed.
	Why string `json:"why"`
}

// Explain reports, for every rule in configuration order, whether it
// matched in and why. It is for humans (`meshward check --explain`) and
// allocates freely; Decide is the decision.
func (r *Revision) Explain(in *Input) []Step {
	id := r.lookup(in.Principal)
	steps := make([]Step, 0, len(r.rules))
	for _, ru := range r.rules {
		st := Step{Rule: ru.name, Effect: EffectAllow, DryRun: ru.dryRun}
		if ru.deny {
			st.Effect = EffectDeny
		}
		switch {
		case !ru.matchMethod(in.Method):
			st.Why = "method " + in.Method + " not in " + strings.Join(ru.methods(), ", ")
		case !ru.matchHost(in.Host):
			st.Why = "host " + in.Host + " not in " + strings.Join(ru.hosts, ", ")
		case !ru.matchPath(in.Path):
			st.Why = "path " + in.Path + " does not match " + ru.describePath()
		default:
			st.Matched = true
			if reason := ru.check(id, in); reason != "" {
				st.Why = ru.explainFailure(id, in)
			} else {
				st.Satisfied = true
				st.Why = "all requirements met"
				if ru.withBody {
					st.Why += "; the body schema step decides next (see the verdict)"
				}
			}
		}
		steps = append(steps, st)
	}
	return steps
}

func (ru *rule) methods() []string {
	if len(ru.src.Match.Methods) == 0 {
		return StandardMethods
	}
	return ru.src.Match.Methods
}

func (ru *rule) matchMethod(m string) bool {
	for _, x := range ru.methods() {
		if x == m {
			return true
		}
	}
	return false
}

func (ru *rule) describePath() string {
	switch ru.kind {
	case pathExact:
		return "path " + ru.path
	case pathPrefix:
		return "prefix " + ru.path
	default:
		return "template " + ru.path
	}
}

// RegoStep is the Rego step's part of an explanation.
type RegoStep struct {
	// Mode is the revision's mode (rules, rego or both).
	Mode string `json:"mode"`
	// Allow, Status and Code are the Rego verdict (Status 0: the policy's
	// default).
	Allow  bool   `json:"allow"`
	Status int    `json:"status,omitempty"`
	Code   string `json:"code,omitempty"`
	// Mutations are the changes the decision asks for.
	Mutations *Mutations `json:"mutations,omitempty"`
	// Err is the evaluation error (undefined decision, invalid decision,
	// evaluation error): a deny with status_on_error.
	Err string `json:"error,omitempty"`
}

// ExplainRego evaluates the Rego step alone on in, as Decide would call
// it (in mode both, with the rule the rules step allowed by). ok is false
// when the revision has no Rego step.
func (r *Revision) ExplainRego(ctx context.Context, in *Input) (st RegoStep, ok bool) {
	if r.rego == nil {
		return RegoStep{Mode: r.mode}, false
	}
	id := r.lookup(in.Principal)
	var d Decision
	if r.mode == ModeBoth {
		r.decideRules(in, id, &d)
	}
	res, err := r.rego.Eval(ctx, in, caller(id, d.Rule))
	if err != nil {
		return RegoStep{Mode: r.mode, Err: err.Error()}, true
	}
	return RegoStep{Mode: r.mode, Allow: res.Allow, Status: res.Status, Code: res.Code, Mutations: res.Mutations}, true
}
