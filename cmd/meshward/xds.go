package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshward/meshward/cmd/meshward/internal/admin"
	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/runtime"
	"github.com/meshward/meshward/cmd/meshward/internal/task"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

func init() { builders["xds"] = buildXDS }

// xdsServerID is the SPIFFE ID of the xDS listener's own certificate.
func xdsServerID(td string) string { return "spiffe://" + td + "/meshward/xds" }

// authzServerID is the SPIFFE ID of the ext_authz listener's certificate
// with authz.tls.fromSecrets.
func authzServerID(td string) string { return "spiffe://" + td + "/meshward/authz" }

// meshModel is one translation of the configuration's agents: immutable,
// swapped whole on reload.
type meshModel struct {
	nodes   map[string]*envoy.NodeResources
	ids     map[string]string   // node -> SPIFFE ID
	ports   map[string]uint32   // agent -> inbound port, where its endpoints accept peers
	callers map[string][]string // agent -> the agents with an EDS cluster to it
	err     error               // when set, no node gets configuration
}

// errNoAuthzAddress: the ext_authz address Envoys must dial is not known.
var errNoAuthzAddress = errors.New("authz.address has port 0 and xds.authzAddress is not set: the address Envoys must dial for ext_authz is unknown, so no node configuration is served")

func translateMesh(cfg *config.Config) (*meshModel, error) {
	ids := make(map[string]string, len(cfg.Agents))
	for _, a := range cfg.Agents {
		ids[a.Name] = a.SPIFFEID
	}
	// Envoys dial xds.authzAddress, by default the ext_authz listen
	// address. An ephemeral port cannot be told to them: serve, but refuse
	// every node (fail closed).
	authzAddr := cfg.XDS.AuthzAddress
	if authzAddr == "" {
		authzAddr = cfg.Authz.Server.Address
	}
	if _, port, err := net.SplitHostPort(authzAddr); err == nil && port == "0" {
		return &meshModel{ids: ids, err: errNoAuthzAddress}, nil
	}
	nodes, err := envoy.Translate(envoyMesh(cfg, authzAddr))
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	return newMeshModel(cfg, nodes, ids), nil
}

// newMeshModel is the model of cfg's agents translated to nodes, with
// the indexes of their discovered peers.
func newMeshModel(cfg *config.Config, nodes map[string]*envoy.NodeResources, ids map[string]string) *meshModel {
	m := &meshModel{nodes: nodes, ids: ids, ports: make(map[string]uint32, len(cfg.Agents)), callers: map[string][]string{}}
	for _, a := range cfg.Agents {
		m.ports[a.Name] = a.InboundPort
	}
	for name, nr := range nodes {
		for _, p := range nr.DiscoveredPeers {
			m.callers[p] = append(m.callers[p], name)
		}
	}
	return m
}

// podSource is what the Kubernetes source (kube.Source) adds to the
// mesh: the endpoints of the peers whose clusters are EDS clusters
// (envoy.Peer.Discovered), the IPs of the pods of the peer's MeshAgent,
// and node ids naming one pod of an agent (<agent>.<pod>.<namespace>).
type podSource interface {
	Endpoints(agent string) []envoy.Endpoint
	WatchEndpoints(ctx context.Context, apply func(agents []string)) error
	NodeAgent(node string) (agent string, ok bool)
}

// errNoEndpoints: a peer is discovered but no source gives endpoints
// (the configuration file cannot make one: not reached).
var errNoEndpoints = errors.New("xds: a peer's endpoints are discovered, but the configuration source gives none")

// envoyMesh is the translator's input from cfg; authzAddr is the
// ext_authz address the Envoys dial.
func envoyMesh(cfg *config.Config, authzAddr string) envoy.Mesh {
	m := envoy.Mesh{
		TrustDomain: cfg.TrustDomain,
		Agents:      cfg.Agents,
		Authz:       envoy.Authz{Address: authzAddr, Plaintext: cfg.Authz.Server.Plaintext},
		Options:     cfg.Envoy,
		Quotas:      envoyQuotas(cfg.Authz.Policy.Quotas),

		JSONRPCRoutes: envoyJSONRPCRoutes(cfg.Authz.Policy.JSONRPC),
	}
	if cfg.Authz.Server.TLSFromSecrets() {
		// The Envoys accept only the ext_authz listener's own SVID.
		m.Authz.SPIFFEID = authzServerID(cfg.TrustDomain)
	}
	return m
}

