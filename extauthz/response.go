package extauthz

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshward/meshward/policy"
)

// Keys of the dynamic metadata meshward sets on every CheckResponse.
const (
	MetaDecisionID = "decision_id"
	MetaPrincipal  = "principal"
	MetaRule       = "rule"
	MetaReason     = "reason"
	MetaDryRun     = "dry_run"
	MetaRevision   = "policy_revision"
)

var okStatus = &status.Status{Code: int32(codes.OK)}

func setHeader(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func str(v string) *structpb.Value { return structpb.NewStringValue(v) }

// allowResponse removes client-sent identity headers and sets the verified
// ones (overwriting, never appending).
func (s *Server) allowResponse(a *allowMsgs, id string, in *policy.Input, d *policy.Decision) *authv3.CheckResponse {
	pe := s.parts.principal(in.Principal, d.Roles, s.cfg.Headers)
	hdrs := pe.hdrs // shared and read-only: clipped, so appends copy
	rolesSet, drySet := 0, 0
	if d.Roles != "" {
		rolesSet = 1
	}
	a.idKind.StringValue = id
	a.id.Kind = &a.idKind
	meta := map[string]*structpb.Value{
		MetaDecisionID: &a.id,
		MetaPrincipal:  pe.value,
	}
	if d.Rule != "" {
		meta[MetaRule] = s.parts.rule(d.Rule)
	}
	if d.DryRun {
		hdrs = append(hdrs, setHeader(DryRunHeader, d.Reason))
		drySet = 1
		meta[MetaDryRun] = structpb.NewBoolValue(true)
		meta[MetaReason] = str(d.Reason)
	}
	ok := &a.ok
	ok.Headers, ok.HeadersToRemove = hdrs, s.remove[rolesSet][drySet]
	if mu := d.Mutations; mu != nil {
		s.applyMutations(ok, mu)
		mergeMeta(meta, mu.DynamicMetadata)
	}
	a.okResp.OkResponse = ok
	a.meta.Fields = meta
	a.resp.Status, a.resp.HttpResponse, a.resp.DynamicMetadata = okStatus, &a.okResp, &a.meta
	return &a.resp
}

// allowMsgs are the messages of one allow response, allocated together.
type allowMsgs struct {
	resp   authv3.CheckResponse
	okResp authv3.CheckResponse_OkResponse
	ok     authv3.OkHttpResponse
	meta   structpb.Struct
	id     structpb.Value
	idKind structpb.Value_StringValue
}

// applyMutations adds a Rego allow's changes to ok. Headers are set with
// OVERWRITE_IF_EXISTS_OR_ADD, as opa-envoy-plugin's (append unset, which
// Envoy reads as false: add, or override an existing header; a name listed
// twice keeps the last value). Rego may neither set nor remove the
// verified-identity headers (principal, roles, dry-run): those entries are
// dropped.
func (s *Server) applyMutations(ok *authv3.OkHttpResponse, mu *policy.Mutations) {
	for _, h := range mu.RequestHeaders {
		if !s.isVerifiedHeader(h.Name) {
			ok.Headers = append(ok.Headers, setHeader(h.Name, h.Value))
		}
	}
	if len(mu.RemoveRequestHeaders) > 0 {
		rm := append([]string(nil), ok.HeadersToRemove...)
		for _, n := range mu.RemoveRequestHeaders {
			if !s.isVerifiedHeader(n) {
				rm = append(rm, n)
			}
		}
		ok.HeadersToRemove = rm
	}
	for _, h := range mu.ResponseHeaders {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, setHeader(h.Name, h.Value))
	}
	for _, q := range mu.QueryParametersToSet {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Name, Value: q.Value})
	}
	ok.QueryParametersToRemove = mu.QueryParametersToRemove
}

