package envoy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Names of the resources the translator generates for every node. They
// are local to a node: each node has its own snapshot.
const (
	// SecretDefault is the SDS name of the node's own certificate and key.
	SecretDefault = "default"
	// SecretRootCA is the SDS name of the trust bundle peers are verified against.
	SecretRootCA = "ROOTCA"

	ListenerInbound  = "inbound"
	ListenerOutbound = "outbound"
	RouteInbound     = "inbound"
	RouteOutbound    = "outbound"
	// ClusterApp is the local agent behind the node's Envoy.
	ClusterApp = "app"
	// ClusterAuthz is meshward's ext_authz gRPC service.
	ClusterAuthz = "meshward-authz"
	// PeerClusterPrefix + peer name is the cluster of a peer agent.
	PeerClusterPrefix = "peer-"
	// JWKSClusterPrefix + provider name fetches a provider's remote JWKS.
	JWKSClusterPrefix = "jwks-"

	// JWTFilterName is the jwt_authn filter and its dynamic metadata
	// namespace, which ext_authz forwards in metadata_context.
	JWTFilterName = "envoy.filters.http.jwt_authn"
	// JWTPayloadMetadataKey is the key under JWTFilterName's metadata where
	// the verified token's payload is put.
	JWTPayloadMetadataKey = "jwt_payload"
)

// Defaults of Options, used where a field is zero.
const (
	DefaultInboundAddress        = "0.0.0.0"
	DefaultConnectTimeout        = 5 * time.Second
	DefaultRequestTimeout        = 120 * time.Second
	DefaultRouteTimeout          = 120 * time.Second
	DefaultRequestHeadersTimeout = 10 * time.Second
	// DefaultStreamIdleTimeout is longer than the route and request
	// timeouts, so that an agent or model that is silent until it answers
	// is cut by those (504/408 at the configured time), not by idleness.
	DefaultStreamIdleTimeout           = 300 * time.Second
	DefaultIdleTimeout                 = 300 * time.Second
	DefaultMaxConcurrentStreams        = 100
	DefaultInitialStreamWindowSize     = 64 * 1024
	DefaultInitialConnectionWindowSize = 1024 * 1024
	DefaultBufferLimitBytes            = 32 * 1024
	DefaultAuthzTimeout                = 500 * time.Millisecond
	DefaultMaxRequestBytes             = 1024 * 1024
	DefaultJWKSCacheDuration           = 5 * time.Minute
	DefaultJWKSCAFile                  = "/etc/ssl/certs/ca-certificates.crt"
	// DefaultOutboundSocketMode lets only the Envoy's user use an
	// agent's outbound socket (run the app as that user, or set 0660 and
	// share a group).
	DefaultOutboundSocketMode = 0o600
	// Circuit breakers of the ext_authz cluster: Envoy's own defaults,
	// written out so that they show in the configuration and can be set.
	DefaultAuthzMaxConnections     = 1024
	DefaultAuthzMaxPendingRequests = 1024
	DefaultAuthzMaxRequests        = 1024
	DefaultAuthzMaxRetries         = 3
)

var (
	// ErrInvalidMesh wraps every problem Translate finds in its input.
	ErrInvalidMesh = errors.New("invalid mesh")
	// ErrUnknownAgent is returned for a node name that is not an agent.
	ErrUnknownAgent = errors.New("unknown agent")
)

// Mesh is everything the translator needs: the agents and where meshward's
// ext_authz service is.
type Mesh struct {
	// TrustDomain of every SPIFFE ID, e.g. mesh.local.
	TrustDomain string  `yaml:"trustDomain"`
	Agents      []Agent `yaml:"agents"`
	Authz       Authz   `yaml:"authz"`
	Options     Options `yaml:"options"`
	// Quotas every inbound listener enforces per caller (ratelimit.go).
	Quotas []Quota `yaml:"quotas"`
	// JSONRPCRoutes are the authorizer's JSON-RPC routes: Envoy's own 429
	// there is a JSON-RPC error (localreply.go).
	JSONRPCRoutes []JSONRPCRoute `yaml:"jsonrpcRoutes"`
}

// Authz is how every agent's Envoy reaches meshward's ext_authz service.
type Authz struct {
	// Address (host:port) of the ext_authz gRPC server.
	Address string `yaml:"address"`
	// SPIFFEID the server's certificate must carry; empty accepts any
	// SPIFFE ID of the trust domain.
	SPIFFEID string `yaml:"spiffeID"`
	// Plaintext talks to ext_authz without TLS. Local demos only.
	Plaintext bool `yaml:"plaintext"`
}

