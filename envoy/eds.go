package envoy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Endpoint is one instance (a pod) of an agent, as EDS gives it to the
// agent's callers: the address its Envoy accepts peers at, on the agent's
// InboundPort.
type Endpoint struct {
	// Address is the instance's IP address.
	Address string
	// Ready says the instance takes traffic. One that is not is sent as
	// UNHEALTHY: its callers' Envoys see it but send it nothing (the EDS
	// clusters have no panic threshold).
	Ready bool
}

// peerEDSCluster reaches a peer whose endpoints come over EDS: the
// ClusterLoadAssignment named after the cluster (LoadAssignment), on the
// node's ADS stream. With no panic threshold, Envoy never sends a request
// to an UNHEALTHY endpoint, even when most are (Envoy's default of 50 %
// would spread requests over all of them then); with none healthy it
// answers 503 at once.
func (b *builder) peerEDSCluster(p Peer, spiffeID string) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                          PeerClusterPrefix + p.Name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:              &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(nil)},
		ConnectTimeout:                dur(b.mesh.Options.ConnectTimeout),
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(b.mesh.Options.BufferLimitBytes),
		CommonLbConfig:                &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}},
	}
	b.useHTTP2(c)
	c.TransportSocket = b.meshUpstreamTLS(p.Name, exact(spiffeID), "h2")
	return c
}

// LoadAssignment is the EDS resource of the peer cluster of agent, whose
// Envoys accept peers on port: every endpoint, sorted by address, ready
// ones HEALTHY, the others UNHEALTHY. An address that is not an IP, or a
// port outside 1-65535, is an error; so is an address listed twice.
func LoadAssignment(agent string, port uint32, eps []Endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	if !nameRE.MatchString(agent) {
		return nil, fmt.Errorf("load assignment: agent %q must be a DNS label", agent)
	}
	if port == 0 || port > 65535 {
		return nil, fmt.Errorf("load assignment %q: port must be 1-65535", agent)
	}
	sorted := slices.Clone(eps)
	slices.SortFunc(sorted, func(a, b Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	lb := make([]*endpointv3.LbEndpoint, 0, len(sorted))
	for i, e := range sorted {
		ip, err := netip.ParseAddr(e.Address)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("load assignment %q: endpoint %q is not an IP address", agent, e.Address)
		}
		if i > 0 && sorted[i-1].Address == e.Address {
			return nil, fmt.Errorf("load assignment %q: endpoint %s listed twice", agent, e.Address)
		}
		health := corev3.HealthStatus_HEALTHY
		if !e.Ready {
			health = corev3.HealthStatus_UNHEALTHY
		}
		lb = append(lb, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(ip.String(), port)}},
			HealthStatus:   health,
		})
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: PeerClusterPrefix + agent}
	if len(lb) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lb}}
	}
	if err := cla.ValidateAll(); err != nil {
		return nil, fmt.Errorf("load assignment %q: %w", agent, err)
	}
	return cla, nil
}
