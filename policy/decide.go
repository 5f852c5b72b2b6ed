package policy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// ErrNoRevision is the internal error of a decision taken before any
// revision was loaded.
var ErrNoRevision = errors.New("no policy revision loaded")

// Decide evaluates in. It never fails open: every error ends in a deny
// (with Err set for internal failures).
func (r *Revision) Decide(ctx context.Context, in *Input) Decision {
	d := Decision{Revision: r.id}
	id := r.lookup(in.Principal)
	if id != nil {
		d.Roles = id.rolesJoined
	}
	if rt := r.rpc.route(in); rt != nil {
		r.decideRPC(in, id, rt, &d)
		if d.Allow && d.Err == nil && r.mode != ModeRules {
			r.decideRego(ctx, in, id, &d)
			if !d.Allow {
				d.RPC.ErrorCode = rpcCodeFor(d.Status)
			}
		}
		return d
	}
	if r.mode == ModeRego {
		r.decideRego(ctx, in, id, &d)
		r.applyQuotas(in, &d)
		return d
	}
	r.decideRules(in, id, &d)
	if d.Allow && r.mode == ModeBoth {
		r.decideRego(ctx, in, id, &d)
	}
	r.applyQuotas(in, &d)
	return d
}

func caller(id *identity, rule string) Caller {
	c := Caller{Rule: rule}
	if id != nil {
		c.Roles, c.Attributes = id.roles, id.attrs
	}
	return c
}

// candidates is the result of one pass over the rules matching a request:
// for each category, the first rule in configuration order.
type candidates struct {
	hardDeny, dryDeny *rule
	allow             *rule
	failHard, failDry *rule
	failHardReason    string
	failDryReason     string
	matched           bool
}

func (c *candidates) consider(ru *rule, id *identity, in *Input) {
	c.matched = true
	reason := ru.check(id, in)
	if ru.deny {
		if reason != "" {
			return // a deny rule denies only when its requirements hold
		}
		if ru.dryRun {
			c.dryDeny = first(c.dryDeny, ru)
		} else {
			c.hardDeny = first(c.hardDeny, ru)
		}
		return
	}
	if reason == "" {
		c.allow = first(c.allow, ru)
		return
	}
	if ru.dryRun {
		if c.failDry == nil || ru.idx < c.failDry.idx {
			c.failDry, c.failDryReason = ru, reason
		}
	} else if c.failHard == nil || ru.idx < c.failHard.idx {
		c.failHard, c.failHardReason = ru, reason
	}
}

func first(cur, ru *rule) *rule {
	if cur == nil || ru.idx < cur.idx {
		return ru
	}
	return cur
}

func (r *Revision) decideRules(in *Input, id *identity, d *Decision) {
	var c candidates
	if mi := r.byMethod[in.Method]; mi != nil {
		for _, ru := range mi.exact[in.Path] {
			if ru.matchHost(in.Host) && ru.matchRPC(in) {
				c.consider(ru, id, in)
			}
		}
		for _, ru := range mi.other {
			if ru.matchHost(in.Host) && ru.matchPath(in.Path) && ru.matchRPC(in) {
				c.consider(ru, id, in)
			}
		}
	}
	switch {
	case c.hardDeny != nil:
		deny(d, http.StatusForbidden, ReasonDeniedByRule, c.hardDeny.name, "denied by rule "+strconv.Quote(c.hardDeny.name))
		return
	case c.allow != nil:
		d.Allow, d.Status, d.Code, d.Reason, d.Rule = true, http.StatusOK, "", ReasonAllowed, c.allow.name
		if c.allow.withBody {
			r.checkBody(c.allow, in, d)
		}
	case c.failHard != nil:
		deny(d, http.StatusForbidden, c.failHardReason, c.failHard.name, c.failHard.explainFailure(id, in))
		return
	case c.failDry != nil:
		deny(d, http.StatusForbidden, c.failDryReason, c.failDry.name, c.failDry.explainFailure(id, in))
		d.Allow, d.DryRun = true, true
		return
	default:
		msg := "no rule allows " + in.Method + " " + in.Path
		if in.rpc.on {
			msg = "no rule allows the JSON-RPC method " + strconv.Quote(in.rpc.method)
			if in.rpc.tool != "" {
				msg += " with tool " + strconv.Quote(in.rpc.tool)
			}
		}
		deny(d, http.StatusForbidden, ReasonNoMatchingRule, "", msg)
		return
	}
	if d.Allow && !d.DryRun && c.dryDeny != nil {
		deny(d, http.StatusForbidden, ReasonDeniedByRule, c.dryDeny.name, "denied by rule "+strconv.Quote(c.dryDeny.name))
		d.Allow, d.DryRun = true, true
	}
}

func (r *Revision) checkBody(ru *rule, in *Input, d *Decision) {
	if r.body == nil {
		// Integration point: the schema step is not wired in. Fail closed.
		deny(d, http.StatusForbidden, ReasonSchemaUnavailable, ru.name, "rule "+strconv.Quote(ru.name)+" requires body validation, which this server cannot perform")
	} else {
		res := r.body.CheckBody(ru.src, in)
		switch {
		case res.Err != nil:
			deny(d, http.StatusForbidden, ReasonEvalError, ru.name, "body validation failed")
			d.Err = fmt.Errorf("body check for rule %s: %w", ru.name, res.Err)
			return // internal errors are never turned into a dry-run allow
		case !res.OK:
			status := res.Status
			if status == 0 {
				status = http.StatusBadRequest
			}
			code := res.Code
			if code == "" {
				code = ReasonSchemaInvalid
			}
			deny(d, status, code, ru.name, res.Message)
			d.Violations = res.Violations
		default:
			return
		}
	}
	if ru.dryRun {
		d.Allow, d.DryRun = true, true
	}
}

