// Package xdsclient is a minimal ADS client that speaks the xDS protocol
// the way Envoy does (node on the first request, subscribe, ACK with the
// response's version and nonce, NACK with error_detail), for the xds tests
// and the load program. It is not a configuration consumer: it does not
// follow references by itself; callers subscribe explicitly.
package xdsclient

import (
	"context"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Delta is a delta ADS stream.
type Delta struct {
	stream   discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node     *core.Node
	sentNode bool
}

// NewDelta opens a delta ADS stream for node. The stream ends with ctx.
func NewDelta(ctx context.Context, cc grpc.ClientConnInterface, node string) (*Delta, error) {
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: open delta stream: %w", err)
	}
	return &Delta{stream: st, node: &core.Node{Id: node, Cluster: "meshward"}}, nil
}

func (d *Delta) send(req *discovery.DeltaDiscoveryRequest) error {
	if !d.sentNode {
		req.Node = d.node
		d.sentNode = true
	}
	return d.stream.Send(req)
}

// Subscribe asks for names of typeURL (none: wildcard).
func (d *Delta) Subscribe(typeURL string, names ...string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// Resume subscribes like Envoy after a reconnect: initial holds the
// versions of the resources it already has, by name.
func (d *Delta) Resume(typeURL string, names []string, initial map[string]string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: initial})
}

// SubscribeAs sends a subscription that claims another node id, as a
// misbehaving client would.
func (d *Delta) SubscribeAs(node, typeURL string, names ...string) error {
	return d.stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// Recv waits for the next response.
func (d *Delta) Recv() (*discovery.DeltaDiscoveryResponse, error) { return d.stream.Recv() }

// ACK accepts resp.
func (d *Delta) ACK(resp *discovery.DeltaDiscoveryResponse) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
}

// NACK rejects resp with msg.
func (d *Delta) NACK(resp *discovery.DeltaDiscoveryResponse, msg string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg},
	})
}

// Close ends the sending side.
func (d *Delta) Close() error { return d.stream.CloseSend() }

// SotW is a state-of-the-world ADS stream.
type SotW struct {
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node     *core.Node
	sentNode bool
	names    map[string][]string // by type: the current subscription
	accepted map[string]string   // by type: last ACKed version
}

// NewSotW opens a state-of-the-world ADS stream for node.
func NewSotW(ctx context.Context, cc grpc.ClientConnInterface, node string) (*SotW, error) {
	st, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("xdsclient: open stream: %w", err)
	}
	return &SotW{stream: st, node: &core.Node{Id: node, Cluster: "meshward"}, names: map[string][]string{}, accepted: map[string]string{}}, nil
}

func (c *SotW) send(req *discovery.DiscoveryRequest) error {
	if !c.sentNode {
		req.Node = c.node
		c.sentNode = true
	}
	return c.stream.Send(req)
}

// Subscribe sets the subscription for typeURL (no names: wildcard).
func (c *SotW) Subscribe(typeURL string, names ...string) error {
	c.names[typeURL] = names
	return c.send(&discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: c.accepted[typeURL]})
}

// Recv waits for the next response.
func (c *SotW) Recv() (*discovery.DiscoveryResponse, error) { return c.stream.Recv() }

// ACK accepts resp: version_info is the response's version.
func (c *SotW) ACK(resp *discovery.DiscoveryResponse) error {
	c.accepted[resp.GetTypeUrl()] = resp.GetVersionInfo()
	return c.send(&discovery.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
		ResourceNames: c.names[resp.GetTypeUrl()],
	})
}

// NACK rejects resp: version_info stays the last accepted version, as
// Envoy does.
func (c *SotW) NACK(resp *discovery.DiscoveryResponse, msg string) error {
	return c.send(&discovery.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), VersionInfo: c.accepted[resp.GetTypeUrl()], ResponseNonce: resp.GetNonce(),
		ResourceNames: c.names[resp.GetTypeUrl()],
		ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg},
	})
}

// Close ends the sending side.
func (c *SotW) Close() error { return c.stream.CloseSend() }

// SubscribeAs sends a subscription that claims another node id, as a
// misbehaving client would.
func (c *SotW) SubscribeAs(node, typeURL string, names ...string) error {
	return c.stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: typeURL, ResourceNames: names})
}
