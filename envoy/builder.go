package envoy

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	credinjv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Extension names Envoy knows these configurations by.
const (
	hcmFilterName     = "envoy.filters.network.http_connection_manager"
	extAuthzName      = "envoy.filters.http.ext_authz"
	routerName        = "envoy.filters.http.router"
	credInjectorName  = "envoy.filters.http.credential_injector"  //nolint:gosec // G101: an Envoy extension name, not a credential
	genericCredName   = "envoy.http.injected_credentials.generic" //nolint:gosec // G101: an Envoy extension name, not a credential
	tlsTransportName  = "envoy.transport_sockets.tls"
	httpProtocolOpts  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	credFilterPrefix  = credInjectorName + "."
	loopbackAddress   = "127.0.0.1"
	spiffeSchemePart  = "spiffe://"
	maxRequestHeaders = 100
)

// cipherSuites are ECDHE key exchange with AEAD ciphers only (TLS 1.2;
// TLS 1.3 suites are all AEAD and not configurable).
var cipherSuites = []string{
	"ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305",
	"ECDHE-RSA-CHACHA20-POLY1305",
}

// deterministic marshals Any payloads the same way every time, so that
// identical input gives byte-identical resources (and versions).
var deterministic = proto.MarshalOptions{Deterministic: true}

// builder builds one node's resources; the first error (a marshalling
// failure, which valid input never causes) is kept in err.
type builder struct {
	mesh *Mesh
	err  error
}

func (b *builder) any(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, deterministic); err != nil && b.err == nil {
		b.err = err
	}
	return a
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// adsSource is a config source over the node's ADS stream.
func adsSource(initialFetchTimeout *durationpb.Duration) *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		InitialFetchTimeout:   initialFetchTimeout,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// sdsSecret references a secret served over ADS. It is built the same way
// for every reference so that it is byte-identical across pushes; the
// initial fetch timeout of 0 keeps a listener from going live without
// its certificate.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource(durationpb.New(0))}
}

func tlsParams() *tlsv3.TlsParameters {
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		CipherSuites:              cipherSuites,
		EcdhCurves:                []string{"X25519", "P-256"},
	}
}

// meshValidation verifies a peer against SDS ROOTCA and requires its URI
// SAN to match san.
func meshValidation(san *matcherv3.StringMatcher) *tlsv3.CommonTlsContext_CombinedValidationContext {
	return &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: san,
				}},
			},
			ValidationContextSdsSecretConfig: sdsSecret(SecretRootCA),
		},
	}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

// trustDomainSAN accepts any SPIFFE ID of the mesh's trust domain.
func (b *builder) trustDomainSAN() *matcherv3.StringMatcher {
	return prefix(spiffeSchemePart + b.mesh.TrustDomain + "/")
}

// meshUpstreamTLS is mTLS to another mesh member whose SPIFFE ID matches san.
func (b *builder) meshUpstreamTLS(sni string, san *matcherv3.StringMatcher, alpn ...string) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name: tlsTransportName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.UpstreamTlsContext{
			Sni: sni,
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsParams:                      tlsParams(),
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretDefault)},
				ValidationContextType:          meshValidation(san),
				AlpnProtocols:                  alpn,
			},
		})},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// hcm is the hardened HTTP connection manager both listeners use.
func (b *builder) hcm(statPrefix, route string, filters []*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	o := &b.mesh.Options
	return &hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: statPrefix,
		// As for SDS, an initial fetch timeout of 0: the listener waits
		// for its routes instead of going live without them after 15 s.
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: route,
			ConfigSource:    adsSource(durationpb.New(0)),
		}},
		HttpFilters:                  filters,
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout:                  dur(o.IdleTimeout),
			HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
			MaxHeadersCount:              wrapperspb.UInt32(maxRequestHeaders),
		},
		Http2ProtocolOptions:  b.http2Options(),
		UseRemoteAddress:      wrapperspb.Bool(true),
		RequestTimeout:        dur(o.RequestTimeout),
		RequestHeadersTimeout: dur(o.RequestHeadersTimeout),
		StreamIdleTimeout:     dur(o.StreamIdleTimeout),
		// Whatever a client sent as x-forwarded-client-cert is dropped.
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_SANITIZE,
	}
}

func (b *builder) http2Options() *corev3.Http2ProtocolOptions {
	o := &b.mesh.Options
	return &corev3.Http2ProtocolOptions{
		MaxConcurrentStreams:        wrapperspb.UInt32(o.MaxConcurrentStreams),
		InitialStreamWindowSize:     wrapperspb.UInt32(o.InitialStreamWindowSize),
		InitialConnectionWindowSize: wrapperspb.UInt32(o.InitialConnectionWindowSize),
	}
}

func (b *builder) routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       routerName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&routerv3.Router{SuppressEnvoyHeaders: true})},
	}
}

