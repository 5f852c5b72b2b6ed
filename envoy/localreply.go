package envoy

import (
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// JSONRPCRoute selects requests whose POST bodies are JSON-RPC, as the
// authorizer's jsonrpc.routes do (policy.JSONRPCRoute): Envoy's own
// 429s on them get a JSON-RPC error body, as the authorizer's do.
type JSONRPCRoute struct {
	// Hosts the request's authority must name (with or without a port);
	// empty: every host. Lowercase, as the policy validates them.
	Hosts []string `yaml:"hosts"`
	// Exactly one of Path and PathPrefix.
	Path       string `yaml:"path"`
	PathPrefix string `yaml:"pathPrefix"`
}

// rpcRateLimited is the JSON-RPC error code of a used-up quota, the one
// the authorizer answers with (policy.RPCRateLimited).
const rpcRateLimited = -32002

// localRateLimitDetails are the response code details Envoy's local rate
// limit filter sends its 429 with. The connection manager sets them
// before it rewrites the local reply, while the filter's RL response
// flag is set only after: a response_flag_filter would never match.
const localRateLimitDetails = "local_rate_limited"

// Bodies of Envoy's own 429: the shape of the authorizer's deny bodies
// ({"error","message"} and the JSON-RPC error response), without what
// only the authorizer knows (the quota's name, the decision id, the
// message id: a JSON-RPC id is null when it could not be read).
const (
	rateLimitedMessage = "a quota of this caller is used up; retry after the time in retry-after"
	rateLimitedBody    = `{"error":"rate_limited","message":"` + rateLimitedMessage + `"}`
	rateLimitedRPCBody = `{"jsonrpc":"2.0","id":null,"error":{"code":-32002,"message":"` + rateLimitedMessage + `","data":{"error":"rate_limited"}}}`
)

// localReply makes Envoy's local rate limit answer in JSON like the
// authorizer instead of Envoy's plain "local_rate_limited": a JSON-RPC
// error on the JSON-RPC routes (POST only), {"error","message"}
// elsewhere. Every other local reply (the authorizer's denies included)
// is left as it is. The filters are CEL expressions (Envoy's standard
// build has the CEL access log filter), since no other access log filter
// sees the response code details.
func (b *builder) localReply() *hcmv3.LocalReplyConfig {
	limited := "response.code_details == " + celString(localRateLimitDetails)
	var mappers []*hcmv3.ResponseMapper
	if routes := jsonRPCRouteExpr(b.mesh.JSONRPCRoutes); routes != "" {
		mappers = append(mappers, b.rewriteBody(limited+` && request.method == "POST" && (`+routes+`)`, rateLimitedRPCBody))
	}
	mappers = append(mappers, b.rewriteBody(limited, rateLimitedBody))
	return &hcmv3.LocalReplyConfig{Mappers: mappers}
}

// rewriteBody is a mapper giving the local replies expr selects body, as JSON.
func (b *builder) rewriteBody(expr, body string) *hcmv3.ResponseMapper {
	return &hcmv3.ResponseMapper{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
			ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name:       "envoy.access_loggers.extension_filters.cel",
				ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: b.any(&celv3.ExpressionFilter{Expression: expr})},
			},
		}},
		BodyFormatOverride: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				// No % in the bodies: nothing is a command operator.
				Specifier: &corev3.DataSource_InlineString{InlineString: body},
			}},
			ContentType: "application/json",
		},
	}
}

// jsonRPCRouteExpr is the CEL condition that the request is on one of
// routes ("" when there are none). request.url_path is the path without
// the query, after the connection manager normalized it, which is the
// path the authorizer matches too.
func jsonRPCRouteExpr(routes []JSONRPCRoute) string {
	var alts []string
	for _, r := range routes {
		var conds []string
		switch {
		case r.Path != "":
			conds = append(conds, "request.url_path == "+celString(r.Path))
		case r.PathPrefix != "":
			conds = append(conds, "request.url_path.startsWith("+celString(r.PathPrefix)+")")
		}
		if len(r.Hosts) > 0 {
			var hosts []string
			for _, h := range r.Hosts {
				hosts = append(hosts, "request.host == "+celString(h), "request.host.startsWith("+celString(h+":")+")")
			}
			conds = append(conds, "("+strings.Join(hosts, " || ")+")")
		}
		if len(conds) == 0 {
			conds = append(conds, "true")
		}
		alts = append(alts, "("+strings.Join(conds, " && ")+")")
	}
	return strings.Join(alts, " || ")
}

// celString quotes s as a CEL string literal: CEL's escapes are Go's
// (\", \\, \n, \uXXXX, \UXXXXXXXX).
func celString(s string) string { return strconv.Quote(s) }
