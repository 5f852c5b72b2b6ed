package policy_test

import (
	"context"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/meshward/meshward/policy"
)

// mcpConfig is an MCP tool server at /mcp: planners call tools, viewers
// only list them, and the search tool has an argument schema.
func mcpConfig() policy.Config {
	return policy.Config{
		Identities: []policy.Identity{
			{SPIFFEID: id("planner"), Roles: []string{"planner"}},
			{SPIFFEID: id("viewer"), Roles: []string{"viewer"}},
		},
		JSONRPC: &policy.JSONRPCConfig{
			Routes: []policy.JSONRPCRoute{{Path: "/mcp"}, {PathPrefix: "/a2a", Protocol: policy.ProtocolA2A}},
			Tools: []policy.ToolConfig{{Name: "search", InputSchema: map[string]any{
				"type":                 "object",
				"required":             []any{"query"},
				"additionalProperties": false,
				"properties": map[string]any{
					"query": map[string]any{"type": "string", "maxLength": 100},
					"limit": map[string]any{"type": "integer", "minimum": 1, "maximum": 50},
				},
			}}, {Name: "noargs", InputSchema: map[string]any{"type": "object", "additionalProperties": false}}},
		},
		Rules: []policy.Rule{
			{Name: "init", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{MethodPrefix: "notifications/"}}},
			{Name: "initialize", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Method: "initialize"}}},
			{Name: "list-tools", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Method: "tools/list"}},
				Require: policy.Require{AnyRole: []string{"planner", "viewer"}}},
			{Name: "call-search", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Tool: "search"}},
				Require: policy.Require{AnyRole: []string{"planner"}}},
			{Name: "call-any", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Method: "tools/call"}},
				Require: policy.Require{AnyRole: []string{"planner"}}},
			{Name: "no-delete", Effect: policy.EffectDeny, Match: policy.Match{Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Tool: "delete"}}},
			{Name: "a2a-send", Match: policy.Match{Methods: []string{"POST"}, PathPrefix: "/a2a", JSONRPC: &policy.JSONRPCMatch{Method: "message/send"}},
				Require: policy.Require{AnyRole: []string{"planner"}}},
			{Name: "health", Match: policy.Match{Methods: []string{"GET"}, Path: "/mcp"}},
		},
	}
}

func rpcInput(caller, path, body string) *policy.Input {
	return &policy.Input{Method: "POST", Host: "tools.mesh.local", Path: path, Principal: id(caller),
		Headers: map[string]string{"content-type": "application/json"}, BodyText: body}
}

func call(id int, tool, args string) string {
	s := `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"` + tool + `"`
	if args != "" {
		s += `,"arguments":` + args
	}
	return s + "}}"
}

