package extauthz

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshward/meshward/examples/quickstart"
	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets/mtls"
)

// httpStatus is the HTTP status a CheckResponse gives Envoy (200 on OK).
func httpStatus(t *testing.T, resp *authv3.CheckResponse) int {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		if resp.GetOkResponse() == nil {
			t.Fatal("OK status without an OkHttpResponse")
		}
		return 200
	}
	dr := resp.GetDeniedResponse()
	if dr == nil {
		t.Fatalf("non-OK status %v without a DeniedHttpResponse", resp.GetStatus())
	}
	return int(dr.GetStatus().GetCode())
}

func denyCode(t *testing.T, resp *authv3.CheckResponse) string {
	t.Helper()
	if resp.GetDeniedResponse() == nil {
		return ""
	}
	var b denyBody
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
		t.Fatalf("deny body %q is not JSON: %v", resp.GetDeniedResponse().GetBody(), err)
	}
	return b.Error
}

func withPath(p string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Request.Http.Path = p
		r.Attributes.Request.Http.Headers[":path"] = p
	}
}

func withHeader(k, v string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Headers[k] = v }
}

func withHost(h string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Host = h }
}

func withPeer(principal, cert string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		r.Attributes.Source = &authv3.AttributeContext_Peer{Principal: principal, Certificate: cert}
	}
}

func withHeaderMap(extra ...[2]string) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) { headerMapReq(r, extra...) }
}

