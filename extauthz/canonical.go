package extauthz

import (
	"net/http"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshward/meshward/policy"
)

// Reason codes of requests denied before policy (also their error codes).
const (
	ReasonInvalidPath       = "invalid_path"
	ReasonInvalidHost       = "invalid_host"
	ReasonInvalidHeader     = "invalid_header"
	ReasonDuplicateIdentity = "duplicate_identity_header"
	ReasonInvalidRequest    = "invalid_request"
	ReasonMissingIdentity   = "missing_identity"
	ReasonInvalidIdentity   = "invalid_identity"
	ReasonInvalidClaims     = "invalid_claims"
	ReasonInternal          = "internal_error"
	ReasonDeadline          = "deadline_exceeded"
	ReasonCanceled          = "canceled"
	ReasonAudit             = "audit_failure"
)

// partialBodyHeader is set by Envoy when it sent only part of the body.
const partialBodyHeader = "x-envoy-auth-partial-body"

// rejection is a deny decided while canonicalising: the request is
// ambiguous or its caller is not authenticated.
type rejection struct {
	status int
	reason string
	msg    string
}

func badRequest(reason, msg string) *rejection {
	return &rejection{status: http.StatusBadRequest, reason: reason, msg: msg}
}

// Pre-built rejections: the hot path must not allocate for them either.
var (
	rejNoHTTP        = badRequest(ReasonInvalidRequest, "request has no HTTP attributes")
	rejEmptyMethod   = badRequest(ReasonInvalidRequest, "request has no method")
	rejPathNotAbs    = badRequest(ReasonInvalidPath, "path must start with /")
	rejPathFragment  = badRequest(ReasonInvalidPath, "path must not contain #")
	rejPathDot       = badRequest(ReasonInvalidPath, "path must not contain dot segments")
	rejPathSlashes   = badRequest(ReasonInvalidPath, "path must not contain empty segments (//)")
	rejPathBackslash = badRequest(ReasonInvalidPath, "path must not contain a backslash")
	rejPathEncoded   = badRequest(ReasonInvalidPath, "path must not percent-encode /, \\, ., ;, % or NUL, nor hold a malformed escape")
	rejPathControl   = badRequest(ReasonInvalidPath, "path must not contain control characters or spaces")
	rejPathParams    = badRequest(ReasonInvalidPath, "path must not contain ; (path parameters are read differently by proxies and backends)")
	rejHost          = badRequest(ReasonInvalidHost, "host is not a valid host name")
	rejHeaderChars   = badRequest(ReasonInvalidHeader, "header names and values must not contain NUL, CR or LF; names must be lowercase")
	rejDupIdentity   = badRequest(ReasonDuplicateIdentity, "an identity-bearing header was sent more than once")
	rejNoIdentity    = &rejection{status: http.StatusUnauthorized, reason: ReasonMissingIdentity, msg: "no verified peer identity"}
	rejBadIdentity   = &rejection{status: http.StatusUnauthorized, reason: ReasonInvalidIdentity, msg: "peer identity is not a valid SPIFFE ID of this trust domain"}
	rejBadClaims     = &rejection{status: http.StatusUnauthorized, reason: ReasonInvalidClaims, msg: "verified JWT payload is malformed"}
)

// canonicalize fills in from req, or says why req is rejected. It reads
// only what Envoy verified for identity; request headers never establish it.
func (s *Server) canonicalize(req *authv3.CheckRequest, in *policy.Input) *rejection {
	in.Request = req
	h := req.GetAttributes().GetRequest().GetHttp()
	if h == nil {
		return rejNoHTTP
	}
	if h.Method == "" {
		return rejEmptyMethod
	}
	in.Method = h.Method
	path, query, _ := strings.Cut(h.Path, "?")
	if rej := checkPath(path); rej != nil {
		return rej
	}
	for i := 0; i < len(query); i++ {
		switch c := query[i]; {
		case c == '#':
			return rejPathFragment
		case c < ' ' || c == 0x7f:
			return rejPathControl
		}
	}
	in.Path, in.RawQuery = decodeUnreserved(path), query

	if rej := s.headers(h, in); rej != nil {
		return rej
	}
	host := h.Host
	if host == "" {
		host = in.Headers[":authority"]
	}
	var ok bool
	if in.Host, ok = canonicalHost(host); !ok {
		return rejHost
	}
	switch {
	case len(h.RawBody) > 0:
		in.Body = h.RawBody
	case h.Body != "":
		in.Body, in.BodyText = []byte(h.Body), h.Body
	}
	in.BodyTruncated = in.Headers[partialBodyHeader] == "true"

	principal, rej := s.identity(req.GetAttributes().GetSource())
	if rej != nil {
		return rej
	}
	in.Principal = principal
	return s.claims(req, in)
}

// checkPath rejects every path that a proxy and a backend could read
// differently (SECURITY.md).
func checkPath(p string) *rejection {
	if p == "" || p[0] != '/' {
		return rejPathNotAbs
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '#':
			return rejPathFragment
		case c == '\\':
			return rejPathBackslash
		case c == ';':
			return rejPathParams
		case c <= ' ' || c == 0x7f:
			return rejPathControl
		case c == '/':
			if i+1 < len(p) && p[i+1] == '/' {
				return rejPathSlashes
			}
		case c == '.':
			// A dot segment: "." or ".." between slashes (or at the end).
			start := i == 0 || p[i-1] == '/'
			j := i + 1
			if j < len(p) && p[j] == '.' {
				j++
			}
			if start && (j == len(p) || p[j] == '/' || p[j] == '?' || p[j] == ';') {
				return rejPathDot
			}
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return rejPathEncoded
			}
			a, b := p[i+1]|0x20, p[i+2]|0x20 // lowercase hex letters
			switch {
			case a == '2' && (b == 'e' || b == 'f' || b == '5'), // . / %
				a == '5' && b == 'c', // \
				a == '3' && b == 'b', // ; (a backend that decodes first reads a path parameter)
				a == '0' && b == '0': // NUL
				return rejPathEncoded
			}
		}
	}
	if strings.Contains(p, "..") || strings.Contains(p, "./") {
		return rejPathDot
	}
	return nil
}

