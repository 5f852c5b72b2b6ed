package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
)

// mcpPolicy is an MCP tool server at /mcp with one tool schema and a
// quota of two search calls a minute per caller.
func mcpPolicy() policy.Config {
	return policy.Config{
		Identities: []policy.Identity{
			{SPIFFEID: spiffe("planner"), Roles: []string{"planner"}},
			{SPIFFEID: spiffe("viewer"), Roles: []string{"viewer"}},
		},
		JSONRPC: &policy.JSONRPCConfig{
			Routes: []policy.JSONRPCRoute{{Path: "/mcp"}},
			Tools: []policy.ToolConfig{{Name: "search", InputSchema: map[string]any{
				"type": "object", "required": []any{"query"}, "additionalProperties": false,
				"properties": map[string]any{
					"query": map[string]any{"type": "string", "maxLength": 100},
					"limit": map[string]any{"type": "integer", "minimum": 1, "maximum": 50},
				},
			}}},
		},
		Rules: []policy.Rule{
			{Name: "list-tools", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Method: "tools/list"}},
				Require: policy.Require{AnyRole: []string{"planner", "viewer"}}},
			{Name: "call-search", Match: policy.Match{Methods: []string{"POST"}, Path: "/mcp", JSONRPC: &policy.JSONRPCMatch{Tool: "search"}},
				Require: policy.Require{AnyRole: []string{"planner"}}},
		},
		Quotas: []policy.QuotaConfig{{Name: "search", Tool: "search", Rate: 2, Per: time.Minute}},
	}
}

func mcpReq(principal, body string) *authv3.CheckRequest {
	r := checkReq(principal, "POST", "/mcp", map[string]string{"content-type": "application/json"})
	r.Attributes.Request.Http.Body = body
	return r
}

type memAuditor struct {
	mu   sync.Mutex
	recs []audit.Record
}

func (m *memAuditor) Audit(r *audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, *r)
	return nil
}

type rpcError struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    struct {
			Error      string `json:"error"`
			DecisionID string `json:"decision_id"`
			Violations []struct {
				Path string `json:"path"`
			} `json:"violations"`
		} `json:"data"`
	} `json:"error"`
}

