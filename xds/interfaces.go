package xds

import (
	"context"
	"errors"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/meshward/meshward/secrets/mtls"
)

// What the xDS server needs from the rest of meshward. The concrete types
// (the envoy translator, the secrets source, the mesh model) are adapted to
// these interfaces in cmd/meshward.

// Resources builds the complete Envoy configuration of one node.
type Resources interface {
	// NodeResources returns every resource the node must receive. It is
	// called when the node's first stream opens and on every Update that
	// names the node. An error leaves the node's previous snapshot in place
	// (or, on first connect, refuses the stream with Unavailable so that
	// Envoy retries).
	NodeResources(ctx context.Context, node string) (*NodeResources, error)
}

// NodeResources is one node's configuration, by xDS type. Each resource is
// an Envoy v3 proto (listener.Listener, cluster.Cluster,
// endpoint.ClusterLoadAssignment, route.RouteConfiguration, tls.Secret)
// with a unique name within its type. Endpoints must be exactly the load
// assignments the EDS clusters name.
type NodeResources struct {
	Listeners []types.Resource
	Clusters  []types.Resource
	Endpoints []types.Resource
	Routes    []types.Resource
	Secrets   []types.Resource
}

// ErrUnknownNode is returned by Resources when the node does not exist in
// the mesh model; the stream is refused.
var ErrUnknownNode = errors.New("unknown node")

// Identities binds a node id to the SPIFFE ID its client certificate must
// carry.
type Identities interface {
	// SPIFFEIDOf returns the SPIFFE ID (spiffe://td/path) of node, false if
	// the node is not part of the mesh.
	SPIFFEIDOf(node string) (spiffeID string, ok bool)
}

// EventSink receives security events: refused streams and requests, and
// configuration a node rejected (NACK). It must not block for long.
type EventSink interface {
	SecurityEvent(ctx context.Context, ev SecurityEvent)
}

// Kinds of SecurityEvent.
const (
	// EventRefused: a stream or request was refused (see Reason).
	EventRefused = "refused"
	// EventNACK: a node rejected a pushed version (Type, Version, Detail
	// holds the node's error message).
	EventNACK = "nack"
)

// SecurityEvent is one refusal or NACK seen by the xDS server.
type SecurityEvent struct {
	Time time.Time
	// Kind is EventRefused or EventNACK.
	Kind string
	// Reason is, for EventRefused, the refusal reason: the same value as
	// the reason label of meshward_xds_refused_total (Reason* constants).
	Reason string
	// Node is the node id the client claimed ("" if none).
	Node string
	// PeerID is the SPIFFE ID of the verified client certificate ("" in
	// insecure mode or without a certificate).
	PeerID string
	// Remote is the client's network address.
	Remote string
	// Type and Version name the rejected configuration (EventNACK): type
	// is listener, cluster, endpoint, route or secret.
	Type, Version string
	// Detail says what was asked for (e.g. the secret name) or the node's
	// NACK message. Never key material.
	Detail string
}

// Refusal reasons: label values of meshward_xds_refused_total and
// SecurityEvent.Reason.
const (
	// ReasonNoClientCert: the client sent no certificate (the handshake
	// fails), or the stream has no verified X.509 SVID.
	ReasonNoClientCert = mtls.RefusedNoClientCert
	// ReasonMissingNode: the first request carries no node id.
	ReasonMissingNode = "missing_node"
	// ReasonUnknownNode: the node id is not part of the mesh.
	ReasonUnknownNode = "unknown_node"
	// ReasonNodeMismatch: the node id does not belong to the client
	// certificate's SPIFFE ID.
	ReasonNodeMismatch = "node_mismatch"
	// ReasonNodeChanged: a later request on the stream names another node.
	ReasonNodeChanged = "node_changed"
	// ReasonUnknownSecret: the node asked for a secret that is not in its
	// own snapshot. The stream stays open; the secret is never sent.
	ReasonUnknownSecret = "unknown_secret"
	// ReasonNodeRemoved: the node left the mesh (Resources returned
	// ErrUnknownNode on Update); its open streams are ended.
	ReasonNodeRemoved = "node_removed"
)
