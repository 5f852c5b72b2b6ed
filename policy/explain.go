package policy

import (
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
					st.Why += "; body must pass its schema"
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