func TestDecideJSONRPC(t *testing.T) {
	rev := mustCompile(t, mcpConfig(), policy.Options{})
	big := "[" + strings.Repeat(call(1, "search", `{"query":"x"}`)+",", 32) + call(2, "search", `{"query":"x"}`) + "]"
	for _, tc := range []struct {
		name, caller, path, body string
		allow                    bool
		status                   int
		reason, rule             string
		rpcCode                  int
		method, tool, id         string
		hasID, idString          bool
		violations               []string
		batch, index             int
	}{
		{name: "tool call allowed by tool rule", caller: "planner", path: "/mcp", body: call(7, "search", `{"query":"go","limit":5}`),
			allow: true, status: 200, reason: "allowed", rule: "call-search", method: "tools/call", tool: "search", id: "7", hasID: true},
		{name: "tool call by a viewer: missing role", caller: "viewer", path: "/mcp", body: call(7, "search", `{"query":"go"}`),
			status: 403, reason: "missing_role", rule: "call-search", rpcCode: policy.RPCForbidden, method: "tools/call", tool: "search", id: "7", hasID: true},
		{name: "tools/list allowed for viewer", caller: "viewer", path: "/mcp", body: `{"jsonrpc":"2.0","id":"a-1","method":"tools/list"}`,
			allow: true, status: 200, reason: "allowed", rule: "list-tools", method: "tools/list", id: "a-1", hasID: true, idString: true},
		{name: "notification by method prefix", caller: "viewer", path: "/mcp", body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			allow: true, status: 200, reason: "allowed", rule: "init", method: "notifications/initialized"},
		{name: "unmatched method", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"x"}}`,
			status: 403, reason: "no_matching_rule", rpcCode: policy.RPCForbidden, method: "resources/read", id: "1", hasID: true},
		{name: "argument over maximum names its path", caller: "planner", path: "/mcp", body: call(3, "search", `{"query":"go","limit":500}`),
			status: 400, reason: "invalid_tool_arguments", rule: "call-search", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "search", id: "3", hasID: true,
			violations: []string{"/params/arguments/limit"}},
		{name: "missing required argument", caller: "planner", path: "/mcp", body: call(3, "search", `{"limit":5}`),
			status: 400, reason: "invalid_tool_arguments", rule: "call-search", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "search", id: "3", hasID: true,
			violations: []string{"/params/arguments"}},
		{name: "no arguments checked as {}", caller: "planner", path: "/mcp", body: call(3, "search", ""),
			status: 400, reason: "invalid_tool_arguments", rule: "call-search", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "search", id: "3", hasID: true,
			violations: []string{"/params/arguments"}},
		{name: "no arguments, tool takes none", caller: "planner", path: "/mcp", body: call(3, "noargs", ""),
			allow: true, status: 200, reason: "allowed", rule: "call-any", method: "tools/call", tool: "noargs", id: "3", hasID: true},
		{name: "unknown tool denied", caller: "planner", path: "/mcp", body: call(4, "rm", `{}`),
			status: 403, reason: "unknown_tool", rule: "call-any", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "rm", id: "4", hasID: true},
		{name: "deny rule on tool wins", caller: "planner", path: "/mcp", body: call(4, "delete", `{}`),
			status: 403, reason: "denied_by_rule", rule: "no-delete", rpcCode: policy.RPCForbidden, method: "tools/call", tool: "delete", id: "4", hasID: true},
		{name: "a2a route: no tool check", caller: "planner", path: "/a2a/agent", body: `{"jsonrpc":"2.0","id":9,"method":"message/send","params":{"message":{}}}`,
			allow: true, status: 200, reason: "allowed", rule: "a2a-send", method: "message/send", id: "9", hasID: true},
		{name: "GET on the route is plain HTTP", caller: "viewer", path: "/mcp", allow: true, status: 200, reason: "allowed", rule: "health"},

		{name: "batch all allowed", caller: "planner", path: "/mcp", body: "[" + call(1, "search", `{"query":"a"}`) + `,{"jsonrpc":"2.0","method":"notifications/progress"}]`,
			allow: true, status: 200, reason: "allowed", rule: "call-search", method: "tools/call", tool: "search", id: "1", hasID: true, batch: 2},
		{name: "batch with one bad element", caller: "planner", path: "/mcp", body: "[" + call(1, "search", `{"query":"a"}`) + "," + call(2, "search", `{"query":1}`) + "]",
			status: 400, reason: "invalid_tool_arguments", rule: "call-search", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "search", id: "2", hasID: true,
			violations: []string{"/1/params/arguments/query"}, batch: 2, index: 1},
		{name: "batch with one forbidden element", caller: "viewer", path: "/mcp", body: `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},` + call(2, "search", `{"query":"a"}`) + "]",
			status: 403, reason: "missing_role", rule: "call-search", rpcCode: policy.RPCForbidden, method: "tools/call", tool: "search", id: "2", hasID: true, batch: 2, index: 1},
		{name: "batch with a malformed element", caller: "planner", path: "/mcp", body: `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"1.0","id":2,"method":"tools/list"}]`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list", id: "2", hasID: true, batch: 2, index: 1},
		{name: "empty batch", caller: "planner", path: "/mcp", body: `[]`, status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest},
		{name: "huge batch", caller: "planner", path: "/mcp", body: big, status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, batch: 33},
		{name: "batch of scalars", caller: "planner", path: "/mcp", body: `[1]`, status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, batch: 1},

		{name: "missing jsonrpc", caller: "planner", path: "/mcp", body: `{"id":1,"method":"tools/list"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list", id: "1", hasID: true},
		{name: "wrong version", caller: "planner", path: "/mcp", body: `{"jsonrpc":2.0,"id":1,"method":"tools/list"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list", id: "1", hasID: true},
		{name: "missing method", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, id: "1", hasID: true},
		{name: "method not a string", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":["tools/list"]}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, id: "1", hasID: true},
		{name: "id of wrong type (object)", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list"},
		{name: "id null", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":null,"method":"tools/list"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list"},
		{name: "id fractional", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list"},
		{name: "params a string", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list", id: "1", hasID: true},
		{name: "unexpected member", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list","result":{}}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest, method: "tools/list", id: "1", hasID: true},
		{name: "tools/call name missing", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidParams, method: "tools/call", id: "1", hasID: true},
		{name: "tools/call arguments an array", caller: "planner", path: "/mcp", body: call(1, "search", `["q"]`),
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidParams, method: "tools/call", tool: "search", id: "1", hasID: true},
		{name: "tools/call params an array", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["search"]}`,
			status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidParams, method: "tools/call", id: "1", hasID: true},
		{name: "duplicate keys in params", caller: "planner", path: "/mcp", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete","arguments":{"query":"x"}}}`,
			status: 400, reason: "invalid_json", rpcCode: policy.RPCParseError},
		{name: "duplicate keys in arguments", caller: "planner", path: "/mcp", body: call(1, "search", `{"query":"x","Query":"y"}`),
			status: 400, reason: "invalid_json", rpcCode: policy.RPCParseError},
		{name: "not JSON", caller: "planner", path: "/mcp", body: `{"jsonrpc":`, status: 400, reason: "invalid_json", rpcCode: policy.RPCParseError},
		{name: "a scalar body", caller: "planner", path: "/mcp", body: `"tools/list"`, status: 400, reason: "invalid_jsonrpc", rpcCode: policy.RPCInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := rpcInput(tc.caller, tc.path, tc.body)
			if tc.body == "" {
				in.Method = "GET"
			}
			defer in.ReleaseBody()
			d := rev.Decide(ctx(t), in)
			if d.Allow != tc.allow || d.Status != tc.status || d.Reason != tc.reason || d.Rule != tc.rule {
				t.Fatalf("got allow=%v status=%d reason=%s rule=%q (%s), want allow=%v status=%d reason=%s rule=%q",
					d.Allow, d.Status, d.Reason, d.Rule, d.Message, tc.allow, tc.status, tc.reason, tc.rule)
			}
			rpc := d.RPC
			if tc.body != "" && !rpc.Route {
				t.Fatal("RPC.Route not set on a JSON-RPC route")
			}
			if rpc.ErrorCode != tc.rpcCode || rpc.Method != tc.method || rpc.Tool != tc.tool || rpc.ID != tc.id ||
				rpc.HasID != tc.hasID || rpc.IDString != tc.idString || rpc.Batch != tc.batch || rpc.Index != tc.index {
				t.Fatalf("RPC = %+v (%s)", rpc, d.Message)
			}
			var paths []string
			for _, v := range d.Violations {
				paths = append(paths, v.Path)
			}
			if strings.Join(paths, ",") != strings.Join(tc.violations, ",") {
				t.Fatalf("violations %v, want %v (%s)", d.Violations, tc.violations, d.Message)
			}
			if !tc.allow && d.Message == "" {
				t.Fatal("a deny without a message")
			}
		})
	}
}