// Options are listener and cluster knobs, the `envoy` section of meshward
// serve's configuration; a zero field takes the Default* constant of the
// same name. Timeouts must be consistent: streamIdleTimeout at least the
// route and request timeouts, authzTimeout below the route timeout.
type Options struct {
	InboundAddress string        `yaml:"inboundAddress"`
	ConnectTimeout time.Duration `yaml:"connectTimeout"`
	// RequestTimeout (HCM request_timeout) bounds receiving a whole
	// request from the downstream.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
	// RouteTimeout (route timeout) bounds the upstream's whole response.
	RouteTimeout          time.Duration `yaml:"routeTimeout"`
	RequestHeadersTimeout time.Duration `yaml:"requestHeadersTimeout"`
	// StreamIdleTimeout ends a stream with no activity for that long.
	StreamIdleTimeout time.Duration `yaml:"streamIdleTimeout"`
	// IdleTimeout closes a connection without streams for that long.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// AuthzTimeout of one ext_authz Check call. Default DefaultAuthzTimeout.
	AuthzTimeout time.Duration `yaml:"authzTimeout"`
	// MaxRequestBytes of body sent with a Check; a larger body is
	// refused with 413 (allow_partial_message is false). Default
	// DefaultMaxRequestBytes.
	MaxRequestBytes uint32 `yaml:"maxRequestBytes"`
	// AuthzCircuitBreakers limit what one Envoy asks of ext_authz at once.
	AuthzCircuitBreakers        CircuitBreakers `yaml:"authzCircuitBreakers"`
	MaxConcurrentStreams        uint32          `yaml:"maxConcurrentStreams"`
	InitialStreamWindowSize     uint32          `yaml:"initialStreamWindowSize"`
	InitialConnectionWindowSize uint32          `yaml:"initialConnectionWindowSize"`
	BufferLimitBytes            uint32          `yaml:"bufferLimitBytes"`
	JWKSCacheDuration           time.Duration   `yaml:"jwksCacheDuration"`
	// JWKSCAFile is the CA bundle, on the Envoy host, that remote JWKS
	// servers are verified against.
	JWKSCAFile string `yaml:"jwksCAFile"`
	// RateLimitHeadroom is how many times the authorizer's quota Envoy's
	// local rate limit buckets hold and refill (1-100). Default
	// DefaultRateLimitHeadroom.
	RateLimitHeadroom uint32 `yaml:"rateLimitHeadroom"`
}

// CircuitBreakers are a cluster's default-priority thresholds; zero takes
// the DefaultAuthz* constant. Beyond them Envoy fails the call at once,
// which for ext_authz is a deny (status_on_error 403).
type CircuitBreakers struct {
	MaxConnections     uint32 `yaml:"maxConnections"`
	MaxPendingRequests uint32 `yaml:"maxPendingRequests"`
	MaxRequests        uint32 `yaml:"maxRequests"`
	MaxRetries         uint32 `yaml:"maxRetries"`
}

// NodeResources is everything one node's snapshot holds but the secrets.
// Routes are served over RDS (not inline) so that a peer list change
// updates a route without draining the listener.
type NodeResources struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Routes    []*routev3.RouteConfiguration
	// SecretNames are the SDS names the listeners and clusters reference,
	// sorted: SecretDefault, SecretRootCA and every injected credential's
	// secret. The snapshot must hold all of them before it is set.
	SecretNames []string
	// GenericSecrets are the names among SecretNames that are generic
	// secrets (credentials) rather than certificates, sorted.
	GenericSecrets []string
	// DiscoveredPeers are the peers whose clusters are EDS clusters
	// (Peer.Discovered), sorted: the node's snapshot must hold the
	// LoadAssignment of each of them, and of nothing else.
	DiscoveredPeers []string
}

// Resources returns the listeners, clusters and routes keyed by type URL,
// ready for a go-control-plane snapshot (secrets are added by the caller).
func (n *NodeResources) Resources() map[resourcev3.Type][]types.Resource {
	out := map[resourcev3.Type][]types.Resource{}
	for _, l := range n.Listeners {
		out[resourcev3.ListenerType] = append(out[resourcev3.ListenerType], l)
	}
	for _, c := range n.Clusters {
		out[resourcev3.ClusterType] = append(out[resourcev3.ClusterType], c)
	}
	for _, r := range n.Routes {
		out[resourcev3.RouteType] = append(out[resourcev3.RouteType], r)
	}
	return out
}

