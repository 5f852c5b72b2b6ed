package envoy

import (
	"encoding/json"
	"testing"

	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/cel-go/cel"
)

// localReplyOf is the inbound listener's local reply config of node.
func localReplyOf(t *testing.T, m Mesh, node string) *hcmv3.LocalReplyConfig {
	t.Helper()
	nr, err := TranslateAgent(m, node)
	if err != nil {
		t.Fatal(err)
	}
	checkNode(t, node, nr) // ValidateAll on every resource
	return listenerHCM(t, nr, ListenerInbound).GetLocalReplyConfig()
}

// mapperExpr is the CEL expression of mapper mp's filter.
func mapperExpr(t *testing.T, mp *hcmv3.ResponseMapper) string {
	t.Helper()
	ext := mp.GetFilter().GetExtensionFilter()
	if ext.GetName() != "envoy.access_loggers.extension_filters.cel" {
		t.Fatalf("mapper filter %v, want the CEL extension filter", mp.GetFilter())
	}
	var f celv3.ExpressionFilter
	if err := ext.GetTypedConfig().UnmarshalTo(&f); err != nil {
		t.Fatal(err)
	}
	return f.GetExpression()
}

// celEval evaluates expr, as Envoy's CEL filter would, on a request and
// the response code details of the reply.
func celEval(t *testing.T, expr string, method, host, path, details string) bool {
	t.Helper()
	env, err := cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("response", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		t.Fatalf("%s: %v", expr, iss.Err())
	}
	if ast.OutputType() != cel.BoolType {
		t.Fatalf("%s: type %v, want bool", expr, ast.OutputType())
	}
	prg, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := prg.Eval(map[string]any{
		"request":  map[string]any{"method": method, "host": host, "url_path": path},
		"response": map[string]any{"code_details": details},
	})
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return out.Value().(bool)
}

func TestLocalReplyOnlyWithEnvoyQuotas(t *testing.T) {
	m := quotaMesh() // no quota
	m.JSONRPCRoutes = []JSONRPCRoute{{Path: "/mcp"}}
	if lr := localReplyOf(t, m, "tools"); lr != nil {
		t.Errorf("local reply config without a local rate limit: %v", lr)
	}
	// A quota Envoy cannot enforce (a pattern) adds no filter, so no mapper.
	m.Quotas = []Quota{{Name: "q", Callers: []string{"spiffe://mesh.local/ns/agents/sa/*"}, Rate: 10, Per: 60e9}}
	if lr := localReplyOf(t, m, "tools"); lr != nil {
		t.Errorf("local reply config without a local rate limit: %v", lr)
	}
}

func TestLocalReplyRateLimitBodies(t *testing.T) {
	m := quotaMesh(Quota{Name: "q", Rate: 10, Per: 60e9})
	m.JSONRPCRoutes = []JSONRPCRoute{{Path: "/mcp"}, {PathPrefix: "/a2a/", Hosts: []string{"agents.local"}}}
	lr := localReplyOf(t, m, "tools")
	if len(lr.GetMappers()) != 2 {
		t.Fatalf("%d mappers, want 2 (JSON-RPC, then plain)", len(lr.GetMappers()))
	}
	rpc, plain := lr.GetMappers()[0], lr.GetMappers()[1]

	// Envoy uses the first mapper whose filter matches: which body each
	// request gets.
	body := func(method, host, path, details string) string {
		switch {
		case celEval(t, mapperExpr(t, rpc), method, host, path, details):
			return "rpc"
		case celEval(t, mapperExpr(t, plain), method, host, path, details):
			return "plain"
		}
		return "unchanged"
	}
	for _, c := range []struct {
		method, host, path, details, want string
	}{
		{"POST", "tools:15003", "/mcp", localRateLimitDetails, "rpc"},
		{"GET", "tools:15003", "/mcp", localRateLimitDetails, "plain"}, // only POST is JSON-RPC
		{"POST", "tools:15003", "/mcp/x", localRateLimitDetails, "plain"},
		{"POST", "agents.local", "/a2a/tasks", localRateLimitDetails, "rpc"},
		{"POST", "agents.local:8443", "/a2a/tasks", localRateLimitDetails, "rpc"},
		{"POST", "agents.local.evil", "/a2a/tasks", localRateLimitDetails, "plain"},
		{"POST", "other", "/a2a/tasks", localRateLimitDetails, "plain"},
		{"POST", "tools", "/other", localRateLimitDetails, "plain"},
		// The authorizer's denies (ext_authz's local replies) keep its body.
		{"POST", "tools", "/mcp", "ext_authz_denied", "unchanged"},
		{"GET", "tools", "/", "ext_authz_error", "unchanged"},
	} {
		if got := body(c.method, c.host, c.path, c.details); got != c.want {
			t.Errorf("%s %s%s (%s): body %s, want %s", c.method, c.host, c.path, c.details, got, c.want)
		}
	}

	for _, mp := range lr.GetMappers() {
		f := mp.GetBodyFormatOverride()
		if f.GetContentType() != "application/json" {
			t.Errorf("content type %q, want application/json", f.GetContentType())
		}
		if !json.Valid([]byte(f.GetTextFormatSource().GetInlineString())) {
			t.Errorf("body %q is not JSON", f.GetTextFormatSource().GetInlineString())
		}
		if mp.GetStatusCode() != nil {
			t.Errorf("the mapper changes the status to %v: Envoy's 429 must stay", mp.GetStatusCode())
		}
	}
	var e struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code int `json:"code"`
			Data struct {
				Error string `json:"error"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(rpc.GetBodyFormatOverride().GetTextFormatSource().GetInlineString()), &e); err != nil {
		t.Fatal(err)
	}
	if e.JSONRPC != "2.0" || string(e.ID) != "null" || e.Error.Code != rpcRateLimited || e.Error.Data.Error != "rate_limited" {
		t.Errorf("JSON-RPC body %+v, want a JSON-RPC 2.0 error, id null, code %d, data.error rate_limited", e, rpcRateLimited)
	}
}

func TestLocalReplyWithoutJSONRPCRoutes(t *testing.T) {
	lr := localReplyOf(t, quotaMesh(Quota{Name: "q", Rate: 10, Per: 60e9}), "tools")
	if len(lr.GetMappers()) != 1 {
		t.Fatalf("%d mappers, want 1 (plain)", len(lr.GetMappers()))
	}
	if !celEval(t, mapperExpr(t, lr.GetMappers()[0]), "POST", "tools", "/mcp", localRateLimitDetails) {
		t.Error("the plain mapper does not match Envoy's rate limit reply")
	}
}

// A path with quotes or backslashes stays one CEL string literal.
func TestJSONRPCRouteExprQuoting(t *testing.T) {
	expr := jsonRPCRouteExpr([]JSONRPCRoute{{Path: `/a"b\c`}})
	if !celEval(t, expr, "POST", "h", `/a"b\c`, "") || celEval(t, expr, "POST", "h", `/a`, "") {
		t.Errorf("%s does not match exactly its path", expr)
	}
}
