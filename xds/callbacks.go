package xds

import (
	"context"
	"errors"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// nodeState is what the server knows about one connected node. Fields
// other than build are guarded by Server.mu.
type nodeState struct {
	name  string
	build sync.Mutex // serialises building and setting the node's snapshot

	streams     int
	since       time.Time
	current     *builtSnapshot
	prevSecrets map[string]struct{}
	pending     map[string]pendingPush // by type URL: version set, not yet ACKed
	acked       map[string]AckStatus   // by type URL
	lastNACK    *NACKStatus
	nacks       map[string]NACKStatus // last NACK by type label, for Server.NACKs
}

type pendingPush struct {
	version string
	at      time.Time
}

// streamKey names a stream: state-of-the-world and delta streams are
// numbered independently by go-control-plane.
type streamKey struct {
	delta bool
	id    int64
}

// streamState is one ADS stream. node and st are set under Server.mu on
// the first request; sent and reported are touched only by the stream's
// own goroutine (go-control-plane calls a stream's callbacks from one
// goroutine).
type streamState struct {
	ctx    context.Context
	link   *streamLink
	peerID string
	remote string

	node string
	st   *nodeState

	sent     map[string]sentResponse // by type URL: last response sent
	reported map[string]struct{}     // unknown secret names already reported
}

type sentResponse struct {
	nonce   string
	version string
}

// callbacks implements go-control-plane's server callbacks: node
// authentication, snapshot lifetime, ACK/NACK tracking.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.s.openStream(ctx, streamKey{false, id})
}

func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.s.openStream(ctx, streamKey{true, id})
}

func (c callbacks) OnStreamClosed(id int64, _ *core.Node) { c.s.closeStream(streamKey{false, id}) }

func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) { c.s.closeStream(streamKey{true, id}) }

