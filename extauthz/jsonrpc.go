package extauthz

import (
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy"
)

// rpcMethods are the JSON-RPC methods counted by name in
// meshward_authz_jsonrpc_decisions_total (MCP and A2A); any other is
// counted as "other", so a client cannot grow the label set.
var rpcMethods = map[string]bool{
	"initialize": true, "ping": true, "tools/list": true, "tools/call": true,
	"resources/list": true, "resources/read": true, "resources/templates/list": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"prompts/list": true, "prompts/get": true, "completion/complete": true, "logging/setLevel": true,
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true,
	"message/send":                     true, "message/stream": true, "tasks/get": true, "tasks/cancel": true,
	"tasks/resubscribe": true, "tasks/pushNotificationConfig/set": true, "tasks/pushNotificationConfig/get": true,
}

// Label values of meshward_authz_jsonrpc_decisions_total.
const (
	rpcOther       = "other"
	rpcNone        = "none"    // no method (the body was not JSON-RPC), or no tool
	rpcUnknownTool = "unknown" // a tool with no configured schema
)

func rpcLabels(r *policy.RPC) (method, tool string) {
	method, tool = rpcOther, rpcNone
	switch {
	case r.Method == "":
		method = rpcNone
	case rpcMethods[r.Method]:
		method = r.Method
	}
	switch {
	case r.Tool == "":
	case r.KnownTool:
		tool = r.Tool
	default:
		tool = rpcUnknownTool
	}
	return method, tool
}

// rpcInternalError is the JSON-RPC code of an internal failure.
const rpcInternalError = -32603

// rpcInternal gives resp, an errorResponse on a JSON-RPC route, a
// JSON-RPC error body that says as little as the plain one.
func rpcInternal(resp *authv3.CheckResponse, id string, d *policy.Decision) {
	dr := resp.GetDeniedResponse()
	code := resp.GetStatus().GetMessage() // the errorResponse's error code
	msg := "the request could not be authorized"
	if code == ReasonDeadline {
		msg = "authorization did not finish in time"
	}
	e := policy.Decision{Message: msg, RPC: d.RPC}
	e.RPC.ErrorCode = rpcInternalError
	dr.Body = rpcBody(id, code, &e)
}

// rpcBody is the body of a deny on a JSON-RPC route: a JSON-RPC 2.0
// error response, so that agent clients read it as one:
//
//	{"jsonrpc":"2.0","id":ID,"error":{"code":-32602,"message":MSG,
//	 "data":{"error":CODE,"violations":[...],"decision_id":ID}}}
//
// The id is the message's (null when it had none or could not be read).
func rpcBody(id string, code string, d *policy.Decision) string {
	vs := d.Violations
	n := 120 + len(code) + len(d.Message) + len(id) + len(d.RPC.ID)
	for _, v := range vs {
		n += 40 + len(v.Path) + len(v.Keyword) + len(v.Message)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(`{"jsonrpc":"2.0","id":`)
	switch {
	case !d.RPC.HasID:
		b.WriteString("null")
	case d.RPC.IDString:
		writeJSONString(&b, d.RPC.ID)
	default:
		b.WriteString(d.RPC.ID) // an integer's JSON text, checked by the policy step
	}
	b.WriteString(`,"error":{"code":`)
	b.WriteString(strconv.Itoa(d.RPC.ErrorCode))
	b.WriteString(`,"message":`)
	writeJSONString(&b, d.Message)
	b.WriteString(`,"data":{"error":`)
	writeJSONString(&b, code)
	writeViolations(&b, vs)
	b.WriteString(`,"decision_id":`)
	writeJSONString(&b, id)
	b.WriteString(`}}}`)
	return b.String()
}

func writeViolations(b *strings.Builder, vs []policy.Violation) {
	if len(vs) == 0 {
		return
	}
	b.WriteString(`,"violations":[`)
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"path":`)
		writeJSONString(b, v.Path)
		b.WriteString(`,"keyword":`)
		writeJSONString(b, v.Keyword)
		b.WriteString(`,"message":`)
		writeJSONString(b, v.Message)
		b.WriteByte('}')
	}
	b.WriteByte(']')
}