// TestSecurityRows is SECURITY.md's ext_authz table (the body/schema rows
// belong to the schema step), one named case per input.
func TestSecurityRows(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	good := makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU})
	tests := []struct {
		name   string
		method string // default GET
		path   string // default /v1/tasks
		mods   []func(*authv3.CheckRequest)
		status int
		reason string
	}{
		{name: "baseline allow", status: 200},
		// Paths.
		{name: "dot-dot segment", mods: []func(*authv3.CheckRequest){withPath("/v1/../v1/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "trailing dot-dot", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks/..")}, status: 400, reason: ReasonInvalidPath},
		{name: "dot segment", mods: []func(*authv3.CheckRequest){withPath("/v1/./tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "trailing dot segment", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks/.")}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded dot-dot", mods: []func(*authv3.CheckRequest){withPath("/v1/%2e%2e/v1/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded dot-dot mixed case", mods: []func(*authv3.CheckRequest){withPath("/v1/%2E%2e/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "double-encoded dot", mods: []func(*authv3.CheckRequest){withPath("/v1/%252e%252e/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "double slash", mods: []func(*authv3.CheckRequest){withPath("/v1//tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "leading double slash", mods: []func(*authv3.CheckRequest){withPath("//v1/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded slash", mods: []func(*authv3.CheckRequest){withPath("/v1%2Ftasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded slash lowercase", mods: []func(*authv3.CheckRequest){withPath("/v1%2ftasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded backslash", mods: []func(*authv3.CheckRequest){withPath("/v1%5Ctasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "backslash", mods: []func(*authv3.CheckRequest){withPath(`/v1\tasks`)}, status: 400, reason: ReasonInvalidPath},
		{name: "encoded NUL", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks%00")}, status: 400, reason: ReasonInvalidPath},
		{name: "raw NUL", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks\x00")}, status: 400, reason: ReasonInvalidPath},
		{name: "fragment", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks#x")}, status: 400, reason: ReasonInvalidPath},
		{name: "fragment after query", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks?a=1#x")}, status: 400, reason: ReasonInvalidPath},
		{name: "relative path", mods: []func(*authv3.CheckRequest){withPath("v1/tasks")}, status: 400, reason: ReasonInvalidPath},
		{name: "empty path", mods: []func(*authv3.CheckRequest){withPath("")}, status: 400, reason: ReasonInvalidPath},
		{name: "malformed escape", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks%zz")}, status: 400, reason: ReasonInvalidPath},
		{name: "CR in query", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks?a=\r\nx")}, status: 400, reason: ReasonInvalidPath},
		{name: "ordinary escape allowed", path: "/v1/agents/a%20b/tasks", status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "dangling percent", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks%2")}, status: 400, reason: ReasonInvalidPath},
		{name: "query ignored for matching", mods: []func(*authv3.CheckRequest){withPath("/v1/tasks?role=admin&x=../y")}, status: 200},
		{name: "query does not make a path match", mods: []func(*authv3.CheckRequest){withPath("/v1/other?/v1/tasks")}, status: 403, reason: policy.ReasonNoMatchingRule},
		// Hosts.
		{name: "host canonicalised", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("Executor.MESH.local:443")}, status: 200},
		{name: "host trailing dot", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("executor.mesh.local.")}, status: 200},
		{name: "host from authority when host empty", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost(""), withHeader(":authority", "EXECUTOR.mesh.local:8443")}, status: 200},
		{name: "other host does not match", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("planner.mesh.local")}, status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "host with space", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("executor.mesh.local ")}, status: 400, reason: ReasonInvalidHost},
		{name: "host with userinfo", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("a@executor.mesh.local")}, status: 400, reason: ReasonInvalidHost},
		{name: "host with bad port", path: "/v1/host", mods: []func(*authv3.CheckRequest){withHost("executor.mesh.local:x")}, status: 400, reason: ReasonInvalidHost},
		{name: "host ipv6", mods: []func(*authv3.CheckRequest){withHost("[::1]:443")}, status: 200},
		// Identity-bearing headers repeated (comma-joined by Envoy).
		{name: "repeated x-agent-id", mods: []func(*authv3.CheckRequest){withHeader("x-agent-id", "a,b")}, status: 400, reason: ReasonDuplicateIdentity},
		{name: "repeated authorization", mods: []func(*authv3.CheckRequest){withHeader("authorization", "Bearer a, Bearer b")}, status: 400, reason: ReasonDuplicateIdentity},
		{name: "repeated principal header", mods: []func(*authv3.CheckRequest){withHeader("x-meshward-principal", "spiffe://a,spiffe://b")}, status: 400, reason: ReasonDuplicateIdentity},
		{name: "repeated xfcc", mods: []func(*authv3.CheckRequest){withHeader("x-forwarded-client-cert", "By=a,By=b")}, status: 400, reason: ReasonDuplicateIdentity},
		{name: "repeated identity header in header_map", mods: []func(*authv3.CheckRequest){withHeaderMap([2]string{"x-agent-id", "a"}, [2]string{"x-agent-id", "b"})}, status: 400, reason: ReasonDuplicateIdentity},
		{name: "repeated ordinary header in header_map", mods: []func(*authv3.CheckRequest){withHeaderMap([2]string{"accept", "a"}, [2]string{"accept", "b"})}, status: 200},
		{name: "repeated ordinary header joined", mods: []func(*authv3.CheckRequest){withHeader("accept", "a,b")}, status: 200},
		// NUL / CR / LF.
		{name: "CRLF in header value", mods: []func(*authv3.CheckRequest){withHeader("x-note", "a\r\nx-agent-id: evil")}, status: 400, reason: ReasonInvalidHeader},
		{name: "LF in header value", mods: []func(*authv3.CheckRequest){withHeader("x-note", "a\nb")}, status: 400, reason: ReasonInvalidHeader},
		{name: "CR in header value", mods: []func(*authv3.CheckRequest){withHeader("x-note", "a\rb")}, status: 400, reason: ReasonInvalidHeader},
		{name: "NUL in header value", mods: []func(*authv3.CheckRequest){withHeader("x-note", "a\x00")}, status: 400, reason: ReasonInvalidHeader},
		{name: "NUL in header name", mods: []func(*authv3.CheckRequest){withHeader("x-n\x00te", "a")}, status: 400, reason: ReasonInvalidHeader},
		{name: "CR in header name", mods: []func(*authv3.CheckRequest){withHeader("x-n\rte", "a")}, status: 400, reason: ReasonInvalidHeader},
		{name: "LF in header_map raw value", mods: []func(*authv3.CheckRequest){withHeaderMap([2]string{"x-note", "a\nb"})}, status: 400, reason: ReasonInvalidHeader},
		{name: "uppercase header name", mods: []func(*authv3.CheckRequest){withHeader("X-Agent-Id", "a")}, status: 400, reason: ReasonInvalidHeader},
		// Client-sent identity headers never establish identity.
		{name: "xfcc naming planner is ignored", method: "POST", mods: []func(*authv3.CheckRequest){withHeader("x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/planner;URI=spiffe://mesh.local/ns/default/sa/planner")}, status: 403, reason: policy.ReasonMissingRole},
		{name: "x-agent-id naming planner is ignored", method: "POST", mods: []func(*authv3.CheckRequest){withHeader("x-agent-id", "planner")}, status: 403, reason: policy.ReasonMissingRole},
		{name: "principal header naming planner is ignored", method: "POST", mods: []func(*authv3.CheckRequest){withHeader("x-meshward-principal", spiffe("planner")), withHeader("x-envoy-peer-principal", spiffe("planner"))}, status: 403, reason: policy.ReasonMissingRole},
		// Peer identity.
		{name: "no principal and no certificate", mods: []func(*authv3.CheckRequest){withPeer("", "")}, status: 401, reason: ReasonMissingIdentity},
		{name: "no source at all", mods: []func(*authv3.CheckRequest){func(r *authv3.CheckRequest) { r.Attributes.Source = nil }}, status: 401, reason: ReasonMissingIdentity},
		{name: "principal in other trust domain", mods: []func(*authv3.CheckRequest){withPeer("spiffe://evil.local/ns/default/sa/viewer", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "principal without path", mods: []func(*authv3.CheckRequest){withPeer("spiffe://mesh.local", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "principal with dot segment", mods: []func(*authv3.CheckRequest){withPeer("spiffe://mesh.local/ns/../sa/viewer", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "principal with empty segment", mods: []func(*authv3.CheckRequest){withPeer("spiffe://mesh.local/ns//sa/viewer", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "principal not a SPIFFE ID", mods: []func(*authv3.CheckRequest){withPeer("CN=viewer", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "principal uppercase scheme", mods: []func(*authv3.CheckRequest){withPeer("SPIFFE://mesh.local/ns/default/sa/viewer", "")}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate valid", mods: []func(*authv3.CheckRequest){withPeer("", good)}, status: 200},
		{name: "certificate URL-encoded", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU, urlEnc: true}))}, status: 200},
		{name: "certificate agrees with principal", mods: []func(*authv3.CheckRequest){withPeer(spiffe("viewer"), good)}, status: 200},
		{name: "certificate disagrees with principal", mods: []func(*authv3.CheckRequest){withPeer(spiffe("planner"), good)}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate without URI SAN", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate with two URI SANs", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer"), spiffe("planner")}, ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate in other trust domain", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{"spiffe://evil.local/ns/default/sa/viewer"}, ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate with dot segment", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{"spiffe://mesh.local/ns/./sa/viewer"}, ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate with dot-dot segment", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{"spiffe://mesh.local/ns/../sa/viewer"}, ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate with empty segment", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{"spiffe://mesh.local/ns//sa/viewer"}, ekus: clientEKU}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate is a CA", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU, isCA: true}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate without clientAuth EKU", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate without any EKU", mods: []func(*authv3.CheckRequest){withPeer("", makeCert(t, certSpec{uris: []string{spiffe("viewer")}}))}, status: 401, reason: ReasonInvalidIdentity},
		{name: "certificate not PEM", mods: []func(*authv3.CheckRequest){withPeer("", "not a certificate")}, status: 401, reason: ReasonInvalidIdentity},
		// Methods.
		{name: "lowercase method", method: "get", status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "unknown method", method: "FROB", status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "TRACE", method: "TRACE", status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "CONNECT", method: "CONNECT", status: 403, reason: policy.ReasonNoMatchingRule},
		{name: "TRACE named by a rule", method: "TRACE", path: "/debug", status: 200},
		{name: "empty method", method: "-", status: 400, reason: ReasonInvalidRequest},
		{name: "no http attributes", mods: []func(*authv3.CheckRequest){func(r *authv3.CheckRequest) { r.Attributes.Request = nil }}, status: 400, reason: ReasonInvalidRequest},
		// Verified JWT claims from metadata_context only.
		{name: "claims from jwt_authn metadata", path: "/v1/mfa", mods: []func(*authv3.CheckRequest){withClaims(map[string]any{"amr": []any{"mfa"}})}, status: 200},
		{name: "claims missing", path: "/v1/mfa", status: 403, reason: policy.ReasonClaim},
		{name: "claims in a header are ignored", path: "/v1/mfa", mods: []func(*authv3.CheckRequest){withHeader("x-jwt-payload", `{"amr":["mfa"]}`)}, status: 403, reason: policy.ReasonClaim},
		{name: "malformed claims", path: "/v1/mfa", mods: []func(*authv3.CheckRequest){withRawClaims(structpb.NewStringValue("x"))}, status: 401, reason: ReasonInvalidClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := tt.method, tt.path
			if method == "" {
				method = "GET"
			}
			if method == "-" {
				method = ""
			}
			if path == "" {
				path = "/v1/tasks"
			}
			req := checkReq(spiffe("viewer"), method, path, nil)
			for _, m := range tt.mods {
				m(req)
			}
			resp, err := s.Check(testCtx(t), req)
			if err != nil {
				t.Fatalf("Check returned an RPC error %v; denies must be responses", err)
			}
			if got := httpStatus(t, resp); got != tt.status {
				t.Fatalf("status = %d (%s), want %d", got, resp.GetDeniedResponse().GetBody(), tt.status)
			}
			if tt.status != 200 {
				if got := denyCode(t, resp); got != tt.reason {
					t.Errorf("error code = %q, want %q", got, tt.reason)
				}
				want := map[int]codes.Code{400: codes.InvalidArgument, 401: codes.Unauthenticated, 403: codes.PermissionDenied}[tt.status]
				if codes.Code(resp.GetStatus().GetCode()) != want {
					t.Errorf("gRPC status = %v, want %v", codes.Code(resp.GetStatus().GetCode()), want)
				}
			}
		})
	}
}

func withClaims(c map[string]any) func(*authv3.CheckRequest) {
	v, err := structpb.NewStruct(c)
	if err != nil {
		panic(err)
	}
	return withRawClaims(structpb.NewStructValue(v))
}

func withRawClaims(v *structpb.Value) func(*authv3.CheckRequest) {
	return func(r *authv3.CheckRequest) {
		r.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			DefaultJWTNamespace: {Fields: map[string]*structpb.Value{DefaultJWTPayloadKey: v}},
		}}
	}
}

// TestBodyAndHeaderSources: raw_body and header_map are read like body
// and headers.
func TestBodyAndHeaderSources(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	body := `{"type":"task.request"}`
	base := func() *authv3.CheckRequest {
		r := checkReq(spiffe("planner"), "POST", "/v1/tasks", map[string]string{"content-type": "application/json", partialBodyHeader: "true"})
		return r
	}
	tests := []struct {
		name string
		req  func() *authv3.CheckRequest
	}{
		{"body and headers", func() *authv3.CheckRequest { r := base(); r.Attributes.Request.Http.Body = body; return r }},
		{"raw_body", func() *authv3.CheckRequest { r := base(); r.Attributes.Request.Http.RawBody = []byte(body); return r }},
		{"header_map", func() *authv3.CheckRequest {
			r := headerMapReq(base())
			r.Attributes.Request.Http.Body = body
			return r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, d, ok := s.Input(tt.req())
			if !ok {
				t.Fatalf("rejected: %+v", d)
			}
			if string(in.Body) != body || !in.BodyTruncated || in.Headers["content-type"] != "application/json" {
				t.Errorf("input body %q truncated %v content-type %q", in.Body, in.BodyTruncated, in.Headers["content-type"])
			}
		})
	}
}

func metaString(resp *authv3.CheckResponse, key string) string {
	return resp.GetDynamicMetadata().GetFields()[key].GetStringValue()
}

func TestAllowResponse(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	req := checkReq(spiffe("viewer"), "GET", "/v1/tasks", map[string]string{
		"x-meshward-principal": spiffe("planner"), "x-meshward-roles": "admin", "x-forwarded-client-cert": "By=x", "x-agent-id": "planner",
	})
	resp, _ := s.Check(testCtx(t), req)
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("want allow, got %v", resp)
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetAppend() != nil { //nolint:staticcheck // asserts the deprecated append field stays unset
			t.Errorf("header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if set["x-meshward-principal"] != spiffe("viewer") || set["x-meshward-roles"] != "viewer" {
		t.Errorf("verified headers = %v", set)
	}
	for _, h := range []string{"x-forwarded-client-cert", "x-agent-id", DryRunHeader} {
		if !slices.Contains(ok.GetHeadersToRemove(), h) {
			t.Errorf("headers_to_remove %v lacks %s", ok.GetHeadersToRemove(), h)
		}
	}
	if metaString(resp, MetaDecisionID) == "" || metaString(resp, MetaPrincipal) != spiffe("viewer") || metaString(resp, MetaRule) != "list-tasks" {
		t.Errorf("dynamic metadata = %v", resp.GetDynamicMetadata())
	}
}

func TestAllowWithoutRolesRemovesRolesHeader(t *testing.T) {
	cfg := testPolicy()
	cfg.Identities = cfg.Identities[:1] // viewer unknown: no roles
	s := newServer(t, plainConfig(), newStore(t, cfg, policy.Options{}), Options{})
	resp, _ := s.Check(testCtx(t), checkReq(spiffe("viewer"), "TRACE", "/debug", map[string]string{"x-meshward-roles": "admin"}))
	if resp.GetOkResponse() == nil || !slices.Contains(resp.GetOkResponse().GetHeadersToRemove(), "x-meshward-roles") {
		t.Fatalf("want allow removing x-meshward-roles, got %v", resp)
	}
}

func TestDenyResponse(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	resp, _ := s.Check(testCtx(t), checkReq(spiffe("viewer"), "POST", "/v1/tasks", nil))
	dr := resp.GetDeniedResponse()
	if dr == nil || dr.GetStatus().GetCode() != 403 || codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied {
		t.Fatalf("want 403 deny, got %v", resp)
	}
	if len(dr.GetHeaders()) != 1 || dr.GetHeaders()[0].GetHeader().GetKey() != "content-type" || dr.GetHeaders()[0].GetHeader().GetValue() != "application/json" {
		t.Errorf("deny headers = %v", dr.GetHeaders())
	}
	var b denyBody
	if err := json.Unmarshal([]byte(dr.GetBody()), &b); err != nil {
		t.Fatal(err)
	}
	if b.Error != policy.ReasonMissingRole || !strings.Contains(b.Message, "admin, operator") || b.DecisionID != metaString(resp, MetaDecisionID) || b.DecisionID == "" {
		t.Errorf("deny body = %+v", b)
	}
	if strings.Contains(dr.GetBody(), "planner") || strings.Contains(dr.GetBody(), "engineering") {
		t.Errorf("deny body leaks another identity's data: %s", dr.GetBody())
	}
}

func TestDecisionIDsUnique(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	seen := map[string]bool{}
	for range 100 {
		id := s.newDecisionID()
		if seen[id] {
			t.Fatalf("decision id %s repeated", id)
		}
		seen[id] = true
	}
}

func TestGlobalDryRun(t *testing.T) {
	cfg := plainConfig()
	cfg.DryRun = true
	s := newServer(t, cfg, newStore(t, testPolicy(), policy.Options{}), Options{})
	tests := []struct {
		name   string
		req    *authv3.CheckRequest
		status int
		dry    bool
	}{
		{"policy deny becomes a reported allow", checkReq(spiffe("viewer"), "POST", "/v1/tasks", nil), 200, true},
		{"allow stays a plain allow", checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil), 200, false},
		{"anomaly still denied", checkReq(spiffe("viewer"), "GET", "/v1/../tasks", nil), 400, false},
		{"authentication failure still denied", checkReq("", "GET", "/v1/tasks", nil), 401, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := s.Check(testCtx(t), tt.req)
			if got := httpStatus(t, resp); got != tt.status {
				t.Fatalf("status %d, want %d", got, tt.status)
			}
			dry := resp.GetDynamicMetadata().GetFields()[MetaDryRun].GetBoolValue()
			if dry != tt.dry {
				t.Errorf("dry_run metadata = %v, want %v", dry, tt.dry)
			}
			if tt.dry {
				hs := resp.GetOkResponse().GetHeaders()
				found := false
				for _, h := range hs {
					found = found || (h.GetHeader().GetKey() == DryRunHeader && h.GetHeader().GetValue() == policy.ReasonMissingRole)
				}
				if !found || metaString(resp, MetaReason) != policy.ReasonMissingRole {
					t.Errorf("dry-run not reported: headers %v metadata %v", hs, resp.GetDynamicMetadata())
				}
			}
		})
	}
}

// deciders for the failure paths.
type errDecider struct{}

func (errDecider) Decide(context.Context, *policy.Input) policy.Decision {
	return policy.Decision{Allow: true, Status: 200, Err: errors.New("secret internal detail")}
}
func (errDecider) RevisionID() string { return "x" }

type panicDecider struct{}

func (panicDecider) Decide(context.Context, *policy.Input) policy.Decision { panic("boom") }
func (panicDecider) RevisionID() string                                    { return "x" }

// slowDecider allows, but only once ctx is done (a deadline overrun).
type slowDecider struct{ started chan struct{} }

func (d slowDecider) Decide(ctx context.Context, _ *policy.Input) policy.Decision {
	if d.started != nil {
		d.started <- struct{}{}
	}
	<-ctx.Done()
	return policy.Decision{Allow: true, Status: 200}
}
func (slowDecider) RevisionID() string { return "x" }

type failingAuditor struct{ n int }

func (a *failingAuditor) Audit(*audit.Record) error { a.n++; return errors.New("disk full") }

type recordingAuditor struct{ recs []audit.Record }

func (a *recordingAuditor) Audit(r *audit.Record) error { a.recs = append(a.recs, *r); return nil }

func TestFailuresDenyWithStatusOnError(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	tests := []struct {
		name          string
		decider       Decider
		auditor       Auditor
		statusOnError int
		ctx           context.Context
		reason        string
	}{
		{name: "decider error", decider: errDecider{}, reason: ReasonInternal},
		{name: "decider error with 503", decider: errDecider{}, statusOnError: 503, reason: ReasonInternal},
		{name: "panic", decider: panicDecider{}, reason: ReasonInternal},
		{name: "deadline overrun", decider: slowDecider{}, ctx: expired, reason: ReasonDeadline},
		{name: "audit failure", decider: nil, auditor: &failingAuditor{}, reason: ReasonAudit},
		{name: "no revision loaded", decider: emptyStore(t), reason: policy.ReasonNoRevision},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := plainConfig()
			cfg.StatusOnError = tt.statusOnError
			d := tt.decider
			if d == nil {
				d = newStore(t, testPolicy(), policy.Options{})
			}
			reg := prometheus.NewRegistry()
			s := newServer(t, cfg, d, Options{Auditor: tt.auditor, Registry: reg})
			ctx := tt.ctx
			if ctx == nil {
				ctx = testCtx(t)
			}
			resp, err := s.Check(ctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
			if err != nil {
				t.Fatalf("RPC error %v", err)
			}
			want := tt.statusOnError
			if want == 0 {
				want = http.StatusForbidden
			}
			if got := httpStatus(t, resp); got != want {
				t.Fatalf("status %d, want %d", got, want)
			}
			if strings.Contains(resp.GetDeniedResponse().GetBody(), "secret") || strings.Contains(resp.GetDeniedResponse().GetBody(), "disk") {
				t.Errorf("deny body leaks the internal error: %s", resp.GetDeniedResponse().GetBody())
			}
			if got := testutil.ToFloat64(s.m.errors.WithLabelValues(tt.reason)); got != 1 {
				t.Errorf("errors_total{reason=%s} = %v, want 1", tt.reason, got)
			}
			if got := testutil.ToFloat64(s.m.decisions.WithLabelValues(resultDeny, tt.reason)); got != 0 {
				t.Errorf("an error was counted as a deny")
			}
		})
	}
}

func emptyStore(t *testing.T) *policy.Store {
	s, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuditRecords(t *testing.T) {
	a := &recordingAuditor{}
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{Auditor: a, AuditHeaders: []string{"X-Patient-ID", ":path"}})
	s.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks?secret=1", map[string]string{"x-request-id": "r1", "x-patient-id": "p7"}))
	s.Check(testCtx(t), checkReq(spiffe("viewer"), "POST", "/v1/tasks", nil))
	if len(a.recs) != 2 {
		t.Fatalf("%d records, want 2", len(a.recs))
	}
	r := a.recs[0]
	if r.Kind != audit.KindDecision || r.Decision != "allow" || r.Status != 200 || r.Principal != spiffe("viewer") || r.Path != "/v1/tasks" ||
		r.Query != "secret=1" || r.RequestID != "r1" || len(r.Headers) != 1 || r.Headers["x-patient-id"] != "p7" || r.Latency <= 0 || r.Rule != "list-tasks" || r.DecisionID == "" || r.PolicyRevision == "" || !slices.Equal(r.Roles, []string{"viewer"}) {
		t.Errorf("allow record = %+v", r)
	}
	if r := a.recs[1]; r.Kind != audit.KindAuthzDenial || r.Decision != "deny" || r.Status != 403 || r.Reason != policy.ReasonMissingRole {
		t.Errorf("deny record = %+v", r)
	}
}

func TestMetricsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{Registry: reg})
	s.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
	s.Check(testCtx(t), checkReq(spiffe("viewer"), "POST", "/v1/tasks", nil))
	s.Check(testCtx(t), checkReq("", "GET", "/v1/tasks", nil))
	for _, c := range []struct {
		result, reason string
	}{{resultAllow, policy.ReasonAllowed}, {resultDeny, policy.ReasonMissingRole}, {resultDeny, ReasonMissingIdentity}} {
		if got := testutil.ToFloat64(s.m.decisions.WithLabelValues(c.result, c.reason)); got != 1 {
			t.Errorf("decisions{%s,%s} = %v, want 1", c.result, c.reason, got)
		}
	}
	if got := testutil.ToFloat64(s.m.authn.WithLabelValues(ReasonMissingIdentity)); got != 1 {
		t.Errorf("authn failures = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(reg, "meshward_authz_check_duration_seconds"); n != 1 {
		t.Errorf("duration histogram series = %d", n)
	}
}

// quickstartOptions are the policy steps meshward serves the quickstart
// with: the real JSON Schema step reading the embedded schema files.
func quickstartOptions(pol policy.Config) policy.Options {
	return policy.Options{Dir: quickstart.Files, NewBodyChecker: policy.NewSchemaBodyChecker(pol.Body)}
}

// TestQuickstartRefload: the reference workload against the quickstart
// policy with the real schema step, over gRPC.
func TestQuickstartRefload(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	srvCfg.Address = "127.0.0.1:0"
	s := newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{})
	ac := authv3.NewAuthorizationClient(dial(t, startServer(t, s), nil))
	tests := []struct {
		file       string
		status     int
		code       string
		violations []policy.Violation
	}{
		{file: "allow.json", status: 200},
		{file: "deny_abac.json", status: 403, code: policy.ReasonMissingRole},
		{file: "deny_schema.json", status: 400, code: policy.ReasonSchemaViolation,
			violations: []policy.Violation{{Path: "/task/priority", Keyword: "maximum", Message: "12 > 9"}}},
		{file: "allow_get.json", status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			resp, err := ac.Check(testCtx(t), loadRefRequest(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := httpStatus(t, resp); got != tt.status {
				t.Fatalf("status %d (%s), want %d", got, resp.GetDeniedResponse().GetBody(), tt.status)
			}
			if got := denyCode(t, resp); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
			if tt.status == 200 {
				return
			}
			var b denyBody
			if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(b.Violations, tt.violations) {
				t.Errorf("violations %+v, want %+v", b.Violations, tt.violations)
			}
			if b.DecisionID == "" || b.Message == "" {
				t.Errorf("deny body lacks message or decision_id: %+v", b)
			}
		})
	}
}

// TestCertCacheKeepsVerdicts: a cached certificate decides as a fresh one.
func TestCertCacheKeepsVerdicts(t *testing.T) {
	s := newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{})
	good := makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU})
	ca := makeCert(t, certSpec{uris: []string{spiffe("viewer")}, ekus: clientEKU, isCA: true})
	for i := range 3 {
		for _, c := range []struct {
			cert   string
			status int
		}{{good, 200}, {ca, 401}} {
			req := checkReq("", "GET", "/v1/tasks", nil)
			withPeer("", c.cert)(req)
			resp, _ := s.Check(testCtx(t), req)
			if got := httpStatus(t, resp); got != c.status {
				t.Fatalf("pass %d: status %d, want %d", i, got, c.status)
			}
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "ctl\x00\x01\n\r\t\x1f", "ünïcødé ✓", "bad\xff\xfeutf8", "</script>&"} {
		t.Run(s, func(t *testing.T) {
			var got string
			if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if want := strings.ToValidUTF8(s, "\uFFFD"); got != want {
				t.Errorf("round trip = %q, want %q", got, want)
			}
		})
	}
}

func TestCowMapBounded(t *testing.T) {
	c := cowMap[int, int]{max: 3}
	for i := range 10 {
		c.put(i, i*i)
		if v, ok := c.get(i); !ok || v != i*i {
			t.Fatalf("get(%d) = %d, %v after put", i, v, ok)
		}
		if n := len(*c.m.Load()); n > 3 {
			t.Fatalf("cache grew to %d entries, max 3", n)
		}
	}
	if _, ok := c.get(0); ok {
		t.Error("entry 0 survived a reset")
	}
}

// bodylessAuditor records like recordingAuditor but says it drops bodies.
type bodylessAuditor struct{ recordingAuditor }

func (*bodylessAuditor) IncludesBody() bool { return false }

// TestAuditRecordBody: the body the schema step decoded reaches the audit
// record as values, when the auditor keeps bodies, and is not built when
// it says it drops them.
func TestAuditRecordBody(t *testing.T) {
	srvCfg, pol := quickstartPolicy(t)
	req := loadRefRequest(t, "allow.json")
	want, err := policy.DecodeBody(req.GetAttributes().GetRequest().GetHttp().GetBody())
	if err != nil {
		t.Fatal(err)
	}
	keeps := &recordingAuditor{}
	s := newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{Auditor: keeps})
	s.Check(testCtx(t), req)
	if len(keeps.recs) != 1 || !reflect.DeepEqual(keeps.recs[0].Body, want) {
		t.Fatalf("records %+v, want one with body %v", keeps.recs, want)
	}
	drops := &bodylessAuditor{}
	s = newServer(t, srvCfg, newStore(t, pol, quickstartOptions(pol)), Options{Auditor: drops})
	s.Check(testCtx(t), req)
	if len(drops.recs) != 1 || drops.recs[0].Body != nil || drops.recs[0].Decision != "allow" {
		t.Fatalf("records %+v, want one allow without body", drops.recs)
	}
}

// TestValidHeaderChars: every byte, in names and in values of several
// lengths, at the start, middle and end, against the rule spelled out.
func TestValidHeaderChars(t *testing.T) {
	ref := func(s string, name bool) bool {
		if name && s == "" {
			return false
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == 0 || c == '\r' || c == '\n' || name && c >= 'A' && c <= 'Z' {
				return false
			}
		}
		return true
	}
	for c := range 256 {
		for _, n := range []int{1, 10, 63, 64, 200} {
			for _, at := range []int{0, n / 2, n - 1} {
				b := []byte(strings.Repeat("a", n))
				b[at] = byte(c)
				s := string(b)
				for _, name := range []bool{true, false} {
					if got, want := validHeaderChars(s, name), ref(s, name); got != want {
						t.Fatalf("validHeaderChars(byte 0x%02x at %d of %d, name %v) = %v, want %v", c, at, n, name, got, want)
					}
				}
			}
		}
	}
	if validHeaderChars("", true) || !validHeaderChars("", false) {
		t.Error("empty name must be invalid, empty value valid")
	}
}

// TestPathSpellingVariants: spellings of a denied path that a backend
// reads as that path (escaped unreserved characters, a trailing slash,
// another case, ;path parameters) do not slip past a deny rule under a
// broader allow (SECURITY.md).
func TestPathSpellingVariants(t *testing.T) {
	cfg := policy.Config{
		Identities: []policy.Identity{{SPIFFEID: spiffe("viewer"), Roles: []string{"viewer"}}},
		Rules: []policy.Rule{
			{Name: "no-admin", Effect: policy.EffectDeny, Match: policy.Match{Path: "/v1/admin"}},
			{Name: "no-internal", Effect: policy.EffectDeny, Match: policy.Match{PathPrefix: "/v1/internal/"}},
			{Name: "no-secrets", Effect: policy.EffectDeny, Match: policy.Match{PathTemplate: "/v1/agents/{id}/secrets"}},
			{Name: "v1", Match: policy.Match{PathPrefix: "/v1"}, Require: policy.Require{AnyRole: []string{"viewer"}}},
		},
	}
	s := newServer(t, plainConfig(), newStore(t, cfg, policy.Options{}), Options{})
	for _, tc := range []struct {
		path   string
		status int
		reason string
	}{
		{"/v1/tasks", 200, ""},
		{"/v1/admin", 403, policy.ReasonDeniedByRule},
		{"/v1/%61dmin", 403, policy.ReasonDeniedByRule},
		{"/v1/adm%69n", 403, policy.ReasonDeniedByRule},
		{"/v1/%41DMIN", 403, policy.ReasonDeniedByRule},
		{"/v1/admin/", 403, policy.ReasonDeniedByRule},
		{"/v1/ADMIN", 403, policy.ReasonDeniedByRule},
		{"/v1/Admin/", 403, policy.ReasonDeniedByRule},
		{"/v1/admin?x=1", 403, policy.ReasonDeniedByRule},
		{"/v1/admin;x", 400, ReasonInvalidPath},
		{"/v1/admin;", 400, ReasonInvalidPath},
		{"/v1;x/admin", 400, ReasonInvalidPath},
		{"/v1/admin%3Bx", 400, ReasonInvalidPath}, // a backend that decodes first sees a parameter
		{"/v1/admin%3bx", 400, ReasonInvalidPath},
		{"/v1/internal", 403, policy.ReasonDeniedByRule},
		{"/v1/INTERNAL/keys", 403, policy.ReasonDeniedByRule},
		{"/v1/%69nternal/keys", 403, policy.ReasonDeniedByRule},
		{"/v1/agents/a7/SECRETS", 403, policy.ReasonDeniedByRule},
		{"/v1/agents/a7/secrets/", 403, policy.ReasonDeniedByRule},
		{"/v1/agents/a7/secrets%2F", 400, ReasonInvalidPath},
		{"/v1/%7Euser/tasks", 200, ""},
		{"/v1/tasks?a=1;b=2", 200, ""}, // ; in the query is the query's business
		{"/v1/administrator", 200, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := s.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", tc.path, nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := httpStatus(t, resp); got != tc.status {
				t.Fatalf("status %d (%s), want %d", got, denyCode(t, resp), tc.status)
			}
			if got := denyCode(t, resp); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
		})
	}
}

