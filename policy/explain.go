package policy

import (
	"context"
	"strconv"
	"strings"

	"github.com/meshward/meshward/policy/internal/body"
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
	if rt := r.rpc.route(in); rt != nil {
		return r.explainRPC(in, id, rt)
	}
	return r.explainRules(in, id, "", nil)
}

func (r *Revision) explainRules(in *Input, id *identity, prefix string, steps []Step) []Step {
	for _, ru := range r.rules {
		st := Step{Rule: prefix + ru.name, Effect: EffectAllow, DryRun: ru.dryRun}
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
		case !ru.matchRPC(in):
			st.Why = ru.rpc.explainMismatch(&in.rpc)
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

// EffectTool is the Effect of the Step that reports an MCP tool call's
// argument check.
const EffectTool = "tool"

// explainRPC explains each JSON-RPC message of in: its envelope, the
// rules as they apply to it, and for an MCP tools/call its tool's
// argument check. Messages of a batch are prefixed [k].
func (r *Revision) explainRPC(in *Input, id *identity, rt *rpcRoute) []Step {
	t, p, err := r.rpc.tape(in)
	if err != nil || p != nil {
		why := "the body cannot be read"
		if p != nil {
			why = p.Code + ": " + p.Message
		}
		return []Step{{Rule: "jsonrpc", Effect: EffectTool, Why: why}}
	}
	type msg struct {
		node   int
		prefix string
		at     string
	}
	var msgs []msg
	if root := &t.Nodes[0]; root.Kind == body.ArrayNode {
		k := 0
		for j := 1; j < int(root.End); j, k = int(t.Nodes[j].End), k+1 {
			msgs = append(msgs, msg{j, "[" + strconv.Itoa(k) + "] ", "/" + strconv.Itoa(k)})
		}
		if len(msgs) == 0 || len(msgs) > r.rpc.maxBatch || r.rpc.batchDeny {
			return []Step{{Rule: "jsonrpc", Effect: EffectTool, Why: "a batch of " + strconv.Itoa(len(msgs)) + " messages is refused here (see the verdict)"}}
		}
	} else {
		msgs = append(msgs, msg{node: 0})
	}
	var steps []Step
	for _, m := range msgs {
		c, code, why := parseCall(t, m.node, rt.mcp)
		if code != 0 {
			steps = append(steps, Step{Rule: m.prefix + "jsonrpc", Effect: EffectTool, Matched: true, Why: "invalid JSON-RPC message: " + why})
			continue
		}
		c.on = true
		in.rpc = c
		steps = r.explainRules(in, id, m.prefix, steps)
		in.rpc = rpcCall{}
		if !rt.mcp || c.method != MethodToolsCall {
			continue
		}
		st := Step{Rule: m.prefix + "mcp.tool " + c.tool, Effect: EffectTool, Matched: true}
		switch {
		case r.rpc.tools == nil || !r.rpc.tools.Has(c.tool):
			st.Satisfied = r.rpc.unknownTool
			st.Why = "no schema for this tool; unknownTool is " + map[bool]string{true: UnknownToolAllow, false: UnknownToolDeny}[r.rpc.unknownTool]
		default:
			vs := validateArgs(r.rpc.tools, c.tool, t, int(c.args))
			if vs == nil {
				st.Satisfied, st.Why = true, "params.arguments match the inputSchema"
				break
			}
			for i := range vs {
				vs[i].Path = m.at + "/params/arguments" + vs[i].Path
			}
			st.Why = violationResult("params.arguments fail the inputSchema", vs).Message
		}
		steps = append(steps, st)
	}
	return steps
}

// explainMismatch says why the message c does not match m.
func (m *rpcMatch) explainMismatch(c *rpcCall) string {
	if !c.on {
		return "not a JSON-RPC message (the rule has match.jsonrpc)"
	}
	switch {
	case m.tool != "" && c.method == MethodToolsCall:
		return "tool " + strconv.Quote(c.tool) + " is not " + strconv.Quote(m.tool)
	case m.method != "":
		return "JSON-RPC method " + strconv.Quote(c.method) + " is not " + strconv.Quote(m.method)
	default:
		return "JSON-RPC method " + strconv.Quote(c.method) + " does not start with " + strconv.Quote(m.prefix)
	}
}