// decideRego completes d (the rules' allow in mode both) with the Rego
// step's decision.
func (r *Revision) decideRego(ctx context.Context, in *Input, id *identity, d *Decision) {
	res, err := r.rego.Eval(ctx, in, caller(id, d.Rule))
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		deny(d, http.StatusForbidden, ReasonEvalError, d.Rule, "policy evaluation failed")
		d.DryRun = false
		d.Err = fmt.Errorf("rego: %w", err)
		return
	}
	d.Mutations = res.Mutations
	if res.Allow {
		if d.Reason == "" {
			d.Allow, d.Status, d.Reason = true, http.StatusOK, ReasonAllowed
		}
		return
	}
	status := res.Status
	if status == 0 {
		status = http.StatusForbidden
	}
	code := res.Code
	if code == "" {
		code = ReasonRegoDenied
	}
	msg := res.Message
	if msg == "" {
		msg = "denied by Rego policy"
	}
	deny(d, status, code, d.Rule, msg)
	d.DryRun = false
}

func deny(d *Decision, status int, reason, rule, msg string) {
	d.Allow, d.Status, d.Code, d.Reason, d.Rule, d.Message = false, status, reason, reason, rule, msg
}

// check returns "" when the caller satisfies every requirement of ru,
// else the reason code of the first that fails. It does not allocate.
func (ru *rule) check(id *identity, in *Input) string {
	if len(ru.anyRole) > 0 && !hasAnyRole(id, ru.anyRole) {
		return ReasonMissingRole
	}
	for i := range ru.attrs {
		if !ru.attrs[i].holdsAttr(id) {
			return ReasonAttribute
		}
	}
	for i := range ru.claims {
		if !ru.claims[i].holdsClaim(in.Claims) {
			return ReasonClaim
		}
	}
	return ""
}

func hasAnyRole(id *identity, want []string) bool {
	if id == nil {
		return false
	}
	for _, have := range id.roles {
		for _, w := range want {
			if have == w {
				return true
			}
		}
	}
	return false
}

func (v *valueReq) holdsAttr(id *identity) bool {
	if id == nil {
		return false
	}
	have, ok := id.attrs[v.name]
	if !ok {
		return false
	}
	return v.holdsString(have)
}

func (v *valueReq) holdsString(have string) bool {
	switch v.kind {
	case reqEquals:
		return have == v.value
	case reqOneOf:
		for _, s := range v.set {
			if s == have {
				return true
			}
		}
		return false
	case reqAtLeast:
		rank, ok := v.levels[have]
		return ok && rank >= v.rank
	default: // contains, on a space-separated string
		for f := range strings.FieldsSeq(have) {
			if f == v.value {
				return true
			}
		}
		return false
	}
}

func (v *valueReq) holdsClaim(claims map[string]any) bool {
	raw, ok := claims[v.name]
	if !ok {
		return false
	}
	switch c := raw.(type) {
	case string:
		return v.holdsString(c)
	case []any:
		if v.kind != reqContains {
			return false // equality on a list claim is ambiguous: fail closed
		}
		for _, e := range c {
			if s, ok := e.(string); ok && s == v.value {
				return true
			}
		}
		return false
	case []string:
		if v.kind != reqContains {
			return false
		}
		for _, s := range c {
			if s == v.value {
				return true
			}
		}
		return false
	case bool:
		return v.kind != reqContains && v.holdsString(strconv.FormatBool(c))
	case float64:
		return v.kind != reqContains && v.holdsString(strconv.FormatFloat(c, 'f', -1, 64))
	default:
		return false
	}
}

// explainFailure says which requirement of ru the caller fails, naming the
// rule's requirement and only the caller's own value.
func (ru *rule) explainFailure(id *identity, in *Input) string {
	prefix := "rule " + strconv.Quote(ru.name) + ": "
	if len(ru.anyRole) > 0 && !hasAnyRole(id, ru.anyRole) {
		return prefix + "caller has none of the roles " + strings.Join(ru.anyRole, ", ")
	}
	for i := range ru.attrs {
		v := &ru.attrs[i]
		if v.holdsAttr(id) {
			continue
		}
		have, ok := "", false
		if id != nil {
			have, ok = id.attrs[v.name]
		}
		if !ok {
			return prefix + "attribute " + v.name + " is not set, needs " + v.describe()
		}
		return prefix + "attribute " + v.name + " is " + have + ", needs " + v.describe()
	}
	for i := range ru.claims {
		v := &ru.claims[i]
		if v.holdsClaim(in.Claims) {
			continue
		}
		if _, ok := in.Claims[v.name]; !ok {
			return prefix + "claim " + v.name + " is missing, needs " + v.describe()
		}
		return prefix + "claim " + v.name + " does not satisfy " + v.describe()
	}
	return prefix + "requirements not met"
}

func (v *valueReq) describe() string {
	switch v.kind {
	case reqEquals:
		return v.value
	case reqOneOf:
		return "one of " + strings.Join(v.set, ", ")
	case reqAtLeast:
		return ">= " + v.value
	default:
		return "to contain " + v.value
	}
}