// inboundListener accepts mTLS from peers of the trust domain, verifies an
// optional JWT, asks meshward (ext_authz) and routes to the local app;
// with quotas Envoy can enforce, a local rate limit comes first.
func (b *builder) inboundListener(a *Agent) *listenerv3.Listener {
	var filters []*hcmv3.HttpFilter
	if rl := b.localRateLimit(); rl != nil { // first: sheds a caller over its quota before JWT and ext_authz
		filters = append(filters, rl)
	}
	if len(a.JWTProviders) > 0 {
		filters = append(filters, &hcmv3.HttpFilter{
			Name:       JWTFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(b.jwtAuthn(a))},
		})
	}
	filters = append(filters, &hcmv3.HttpFilter{
		Name:       extAuthzName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(b.extAuthz(len(a.JWTProviders) > 0))},
	}, b.routerFilter())
	h := b.hcm(ListenerInbound, RouteInbound, filters)
	h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
	h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	if len(filters) > 0 && filters[0].GetName() == localRateLimitName {
		h.LocalReplyConfig = b.localReply()
	}

	downstream := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tlsParams(),
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretDefault)},
			ValidationContextType:          meshValidation(b.trustDomainSAN()),
			AlpnProtocols:                  []string{"h2", "http/1.1"},
		},
		SessionTicketKeysType: &tlsv3.DownstreamTlsContext_DisableStatelessSessionResumption{DisableStatelessSessionResumption: true},
	}
	return &listenerv3.Listener{
		Name:                          ListenerInbound,
		Address:                       socketAddress(b.mesh.Options.InboundAddress, a.InboundPort),
		TrafficDirection:              corev3.TrafficDirection_INBOUND,
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(b.mesh.Options.BufferLimitBytes),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(h)},
			}},
			TransportSocket: &corev3.TransportSocket{
				Name:       tlsTransportName,
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(downstream)},
			},
		}},
	}
}

func (b *builder) extAuthz(withJWT bool) *extauthzv3.ExtAuthz {
	z := &b.mesh.Options
	cfg := &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterAuthz}},
			Timeout:         dur(z.AuthzTimeout),
		}},
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    false,
		StatusOnError:       &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		WithRequestBody: &extauthzv3.BufferSettings{
			MaxRequestBytes:     z.MaxRequestBytes,
			AllowPartialMessage: false,
			PackAsBytes:         true,
		},
		IncludePeerCertificate: true,
		ValidateMutations:      true,
	}
	if withJWT {
		cfg.MetadataContextNamespaces = []string{JWTFilterName}
	}
	return cfg
}

// jwtAuthn verifies a token when one is present: an invalid token is
// rejected, a missing one is left to the authorizer's rules.
func (b *builder) jwtAuthn(a *Agent) *jwtv3.JwtAuthentication {
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var anyOf []*jwtv3.JwtRequirement
	for _, jp := range a.JWTProviders {
		p := &jwtv3.JwtProvider{
			Issuer:            jp.Issuer,
			Audiences:         jp.Audiences,
			Forward:           false,
			PayloadInMetadata: JWTPayloadMetadataKey,
			RequireExpiration: true,
		}
		if jp.RemoteJWKS != "" {
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
				HttpUri: &corev3.HttpUri{
					Uri:              jp.RemoteJWKS,
					HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: JWKSClusterPrefix + jp.Name},
					Timeout:          dur(b.mesh.Options.ConnectTimeout),
				},
				CacheDuration: dur(b.mesh.Options.JWKSCacheDuration),
				AsyncFetch:    &jwtv3.JwksAsyncFetch{},
			}}
		} else {
			p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: jp.LocalJWKS},
			}}
		}
		cfg.Providers[jp.Name] = p
		anyOf = append(anyOf, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: jp.Name}})
	}
	anyOf = append(anyOf, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: anyOf}},
		}},
	}}
	return cfg
}

func (b *builder) inboundRoute(a *Agent) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: RouteInbound,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    a.Name,
			Domains: []string{"*"},
			Routes:  []*routev3.Route{b.routeTo(ClusterApp)},
		}},
	}
}

func (b *builder) routeTo(cluster string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          dur(b.mesh.Options.RouteTimeout),
		}},
	}
}

// outboundListener takes plain HTTP from the local app on loopback and
// routes it by authority to the allowed peers. A credential is injected by
// one credential_injector filter per peer, disabled by default and
// enabled only on that peer's virtual host.
func (b *builder) outboundListener(a *Agent) *listenerv3.Listener {
	var filters []*hcmv3.HttpFilter
	for _, p := range a.Peers {
		c := p.Credential
		if c == nil {
			continue
		}
		pre, _ := c.prefix() // validated
		gen := &genericv3.Generic{
			Credential:        sdsSecret(c.Secret),
			Header:            c.header(),
			HeaderValuePrefix: pre,
		}
		filters = append(filters, &hcmv3.HttpFilter{
			Name:     credFilterPrefix + p.Name,
			Disabled: true,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(&credinjv3.CredentialInjector{
				Overwrite: true,
				Credential: &corev3.TypedExtensionConfig{
					Name:        genericCredName,
					TypedConfig: b.any(gen),
				},
			})},
		})
	}
	filters = append(filters, b.routerFilter())
	h := b.hcm(ListenerOutbound, RouteOutbound, filters)
	return &listenerv3.Listener{
		Name:                          ListenerOutbound,
		Address:                       outboundAddress(a),
		TrafficDirection:              corev3.TrafficDirection_OUTBOUND,
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(b.mesh.Options.BufferLimitBytes),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: b.any(h)},
			}},
		}},
	}
}