// meshInputs is everything of cfg that translateMesh reads: equal inputs
// translate to equal resources.
func meshInputs(cfg *config.Config) any {
	return struct {
		TrustDomain, XDSAuthzAddress, AuthzAddress string
		Plaintext, AuthzFromSecrets                bool
		Agents                                     []envoy.Agent
		Envoy                                      envoy.Options
		Quotas                                     []envoy.Quota
		JSONRPCRoutes                              []envoy.JSONRPCRoute
	}{cfg.TrustDomain, cfg.XDS.AuthzAddress, cfg.Authz.Server.Address, cfg.Authz.Server.Plaintext,
		cfg.Authz.Server.TLSFromSecrets(), cfg.Agents, cfg.Envoy, envoyQuotas(cfg.Authz.Policy.Quotas),
		envoyJSONRPCRoutes(cfg.Authz.Policy.JSONRPC)}
}

// xdsMesh adapts the envoy translator and the secrets manager to the
// interfaces the xds package declares.
type xdsMesh struct {
	model atomic.Pointer[meshModel]
	mgr   *secrets.Manager
	self  string // the xDS listener's SPIFFE ID

	// quarantine is the set the model was translated with: its nodes get
	// no configuration and no SVID (see quarantinexds.go).
	quarantine atomic.Pointer[extauthz.Quarantine]

	// pods gives the discovered peers' endpoints and the agents of pods'
	// node ids; nil in file mode, where a node id is an agent's name.
	pods podSource
}

// SPIFFEIDOf implements xds.Identities.
func (x *xdsMesh) SPIFFEIDOf(node string) (string, bool) {
	m := x.model.Load()
	id, ok := m.ids[x.agentOf(m, node)]
	return id, ok
}

// agentOf is the agent whose Envoy node is: the node id itself (an
// agent's name), or in Kubernetes mode the agent of one of its pods'
// <agent>.<pod>.<namespace>. "" for none of m's agents.
func (x *xdsMesh) agentOf(m *meshModel, node string) string {
	if _, ok := m.ids[node]; ok {
		return node
	}
	if x.pods != nil {
		if agent, ok := x.pods.NodeAgent(node); ok {
			return agent
		}
	}
	return ""
}

// NodeResources implements xds.Resources: the translated listeners,
// clusters and routes plus the node's SDS secrets from the secrets manager.
func (x *xdsMesh) NodeResources(ctx context.Context, node string) (*xds.NodeResources, error) {
	m := x.model.Load()
	if m.err != nil {
		return nil, m.err
	}
	agent := x.agentOf(m, node)
	nr, ok := m.nodes[agent]
	id := m.ids[agent]
	if !ok || envoy.IsReservedSPIFFEID(id) || x.quarantine.Load().Has(id) { // meshward's own keys are never a node's; a quarantined node is withdrawn
		return nil, xds.ErrUnknownNode
	}
	svid, err := x.mgr.SVID(ctx, id)
	if err != nil {
		return nil, err
	}
	key, err := svid.KeyPEM()
	if err != nil {
		return nil, err
	}
	bundle, err := x.mgr.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	out := &xds.NodeResources{Secrets: []types.Resource{
		envoy.TLSCertificateSecret(envoy.SecretDefault, svid.ChainPEM(), key),
		envoy.ValidationSecret(envoy.SecretRootCA, bundle.PEM()),
	}}
	for _, name := range nr.GenericSecrets {
		v, err := x.mgr.Secret(ctx, name)
		if err != nil {
			return nil, err
		}
		out.Secrets = append(out.Secrets, envoy.GenericSecret(name, v))
	}
	for _, l := range nr.Listeners {
		out.Listeners = append(out.Listeners, l)
	}
	for _, c := range nr.Clusters {
		out.Clusters = append(out.Clusters, c)
	}
	for _, r := range nr.Routes {
		out.Routes = append(out.Routes, r)
	}
	// The discovered peers' load assignments, as the source has them now:
	// a change of them pushes this node again (pushEndpoints).
	for _, peer := range nr.DiscoveredPeers {
		if x.pods == nil {
			return nil, errNoEndpoints
		}
		cla, err := envoy.LoadAssignment(peer, m.ports[peer], x.pods.Endpoints(peer))
		if err != nil {
			return nil, fmt.Errorf("xds: %w", err)
		}
		out.Endpoints = append(out.Endpoints, cla)
	}
	return out, nil
}

