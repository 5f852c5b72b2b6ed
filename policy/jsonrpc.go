package policy

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/schema"
)

// JSON-RPC 2.0 error codes of deny bodies on JSON-RPC routes: the
// standard ones, and meshward's in the server range.
const (
	RPCParseError     = -32700
	RPCInvalidRequest = -32600
	RPCInvalidParams  = -32602
	// RPCForbidden: the caller may not make this call (403, 401).
	RPCForbidden = -32001
	// RPCRateLimited: the caller's quota is used up (429).
	RPCRateLimited = -32002
)

// Reason codes of JSON-RPC decisions.
const (
	// ReasonInvalidJSONRPC: the body is JSON but not a valid JSON-RPC 2.0
	// request or batch (400).
	ReasonInvalidJSONRPC = "invalid_jsonrpc"
	// ReasonUnknownTool: a tools/call of a tool with no schema (403).
	ReasonUnknownTool = "unknown_tool"
	// ReasonToolArguments: params.arguments fail the tool's inputSchema (400).
	ReasonToolArguments = "invalid_tool_arguments"
)

// RPC describes the JSON-RPC message of a decision on a JSON-RPC route.
// It is the zero value (Route false) for every other request.
type RPC struct {
	// Route reports that the request was on a JSON-RPC route.
	Route bool
	// Method and Tool (params.name of an MCP tools/call) of the message,
	// or of the batch element that decided a deny (the first element on
	// allow). Empty when the body could not be read as JSON-RPC.
	Method string
	Tool   string
	// KnownTool reports that Tool has a configured schema (bounded metric
	// label).
	KnownTool bool
	// ID is the message's id as sent: its JSON text when a number, its
	// value when a string (IDString). HasID is false for a notification
	// and for a body that is not valid JSON-RPC.
	ID       string
	IDString bool
	HasID    bool
	// Batch is the number of elements of a batch (0 for a single message);
	// Index the element that decided a deny.
	Batch int
	Index int
	// ErrorCode is the JSON-RPC error code of the deny body (0 on allow).
	ErrorCode int
}

// rpcCall is the envelope of one JSON-RPC message, read from the tape.
type rpcCall struct {
	on       bool
	method   string
	tool     string
	id       string
	idString bool
	hasID    bool
	args     int32 // node of params.arguments, -1 when absent
}

type rpcRoute struct {
	hosts []string
	exact bool
	path  string
	mcp   bool
}

type rpcMatch struct {
	method, prefix, tool string
}

// rpcStep is the compiled JSON-RPC part of a revision.
type rpcStep struct {
	routes      []rpcRoute
	batchDeny   bool
	maxBatch    int
	tools       *schema.Set // nil without tools
	unknownTool bool        // allow unknown tools
	lim         body.Limits
}