func TestJSONRPCBatchDenyAndUnknownToolAllow(t *testing.T) {
	cfg := mcpConfig()
	cfg.JSONRPC.Batch = policy.BatchDeny
	cfg.JSONRPC.UnknownTool = policy.UnknownToolAllow
	rev := mustCompile(t, cfg, policy.Options{})
	d := rev.Decide(ctx(t), rpcInput("planner", "/mcp", "["+call(1, "search", `{"query":"a"}`)+"]"))
	if d.Allow || d.Status != 400 || d.Reason != policy.ReasonInvalidJSONRPC {
		t.Fatalf("batch with batch: deny: %+v", d)
	}
	d = rev.Decide(ctx(t), rpcInput("planner", "/mcp", call(1, "rm", `{"anything":true}`)))
	if !d.Allow || d.RPC.KnownTool {
		t.Fatalf("unknown tool with unknownTool: allow: %+v", d)
	}
}

// A rule without a jsonrpc match applies to every message on the route;
// a rule with one never matches a plain HTTP request.
func TestJSONRPCMatchScope(t *testing.T) {
	cfg := mcpConfig()
	cfg.Rules = append(cfg.Rules, policy.Rule{Name: "viewer-post", Match: policy.Match{Methods: []string{"POST"}, Path: "/other", JSONRPC: &policy.JSONRPCMatch{Method: "tools/list"}}})
	rev := mustCompile(t, cfg, policy.Options{})
	d := rev.Decide(ctx(t), rpcInput("viewer", "/other", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if d.Allow || d.Reason != policy.ReasonNoMatchingRule {
		t.Fatalf("jsonrpc rule matched off its routes: %+v", d)
	}
}

func TestJSONRPCConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*policy.Config)
		want string
	}{
		{"no routes", func(c *policy.Config) { c.JSONRPC.Routes = nil }, "authz.jsonrpc.routes: at least one route"},
		{"route path and prefix", func(c *policy.Config) { c.JSONRPC.Routes[0].PathPrefix = "/x" }, "authz.jsonrpc.routes[0]: set exactly one of path and pathPrefix"},
		{"protocol", func(c *policy.Config) { c.JSONRPC.Routes[0].Protocol = "grpc" }, "authz.jsonrpc.routes[0].protocol"},
		{"batch", func(c *policy.Config) { c.JSONRPC.Batch = "some" }, "authz.jsonrpc.batch"},
		{"maxBatch", func(c *policy.Config) { c.JSONRPC.MaxBatch = -1 }, "authz.jsonrpc.maxBatch"},
		{"unknownTool", func(c *policy.Config) { c.JSONRPC.UnknownTool = "warn" }, "authz.jsonrpc.unknownTool"},
		{"tool twice", func(c *policy.Config) { c.JSONRPC.Tools = append(c.JSONRPC.Tools, c.JSONRPC.Tools[0]) }, `authz.jsonrpc.tools[2].name: tool "search" defined twice`},
		{"tool without schema", func(c *policy.Config) { c.JSONRPC.Tools[0].InputSchema = nil }, "authz.jsonrpc.tools[0].inputSchema: required"},
		{"bad tool schema", func(c *policy.Config) { c.JSONRPC.Tools[0].InputSchema = map[string]any{"type": 5} }, "tool schemas"},
		{"match without routes", func(c *policy.Config) { c.JSONRPC = nil }, "authz.rules[0].match.jsonrpc: needs authz.jsonrpc.routes"},
		{"tool with other method", func(c *policy.Config) { c.Rules[3].Match.JSONRPC.Method = "tools/list" }, "authz.rules[3].match.jsonrpc.tool: only for method tools/call"},
		{"empty match", func(c *policy.Config) { c.Rules[0].Match.JSONRPC.MethodPrefix = "" }, "authz.rules[0].match.jsonrpc: set method, methodPrefix or tool"},
		{"method and prefix", func(c *policy.Config) { c.Rules[1].Match.JSONRPC.MethodPrefix = "x" }, "authz.rules[1].match.jsonrpc: method and methodPrefix are exclusive"},
		{"tools file missing", func(c *policy.Config) { c.JSONRPC.ToolsFile = "nope.json" }, "authz.jsonrpc.toolsFile nope.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mcpConfig()
			tc.edit(&cfg)
			_, err := policy.Compile(&cfg, td, policy.Options{Dir: fstest.MapFS{}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

const savedToolsList = `{"jsonrpc":"2.0","id":2,"result":{"tools":[
 {"name":"weather","description":"Get weather","inputSchema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
 {"name":"add","inputSchema":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"],"additionalProperties":false}}]}}`

func TestToolsFile(t *testing.T) {
	cfg := mcpConfig()
	cfg.JSONRPC.ToolsFile = "tools.json"
	dir := fstest.MapFS{"tools.json": {Data: []byte(savedToolsList)}}
	rev := mustCompile(t, cfg, policy.Options{Dir: dir})
	d := rev.Decide(ctx(t), rpcInput("planner", "/mcp", call(1, "add", `{"a":1,"b":"two"}`)))
	if d.Allow || d.Reason != policy.ReasonToolArguments || len(d.Violations) != 1 || d.Violations[0].Path != "/params/arguments/b" {
		t.Fatalf("add with a string: %+v", d)
	}
	d = rev.Decide(ctx(t), rpcInput("planner", "/mcp", call(1, "weather", `{"city":"Oslo"}`)))
	if !d.Allow || !d.RPC.KnownTool {
		t.Fatalf("weather: %+v", d)
	}
	// The file's content is part of the revision ID.
	other := fstest.MapFS{"tools.json": {Data: []byte(strings.Replace(savedToolsList, `"city"]`, `"city","x"]`, 1))}}
	if rev2 := mustCompile(t, cfg, policy.Options{Dir: other}); rev2.ID() == rev.ID() {
		t.Fatal("a changed tools file kept the revision ID")
	}
	// A name in the file and inline is an error.
	cfg.JSONRPC.Tools = append(cfg.JSONRPC.Tools, policy.ToolConfig{Name: "add", InputSchema: map[string]any{}})
	if _, err := policy.Compile(&cfg, td, policy.Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), `tool "add" is also defined`) {
		t.Fatalf("duplicate tool: %v", err)
	}
}

func TestParseTools(t *testing.T) {
	tools, err := policy.ParseTools([]byte(savedToolsList))
	if err != nil || len(tools) != 2 || tools[0].Name != "add" || tools[1].Name != "weather" {
		t.Fatalf("ParseTools = %+v, %v", tools, err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"bare result", `{"tools":[]}`, ""},
		{"error response", `{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}`, "JSON-RPC error"},
		{"no tools", `{"result":{}}`, "tools: missing"},
		{"duplicate key", `{"tools":[],"tools":[]}`, "duplicate"},
		{"tool twice", `{"tools":[{"name":"a","inputSchema":{}},{"name":"a","inputSchema":{}}]}`, `tool "a" listed twice`},
		{"no schema", `{"tools":[{"name":"a"}]}`, "tools[0] (a).inputSchema"},
		{"no name", `{"tools":[{"inputSchema":{}}]}`, "tools[0].name"},
		{"array", `[]`, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.ParseTools([]byte(tc.in))
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// The Rego step sees the JSON-RPC body as parsed_body, unchanged, after the
// JSON-RPC step read it.
func TestJSONRPCParsedBodyForRego(t *testing.T) {
	cfg := mcpConfig()
	cfg.Rego = &policy.RegoConfig{Files: []string{"p.rego"}}
	cfg.Mode = policy.ModeBoth
	var seen any
	rev, err := policy.Compile(&cfg, td, policy.Options{NewRego: func(*policy.Config, fs.FS) (policy.RegoEvaluator, error) {
		return regoFunc(func(in *policy.Input) bool {
			seen, _ = in.ParsedBodyValue()
			return true
		}), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	in := rpcInput("planner", "/mcp", call(5, "search", `{"query":"go"}`))
	defer in.ReleaseBody()
	if d := rev.Decide(ctx(t), in); !d.Allow {
		t.Fatalf("deny: %+v", d)
	}
	m, _ := seen.(map[string]any)
	params, _ := m["params"].(map[string]any)
	args, _ := params["arguments"].(map[string]any)
	if m["method"] != "tools/call" || params["name"] != "search" || args["query"] != "go" {
		t.Fatalf("parsed_body = %#v", seen)
	}
}

func TestQuota(t *testing.T) {
	cfg := mcpConfig()
	cfg.Quotas = []policy.QuotaConfig{
		{Name: "search", Tool: "search", Rate: 2, Per: time.Minute},
		{Name: "viewer-list", Callers: []string{"spiffe://mesh.local/ns/*/sa/viewer"}, Rule: "list-tools", Rate: 1, Per: time.Second, Burst: 1},
	}
	now := time.Unix(1000, 0)
	rev := mustCompile(t, cfg, policy.Options{Now: func() time.Time { return now }})
	decide := func(caller, body string) policy.Decision {
		in := rpcInput(caller, "/mcp", body)
		defer in.ReleaseBody()
		return rev.Decide(ctx(t), in)
	}
	search := call(1, "search", `{"query":"go"}`)
	for i := range 2 {
		if d := decide("planner", search); !d.Allow {
			t.Fatalf("call %d: %+v", i, d)
		}
	}
	d := decide("planner", search)
	if d.Allow || d.Status != 429 || d.Reason != policy.ReasonRateLimited || d.Quota != "search" || d.RetryAfter != 30 || d.RPC.ErrorCode != policy.RPCRateLimited {
		t.Fatalf("third call: %+v", d)
	}
	// Another caller has its own bucket.
	if d := decide("viewer", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); !d.Allow {
		t.Fatalf("viewer list: %+v", d)
	}
	if d := decide("viewer", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); d.Status != 429 || d.RetryAfter != 1 {
		t.Fatalf("viewer second list: %+v", d)
	}
	// The planner is not among the callers of viewer-list.
	for range 3 {
		if d := decide("planner", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); !d.Allow {
			t.Fatalf("planner list: %+v", d)
		}
	}
	// A denied request takes no token; time refills.
	now = now.Add(30 * time.Second)
	if d := decide("planner", search); !d.Allow {
		t.Fatalf("after refill: %+v", d)
	}
	if d := decide("planner", search); d.Status != 429 {
		t.Fatalf("one token refilled, two taken: %+v", d)
	}
	// Each batch element takes a token.
	now = now.Add(time.Minute)
	if d := decide("planner", "["+search+","+search+","+search+"]"); d.Status != 429 || d.RPC.Index != 2 {
		t.Fatalf("batch of three: %+v", d)
	}
}

func TestQuotaPlainHTTPAndErrors(t *testing.T) {
	cfg := testConfig()
	cfg.Quotas = []policy.QuotaConfig{{Name: "list", Rule: "list-tasks", Rate: 1}}
	rev := mustCompile(t, cfg, policy.Options{})
	in := &policy.Input{Method: "GET", Path: "/v1/tasks", Principal: id("planner")}
	if d := rev.Decide(ctx(t), in); !d.Allow {
		t.Fatalf("first: %+v", d)
	}
	if d := rev.Decide(ctx(t), in); d.Status != 429 || d.RetryAfter != 60 {
		t.Fatalf("second: %+v", d)
	}
	for _, tc := range []struct {
		q    policy.QuotaConfig
		want string
	}{
		{policy.QuotaConfig{Rate: 1}, "authz.quotas[0].name: required"},
		{policy.QuotaConfig{Name: "a"}, "authz.quotas[0].rate"},
		{policy.QuotaConfig{Name: "a", Rate: 1, Rule: "nope"}, `authz.quotas[0].rule: unknown rule "nope"`},
		{policy.QuotaConfig{Name: "a", Rate: 1, Callers: []string{"spiffe://other/x"}}, "authz.quotas[0].callers[0]"},
		{policy.QuotaConfig{Name: "a", Rate: 1, Burst: -1}, "authz.quotas[0].burst"},
		{policy.QuotaConfig{Name: "a", Rate: 1, Per: time.Microsecond}, "authz.quotas[0].per"},
	} {
		c := testConfig()
		c.Quotas = []policy.QuotaConfig{tc.q}
		if _, err := policy.Compile(&c, td, policy.Options{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.q, err, tc.want)
		}
	}
}

type regoFunc func(in *policy.Input) bool

func (f regoFunc) Eval(_ context.Context, in *policy.Input, _ policy.Caller) (policy.RegoResult, error) {
	return policy.RegoResult{Allow: f(in)}, nil
}

func TestExplainJSONRPC(t *testing.T) {
	rev := mustCompile(t, mcpConfig(), policy.Options{})
	find := func(steps []policy.Step, rule string) policy.Step {
		t.Helper()
		for _, s := range steps {
			if s.Rule == rule {
				return s
			}
		}
		t.Fatalf("no step %q in %+v", rule, steps)
		return policy.Step{}
	}
	in := rpcInput("planner", "/mcp", "["+call(1, "search", `{"query":"go"}`)+","+call(2, "search", `{"limit":99}`)+"]")
	defer in.ReleaseBody()
	steps := rev.Explain(in)
	if s := find(steps, "[0] call-search"); !s.Matched || !s.Satisfied {
		t.Errorf("[0] call-search = %+v", s)
	}
	if s := find(steps, "[0] list-tools"); s.Matched || !strings.Contains(s.Why, `"tools/call" is not "tools/list"`) {
		t.Errorf("[0] list-tools = %+v", s)
	}
	if s := find(steps, "[0] no-delete"); s.Matched || !strings.Contains(s.Why, `tool "search" is not "delete"`) {
		t.Errorf("[0] no-delete = %+v", s)
	}
	if s := find(steps, "[0] mcp.tool search"); s.Effect != policy.EffectTool || !s.Satisfied {
		t.Errorf("[0] tool = %+v", s)
	}
	if s := find(steps, "[1] mcp.tool search"); s.Satisfied || !strings.Contains(s.Why, "/1/params/arguments/limit maximum") ||
		!strings.Contains(s.Why, "/1/params/arguments required") {
		t.Errorf("[1] tool = %+v", s)
	}
	bad := rpcInput("planner", "/mcp", `{"jsonrpc":"2.0","id":1}`)
	if s := rev.Explain(bad); len(s) != 1 || !strings.Contains(s[0].Why, "method is missing") {
		t.Errorf("malformed: %+v", s)
	}
	// Off the JSON-RPC routes a jsonrpc rule says why it never applies.
	plain := &policy.Input{Method: "GET", Path: "/mcp", Principal: id("viewer")}
	if s := find(rev.Explain(plain), "list-tools"); s.Matched || !strings.Contains(s.Why, "method GET") {
		t.Errorf("plain list-tools = %+v", s)
	}
}

// A reload keeps the buckets of unchanged quotas, and refills changed ones.
func TestQuotaSurvivesReload(t *testing.T) {
	st, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	load := func(cfg policy.Config) {
		t.Helper()
		if err := st.Reload(ctx(t), func() (*policy.Revision, error) {
			return policy.Compile(&cfg, td, policy.Options{Now: func() time.Time { return now }})
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := mcpConfig()
	cfg.Quotas = []policy.QuotaConfig{{Name: "search", Tool: "search", Rate: 1, Per: time.Hour}}
	load(cfg)
	search := func() policy.Decision {
		in := rpcInput("planner", "/mcp", call(1, "search", `{"query":"go"}`))
		defer in.ReleaseBody()
		return st.Decide(ctx(t), in)
	}
	if d := search(); !d.Allow {
		t.Fatalf("first: %+v", d)
	}
	changedRules := cfg
	changedRules.Rules = append(slices.Clone(cfg.Rules), policy.Rule{Name: "extra", Match: policy.Match{Path: "/x"}})
	load(changedRules)
	if d := search(); d.Status != 429 {
		t.Fatalf("a new revision with the same quota refilled it: %+v", d)
	}
	changedQuota := changedRules
	changedQuota.Quotas = []policy.QuotaConfig{{Name: "search", Tool: "search", Rate: 2, Per: time.Hour}}
	load(changedQuota)
	if d := search(); !d.Allow {
		t.Fatalf("a changed quota did not start full: %+v", d)
	}
}

// A batch whose one element a dry-run rule would deny is allowed, and its
// decision reports that element's would-be deny.
func TestJSONRPCBatchDryRun(t *testing.T) {
	cfg := mcpConfig()
	cfg.Rules = append(cfg.Rules, policy.Rule{Name: "trial-read", DryRun: true,
		Match:   policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Method: "resources/read"}},
		Require: policy.Require{AnyRole: []string{"admin"}}})
	rev := mustCompile(t, cfg, policy.Options{})
	in := rpcInput("viewer", "/mcp", `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"x"}}]`)
	defer in.ReleaseBody()
	d := rev.Decide(ctx(t), in)
	if !d.Allow || !d.DryRun || d.Reason != policy.ReasonMissingRole || d.Rule != "trial-read" || d.RPC.Method != "resources/read" || d.RPC.Batch != 2 {
		t.Fatalf("%+v", d)
	}
}

// Argument schemas are enforced even under a dry-run rule, as documented.
func TestToolArgumentsEnforcedUnderDryRun(t *testing.T) {
	cfg := mcpConfig()
	for i := range cfg.Rules {
		if n := cfg.Rules[i].Name; n == "call-search" || n == "call-any" {
			cfg.Rules[i].DryRun = true
		}
	}
	rev := mustCompile(t, cfg, policy.Options{})
	in := rpcInput("viewer", "/mcp", call(1, "search", `{"limit":500}`))
	defer in.ReleaseBody()
	if d := rev.Decide(ctx(t), in); d.Allow || d.DryRun || d.Reason != policy.ReasonToolArguments {
		t.Fatalf("%+v", d)
	}
}