// pushEndpoints pushes the nodes that call agents (an EDS cluster to one
// of them) again, after their endpoints changed: only their load
// assignments differ, so only endpoints are sent. Nodes of every other
// agent are left alone.
func (x *xdsMesh) pushEndpoints(ctx context.Context, srv *xds.Server, agents []string) {
	m := x.model.Load()
	callers := map[string]bool{}
	for _, a := range agents {
		for _, c := range m.callers[a] {
			callers[c] = true
		}
	}
	if len(callers) == 0 {
		return
	}
	x.updateAgents(ctx, srv, callers)
}

// updateAgents updates the connected nodes of agents (every pod's, in
// Kubernetes mode). Update logs and counts per-node failures; a node that
// failed keeps its previous snapshot.
func (x *xdsMesh) updateAgents(ctx context.Context, srv *xds.Server, agents map[string]bool) {
	m := x.model.Load()
	_ = srv.UpdateMatching(ctx, func(node string) bool { return agents[x.agentOf(m, node)] })
}

// svidSource serves one SPIFFE ID's SVID from the secrets manager as a
// listener's X.509 SVID (x509svid.Source), and the trust bundle as the one
// its clients' SVIDs must chain to (x509bundle.Source): for the xDS
// listener and, with authz.tls.fromSecrets, the ext_authz listener. Both
// are asked at every handshake; the manager caches them.
type svidSource struct {
	mgr *secrets.Manager
	id  string
}

// GetX509SVID is the SVID, issued and rotated by the manager.
func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := s.mgr.SVID(ctx, s.id)
	if err != nil {
		return nil, err
	}
	id, err := spiffeid.FromString(v.ID)
	if err != nil {
		return nil, fmt.Errorf("svid %s: %w", v.ID, err)
	}
	return &x509svid.SVID{ID: id, Certificates: v.Chain, PrivateKey: v.Key}, nil
}