// decodeUnreserved decodes the percent-escapes of unreserved characters
// (letters, digits, "-", ".", "_", "~"; RFC 3986 section 2.3 says they
// are equivalent to the characters themselves), so that /v1/%61dmin
// matches rules as /v1/admin, as the backend reads it. Other escapes stay
// as they are. p has passed checkPath (escapes well formed, no %2E). It
// allocates only when it decodes something.
func decodeUnreserved(p string) string {
	i := strings.IndexByte(p, '%')
	for i >= 0 && i+2 < len(p) && !unreserved(unhex(p[i+1])<<4|unhex(p[i+2])) {
		j := strings.IndexByte(p[i+1:], '%')
		if j < 0 {
			return p
		}
		i += 1 + j
	}
	if i < 0 || i+2 >= len(p) {
		return p
	}
	b := make([]byte, 0, len(p))
	for k := 0; k < len(p); k++ {
		if p[k] == '%' && k+2 < len(p) {
			if c := unhex(p[k+1])<<4 | unhex(p[k+2]); unreserved(c) {
				b = append(b, c)
				k += 2
				continue
			}
		}
		b = append(b, p[k])
	}
	return string(b)
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}

// canonicalHost lowercases host and strips its port and trailing dot; ok
// is false for anything that is not a plain host name or IP literal.
func canonicalHost(host string) (string, bool) {
	if host == "" {
		return "", true
	}
	if host[0] == '[' { // IPv6 literal
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", false
		}
		rest := host[end+1:]
		if rest != "" && !validPort(rest) {
			return "", false
		}
		for _, c := range []byte(host[1:end]) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return "", false
			}
		}
		return strings.ToLower(host[:end+1]), true
	}
	if i := strings.IndexByte(host, ':'); i >= 0 {
		if !validPort(host[i:]) {
			return "", false
		}
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	if strings.Contains(host, "..") || host[0] == '.' {
		return "", false
	}
	return strings.ToLower(host), true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func validPort(s string) bool { // s is ":digits"
	if len(s) < 2 || len(s) > 6 || s[0] != ':' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validHeaderChars reports whether s holds no NUL, CR or LF and, for a
// name, no upper-case letter and at least one byte. Values, the long
// part, are searched with strings.IndexByte (vectorized), a byte at a
// time only for names.
func validHeaderChars(s string, name bool) bool {
	if !name {
		return strings.IndexByte(s, '\n') < 0 && strings.IndexByte(s, '\r') < 0 && strings.IndexByte(s, 0) < 0
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0 || c == '\r' || c == '\n' || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return s != ""
}

// headers takes headers from `headers` or, with encode_raw_headers, from
// `header_map`, rejecting NUL/CR/LF and repeated identity-bearing headers.
func (s *Server) headers(h *authv3.AttributeContext_HttpRequest, in *policy.Input) *rejection {
	if len(h.Headers) > 0 || h.HeaderMap == nil {
		for k, v := range h.Headers {
			if !validHeaderChars(k, true) || !validHeaderChars(v, false) {
				return rejHeaderChars
			}
		}
		// Envoy joins repeated headers with a comma.
		for _, name := range s.identityHeaders {
			if strings.IndexByte(h.Headers[name], ',') >= 0 {
				return rejDupIdentity
			}
		}
		in.Headers = h.Headers
		return nil
	}
	m := make(map[string]string, len(h.HeaderMap.Headers))
	for _, hv := range h.HeaderMap.Headers {
		v := hv.GetValue()
		if v == "" && len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		k := hv.GetKey()
		if !validHeaderChars(k, true) || !validHeaderChars(v, false) {
			return rejHeaderChars
		}
		if prev, dup := m[k]; dup {
			if s.isIdentityHeader(k) {
				return rejDupIdentity
			}
			v = prev + "," + v
		}
		if s.isIdentityHeader(k) && strings.IndexByte(v, ',') >= 0 {
			return rejDupIdentity
		}
		m[k] = v
	}
	in.Headers = m
	return nil
}

func (s *Server) isIdentityHeader(name string) bool {
	for _, n := range s.identityHeaders {
		if n == name {
			return true
		}
	}
	return false
}

// claims reads the verified JWT payload jwt_authn left in metadata_context.
func (s *Server) claims(req *authv3.CheckRequest, in *policy.Input) *rejection {
	md := req.GetAttributes().GetMetadataContext().GetFilterMetadata()
	if len(md) == 0 {
		return nil
	}
	ns, ok := md[s.cfg.JWT.Namespace]
	if !ok {
		return nil
	}
	v, ok := ns.GetFields()[s.cfg.JWT.PayloadKey]
	if !ok {
		return nil
	}
	st, ok := v.GetKind().(*structpb.Value_StructValue)
	if !ok || st.StructValue == nil {
		return rejBadClaims
	}
	in.Claims = st.StructValue.AsMap()
	return nil
}