func compileRPC(c *Config, dir fs.FS) (*rpcStep, []byte, error) {
	j := c.JSONRPC
	st := &rpcStep{batchDeny: j.Batch == BatchDeny, maxBatch: j.MaxBatch, unknownTool: j.UnknownTool == UnknownToolAllow,
		lim: body.Limits{MaxBytes: c.Body.MaxBytes, MaxDepth: c.Body.MaxDepth, MaxValues: c.Body.MaxValues}}
	for _, rt := range j.Routes {
		r := rpcRoute{hosts: rt.Hosts, exact: rt.Path != "", path: rt.Path, mcp: rt.Protocol == ProtocolMCP}
		if !r.exact {
			r.path = rt.PathPrefix
		}
		st.routes = append(st.routes, r)
	}
	tools, data, err := j.loadTools(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(tools) > 0 {
		srcs := make([]schema.Source, 0, len(tools))
		for i, t := range tools {
			origin := "authz.jsonrpc.toolsFile " + j.ToolsFile
			if i < len(j.Tools) {
				origin = fmt.Sprintf("authz.jsonrpc.tools[%d].inputSchema", i)
			}
			srcs = append(srcs, schema.Source{Name: t.Name, Origin: origin, Doc: t.InputSchema})
		}
		set, err := schema.Compile(srcs, schema.Options{MaxViolations: c.Body.MaxViolations, Sensitive: c.Body.Sensitive})
		if err != nil {
			return nil, nil, fmt.Errorf("tool schemas: %w", err)
		}
		st.tools = set
	}
	return st, data, nil
}

// route returns the JSON-RPC route of in, nil when it has none.
func (st *rpcStep) route(in *Input) *rpcRoute {
	if st == nil || in.Method != http.MethodPost {
		return nil
	}
	for i := range st.routes {
		rt := &st.routes[i]
		ru := rule{hosts: rt.hosts}
		if !ru.matchHost(in.Host) {
			continue
		}
		if rt.exact && in.Path == rt.path {
			return rt
		}
		if !rt.exact {
			ru.kind, ru.path = pathPrefix, rt.path
			if ru.matchPath(in.Path) {
				return rt
			}
		}
	}
	return nil
}

func (m *rpcMatch) matches(c *rpcCall) bool {
	if !c.on {
		return false
	}
	switch {
	case m.method != "" && c.method != m.method:
		return false
	case m.prefix != "" && !strings.HasPrefix(c.method, m.prefix):
		return false
	case m.tool != "" && c.tool != m.tool:
		return false
	}
	return true
}

// matchRPC reports whether ru applies to the JSON-RPC message in.rpc
// (every rule without a jsonrpc match does; a rule with one only on a
// JSON-RPC message).
func (ru *rule) matchRPC(in *Input) bool {
	return ru.rpc == nil || ru.rpc.matches(&in.rpc)
}

// tape returns the body of in decoded (once per request, shared with the
// schema step), or the deny for a body that cannot be read.
func (st *rpcStep) tape(in *Input) (*body.Tape, *body.Problem, error) {
	if in.BodyTruncated {
		return nil, &body.Problem{Status: 413, Code: body.CodePartialBody,
			Message: "the request body was cut at the proxy's buffer limit; send a smaller body"}, nil
	}
	if p := body.CheckHeaders(body.HeadersFrom(func(n string) string { return in.Headers[n] })); p != nil {
		return nil, p, nil
	}
	if in.tape != nil {
		return in.tape, nil, nil
	}
	t := body.AcquireTape()
	if in.HasParsedBody {
		if !t.FromValue(in.ParsedBody, body.MaxDepthCeiling) {
			t.Release()
			return nil, &body.Problem{Status: 400, Code: body.CodeInvalidJSON, Message: "the parsed body is not JSON"}, nil
		}
	} else {
		text := in.BodyText
		if text == "" {
			text = string(in.Body)
		}
		if err := body.DecodeTapeString(text, st.lim, t); err != nil {
			t.Release()
			var e *body.Error
			if !errors.As(err, &e) {
				return nil, nil, err
			}
			return nil, e.Problem(), nil
		}
	}
	in.tape = t
	return t, nil, nil
}

// parseCall reads the envelope of the message at node i. A message is an
// object with exactly the members jsonrpc ("2.0"), method (a non-empty
// string), and optionally id (a string or an integer) and params (an
// object or an array). On an MCP route, tools/call params must be an
// object with a non-empty string name and, if present, an object
// arguments. On failure it returns the JSON-RPC error code and why.
func parseCall(t *body.Tape, i int, mcp bool) (c rpcCall, code int, why string) {
	c.args = -1
	n := &t.Nodes[i]
	if n.Kind != body.ObjectNode {
		return c, RPCInvalidRequest, "a JSON-RPC message must be an object"
	}
	params := -1
	version := false
	// The whole envelope is read even past a problem, so that the deny
	// can echo the id.
	fail := func(w string) {
		if code == 0 {
			code, why = RPCInvalidRequest, w
		}
	}
	for j := i + 1; j < int(n.End); j = int(t.Nodes[j].End) {
		m := &t.Nodes[j]
		switch m.Key {
		case "jsonrpc":
			if m.Kind != body.StringNode || m.Text != "2.0" {
				fail(`jsonrpc must be "2.0"`)
			}
			version = true
		case "method":
			if m.Kind != body.StringNode || m.Text == "" {
				fail("method must be a non-empty string")
				continue
			}
			c.method = m.Text
		case "id":
			switch {
			case m.Kind == body.StringNode:
				c.id, c.idString, c.hasID = m.Text, true, true
			case m.Kind == body.NumberNode && !strings.ContainsAny(m.Text, ".eE"):
				c.id, c.hasID = m.Text, true
			default:
				fail("id must be a string or an integer")
			}
		case "params":
			if m.Kind != body.ObjectNode && m.Kind != body.ArrayNode {
				fail("params must be an object or an array")
				continue
			}
			params = j
		default:
			fail("unexpected member " + strconv.Quote(m.Key) + " (requests have jsonrpc, method, id and params only)")
		}
	}
	switch {
	case !version:
		fail(`jsonrpc "2.0" is missing`)
	case c.method == "":
		fail("method is missing")
	}
	if code != 0 {
		return c, code, why
	}
	if !mcp || c.method != MethodToolsCall {
		return c, 0, ""
	}
	if params < 0 || t.Nodes[params].Kind != body.ObjectNode {
		return c, RPCInvalidParams, "tools/call params must be an object"
	}
	p := &t.Nodes[params]
	for j := params + 1; j < int(p.End); j = int(t.Nodes[j].End) {
		m := &t.Nodes[j]
		switch m.Key {
		case "name":
			if m.Kind != body.StringNode || m.Text == "" {
				return c, RPCInvalidParams, "params.name must be a non-empty string"
			}
			c.tool = m.Text
		case "arguments":
			if m.Kind != body.ObjectNode {
				return c, RPCInvalidParams, "params.arguments must be an object"
			}
			c.args = int32(j) //nolint:gosec // bounded by maxValues
		}
	}
	if c.tool == "" {
		return c, RPCInvalidParams, "params.name is missing"
	}
	return c, 0, ""
}

// decideRPC decides a request on a JSON-RPC route: the body is read as
// one message or a batch, and every message is decided on its own (rules
// with their jsonrpc match, tool arguments, quotas); a batch is allowed
// only when all its messages are. d carries the first denied message (or
// on allow the first message).
func (r *Revision) decideRPC(in *Input, id *identity, rt *rpcRoute, d *Decision) {
	d.RPC.Route = true
	t, p, err := r.rpc.tape(in)
	switch {
	case err != nil:
		deny(d, http.StatusForbidden, ReasonEvalError, "", "body decoding failed")
		d.Err = fmt.Errorf("jsonrpc: %w", err)
		return
	case p != nil:
		code := RPCInvalidRequest
		if p.Code == body.CodeInvalidJSON {
			code = RPCParseError
		}
		deny(d, p.Status, p.Code, "", p.Message)
		d.RPC.ErrorCode = code
		return
	}
	root := &t.Nodes[0]
	if root.Kind != body.ArrayNode {
		r.decideCall(in, id, rt, t, 0, "", d)
		return
	}
	n := int(root.Len)
	switch {
	case r.rpc.batchDeny:
		rpcInvalid(d, RPCInvalidRequest, "batches are not accepted on this route")
	case n == 0:
		rpcInvalid(d, RPCInvalidRequest, "an empty batch is not a request")
	case n > r.rpc.maxBatch:
		rpcInvalid(d, RPCInvalidRequest, "a batch of "+strconv.Itoa(n)+" messages is more than the limit of "+strconv.Itoa(r.rpc.maxBatch))
	}
	if d.Reason != "" {
		d.RPC.Batch = n
		return
	}
	// On allow d is the first element's decision, or the first dry-run
	// one's (whose reason says what would have been denied).
	var first, dry Decision
	k := 0
	for j := 1; j < int(root.End); j, k = int(t.Nodes[j].End), k+1 {
		e := Decision{Revision: d.Revision, Roles: d.Roles}
		r.decideCall(in, id, rt, t, j, "/"+strconv.Itoa(k), &e)
		if !e.Allow || e.Err != nil {
			e.RPC.Batch, e.RPC.Index = n, k
			if e.Message != "" {
				e.Message = "batch element " + strconv.Itoa(k) + ": " + e.Message
			}
			*d = e
			return
		}
		if k == 0 {
			first = e
		}
		if e.DryRun && !dry.DryRun {
			dry = e
		}
	}
	*d = first
	if dry.DryRun {
		*d = dry
	}
	d.RPC.Batch = n
}

func rpcInvalid(d *Decision, code int, msg string) {
	deny(d, http.StatusBadRequest, ReasonInvalidJSONRPC, "", msg)
	d.RPC.ErrorCode = code
}

// decideCall decides the message at node i of t (at JSON pointer at in
// the body: "" or "/k" in a batch).
func (r *Revision) decideCall(in *Input, id *identity, rt *rpcRoute, t *body.Tape, i int, at string, d *Decision) {
	c, code, why := parseCall(t, i, rt.mcp)
	d.RPC.Route = true
	d.RPC.Method, d.RPC.Tool = c.method, c.tool
	d.RPC.ID, d.RPC.IDString, d.RPC.HasID = c.id, c.idString, c.hasID
	d.RPC.KnownTool = c.tool != "" && r.rpc.tools != nil && r.rpc.tools.Has(c.tool)
	if code != 0 {
		rpcInvalid(d, code, why)
		return
	}
	c.on = true
	in.rpc = c
	defer func() { in.rpc = rpcCall{} }()
	if r.mode == ModeRego {
		d.Allow, d.Status, d.Reason = true, http.StatusOK, ReasonAllowed
	} else {
		r.decideRules(in, id, d)
	}
	if !d.Allow || d.Err != nil {
		if d.RPC.ErrorCode == 0 {
			d.RPC.ErrorCode = rpcCodeFor(d.Status)
		}
		return
	}
	if rt.mcp && c.method == MethodToolsCall {
		r.checkTool(t, &c, at, d)
		if !d.Allow {
			return
		}
	}
	r.applyQuotas(in, d)
	if !d.Allow {
		d.RPC.ErrorCode = RPCRateLimited
	}
}

func rpcCodeFor(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return RPCInvalidRequest
	case http.StatusTooManyRequests:
		return RPCRateLimited
	default:
		return RPCForbidden
	}
}