// GetX509BundleForTrustDomain is the trust bundle, for the SVID's own
// trust domain only.
func (s svidSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	own, err := spiffeid.FromString(s.id)
	if err != nil {
		return nil, fmt.Errorf("svid %s: %w", s.id, err)
	}
	if td != own.TrustDomain() {
		return nil, fmt.Errorf("no trust bundle for trust domain %q", td)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := s.mgr.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	return x509bundle.FromX509Authorities(td, b.Roots), nil
}

// affected lists the agents a secrets change concerns; all reports that
// every node is (trust bundle change).
func (x *xdsMesh) affected(ch secrets.Change) (agents map[string]bool, all bool) {
	if ch.Bundle {
		return nil, true
	}
	m := x.model.Load()
	agents = map[string]bool{}
	for agent, nr := range m.nodes {
		if slices.Contains(ch.SVIDs, m.ids[agent]) || slices.ContainsFunc(nr.GenericSecrets, func(s string) bool { return slices.Contains(ch.Secrets, s) }) {
			agents[agent] = true
		}
	}
	return agents, false
}

// buildXDS is the "xds" component: the secrets manager, the xDS server,
// the push of secret changes to the nodes they concern, and config reload
// (SIGHUP or file change) that re-translates the agents and pushes.
func buildXDS(ctx context.Context, d *serveDeps) (*component, error) {
	q0 := d.quarantineSet()
	model, err := translateMesh(withoutQuarantinedPeers(d.cfg, q0))
	if err != nil {
		return nil, err
	}
	xopts := []xds.Option{xds.WithLogger(d.log), xds.WithRegisterer(d.reg), xds.WithNodeCheck(envoy.CheckEnvoyVersion)}
	if d.audit != nil {
		xopts = append(xopts, xds.WithEventSink(xdsEvents{d.audit}))
	}
	mgr, err := d.secretsManager()
	if err != nil {
		return nil, err
	}
	mesh := &xdsMesh{mgr: mgr, self: xdsServerID(d.cfg.TrustDomain)}
	if ps, ok := d.origin.Source().(podSource); ok {
		mesh.pods = ps
	}
	mesh.model.Store(model)
	mesh.quarantine.Store(q0)
	if model.err != nil {
		d.log.Error("xds: serving no node configuration", "error", model.err)
	}
	ids := []string{mesh.self}
	for _, id := range model.ids {
		if !q0.Has(id) { // a quarantined node's SVID is not kept
			ids = append(ids, id)
		}
	}
	if err := mgr.Register(ids...); err != nil {
		return nil, err
	}
	var svids x509svid.Source
	var bundles x509bundle.Source
	if !d.cfg.XDS.Insecure {
		src := svidSource{mgr, mesh.self}
		svids, bundles = src, src
	}
	srv, err := xds.New(d.cfg.XDS, mesh, mesh, svids, bundles, xopts...)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	d.admin.Handle("GET /debug/xds", srv.DebugHandler())
	d.status.src.Nodes = srv

	sub := mgr.Subscribe()
	push := func(ctx context.Context) error {
		defer sub.Close()
		for {
			ch, err := sub.Next(ctx)
			if err != nil {
				return nil // ctx ended
			}
			agents, all := mesh.affected(ch)
			switch {
			case all:
				// Update logs and counts per-node failures; the previous
				// snapshot stays for a node that failed.
				_ = srv.Update(ctx)
			case len(agents) > 0:
				mesh.updateAgents(ctx, srv, agents)
			}
		}
	}

	path := configPath(d.cfg)
	// reload takes a new configuration generation (or the error loading it).
	// It runs on the one watcher's goroutine; a quarantine change runs on
	// the quarantine watch's, so both hold mu.
	var mu sync.Mutex
	cur := d.cfg
	reload := func(ctx context.Context, cfg *config.Config, err error) {
		mu.Lock()
		defer mu.Unlock()
		if path == "" {
			return // the embedded quickstart does not change
		}
		if err == nil && reflect.DeepEqual(meshInputs(cfg), meshInputs(cur)) {
			d.log.Debug("xds: agents unchanged")
			d.reloads.Report(runtime.ComponentXDS, nil, "", false)
			return
		}
		if err == nil && cfg.TrustDomain != d.cfg.TrustDomain {
			err = errors.New("trustDomain changed: restart to apply")
		}
		var m *meshModel
		q := mesh.quarantine.Load()
		if err == nil {
			m, err = translateMesh(withoutQuarantinedPeers(cfg, q))
		}
		if err == nil {
			var ids []string
			for _, id := range m.ids {
				if !q.Has(id) {
					ids = append(ids, id)
				}
			}
			err = mgr.Register(ids...)
		}
		if err != nil {
			d.reloads.Report(runtime.ComponentXDS, err, fmt.Sprintf("%d agents", len(mesh.model.Load().nodes)), false)
			return
		}
		d.reloads.Report(runtime.ComponentXDS, nil, "", false)
		cur = cfg
		old := mesh.model.Swap(m)
		mgr.Retire(slices.Collect(maps.Values(old.ids)), slices.Collect(maps.Values(m.ids))) // removed agents' SVIDs
		_ = srv.Update(ctx)
		d.log.Info("xds: agents reloaded", "agents", len(m.nodes))
	}
	if d.quarantine != nil {
		d.quarantine.subscribe(func(s *quarantineSnapshot) {
			mu.Lock()
			defer mu.Unlock()
			applyQuarantineXDS(d, mesh, mgr, srv, cur, s)
		})
	}
	tasks := []task.Task{
		{Name: "xds", Run: srv.Run},
		{Name: "xds-secret-push", Run: push},
	}
	if mesh.pods != nil {
		tasks = append(tasks, task.Task{Name: "xds-endpoints", Run: func(ctx context.Context) error {
			return mesh.pods.WatchEndpoints(ctx, func(agents []string) { mesh.pushEndpoints(ctx, srv, agents) })
		}})
	}
	// File changes and SIGHUP come from the configuration's one watcher;
	// with the authz component, after its reload.
	if d.origin.Subscribe("xds", nil, reload) {
		tasks = append(tasks, configReloadTask(d))
	}
	return &component{
		tasks: tasks,
		ready: admin.CheckerFunc(srv.Ready), // and "secrets", run by serve
	}, nil
}