func TestCheckJSONRPC(t *testing.T) {
	reg := prometheus.NewRegistry()
	aud := &memAuditor{}
	s := newServer(t, plainConfig(), newStore(t, mcpPolicy(), policy.Options{}), Options{Registry: reg, Auditor: aud})
	search := func(id int, args string) string {
		return `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"search","arguments":` + args + `}}`
	}
	for _, tc := range []struct {
		name, principal, body string
		status                int
		rpcCode               int
		id, code              string
		violation             string
		retryAfter            string
		audit                 audit.Record
	}{
		{name: "allowed tool call", principal: "planner", body: search(1, `{"query":"go"}`), status: 200,
			audit: audit.Record{Decision: "allow", Rule: "call-search", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "1"}},
		{name: "argument schema", principal: "planner", body: search(2, `{"query":"go","limit":99}`), status: 400, rpcCode: -32602, id: "2",
			code: "invalid_tool_arguments", violation: "/params/arguments/limit",
			audit: audit.Record{Decision: "deny", Rule: "call-search", Reason: "invalid_tool_arguments", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "2",
				Violations: []string{"/params/arguments/limit"}}},
		{name: "by role", principal: "viewer", body: search(3, `{"query":"go"}`), status: 403, rpcCode: -32001, id: "3", code: "missing_role",
			audit: audit.Record{Decision: "deny", Rule: "call-search", Reason: "missing_role", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "3"}},
		{name: "malformed, string id echoed", principal: "planner", body: `{"jsonrpc":"1.0","id":"x\"y","method":"tools/list"}`, status: 400, rpcCode: -32600,
			id: `"x\"y"`, code: "invalid_jsonrpc",
			audit: audit.Record{Decision: "deny", Reason: "invalid_jsonrpc", JSONRPCMethod: "tools/list", JSONRPCID: `x"y`}},
		{name: "not JSON: null id", principal: "planner", body: `{"jsonrpc"`, status: 400, rpcCode: -32700, id: "null", code: "invalid_json",
			audit: audit.Record{Decision: "deny", Reason: "invalid_json"}},
		{name: "batch, second element bad", principal: "planner", body: `[{"jsonrpc":"2.0","id":5,"method":"tools/list"},` + search(6, `{}`) + `]`,
			status: 400, rpcCode: -32602, id: "6", code: "invalid_tool_arguments", violation: "/1/params/arguments",
			audit: audit.Record{Decision: "deny", Rule: "call-search", Reason: "invalid_tool_arguments", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "6", JSONRPCBatch: 2,
				Violations: []string{"/1/params/arguments"}}},
		{name: "second call within quota", principal: "planner", body: search(7, `{"query":"a"}`), status: 200,
			audit: audit.Record{Decision: "allow", Rule: "call-search", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "7"}},
		{name: "rate limited", principal: "planner", body: search(8, `{"query":"a"}`), status: 429, rpcCode: -32002, id: "8", code: "rate_limited", retryAfter: "30",
			audit: audit.Record{Decision: "deny", Rule: "call-search", Reason: "rate_limited", JSONRPCMethod: "tools/call", MCPTool: "search", JSONRPCID: "8", Quota: "search"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Check(testCtx(t), mcpReq(spiffe(tc.principal), tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 200 {
				if resp.GetStatus().GetCode() != int32(codes.OK) {
					t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
				}
			} else {
				dr := resp.GetDeniedResponse()
				if int(dr.GetStatus().GetCode()) != tc.status {
					t.Fatalf("status %d, want %d: %s", dr.GetStatus().GetCode(), tc.status, dr.GetBody())
				}
				var e rpcError
				if err := json.Unmarshal([]byte(dr.GetBody()), &e); err != nil {
					t.Fatalf("body %s: %v", dr.GetBody(), err)
				}
				if e.JSONRPC != "2.0" || string(e.ID) != tc.id || e.Error.Code != tc.rpcCode || e.Error.Data.Error != tc.code ||
					e.Error.Message == "" || e.Error.Data.DecisionID == "" {
					t.Fatalf("body %s", dr.GetBody())
				}
				if tc.violation != "" && (len(e.Error.Data.Violations) == 0 || e.Error.Data.Violations[0].Path != tc.violation) {
					t.Fatalf("violations in %s, want %s", dr.GetBody(), tc.violation)
				}
				ra := ""
				for _, h := range dr.GetHeaders() {
					if h.GetHeader().GetKey() == "retry-after" {
						ra = h.GetHeader().GetValue()
					}
				}
				if ra != tc.retryAfter {
					t.Fatalf("retry-after %q, want %q", ra, tc.retryAfter)
				}
			}
			aud.mu.Lock()
			got := aud.recs[len(aud.recs)-1]
			aud.mu.Unlock()
			w := tc.audit
			if got.Decision != w.Decision || got.Rule != w.Rule || (w.Reason != "" && got.Reason != w.Reason) || got.JSONRPCMethod != w.JSONRPCMethod ||
				got.MCPTool != w.MCPTool || got.JSONRPCID != w.JSONRPCID || got.JSONRPCBatch != w.JSONRPCBatch || got.Quota != w.Quota ||
				strings.Join(got.Violations, ",") != strings.Join(w.Violations, ",") {
				t.Fatalf("audit record %+v", got)
			}
		})
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"allow", "tools/call", "search"}, 2},
		{[]string{"deny", "tools/call", "search"}, 4},
		{[]string{"deny", "tools/list", "none"}, 1},
		{[]string{"deny", "none", "none"}, 1},
	} {
		if got := testutil.ToFloat64(s.m.rpc.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("jsonrpc decisions %v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := testutil.ToFloat64(s.m.limited.WithLabelValues("search")); got != 1 {
		t.Errorf("rate limited = %v, want 1", got)
	}
}

// A client-chosen method does not become a metric label.
func TestJSONRPCMetricLabelsBounded(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, mcpPolicy(), policy.Options{}), Options{})
	for i := range 50 {
		body := `{"jsonrpc":"2.0","id":1,"method":"m` + strconv.Itoa(i) + `"}`
		if _, err := s.Check(context.Background(), mcpReq(spiffe("planner"), body)); err != nil {
			t.Fatal(err)
		}
	}
	if n := testutil.CollectAndCount(s.m.rpc); n != 1 {
		t.Fatalf("%d series, want 1 (method other)", n)
	}
}