// Validate reports every problem in m.
func (m *Mesh) Validate() error {
	var errs []error
	td, err := spiffeid.TrustDomainFromString(m.TrustDomain)
	if err != nil || m.TrustDomain == "" {
		errs = append(errs, fmt.Errorf("trustDomain: %q is not a trust domain", m.TrustDomain))
	}
	errs = append(errs, ValidateAgents("agents", m.Agents))
	for i, a := range m.Agents {
		if id, err := spiffeid.FromString(a.SPIFFEID); err == nil && id.TrustDomain() != td {
			errs = append(errs, fmt.Errorf("agents[%d].spiffeID: %q is not in trust domain %q", i, a.SPIFFEID, m.TrustDomain))
		}
	}
	if err := CheckDialAddress(m.Authz.Address); err != nil {
		errs = append(errs, fmt.Errorf("authz.address: %w (give the address Envoys reach ext_authz at; in meshward serve's configuration, xds.authzAddress)", err))
	}
	if m.Authz.SPIFFEID != "" {
		if id, err := spiffeid.FromString(m.Authz.SPIFFEID); err != nil {
			errs = append(errs, fmt.Errorf("authz.spiffeID: %w", err))
		} else if id.TrustDomain() != td {
			errs = append(errs, fmt.Errorf("authz.spiffeID: %q is not in trust domain %q", m.Authz.SPIFFEID, m.TrustDomain))
		}
	}
	errs = append(errs, m.Options.Validate("options"), validateQuotas("quotas", m.TrustDomain, m.Quotas))
	return errors.Join(errs...)
}

// Validate reports every problem in o, named under path. Zero fields are
// checked with their defaults.
func (o *Options) Validate(path string) error {
	var errs []error
	if o.InboundAddress != "" {
		if _, err := netip.ParseAddr(o.InboundAddress); err != nil {
			errs = append(errs, fmt.Errorf("%s.inboundAddress: %w", path, err))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"connectTimeout", o.ConnectTimeout}, {"requestTimeout", o.RequestTimeout}, {"routeTimeout", o.RouteTimeout},
		{"requestHeadersTimeout", o.RequestHeadersTimeout}, {"streamIdleTimeout", o.StreamIdleTimeout},
		{"idleTimeout", o.IdleTimeout}, {"authzTimeout", o.AuthzTimeout}, {"jwksCacheDuration", o.JWKSCacheDuration},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must not be negative", path, d.name))
		}
	}
	if w := o.InitialStreamWindowSize; w != 0 && (w < 65535 || w > 2147483647) {
		errs = append(errs, fmt.Errorf("%s.initialStreamWindowSize: must be 65535-2147483647", path))
	}
	if w := o.InitialConnectionWindowSize; w != 0 && (w < 65535 || w > 2147483647) {
		errs = append(errs, fmt.Errorf("%s.initialConnectionWindowSize: must be 65535-2147483647", path))
	}
	if o.RateLimitHeadroom > 100 {
		errs = append(errs, fmt.Errorf("%s.rateLimitHeadroom: must be 1-100", path))
	}
	if o.MaxConcurrentStreams > 2147483647 {
		errs = append(errs, fmt.Errorf("%s.maxConcurrentStreams: must be 1-2147483647", path))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Consistency, on the values Envoy will get.
	d := Mesh{Options: *o}.withDefaults().Options
	if d.StreamIdleTimeout < d.RouteTimeout {
		errs = append(errs, fmt.Errorf("%s.streamIdleTimeout: %v is shorter than routeTimeout %v: a reply slower than it would be cut as idle (408/504) before its timeout", path, d.StreamIdleTimeout, d.RouteTimeout))
	}
	if d.StreamIdleTimeout < d.RequestTimeout {
		errs = append(errs, fmt.Errorf("%s.streamIdleTimeout: %v is shorter than requestTimeout %v: a slow upload would be cut as idle before its timeout", path, d.StreamIdleTimeout, d.RequestTimeout))
	}
	if d.AuthzTimeout >= d.RouteTimeout {
		errs = append(errs, fmt.Errorf("%s.authzTimeout: %v must be shorter than routeTimeout %v", path, d.AuthzTimeout, d.RouteTimeout))
	}
	return errors.Join(errs...)
}