// isVerifiedHeader reports the headers only meshward's verified identity sets.
func (s *Server) isVerifiedHeader(name string) bool {
	n := strings.ToLower(name)
	return n == s.cfg.Headers.Principal || n == s.cfg.Headers.Roles || n == DryRunHeader
}

// maxCachedParts bounds each response-part cache (copied on each insert:
// one entry per caller or rule); when full it starts over.
const maxCachedParts = 1024

// responseParts caches the immutable pieces of allow responses: the
// verified-identity headers per caller and the metadata values per
// principal and rule. Proto messages that are only read may be marshalled
// concurrently, so responses share them; nothing mutates them after they
// are stored (slices are clipped so that appends copy).
type responseParts struct {
	principals cowMap[string, *principalParts]
	rules      cowMap[string, *structpb.Value]
}

type principalParts struct {
	roles string
	value *structpb.Value
	hdrs  []*corev3.HeaderValueOption
}

func (c *responseParts) principal(principal, roles string, names IdentityHeaders) *principalParts {
	if pe, ok := c.principals.get(principal); ok && pe.roles == roles {
		return pe
	}
	pe := &principalParts{roles: roles, value: str(principal)}
	pe.hdrs = append(pe.hdrs, setHeader(names.Principal, principal))
	if roles != "" {
		pe.hdrs = append(pe.hdrs, setHeader(names.Roles, roles))
	}
	pe.hdrs = slices.Clip(pe.hdrs)
	c.principals.put(principal, pe)
	return pe
}

// value is the shared metadata value of a bounded string (a reason code).
func (c *responseParts) value(v string) *structpb.Value {
	return c.rule(v)
}

func (c *responseParts) rule(name string) *structpb.Value {
	if v, ok := c.rules.get(name); ok {
		return v
	}
	v := str(name)
	c.rules.put(name, v)
	return v
}

// appendJSONString appends s as a JSON string (invalid UTF-8 replaced).
func appendJSONString(b []byte, s string) []byte {
	var sb strings.Builder
	writeJSONString(&sb, s)
	return append(b, sb.String()...)
}

// writeJSONString writes s as a JSON string (invalid UTF-8 replaced).
func writeJSONString(b *strings.Builder, s string) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	start := 0 // s[start:i] needs no escaping and is written in one go
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		start = i + 1
		if c < 0x20 {
			b.Write([]byte{'\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf]})
		} else {
			b.Write([]byte{'\\', c})
		}
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// denyBody is the JSON body of every deny (decoded by tests and clients).
type denyBody struct {
	Error      string             `json:"error"`
	Message    string             `json:"message"`
	Violations []policy.Violation `json:"violations,omitempty"`
	DecisionID string             `json:"decision_id"`
}

func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusInternalServerError:
		return codes.Internal
	default:
		return codes.PermissionDenied
	}
}

func (s *Server) denyResponse(id string, d *policy.Decision) *authv3.CheckResponse {
	dm := &denyMsgs{}
	meta := map[string]*structpb.Value{
		MetaDecisionID: dm.setID(id),
		MetaReason:     s.parts.value(d.Reason),
	}
	if d.Rule != "" {
		meta[MetaRule] = s.parts.rule(d.Rule)
	}
	status := d.Status
	if status < 400 || status > 599 {
		status = http.StatusForbidden
	}
	code := d.Code
	if code == "" {
		code = d.Reason
	}
	resp := s.denied(dm, id, status, code, d.Message, d.Violations, meta)
	if d.RPC.ErrorCode != 0 {
		resp.GetDeniedResponse().Body = rpcBody(id, code, d)
	}
	if d.RetryAfter > 0 {
		dr := resp.GetDeniedResponse()
		dr.Headers = append(dr.Headers, setHeader("retry-after", strconv.Itoa(d.RetryAfter)))
	}
	if mu := d.Mutations; mu != nil {
		dr := resp.GetDeniedResponse()
		for _, h := range mu.ResponseHeaders {
			dr.Headers = append(dr.Headers, setHeader(h.Name, h.Value))
		}
		if mu.HasBody {
			dr.Body = mu.Body
		}
		mergeMeta(meta, mu.DynamicMetadata)
	}
	return resp
}

