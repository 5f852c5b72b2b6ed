package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/secrets/mtls"
)

// Server is meshward's xDS server: aggregated discovery (ADS) over gRPC,
// state-of-the-world and delta, one snapshot per connected node. Only the
// two ADS streams are served: no per-type services, no unary Fetch, no
// REST gateway.
type Server struct {
	cfg     Config
	res     Resources
	ids     Identities
	svids   x509svid.Source
	bundles x509bundle.Source
	log     *slog.Logger
	events  EventSink
	// nodeCheck, when set, is asked about each node's first request; an
	// error is logged as a warning, the node still served.
	nodeCheck func(*core.Node) error
	reg       prometheus.Registerer
	m         *metrics
	cache     *snapshots
	workers   int
	now       func() time.Time
	refs      *refCache

	// mu guards nodes, streams and every nodeState field not marked
	// otherwise, and serialises SetSnapshot/ClearSnapshot with stream
	// open/close so a node's snapshot exists exactly while it has streams.
	mu      sync.Mutex
	nodes   map[string]*nodeState
	streams map[streamKey]*streamState

	// refusals counts and logs connections refused before any stream.
	refusals *mtls.RefusalLog

	lisMu   sync.Mutex
	lis     net.Listener
	serving atomic.Bool
}

// WarnInsecure is logged when xDS is served with Config.Insecure.
const WarnInsecure = "xDS IS SERVED IN PLAINTEXT WITHOUT NODE AUTHENTICATION (xds.insecure): any process that reaches " +
	"this port can claim any node id and receive its private keys and secrets; use only for local demos"

// Option configures optional behaviour of New.
type Option func(*Server)

// WithLogger sets the logger. Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// WithRegisterer sets where the metrics are registered. Default: a private
// registry nobody scrapes.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(s *Server) { s.reg = r }
}

// WithEventSink sets where security events go, in addition to the log and
// meshward_xds_refused_total. Default: none.
func WithEventSink(e EventSink) Option {
	return func(s *Server) { s.events = e }
}

// WithNodeCheck sets a check of the node a stream binds to (such as
// envoy.CheckEnvoyVersion), asked once per stream at its first request.
// Its error is logged as a warning and the node is served all the same:
// the check advises, node authentication decides. Default: none.
func WithNodeCheck(f func(*core.Node) error) Option {
	return func(s *Server) { s.nodeCheck = f }
}

// WithUpdateConcurrency bounds how many node snapshots Update rebuilds at
// once. Default: GOMAXPROCS.
func WithUpdateConcurrency(n int) Option {
	return func(s *Server) {
		if n > 0 {
			s.workers = n
		}
	}
}

