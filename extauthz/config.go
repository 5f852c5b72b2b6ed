package extauthz

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"
)

// Config is the ext_authz server part of the `authz` configuration section.
type Config struct {
	// Address the gRPC server listens on. Default 127.0.0.1:9191.
	Address string `yaml:"address"`
	// Plaintext serves without TLS. Only for local setups; the default is
	// mTLS with TLS set.
	Plaintext bool `yaml:"plaintext"`
	// TLS names the server certificate, key and client CA files, or takes
	// them from the secrets source (FromSecrets).
	TLS *TLSFiles `yaml:"tls"`
	// Reflection registers the gRPC server reflection service.
	Reflection bool `yaml:"reflection"`
	// MaxRecvMsgBytes bounds a CheckRequest (Envoy's with_request_body
	// max_request_bytes plus headers). Default 8 MiB.
	MaxRecvMsgBytes int `yaml:"maxRecvMsgBytes"`
	// MaxSendMsgBytes bounds a CheckResponse. Default 4 MiB.
	MaxSendMsgBytes int `yaml:"maxSendMsgBytes"`
	// MaxHeaderListBytes bounds the gRPC metadata (HTTP/2 header list) of
	// one request; a longer one is reset before Check runs. Envoy sends a
	// few hundred bytes (the HTTP request's headers travel in the message,
	// not here). Default 64 KiB, at most 16 MiB.
	MaxHeaderListBytes int `yaml:"maxHeaderListBytes"`
	// MaxConcurrentStreams bounds the Checks one connection may have in
	// flight (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); beyond it Envoy's
	// connection pool opens another connection or queues. Default 1024.
	MaxConcurrentStreams int `yaml:"maxConcurrentStreams"`
	// MaxConnections bounds the open client connections; one more is
	// closed as soon as it is accepted, and counted. Default 4096.
	MaxConnections int `yaml:"maxConnections"`
	// Keepalive of the gRPC server.
	Keepalive Keepalive `yaml:"keepalive"`
	// ShutdownTimeout bounds the graceful stop; then in-flight Checks are
	// cut. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdownTimeout"`
	// StatusOnError is the HTTP status of a deny caused by an internal
	// error or a deadline overrun (403, 500 or 503). Default 403.
	StatusOnError int `yaml:"statusOnError"`
	// DryRun decides and reports every policy deny but allows. Anomalous
	// requests (400) and failed authentication (401) are still denied.
	DryRun bool `yaml:"dryRun"`
	// Headers names the identity headers set on allowed requests.
	Headers IdentityHeaders `yaml:"headers"`
	// JWT says where Envoy's jwt_authn filter leaves the verified payload.
	JWT JWTSource `yaml:"jwt"`
}

// TLSFiles are PEM files for the gRPC listener's mTLS, or FromSecrets.
type TLSFiles struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	CAFile   string `yaml:"caFile"`
	// FromSecrets takes the listener's certificate and the client trust
	// bundle from Options.SVIDSource and BundleSource instead of files: in
	// meshward serve, an SVID for spiffe://<trustDomain>/meshward/authz
	// from the secrets source (local CA or Vault PKI) and the mesh's trust
	// bundle, rotated with the agents' certificates. Clients must present
	// X.509 SVIDs of the trust domain. Exclusive with the files.
	FromSecrets bool `yaml:"fromSecrets"`
}

// TLSFromSecrets reports whether the listener's certificate comes from
// Options.SVIDSource and BundleSource (tls.fromSecrets).
func (c *Config) TLSFromSecrets() bool {
	return !c.Plaintext && c.TLS != nil && c.TLS.FromSecrets
}

// Keepalive configures gRPC keepalive.
type Keepalive struct {
	// Time between server pings on an idle connection. Default 30s.
	Time time.Duration `yaml:"time"`
	// Timeout waiting for a ping ack. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MinTime is the shortest client ping interval tolerated. Default 10s.
	MinTime time.Duration `yaml:"minTime"`
}

// IdentityHeaders are the headers meshward owns on the upstream request:
// whatever the client sent under these names is removed, and the verified
// values are set (overwriting) on allow.
type IdentityHeaders struct {
	// Principal carries the caller's SPIFFE ID. Default x-meshward-principal.
	Principal string `yaml:"principal"`
	// Roles carries the caller's roles, comma-separated. Default x-meshward-roles.
	Roles string `yaml:"roles"`
	// Remove are further client-sent headers that must never reach the
	// backend. Default x-forwarded-client-cert, x-agent-id.
	Remove []string `yaml:"remove"`
}

// JWTSource locates the verified JWT payload in the CheckRequest's
// metadata_context (jwt_authn's payload_in_metadata).
type JWTSource struct {
	// Namespace of the filter metadata. Default envoy.filters.http.jwt_authn.
	Namespace string `yaml:"namespace"`
	// PayloadKey is jwt_authn's payload_in_metadata. Default jwt_payload.
	PayloadKey string `yaml:"payloadKey"`
}