// BenchmarkDecisionMCP is a tools/call decided in process with its
// arguments validated against the tool's inputSchema: the whole Check
// (canonical request, JSON-RPC envelope, rules, argument schema,
// response, metrics), and Revision.Decide alone.
func BenchmarkDecisionMCP(b *testing.B) {
	pol := mcpPolicy()
	pol.Quotas = nil
	body := `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search","arguments":{"query":"weather in Oslo","limit":5}}}`
	b.Run("check", func(b *testing.B) {
		s := newServer(b, plainConfig(), newStore(b, pol, policy.Options{}), Options{})
		req := mcpReq(spiffe("planner"), body)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			resp, err := s.Check(ctx, req)
			if err != nil || resp.GetStatus().GetCode() != 0 {
				b.Fatal(err, resp.GetDeniedResponse().GetBody())
			}
		}
	})
	b.Run("decide", func(b *testing.B) {
		rev, err := policy.Compile(&pol, td, policy.Options{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		headers := map[string]string{"content-type": "application/json"}
		b.ReportAllocs()
		for b.Loop() {
			in := policy.Input{Method: "POST", Path: "/mcp", Host: "executor.mesh.local", Principal: spiffe("planner"),
				Headers: headers, BodyText: body}
			if d := rev.Decide(ctx, &in); !d.Allow {
				b.Fatal(d.Message)
			}
			in.ReleaseBody()
		}
	})
}

// An opa-envoy-plugin policy reads a JSON-RPC body as parsed_body,
// unchanged, after the JSON-RPC step: in mode both it runs on what the
// rules allowed, in mode rego alone on every well-formed message.
func TestJSONRPCWithRealRego(t *testing.T) {
	const pol = `package envoy.authz

import rego.v1

default allow := false

# Only searches for fewer than 10 results, and listing the tools.
allow if {
	input.parsed_body.jsonrpc == "2.0"
	input.parsed_body.method == "tools/call"
	input.parsed_body.params.name == "search"
	input.parsed_body.params.arguments.limit < 10
}

allow if input.parsed_body.method == "tools/list"
`
	dir := fstest.MapFS{"p.rego": {Data: []byte(pol)}}
	for _, mode := range []string{policy.ModeBoth, policy.ModeRego} {
		t.Run(mode, func(t *testing.T) {
			cfg := mcpPolicy()
			cfg.Quotas = nil
			cfg.Rego, cfg.Mode = &policy.RegoConfig{Files: []string{"p.rego"}}, mode
			s := newServer(t, plainConfig(), newStore(t, cfg, policy.Options{Dir: dir, NewRego: policy.NewOPARego}), Options{})
			for _, c := range []struct {
				who, body string
				status    int
			}{
				{"planner", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"a","limit":5}}}`, 200},
				{"planner", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"a","limit":20}}}`, 403},
				{"viewer", `{"jsonrpc":"2.0","id":"v","method":"tools/list"}`, 200},
				{"planner", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"limit":5}}}`, 400},
			} {
				resp, err := s.Check(testCtx(t), mcpReq(spiffe(c.who), c.body))
				if err != nil {
					t.Fatal(err)
				}
				if got := httpStatus(t, resp); got != c.status {
					t.Errorf("%s %s: %d (%s), want %d", c.who, c.body, got, resp.GetDeniedResponse().GetBody(), c.status)
				}
				var e rpcError
				if c.status != 200 && (json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &e) != nil || e.JSONRPC != "2.0" || e.Error.Code == 0) {
					t.Errorf("%s: deny body is not a JSON-RPC error: %s", c.body, resp.GetDeniedResponse().GetBody())
				}
			}
		})
	}
}

type failingRego struct{}

func (failingRego) Eval(context.Context, *policy.Input, policy.Caller) (policy.RegoResult, error) {
	return policy.RegoResult{}, errors.New("boom: secret internals")
}

// An internal failure on a JSON-RPC route is a JSON-RPC error (-32603)
// with statusOnError, saying nothing of the cause.
func TestJSONRPCInternalError(t *testing.T) {
	cfg := mcpPolicy()
	cfg.Rego, cfg.Mode = &policy.RegoConfig{Files: []string{"p.rego"}}, policy.ModeBoth
	opts := policy.Options{NewRego: func(*policy.Config, fs.FS) (policy.RegoEvaluator, error) { return failingRego{}, nil }}
	srvCfg := plainConfig()
	srvCfg.StatusOnError = 503
	s := newServer(t, srvCfg, newStore(t, cfg, opts), Options{})
	resp, err := s.Check(testCtx(t), mcpReq(spiffe("planner"), `{"jsonrpc":"2.0","id":"q","method":"tools/list"}`))
	if err != nil {
		t.Fatal(err)
	}
	dr := resp.GetDeniedResponse()
	var e rpcError
	if httpStatus(t, resp) != 503 || json.Unmarshal([]byte(dr.GetBody()), &e) != nil || e.Error.Code != -32603 || string(e.ID) != `"q"` ||
		e.Error.Data.Error != ReasonInternal || strings.Contains(dr.GetBody(), "boom") {
		t.Fatalf("internal error: %d %s", httpStatus(t, resp), dr.GetBody())
	}
}