// New returns an xDS server for cfg (defaults applied to a copy, then
// validated).
// res builds each node's resources and ids binds node ids to SPIFFE IDs.
// svids provides the listener's X.509 SVID and bundles the trust bundle
// client SVIDs must chain to (see tlsConfig); they may be nil only when
// cfg.Insecure is set.
func New(cfg Config, res Resources, ids Identities, svids x509svid.Source, bundles x509bundle.Source, opts ...Option) (*Server, error) {
	if res == nil || ids == nil {
		return nil, errors.New("xds: new: Resources and Identities are required")
	}
	if (svids == nil || bundles == nil) && !cfg.Insecure {
		return nil, errors.New("xds: new: SVID and bundle sources are required unless insecure is set")
	}
	cfg.SetDefaults()
	if err := cfg.Validate("xds"); err != nil {
		return nil, fmt.Errorf("xds: new: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		res:     res,
		ids:     ids,
		svids:   svids,
		bundles: bundles,
		log:     slog.New(slog.DiscardHandler),
		workers: runtime.GOMAXPROCS(0),
		now:     time.Now,
		nodes:   map[string]*nodeState{},
		streams: map[streamKey]*streamState{},
		refs:    newRefCache(100_000),
	}
	for _, o := range opts {
		o(s)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(s.reg)
	if err != nil {
		return nil, fmt.Errorf("xds: new: %w", err)
	}
	s.m = m
	s.refusals = mtls.NewRefusalLog(s.log, func(reason string) { m.refused.WithLabelValues(reason).Inc() }, mtls.RefusalMessages{
		Limit:   "xds: connection refused: xds.maxConnections reached (further refusals are counted in meshward_xds_refused_total, logged at most every 10s)",
		Aborted: "xds: TLS handshake aborted by the client",
		Failed:  "xds: security event: TLS handshake failed; connection refused (further failures are counted in meshward_xds_refused_total, logged at most every 10s)",
	}, logEvent, "security")
	s.cache = newSnapshots(cacheLogger{s.log})
	return s, nil
}

// Listen binds the configured address. Run calls it when it has not been
// called; calling it first lets the caller fail fast and learn Addr.
func (s *Server) Listen() error {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	if s.lis != nil {
		return nil
	}
	l, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("xds: listen: %w", err)
	}
	s.lis = mtls.LimitListener(l, s.cfg.MaxConnections, s.refusals.Refuse)
	return nil
}

// Addr is the bound address, nil before Listen.
func (s *Server) Addr() net.Addr {
	s.lisMu.Lock()
	defer s.lisMu.Unlock()
	if s.lis == nil {
		return nil
	}
	return s.lis.Addr()
}

// Run serves xDS until ctx ends, then stops the gRPC server with Stop (xDS
// streams never end by themselves, so a graceful stop would wait
// forever). It returns nil when ctx ended, the serve error otherwise.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.lisMu.Lock()
	lis := s.lis
	s.lisMu.Unlock()

	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4 << 20),
		grpc.MaxHeaderListSize(uint32(s.cfg.MaxHeaderListBytes)), //nolint:gosec // G115: validated <= 16 MiB
		// Bounds what one authenticated client can hold open.
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxConcurrentStreams)), //nolint:gosec // G115: validated <= MaxUint32
	}
	if s.cfg.Insecure {
		s.log.Warn(WarnInsecure, logAddress, lis.Addr().String())
	} else {
		opts = append(opts, grpc.Creds(mtls.RefusingCreds(credentials.NewTLS(s.tlsConfig()), s.refusals.Refuse)))
	}
	gs := grpc.NewServer(opts...)
	xs := serverv3.NewServer(ctx, s.cache.mux, callbacks{s})
	// ADS only: per-type discovery services, unary Fetch and REST are not
	// registered (SECURITY.md: unary Fetch left open leaked keys).
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, adsOnly{xs})

	errCh := make(chan error, 1)
	go func() { errCh <- gs.Serve(lis) }()
	s.serving.Store(true)
	s.log.Info("xds serving", logAddress, lis.Addr().String(), "mtls", !s.cfg.Insecure)
	select {
	case <-ctx.Done():
		s.serving.Store(false)
		gs.Stop()
		if err := <-errCh; err != nil { // Serve returns nil once Stop was called
			s.log.Debug("xds: serve ended with an error while stopping", logError, err)
		}
		return nil
	case err := <-errCh:
		s.serving.Store(false)
		return fmt.Errorf("xds: serve: %w", err)
	}
}

// Ready reports nil once the server accepts connections.
func (s *Server) Ready() error {
	if !s.serving.Load() {
		return errors.New("xds: not serving")
	}
	return nil
}

// adsOnly exposes only the two ADS stream methods of the go-control-plane
// server. It wraps each stream so that the server can end it: a revoked
// stream's next Send fails, which ends the stream's processing loop.
type adsOnly struct{ s serverv3.Server }

func (a adsOnly) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	l := &streamLink{}
	return a.s.StreamAggregatedResources(&sotwStream{st, context.WithValue(st.Context(), linkKey{}, l), l})
}

func (a adsOnly) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	l := &streamLink{}
	return a.s.DeltaAggregatedResources(&deltaStream{st, context.WithValue(st.Context(), linkKey{}, l), l})
}

// streamLink lets the server revoke a stream it knows only through
// go-control-plane's callbacks (which see the stream's context).
type streamLink struct{ revoked atomic.Bool }

type linkKey struct{}

var errRevoked = status.Error(codes.PermissionDenied, "xds: permission denied")

type sotwStream struct {
	discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	ctx  context.Context
	link *streamLink
}

func (s *sotwStream) Context() context.Context { return s.ctx }

func (s *sotwStream) Send(r *discovery.DiscoveryResponse) error {
	if s.link.revoked.Load() {
		return errRevoked
	}
	return s.AggregatedDiscoveryService_StreamAggregatedResourcesServer.Send(r)
}

type deltaStream struct {
	discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	ctx  context.Context
	link *streamLink
}

func (s *deltaStream) Context() context.Context { return s.ctx }

func (s *deltaStream) Send(r *discovery.DeltaDiscoveryResponse) error {
	if s.link.revoked.Load() {
		return errRevoked
	}
	return s.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Send(r)
}