// OnStreamRequest handles a state-of-the-world request. On a NACK it
// rewrites the request's version_info to the rejected version, so that
// the cache (which compares version_info with the snapshot) waits for new
// content instead of resending what the node just rejected.
func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	s := c.s
	ss, err := s.admit(streamKey{false, id}, req.GetNode())
	if err != nil {
		return err
	}
	typ := req.GetTypeUrl()
	sent := ss.sent[typ]
	matches := sent.nonce != "" && req.GetResponseNonce() == sent.nonce
	switch {
	case req.GetErrorDetail() != nil:
		v := ""
		if matches {
			v = sent.version
			req.VersionInfo = sent.version
		}
		s.recordNACK(ss, typ, v, req.GetErrorDetail().GetMessage())
	case matches && req.GetVersionInfo() == sent.version:
		s.recordACK(ss, typ, sent.version)
	}
	if typ == resource.SecretType {
		s.checkSecretNames(ss, req.GetResourceNames())
	}
	return nil
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.s.recordSent(streamKey{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaRequest handles a delta request. go-control-plane's delta
// server already records what it sent before the ACK/NACK arrives, so a
// NACKed version is not resent until the content changes.
func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	s := c.s
	ss, err := s.admit(streamKey{true, id}, req.GetNode())
	if err != nil {
		return err
	}
	typ := req.GetTypeUrl()
	sent := ss.sent[typ]
	matches := sent.nonce != "" && req.GetResponseNonce() == sent.nonce
	switch {
	case req.GetErrorDetail() != nil:
		v := ""
		if matches {
			v = sent.version
		}
		s.recordNACK(ss, typ, v, req.GetErrorDetail().GetMessage())
	case matches:
		s.recordACK(ss, typ, sent.version)
	}
	if typ == resource.SecretType {
		s.checkSecretNames(ss, req.GetResourceNamesSubscribe())
	}
	return nil
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.s.recordSent(streamKey{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

// OnFetchRequest refuses unary fetches; they are not registered anyway.
func (c callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "xds: fetch is not served")
}

func (c callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

// openStream records a new stream and, with mTLS, the SPIFFE ID of its
// verified client certificate.
func (s *Server) openStream(ctx context.Context, key streamKey) error {
	ss := &streamState{ctx: ctx, sent: map[string]sentResponse{}, reported: map[string]struct{}{}}
	ss.link, _ = ctx.Value(linkKey{}).(*streamLink)
	if ss.link == nil {
		ss.link = &streamLink{}
	}
	p, ok := peer.FromContext(ctx)
	if ok && p.Addr != nil {
		ss.remote = p.Addr.String()
	}
	if !s.cfg.Insecure {
		id, err := peerSPIFFEID(p)
		if err != nil {
			return s.refuse(ss, ReasonNoClientCert, "", err.Error())
		}
		ss.peerID = id
	}
	s.mu.Lock()
	s.streams[key] = ss
	s.mu.Unlock()
	return nil
}

// peerSPIFFEID returns the SPIFFE ID of the peer's verified certificate.
// The handshake verified it (mtls.ServerConfig: go-spiffe verifies in
// VerifyPeerCertificate, so crypto/tls records no VerifiedChains, and
// session resumption is off): a connection only exists with a verified
// X.509 SVID as its leaf.
func peerSPIFFEID(p *peer.Peer) (string, error) {
	if p == nil {
		return "", errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", errors.New("not a TLS connection")
	}
	certs := info.State.PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("no client certificate")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// admit authenticates a request: the first one binds the stream to a node
// (whose id must belong to the client certificate's SPIFFE ID) and makes
// sure the node has a snapshot; later ones may not name another node.
func (s *Server) admit(key streamKey, node *core.Node) (*streamState, error) {
	s.mu.Lock()
	ss := s.streams[key]
	s.mu.Unlock()
	if ss == nil {
		return nil, status.Error(codes.Internal, "xds: unknown stream")
	}
	if ss.link.revoked.Load() {
		return nil, errRevoked
	}
	if ss.st != nil {
		if node != nil && node.GetId() != ss.node {
			return nil, s.refuse(ss, ReasonNodeChanged, node.GetId(), "stream bound to "+ss.node)
		}
		return ss, nil
	}
	name := node.GetId()
	if name == "" {
		return nil, s.refuse(ss, ReasonMissingNode, "", "")
	}
	want, ok := s.ids.SPIFFEIDOf(name)
	if !ok {
		return nil, s.refuse(ss, ReasonUnknownNode, name, "")
	}
	if !s.cfg.Insecure && want != ss.peerID {
		return nil, s.refuse(ss, ReasonNodeMismatch, name, "node requires "+want)
	}

	s.mu.Lock()
	st := s.nodes[name]
	if st == nil {
		st = &nodeState{name: name, since: s.now(), pending: map[string]pendingPush{}, acked: map[string]AckStatus{}}
		s.nodes[name] = st
	}
	st.streams++
	ss.node, ss.st = name, st
	s.m.connected.Set(float64(len(s.nodes)))
	s.mu.Unlock()
	s.log.Debug("xds: stream bound", logNode, name, logPeer, ss.peerID, logRemote, ss.remote)
	if s.nodeCheck != nil {
		if err := s.nodeCheck(node); err != nil {
			s.log.Warn("xds: node check", logNode, name, logRemote, ss.remote, logError, err)
		}
	}

	if err := s.refresh(ss.ctx, st, false); err != nil {
		return nil, status.Error(codes.Unavailable, "xds: no configuration available for this node yet")
	}
	return ss, nil
}

// closeStream forgets a stream; when it was its node's last, the node's
// snapshot is cleared (a reconnect builds a fresh one).
func (s *Server) closeStream(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.streams[key]
	delete(s.streams, key)
	if ss == nil || ss.st == nil {
		return
	}
	st := ss.st
	st.streams--
	if st.streams > 0 {
		return
	}
	delete(s.nodes, st.name)
	s.cache.clear(st.name)
	s.m.connected.Set(float64(len(s.nodes)))
	s.log.Debug("xds: node disconnected; snapshot cleared", logNode, st.name)
}

// refuse counts, logs and reports a refusal and returns the stream error
// for it. The error says no more than "permission denied".
func (s *Server) refuse(ss *streamState, reason, node, detail string) error {
	s.m.refused.WithLabelValues(reason).Inc()
	ev := SecurityEvent{Time: s.now(), Kind: EventRefused, Reason: reason, Node: node, PeerID: ss.peerID, Remote: ss.remote, Detail: detail}
	s.log.Warn("xds: security event: request refused", logEvent, "security", logReason, reason,
		logNode, node, logPeer, ss.peerID, logRemote, ss.remote, logDetail, detail)
	if s.events != nil {
		s.events.SecurityEvent(ss.ctx, ev)
	}
	return status.Error(codes.PermissionDenied, "xds: permission denied")
}

// checkSecretNames reports secret names the node asks for but does not
// own. They are never sent (they are not in the node's snapshot); the
// stream stays open so that Envoy's brief interest in a secret that a
// config change just removed does not tear down its configuration. Names
// of the previous snapshot are not reported for that reason.
func (s *Server) checkSecretNames(ss *streamState, names []string) {
	if len(names) == 0 {
		return
	}
	s.mu.Lock()
	var unknown []string
	for _, n := range names {
		if n == "*" {
			continue
		}
		if ss.st.current != nil {
			if _, ok := ss.st.current.secrets[n]; ok {
				continue
			}
		}
		if _, ok := ss.st.prevSecrets[n]; ok {
			continue
		}
		if _, done := ss.reported[n]; done {
			continue
		}
		ss.reported[n] = struct{}{}
		unknown = append(unknown, n)
	}
	s.mu.Unlock()
	for _, n := range unknown {
		_ = s.refuse(ss, ReasonUnknownSecret, ss.node, "secret "+n)
	}
}

func (s *Server) recordSent(key streamKey, typ, nonce, version string) {
	s.mu.Lock()
	ss := s.streams[key]
	s.mu.Unlock()
	s.m.pushes.WithLabelValues(typeLabel(typ)).Inc()
	if ss != nil {
		ss.sent[typ] = sentResponse{nonce: nonce, version: version}
	}
}

func (s *Server) recordACK(ss *streamState, typ, version string) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ss.st
	st.acked[typ] = AckStatus{Version: version, At: now}
	if p, ok := st.pending[typ]; ok && p.version == version {
		s.m.pushDuration.Observe(now.Sub(p.at).Seconds())
		delete(st.pending, typ)
	}
}

// maxNACKMessage bounds how much of a node's error message is kept and
// logged.
const maxNACKMessage = 1024

func (s *Server) recordNACK(ss *streamState, typ, version, msg string) {
	if len(msg) > maxNACKMessage {
		msg = msg[:maxNACKMessage] + "..."
	}
	s.m.nacks.WithLabelValues(typeLabel(typ)).Inc()
	s.log.Warn("xds: node rejected configuration (NACK); keeping its last accepted version, not resending",
		logNode, ss.node, logType, typeLabel(typ), logVersion, version, logError, msg)
	now := s.now()
	s.mu.Lock()
	ss.st.lastNACK = &NACKStatus{Type: typeLabel(typ), Version: version, Message: msg, At: now}
	if ss.st.nacks == nil {
		ss.st.nacks = map[string]NACKStatus{}
	}
	ss.st.nacks[typeLabel(typ)] = *ss.st.lastNACK
	s.mu.Unlock()
	if s.events != nil {
		s.events.SecurityEvent(ss.ctx, SecurityEvent{Time: now, Kind: EventNACK, Node: ss.node, PeerID: ss.peerID,
			Remote: ss.remote, Type: typeLabel(typ), Version: version, Detail: msg})
	}
}