// errorResponse denies with status_on_error, saying nothing of the cause.
func (s *Server) errorResponse(id, reason string) *authv3.CheckResponse {
	code, msg := ReasonInternal, "the request could not be authorized"
	if reason == ReasonDeadline {
		code, msg = ReasonDeadline, "authorization did not finish in time"
	}
	dm := &denyMsgs{}
	meta := map[string]*structpb.Value{MetaDecisionID: dm.setID(id), MetaReason: str(reason)}
	return s.denied(dm, id, s.cfg.StatusOnError, code, msg, nil, meta)
}

// denied builds a deny: {"error","message","violations" (schema
// violations only),"decision_id"}.
func (s *Server) denied(dm *denyMsgs, id string, httpStatus int, code, msg string, vs []policy.Violation, meta map[string]*structpb.Value) *authv3.CheckResponse {
	n := 64 + len(code) + len(msg) + len(id)
	for _, v := range vs {
		n += 40 + len(v.Path) + len(v.Keyword) + len(v.Message)
	}
	// Built in a Builder: its String does not copy the bytes again.
	var body strings.Builder
	body.Grow(n)
	body.WriteString(`{"error":`)
	writeJSONString(&body, code)
	body.WriteString(`,"message":`)
	writeJSONString(&body, msg)
	if len(vs) > 0 {
		body.WriteString(`,"violations":[`)
		for i, v := range vs {
			if i > 0 {
				body.WriteByte(',')
			}
			body.WriteString(`{"path":`)
			writeJSONString(&body, v.Path)
			body.WriteString(`,"keyword":`)
			writeJSONString(&body, v.Keyword)
			body.WriteString(`,"message":`)
			writeJSONString(&body, v.Message)
			body.WriteByte('}')
		}
		body.WriteByte(']')
	}
	body.WriteString(`,"decision_id":`)
	writeJSONString(&body, id)
	body.WriteByte('}')
	dm.status.Code, dm.status.Message = int32(grpcCode(httpStatus)), code //nolint:gosec // a gRPC code is 0-16
	dm.httpStatus.Code = typev3.StatusCode(httpStatus)                    //nolint:gosec // a validated HTTP status, 100-999
	dm.denied.Status, dm.denied.Headers, dm.denied.Body = &dm.httpStatus, jsonContentType, body.String()
	dm.deniedResp.DeniedResponse = &dm.denied
	dm.meta.Fields = meta
	dm.resp.Status, dm.resp.HttpResponse, dm.resp.DynamicMetadata = &dm.status, &dm.deniedResp, &dm.meta
	return &dm.resp
}

// jsonContentType is the header list of every deny; shared and read-only
// (clipped, so that appending mutation headers copies it).
var jsonContentType = slices.Clip([]*corev3.HeaderValueOption{setHeader("content-type", "application/json")})

// denyMsgs are the messages of one deny response, allocated together.
type denyMsgs struct {
	resp       authv3.CheckResponse
	status     status.Status
	deniedResp authv3.CheckResponse_DeniedResponse
	denied     authv3.DeniedHttpResponse
	httpStatus typev3.HttpStatus
	meta       structpb.Struct
	id         structpb.Value
	idKind     structpb.Value_StringValue
}

func (dm *denyMsgs) setID(id string) *structpb.Value {
	dm.idKind.StringValue = id
	dm.id.Kind = &dm.idKind
	return &dm.id
}

func mergeMeta(meta map[string]*structpb.Value, extra map[string]any) {
	for k, v := range extra {
		if _, taken := meta[k]; taken {
			continue // meshward's own keys cannot be overridden
		}
		if pv, err := structpb.NewValue(v); err == nil {
			meta[k] = pv
		}
	}
}
