// Package xdstest provides a hand-written fake mesh for the xds tests and
// the load program: it implements xds.Resources and xds.Identities with
// small but valid Envoy resources (2 listeners, 2 route configurations, 3
// clusters, 3 secrets per node, one a ~1 KB certificate chain) whose
// content changes on demand (a "rule change" or a "rotation").
package xdstest

import (
	"context"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"sync"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	credinj "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	generic "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshward/meshward/xds"
)

// Secret names every node gets; the generic secret is APIKeyName(node).
const (
	CertName = "default"
	CAName   = "ROOTCA"
)

// APIKeyName is the name of node's generic secret: unique per node, so a
// test can ask for another node's secret by name.
func APIKeyName(node string) string { return "apikey-" + node }

// Mesh is a fake mesh model. The zero value is not usable; use NewMesh.
type Mesh struct {
	TrustDomain string

	mu    sync.Mutex
	nodes map[string]*node
}

type node struct {
	generation int // bumped by Change: alters a listener
	rotation   int // bumped by Rotate: alters the certificate
	broken     bool
	fail       error
}

// NewMesh returns a mesh of the named nodes in trust domain td.
func NewMesh(td string, nodes ...string) *Mesh {
	m := &Mesh{TrustDomain: td, nodes: map[string]*node{}}
	for _, n := range nodes {
		m.nodes[n] = &node{}
	}
	return m
}

// SPIFFEIDOf implements xds.Identities.
func (m *Mesh) SPIFFEIDOf(name string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.nodes[name]; !ok {
		return "", false
	}
	return SPIFFEID(m.TrustDomain, name), true
}

// SPIFFEID is the SPIFFE ID of a node in the fake mesh.
func SPIFFEID(td, name string) string { return "spiffe://" + td + "/ns/default/sa/" + name }

// Change alters a listener of each named node (a rule change).
func (m *Mesh) Change(names ...string) { m.edit(names, func(n *node) { n.generation++ }) }

// Rotate issues a new certificate to each named node.
func (m *Mesh) Rotate(names ...string) { m.edit(names, func(n *node) { n.rotation++ }) }

// Remove takes a node out of the mesh.
func (m *Mesh) Remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.nodes, name)
}

// Break makes a node's listener reference a secret its snapshot lacks.
func (m *Mesh) Break(name string, broken bool) {
	m.edit([]string{name}, func(n *node) { n.broken = broken })
}

// Fail makes NodeResources fail for the node with err (nil: succeed).
func (m *Mesh) Fail(name string, err error) { m.edit([]string{name}, func(n *node) { n.fail = err }) }

func (m *Mesh) edit(names []string, f func(*node)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range names {
		if n, ok := m.nodes[name]; ok {
			f(n)
		}
	}
}

// NodeResources implements xds.Resources.
func (m *Mesh) NodeResources(_ context.Context, name string) (*xds.NodeResources, error) {
	m.mu.Lock()
	n, ok := m.nodes[name]
	var st node
	if ok {
		st = *n
	}
	m.mu.Unlock()
	if !ok {
		return nil, xds.ErrUnknownNode
	}
	if st.fail != nil {
		return nil, st.fail
	}
	return Build(name, st.generation, st.rotation, st.broken), nil
}

// Build returns the resources of one node.
func Build(name string, generation, rotation int, broken bool) *xds.NodeResources {
	key := APIKeyName(name)
	if broken {
		key = "missing-" + name
	}
	return &xds.NodeResources{
		Listeners: []types.Resource{
			inbound(name, generation),
			outbound(key),
		},
		Routes: []types.Resource{
			&route.RouteConfiguration{Name: "inbound", VirtualHosts: []*route.VirtualHost{vhost("app", "local_app")}},
			&route.RouteConfiguration{Name: "outbound", VirtualHosts: []*route.VirtualHost{vhost("peer", "peer")}},
		},
		Clusters: []types.Resource{
			staticCluster("meshward_authz", "127.0.0.1", 9001, true),
			staticCluster("local_app", "127.0.0.1", 8080, false),
			staticCluster("peer", "127.0.0.2", 15001, true),
		},
		Secrets: []types.Resource{
			&tlsv3.Secret{Name: CertName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(pemBlock("CERTIFICATE", name, rotation, 760)),
				PrivateKey:       inline(pemBlock("PRIVATE KEY", name, rotation, 120)),
			}}},
			&tlsv3.Secret{Name: CAName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(pemBlock("CERTIFICATE", "root", 0, 500)),
			}}},
			&tlsv3.Secret{Name: APIKeyName(name), Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
				Secret: inline([]byte("Bearer key-of-" + name)),
			}}},
		},
	}
}

func ads() *core.ConfigSource {
	return &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3, ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
}

func sds(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ads()}
}

func commonTLS() *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds(CertName)},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds(CAName)},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("xdstest: %v", err)) // only on a programming error in this fake
	}
	return a
}

func httpFilter(name string, m proto.Message) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: name, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}}
}

func manager(prefix, routeName string, filters ...*hcm.HttpFilter) *listener.Filter {
	filters = append(filters, httpFilter("envoy.filters.http.router", &routerv3.Router{}))
	return &listener.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&hcm.HttpConnectionManager{
		StatPrefix:     prefix,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{ConfigSource: ads(), RouteConfigName: routeName}},
		HttpFilters:    filters,
	})}}
}

func addr(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}}
}

func inbound(name string, generation int) *listener.Listener {
	return &listener.Listener{
		Name:    "inbound",
		Address: addr("0.0.0.0", 15000),
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{manager(fmt.Sprintf("inbound_%s_g%d", name, generation), "inbound")},
			TransportSocket: &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
				CommonTlsContext:         commonTLS(),
				RequireClientCertificate: wrapperspb.Bool(true),
			})}},
		}},
	}
}

func outbound(secret string) *listener.Listener {
	inj := &credinj.CredentialInjector{Credential: &core.TypedExtensionConfig{
		Name:        "envoy.http.injected_credentials.generic",
		TypedConfig: mustAny(&generic.Generic{Credential: sds(secret), Header: "Authorization"}),
	}}
	return &listener.Listener{
		Name:         "outbound",
		Address:      addr("127.0.0.1", 15001),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{manager("outbound", "outbound", httpFilter("envoy.filters.http.credential_injector", inj))}}},
	}
}

func vhost(name, clusterName string) *route.VirtualHost {
	return &route.VirtualHost{Name: name, Domains: []string{"*"}, Routes: []*route.Route{{
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName}}},
	}}}
}

func staticCluster(name, ip string, port uint32, mtls bool) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: addr(ip, port)}}}},
		}}},
	}
	if mtls {
		c.TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
			CommonTlsContext: commonTLS(),
			Sni:              name,
		})}}
	}
	return c
}

func inline(b []byte) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
}

// pemBlock returns a deterministic PEM block of about size bytes of
// content: realistic in size, not a parseable certificate.
func pemBlock(kind, seed string, n, size int) []byte {
	raw := make([]byte, 0, size)
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%s/%d", kind, seed, n)))
	for len(raw) < size {
		raw = append(raw, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: raw[:size]})
}