// withDefaults returns m with every zero knob set to its default.
func (m Mesh) withDefaults() Mesh {
	o := &m.Options
	setDefault(&o.InboundAddress, DefaultInboundAddress)
	setDefault(&o.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&o.RequestTimeout, DefaultRequestTimeout)
	setDefault(&o.RouteTimeout, DefaultRouteTimeout)
	setDefault(&o.RequestHeadersTimeout, DefaultRequestHeadersTimeout)
	setDefault(&o.StreamIdleTimeout, DefaultStreamIdleTimeout)
	setDefault(&o.IdleTimeout, DefaultIdleTimeout)
	setDefault(&o.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	setDefault(&o.InitialStreamWindowSize, DefaultInitialStreamWindowSize)
	setDefault(&o.InitialConnectionWindowSize, DefaultInitialConnectionWindowSize)
	setDefault(&o.BufferLimitBytes, DefaultBufferLimitBytes)
	setDefault(&o.JWKSCacheDuration, DefaultJWKSCacheDuration)
	setDefault(&o.JWKSCAFile, DefaultJWKSCAFile)
	setDefault(&o.AuthzTimeout, DefaultAuthzTimeout)
	setDefault(&o.MaxRequestBytes, DefaultMaxRequestBytes)
	setDefault(&o.RateLimitHeadroom, DefaultRateLimitHeadroom)
	cb := &o.AuthzCircuitBreakers
	setDefault(&cb.MaxConnections, DefaultAuthzMaxConnections)
	setDefault(&cb.MaxPendingRequests, DefaultAuthzMaxPendingRequests)
	setDefault(&cb.MaxRequests, DefaultAuthzMaxRequests)
	setDefault(&cb.MaxRetries, DefaultAuthzMaxRetries)
	return m
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Translate returns the resources of every agent of m, keyed by node id
// (the agent's name). m is validated first; nothing is returned if any
// part of it is invalid.
func Translate(m Mesh) (map[string]*NodeResources, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalidMesh, err)
	}
	m = m.withDefaults()
	agents := agentsByName(&m)
	out := make(map[string]*NodeResources, len(m.Agents))
	for i := range m.Agents {
		nr, err := translateAgent(&m, agents, &m.Agents[i])
		if err != nil {
			return nil, err
		}
		out[m.Agents[i].Name] = nr
	}
	return out, nil
}

// TranslateAgent returns the resources of the one agent named node.
func TranslateAgent(m Mesh, node string) (*NodeResources, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w:\n%w", ErrInvalidMesh, err)
	}
	m = m.withDefaults()
	for i := range m.Agents {
		if m.Agents[i].Name == node {
			return translateAgent(&m, agentsByName(&m), &m.Agents[i])
		}
	}
	return nil, fmt.Errorf("translate %q: %w", node, ErrUnknownAgent)
}

// agentsByName indexes m's agents by name. Translate builds it once for
// the whole mesh: built per agent, it made translating a mesh quadratic
// (5,000 agents: about 1.2 s and 1.3 GB).
func agentsByName(m *Mesh) map[string]*Agent {
	agents := make(map[string]*Agent, len(m.Agents))
	for i := range m.Agents {
		agents[m.Agents[i].Name] = &m.Agents[i]
	}
	return agents
}

// translateAgent builds one validated agent's resources; agents indexes
// m's agents by name.
func translateAgent(m *Mesh, agents map[string]*Agent, a *Agent) (*NodeResources, error) {
	b := &builder{mesh: m}
	nr := &NodeResources{}
	nr.Listeners = append(nr.Listeners, b.inboundListener(a))
	nr.Routes = append(nr.Routes, b.inboundRoute(a))
	nr.Clusters = append(nr.Clusters, b.appCluster(a), b.authzCluster())
	for _, jp := range a.JWTProviders {
		if jp.RemoteJWKS != "" {
			nr.Clusters = append(nr.Clusters, b.jwksCluster(jp))
		}
	}
	secrets := []string{SecretDefault, SecretRootCA}
	if len(a.Peers) > 0 {
		nr.Listeners = append(nr.Listeners, b.outboundListener(a))
		nr.Routes = append(nr.Routes, b.outboundRoute(a))
		for _, p := range a.Peers {
			if p.Discovered {
				nr.Clusters = append(nr.Clusters, b.peerEDSCluster(p, agents[p.Name].SPIFFEID))
				nr.DiscoveredPeers = append(nr.DiscoveredPeers, p.Name)
			} else {
				nr.Clusters = append(nr.Clusters, b.peerCluster(p, agents[p.Name].SPIFFEID))
			}
			if p.Credential != nil {
				nr.GenericSecrets = append(nr.GenericSecrets, p.Credential.Secret)
			}
		}
	}
	if b.err != nil {
		return nil, fmt.Errorf("translate %q: %w", a.Name, b.err)
	}
	slices.SortFunc(nr.Clusters, func(x, y *clusterv3.Cluster) int { return strings.Compare(x.Name, y.Name) })
	slices.Sort(nr.DiscoveredPeers)
	slices.Sort(nr.GenericSecrets)
	nr.GenericSecrets = slices.Compact(nr.GenericSecrets)
	nr.SecretNames = append(secrets, nr.GenericSecrets...)
	slices.Sort(nr.SecretNames)
	if err := nr.validate(); err != nil {
		return nil, fmt.Errorf("translate %q: %w", a.Name, err)
	}
	return nr, nil
}

// validate runs the Envoy API's own validation rules on every resource.
func (n *NodeResources) validate() error {
	var errs []error
	for _, l := range n.Listeners {
		errs = append(errs, l.ValidateAll())
	}
	for _, c := range n.Clusters {
		errs = append(errs, c.ValidateAll())
	}
	for _, r := range n.Routes {
		errs = append(errs, r.ValidateAll())
	}
	return errors.Join(errs...)
}