// tlsConfig builds the listener's TLS (mtls.ServerConfig): TLS 1.2+, ECDHE
// with AEAD ciphers only, client X.509 SVIDs required and verified against
// the trust bundle. Any SPIFFE ID is admitted here (the xDS config names no
// trust domain); stream admission binds the node to its exact SPIFFE ID.
// SVID and bundle are read from the sources at every handshake so
// rotations apply without a restart.
func (s *Server) tlsConfig() *tls.Config {
	return mtls.ServerConfig(s.svids, s.bundles, tlsconfig.AuthorizeAny(), func(err error) {
		s.log.Error("xds: server TLS material unavailable; refusing the connection", logError, err)
	})
}

// Update rebuilds and pushes the snapshots of the named nodes (all
// connected nodes when none is named), e.g. after a config reload, a
// certificate rotation or a trust bundle change. Nodes without an open
// stream are skipped: they get a fresh snapshot when they connect. A node
// whose content did not change is not pushed. A failure leaves that node's
// previous snapshot in place; Update returns an error saying how many
// nodes failed.
func (s *Server) Update(ctx context.Context, nodes ...string) error {
	s.mu.Lock()
	var todo []*nodeState
	if len(nodes) == 0 {
		for _, st := range s.nodes {
			todo = append(todo, st)
		}
	} else {
		for _, n := range nodes {
			if st, ok := s.nodes[n]; ok {
				todo = append(todo, st)
			}
		}
	}
	s.mu.Unlock()
	return s.update(ctx, todo)
}

// UpdateMatching is Update for the connected nodes whose id match
// reports, e.g. every node of one agent when node ids name pods. match
// is called with the server's lock held: it must not call the server.
func (s *Server) UpdateMatching(ctx context.Context, match func(node string) bool) error {
	s.mu.Lock()
	var todo []*nodeState
	for name, st := range s.nodes {
		if match(name) {
			todo = append(todo, st)
		}
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	return s.update(ctx, todo)
}

func (s *Server) update(ctx context.Context, todo []*nodeState) error {

	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		failed atomic.Int64
		first  atomic.Pointer[error]
	)
	workers := min(s.workers, len(todo))
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(todo) || ctx.Err() != nil {
					return
				}
				if err := s.refresh(ctx, todo[i], true); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("xds: update: %d of %d nodes failed: %w", n, len(todo), *first.Load())
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("xds: update: %w", err)
	}
	return nil
}