// Defaults.
const (
	DefaultAddress         = "127.0.0.1:9191"
	DefaultMaxRecvMsgBytes = 8 << 20
	DefaultMaxSendMsgBytes = 4 << 20
	// DefaultMaxHeaderListBytes bounds a request's gRPC metadata.
	DefaultMaxHeaderListBytes = 64 << 10
	// MaxHeaderListBytesLimit is the highest maxHeaderListBytes accepted
	// (grpc-go's own default).
	MaxHeaderListBytesLimit     = 16 << 20
	DefaultMaxConcurrentStreams = 1024
	DefaultMaxConnections       = 4096
	DefaultShutdownTimeout      = 10 * time.Second
	DefaultPrincipalHeader      = "x-meshward-principal"
	DefaultRolesHeader          = "x-meshward-roles"
	DefaultJWTNamespace         = "envoy.filters.http.jwt_authn"
	DefaultJWTPayloadKey        = "jwt_payload"
)

// DefaultRemoveHeaders are removed from every allowed request by default.
var DefaultRemoveHeaders = []string{"x-forwarded-client-cert", "x-agent-id"}

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if c.MaxSendMsgBytes == 0 {
		c.MaxSendMsgBytes = DefaultMaxSendMsgBytes
	}
	if c.MaxHeaderListBytes == 0 {
		c.MaxHeaderListBytes = DefaultMaxHeaderListBytes
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.Keepalive.Time == 0 {
		c.Keepalive.Time = 30 * time.Second
	}
	if c.Keepalive.Timeout == 0 {
		c.Keepalive.Timeout = 10 * time.Second
	}
	if c.Keepalive.MinTime == 0 {
		c.Keepalive.MinTime = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.StatusOnError == 0 {
		c.StatusOnError = http.StatusForbidden
	}
	if c.Headers.Principal == "" {
		c.Headers.Principal = DefaultPrincipalHeader
	}
	if c.Headers.Roles == "" {
		c.Headers.Roles = DefaultRolesHeader
	}
	if c.Headers.Remove == nil {
		c.Headers.Remove = DefaultRemoveHeaders
	}
	if c.JWT.Namespace == "" {
		c.JWT.Namespace = DefaultJWTNamespace
	}
	if c.JWT.PayloadKey == "" {
		c.JWT.PayloadKey = DefaultJWTPayloadKey
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		add("%s.address: %v", path, err)
	}
	if c.TLS != nil && c.Plaintext {
		add("%s: plaintext and tls are exclusive", path)
	}
	if c.TLS == nil && !c.Plaintext {
		add("%s.tls: required unless plaintext is true (certFile, keyFile, caFile, or fromSecrets)", path)
	}
	if t := c.TLS; t != nil {
		files := t.CertFile != "" || t.KeyFile != "" || t.CAFile != ""
		switch {
		case t.FromSecrets && files:
			add("%s.tls: fromSecrets and certFile/keyFile/caFile are exclusive", path)
		case !t.FromSecrets && (t.CertFile == "" || t.KeyFile == "" || t.CAFile == ""):
			add("%s.tls: certFile, keyFile and caFile are all required (or fromSecrets: true)", path)
		}
	}
	if c.MaxRecvMsgBytes < 0 || c.MaxSendMsgBytes < 0 {
		add("%s: maxRecvMsgBytes and maxSendMsgBytes must be positive", path)
	}
	if c.MaxHeaderListBytes < 0 || c.MaxHeaderListBytes > MaxHeaderListBytesLimit {
		add("%s.maxHeaderListBytes: must be between 1 and %d, not %d", path, MaxHeaderListBytesLimit, c.MaxHeaderListBytes)
	}
	if c.MaxConcurrentStreams < 0 || c.MaxConcurrentStreams > math.MaxUint32 {
		add("%s.maxConcurrentStreams: must be positive, not %d", path, c.MaxConcurrentStreams)
	}
	if c.MaxConnections < 0 {
		add("%s.maxConnections: must be positive, not %d", path, c.MaxConnections)
	}
	if c.Keepalive.Time < 0 || c.Keepalive.Timeout < 0 || c.Keepalive.MinTime < 0 || c.ShutdownTimeout < 0 {
		add("%s: durations must not be negative", path)
	}
	switch c.StatusOnError {
	case http.StatusForbidden, http.StatusInternalServerError, http.StatusServiceUnavailable:
	default:
		add("%s.statusOnError: must be 403, 500 or 503, not %d", path, c.StatusOnError)
	}
	for name, h := range map[string]string{"principal": c.Headers.Principal, "roles": c.Headers.Roles} {
		if !validHeaderName(h) {
			add("%s.headers.%s: %q is not a lowercase header name", path, name, h)
		}
	}
	for i, h := range c.Headers.Remove {
		if !validHeaderName(h) {
			add("%s.headers.remove[%d]: %q is not a lowercase header name", path, i, h)
		}
	}
	return errors.Join(errs...)
}

func validHeaderName(h string) bool {
	if h == "" || h != strings.ToLower(h) || strings.HasPrefix(h, ":") {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