// checkTool denies a tools/call of a tool with no schema (unless unknown
// tools are allowed) and one whose arguments fail its inputSchema; the
// violations' paths are JSON pointers into the body.
func (r *Revision) checkTool(t *body.Tape, c *rpcCall, at string, d *Decision) {
	if !d.RPC.KnownTool {
		if r.rpc.unknownTool {
			return
		}
		rule := d.Rule
		deny(d, http.StatusForbidden, ReasonUnknownTool, rule, "tool "+strconv.Quote(c.tool)+" has no schema here, so it cannot be called")
		d.DryRun = false
		d.RPC.ErrorCode = RPCInvalidParams
		return
	}
	vs := validateArgs(r.rpc.tools, c.tool, t, int(c.args))
	if vs == nil {
		return
	}
	prefix := at + "/params/arguments"
	for i := range vs {
		vs[i].Path = prefix + vs[i].Path
	}
	rule := d.Rule
	res := violationResult("arguments of tool "+strconv.Quote(c.tool)+" do not match its inputSchema", vs)
	deny(d, http.StatusBadRequest, ReasonToolArguments, rule, res.Message)
	d.DryRun = false
	d.Violations = vs
	d.RPC.ErrorCode = RPCInvalidParams
}

// emptyArgs is the tape of {}: a tools/call without arguments is checked
// as if it sent none.
var emptyArgs = body.Tape{Nodes: []body.Node{{Kind: body.ObjectNode, End: 1}}}

// validateArgs validates the subtree at node i of t (i < 0: {}) against
// the named schema, on a copy of that subtree as its own tape.
func validateArgs(set *schema.Set, name string, t *body.Tape, i int) []schema.Violation {
	if i < 0 {
		return set.ValidateTape(name, &emptyArgs)
	}
	sub := body.AcquireTape()
	defer sub.Release()
	end := int(t.Nodes[i].End)
	sub.Nodes = append(sub.Nodes, t.Nodes[i:end]...)
	off := int32(i) //nolint:gosec // bounded by maxValues
	for k := range sub.Nodes {
		sub.Nodes[k].End -= off
	}
	sub.Nodes[0].Key = ""
	return set.ValidateTape(name, sub)
}