// outboundRoute has one virtual host per peer; an unknown authority gets
// 404 (there is no catch-all).
func (b *builder) outboundRoute(a *Agent) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: RouteOutbound}
	port := strconv.FormatUint(uint64(a.OutboundPort), 10)
	for _, p := range a.Peers {
		vh := &routev3.VirtualHost{
			Name:    p.Name,
			Domains: []string{p.Name, p.Name + ":" + port},
			Routes:  []*routev3.Route{b.routeTo(PeerClusterPrefix + p.Name)},
		}
		if p.Credential != nil {
			// An empty config enables the filter disabled in the listener.
			vh.TypedPerFilterConfig = map[string]*anypb.Any{
				credFilterPrefix + p.Name: b.any(&routev3.FilterConfig{Config: &anypb.Any{}}),
			}
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	return rc
}

// outboundAddress is where the app reaches its Envoy: the unix socket,
// or the port on loopback.
func outboundAddress(a *Agent) *corev3.Address {
	if a.OutboundSocket != "" {
		mode := a.OutboundSocketMode
		if mode == 0 {
			mode = DefaultOutboundSocketMode
		}
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: a.OutboundSocket, Mode: mode}}}
	}
	return socketAddress(loopbackAddress, a.OutboundPort)
}

// cluster is a cluster of fixed addresses: STATIC when they are all IPs,
// STRICT_DNS otherwise. addrs are validated host:port strings.
func (b *builder) cluster(name string, addrs ...string) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STATIC
	var eps []*endpointv3.LbEndpoint
	for _, addr := range addrs {
		host, port, _ := splitHostPort(addr)
		if _, err := netip.ParseAddr(host); err != nil {
			typ = clusterv3.Cluster_STRICT_DNS
		}
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)},
		}})
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:                dur(b.mesh.Options.ConnectTimeout),
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(b.mesh.Options.BufferLimitBytes),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
		},
	}
}

// useHTTP2 makes c speak HTTP/2 to its endpoints.
func (b *builder) useHTTP2(c *clusterv3.Cluster) { b.useHTTP2With(c, b.http2Options()) }

func (b *builder) useHTTP2With(c *clusterv3.Cluster, h2 *corev3.Http2ProtocolOptions) {
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		httpProtocolOpts: b.any(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
			}},
		}),
	}
}

func (b *builder) appCluster(a *Agent) *clusterv3.Cluster {
	return b.cluster(ClusterApp, a.App)
}

// authzCluster is meshward's ext_authz service: HTTP/2, mTLS unless the
// mesh is explicitly plaintext.
func (b *builder) authzCluster() *clusterv3.Cluster {
	z := &b.mesh.Authz
	c := b.cluster(ClusterAuthz, z.Address)
	b.useHTTP2(c)
	cb := &b.mesh.Options.AuthzCircuitBreakers
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(cb.MaxConnections),
		MaxPendingRequests: wrapperspb.UInt32(cb.MaxPendingRequests),
		MaxRequests:        wrapperspb.UInt32(cb.MaxRequests),
		MaxRetries:         wrapperspb.UInt32(cb.MaxRetries),
	}}}
	if !z.Plaintext {
		san := b.trustDomainSAN()
		if z.SPIFFEID != "" {
			san = exact(z.SPIFFEID)
		}
		host, _, _ := splitHostPort(z.Address)
		c.TransportSocket = b.meshUpstreamTLS(sniFor(host), san, "h2")
	}
	return c
}

// peerCluster reaches a peer's inbound listener over mTLS, accepting only
// the peer's own SPIFFE ID.
func (b *builder) peerCluster(p Peer, spiffeID string) *clusterv3.Cluster {
	c := b.cluster(PeerClusterPrefix+p.Name, p.Addresses...)
	b.useHTTP2(c)
	c.TransportSocket = b.meshUpstreamTLS(p.Name, exact(spiffeID), "h2")
	return c
}

// jwksCluster fetches a provider's key set over TLS verified against the
// system CA bundle and the URI's host name.
func (b *builder) jwksCluster(jp JWTProvider) *clusterv3.Cluster {
	host, port, _ := jwksTarget(jp.RemoteJWKS) // validated
	c := b.cluster(JWKSClusterPrefix+jp.Name, netJoin(host, port))
	sanType := tlsv3.SubjectAltNameMatcher_DNS
	if _, err := netip.ParseAddr(host); err == nil {
		sanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	c.TransportSocket = &corev3.TransportSocket{
		Name: tlsTransportName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.UpstreamTlsContext{
			Sni: sniFor(host),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsParams: tlsParams(),
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: b.mesh.Options.JWKSCAFile}},
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: sanType,
						Matcher: exact(host),
					}},
				}},
			},
		})},
	}
	return c
}

// sniFor is the SNI to send to host: none for an IP address.
func sniFor(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	return host
}

func netJoin(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}