func TestDecodeUnreserved(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/tasks":     "/v1/tasks",
		"/v1/%61dmin":   "/v1/admin",
		"/%41%7a%30%7E": "/Az0~",
		"/a%20b":        "/a%20b",
		"/a%20b%62":     "/a%20bb",
		"/%2d%5f":       "/-_",
		"/x%25":         "/x%25",
		"/%C3%A9":       "/%C3%A9",
	} {
		if got := decodeUnreserved(in); got != want {
			t.Errorf("decodeUnreserved(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = decodeUnreserved("/v1/agents/a%20b/tasks") }); n != 0 {
		t.Errorf("%v allocations for a path with nothing to decode", n)
	}
}

// TestMetricsPresentFromStart: counters with known label values are
// exported at 0 before anything happens, so that rate() alerts have a
// series to work on.
func TestMetricsPresentFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	newServer(t, plainConfig(), newStore(t, testPolicy(), policy.Options{}), Options{Registry: reg})
	for name, want := range map[string]int{
		"meshward_authz_authn_failures_total":      len(authnReasons),
		"meshward_authz_errors_total":              len(errorReasons),
		"meshward_authz_refused_connections_total": len(mtls.RefusedReasons),
	} {
		if n := testutil.CollectAndCount(reg, name); n != want {
			t.Errorf("%s: %d series at start, want %d", name, n, want)
		}
	}
	const exp = `
# HELP meshward_authz_authn_failures_total Checks denied 401 because the caller had no or an invalid verified identity, by reason.
# TYPE meshward_authz_authn_failures_total counter
meshward_authz_authn_failures_total{reason="invalid_claims"} 0
meshward_authz_authn_failures_total{reason="invalid_identity"} 0
meshward_authz_authn_failures_total{reason="missing_identity"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "meshward_authz_authn_failures_total"); err != nil {
		t.Error(err)
	}
}