// refresh builds the node's snapshot and sets it if the node is still
// connected and the content changed. Builds of one node are serialised so
// an older build never overwrites a newer one. With force false it only
// builds a node that has no snapshot yet (first stream).
func (s *Server) refresh(ctx context.Context, st *nodeState, force bool) error {
	st.build.Lock()
	defer st.build.Unlock()
	if !force {
		s.mu.Lock()
		has := st.current != nil
		s.mu.Unlock()
		if has {
			return nil
		}
	}
	nr, err := s.res.NodeResources(ctx, st.name)
	if errors.Is(err, ErrUnknownNode) && force {
		s.revoke(ctx, st)
		return nil
	}
	if err != nil {
		s.m.buildErrors.WithLabelValues(stageResources).Inc()
		s.log.Error("xds: node resources unavailable; "+s.kept(st), logNode, st.name, logError, err)
		return fmt.Errorf("node %s: %w", st.name, err)
	}
	b, err := buildSnapshot(nr, s.refs)
	if err != nil {
		s.m.buildErrors.WithLabelValues(stageCheck).Inc()
		s.log.Error("xds: snapshot rejected before push; "+s.kept(st), logNode, st.name, logError, err)
		return fmt.Errorf("node %s: %w", st.name, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[st.name] != st {
		return nil // disconnected meanwhile; a reconnect builds afresh
	}
	if st.current != nil && sameVersions(st.current.versions, b.versions) {
		return nil
	}
	if err := s.cache.set(ctx, st.name, b.snap); err != nil {
		s.log.Error("xds: set snapshot", logNode, st.name, logError, err)
		return fmt.Errorf("node %s: set snapshot: %w", st.name, err)
	}
	now := s.now()
	for typ, v := range b.versions {
		if st.current == nil || st.current.versions[typ] != v {
			st.pending[typ] = pendingPush{version: v, at: now}
		}
	}
	if st.current != nil {
		st.prevSecrets = st.current.secrets
	}
	st.current = b
	s.log.Debug("xds: snapshot set", logNode, st.name, "versions", b.versions)
	return nil
}

// kept says what a node is served after a failed build: its previous
// snapshot, or nothing when it never had one.
func (s *Server) kept(st *nodeState) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.current == nil {
		return "the node has no snapshot yet, so it is served nothing"
	}
	return "previous snapshot kept"
}

// revoke ends the streams of a node that left the mesh: it marks them
// revoked and sets an empty snapshot, whose push fails on each revoked
// stream and so ends it. Envoy keeps its last configuration, receives no
// more certificates, and cannot reconnect.
func (s *Server) revoke(ctx context.Context, st *nodeState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nodes[st.name] != st {
		return
	}
	var peer string
	for _, ss := range s.streams {
		if ss.st == st {
			ss.link.revoked.Store(true)
			peer = ss.peerID
		}
	}
	s.m.refused.WithLabelValues(ReasonNodeRemoved).Inc()
	s.log.Warn("xds: security event: node removed from the mesh; ending its streams", logEvent, "security",
		logReason, ReasonNodeRemoved, logNode, st.name, logPeer, peer)
	if s.events != nil {
		s.events.SecurityEvent(ctx, SecurityEvent{Time: s.now(), Kind: EventRefused, Reason: ReasonNodeRemoved, Node: st.name, PeerID: peer})
	}
	empty := &cache.Snapshot{}
	for _, slot := range typeSlots {
		empty.Resources[cache.GetResponseType(slot.url)] = cache.NewResources("removed", nil)
	}
	if err := s.cache.set(ctx, st.name, empty); err != nil {
		s.log.Error("xds: set empty snapshot of removed node", logNode, st.name, logError, err)
	}
	st.current = nil
}

func sameVersions(a, b map[resource.Type]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// snapshots holds every node's snapshot in two go-control-plane caches:
// secrets are served from a cache in non-ADS mode, everything else from
// one in ADS mode (responses ordered by type on a change). In ADS mode a
// state-of-the-world request is answered only if it names every resource
// of its type in the snapshot; Envoy asks for its clusters' secrets before
// it knows its listeners (clusters warm before LDS starts), so an SDS
// request naming a subset would never be answered and the clusters would
// never warm. The non-ADS cache answers with the requested names, and a
// growing subscription gets the rest.
type snapshots struct {
	main, sds cache.SnapshotCache
	mux       *cache.MuxCache
}

func newSnapshots(l cacheLogger) *snapshots {
	c := &snapshots{
		main: cache.NewSnapshotCache(true, cache.IDHash{}, l),
		sds:  cache.NewSnapshotCache(false, cache.IDHash{}, l),
	}
	c.mux = &cache.MuxCache{
		Classify: func(r *cache.Request) string {
			if r.GetTypeUrl() == resource.SecretType {
				return "sds"
			}
			return "main"
		},
		ClassifyDelta: func(r *cache.DeltaRequest) string {
			if r.GetTypeUrl() == resource.SecretType {
				return "sds"
			}
			return "main"
		},
		Caches: map[string]cache.Cache{"main": c.main, "sds": c.sds},
	}
	return c
}

// set sets a node's snapshot: secrets first, so that a listener or
// cluster never arrives before a new secret it references exists.
func (c *snapshots) set(ctx context.Context, node string, snap *cache.Snapshot) error {
	if err := c.sds.SetSnapshot(ctx, node, snap); err != nil {
		return err
	}
	return c.main.SetSnapshot(ctx, node, snap)
}

func (c *snapshots) clear(node string) {
	c.main.ClearSnapshot(node)
	c.sds.ClearSnapshot(node)
}

// cacheLogger routes go-control-plane's log lines to slog at debug level
// (they are per-request chatter), errors at warn.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.logf(slog.LevelDebug, f, a) }
func (c cacheLogger) Infof(f string, a ...any)  { c.logf(slog.LevelDebug, f, a) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.logf(slog.LevelDebug, f, a) }
func (c cacheLogger) Errorf(f string, a ...any) { c.logf(slog.LevelWarn, f, a) }

func (c cacheLogger) logf(lv slog.Level, f string, a []any) {
	if c.l.Enabled(context.Background(), lv) {
		c.l.Log(context.Background(), lv, "go-control-plane: "+fmt.Sprintf(f, a...))
	}
}

// NACKs returns, for each connected node that rejected something, its
// last NACK of each type (by type label: listener, cluster, endpoint, route,
// secret); Status carries only the last one of all.
func (s *Server) NACKs() map[string]map[string]NACKStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]NACKStatus{}
	for name, st := range s.nodes {
		if len(st.nacks) > 0 {
			out[name] = maps.Clone(st.nacks)
		}
	}
	return out
}
