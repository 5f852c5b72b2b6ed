package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// quarantineUpdateTimeout bounds the push of one quarantine change.
const quarantineUpdateTimeout = 30 * time.Second

// quarantineSet is the set in effect now, nil without a state file.
func (d *serveDeps) quarantineSet() *extauthz.Quarantine {
	if d.quarantine == nil {
		return nil
	}
	var q *extauthz.Quarantine
	d.quarantine.subscribeOnce(func(s *quarantineSnapshot) { q = s.set })
	return q
}

// withoutQuarantinedPeers is cfg with every peers entry that names a
// quarantined agent removed, so that no Envoy keeps a cluster to it; cfg
// itself is not changed.
func withoutQuarantinedPeers(cfg *config.Config, q *extauthz.Quarantine) *config.Config {
	if q.Len() == 0 {
		return cfg
	}
	ids := make(map[string]string, len(cfg.Agents))
	for _, a := range cfg.Agents {
		ids[a.Name] = a.SPIFFEID
	}
	c := *cfg
	c.Agents = make([]envoy.Agent, len(cfg.Agents))
	for i, a := range cfg.Agents {
		a.Peers = slices.DeleteFunc(slices.Clone(a.Peers), func(p envoy.Peer) bool { return q.Has(ids[p.Name]) })
		c.Agents[i] = a
	}
	return &c
}

// applyQuarantineXDS translates again the agents whose peers' quarantine
// changed (requarantineMesh), withdraws the quarantined nodes (no configuration:
// their streams end and reconnects are refused) and stops keeping their
// SVIDs, keeps the released ones' again, and pushes to the nodes whose
// configuration changed. When
// the translation fails the previous model stays (logged); ext_authz
// denies all the same.
func applyQuarantineXDS(d *serveDeps, mesh *xdsMesh, mgr *secrets.Manager, srv *xds.Server, cfg *config.Config, s *quarantineSnapshot) {
	prev, was := mesh.model.Load(), mesh.quarantine.Load()
	m, err := requarantineMesh(cfg, prev, was, s.set)
	if err != nil {
		d.log.Error("xds: quarantine not applied to the agents' configuration; ext_authz still denies", logError, err)
		return
	}
	mesh.quarantine.Store(s.set)
	mesh.model.Store(m)
	var keep []string
	for _, id := range m.ids {
		if !s.set.Has(id) {
			keep = append(keep, id)
		}
	}
	mgr.Retire(slices.Collect(maps.Values(m.ids)), keep) // the quarantined SVIDs are no longer renewed
	if err := mgr.Register(keep...); err != nil {
		d.log.Error("xds: released agents' SVIDs not registered", logError, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), quarantineUpdateTimeout)
	defer cancel()
	// Only the nodes of agents translated again (requarantineMesh keeps
	// every other node's resources, the same pointer) and of the agents
	// quarantined or released are rebuilt and pushed: at 5,000 nodes,
	// rebuilding all of them was most of a quarantine's time.
	push := map[string]bool{}
	for agent, nr := range m.nodes {
		if prev == nil || prev.nodes[agent] != nr {
			push[agent] = true
		}
	}
	for agent, id := range m.ids {
		if was.Has(id) != s.set.Has(id) {
			push[agent] = true
		}
	}
	if len(push) >= len(m.ids) {
		_ = srv.Update(ctx) // logs and counts per-node failures itself
		return
	}
	mesh.updateAgents(ctx, srv, push)
}

// maxRequarantineNodes is how many affected nodes requarantineMesh
// translates one by one; beyond it the whole mesh is translated once.
const maxRequarantineNodes = 64

// requarantineMesh is translateMesh(withoutQuarantinedPeers(cfg, now)),
// given prev = translateMesh(withoutQuarantinedPeers(cfg, was)): a node's
// resources depend only on the mesh-wide inputs, its own agent and its
// own peers, so only the agents with a peer whose quarantine changed are
// translated again; every other node keeps prev's resources (immutable,
// shared by the two models). Without a usable prev, or when many nodes
// are affected, the whole mesh is translated.
func requarantineMesh(cfg *config.Config, prev *meshModel, was, now *extauthz.Quarantine) (*meshModel, error) {
	if prev == nil || prev.err != nil || prev.nodes == nil || len(prev.nodes) != len(cfg.Agents) {
		return translateMesh(withoutQuarantinedPeers(cfg, now))
	}
	ids := prev.ids
	var affected []string
	for _, a := range cfg.Agents {
		if _, ok := prev.nodes[a.Name]; !ok || ids[a.Name] != a.SPIFFEID {
			return translateMesh(withoutQuarantinedPeers(cfg, now)) // prev is of another configuration
		}
		for _, p := range a.Peers {
			if id := ids[p.Name]; was.Has(id) != now.Has(id) {
				affected = append(affected, a.Name)
				break
			}
		}
	}
	if len(affected) > maxRequarantineNodes {
		return translateMesh(withoutQuarantinedPeers(cfg, now))
	}
	nodes := maps.Clone(prev.nodes)
	if len(affected) > 0 {
		filtered := withoutQuarantinedPeers(cfg, now)
		authzAddr := filtered.XDS.AuthzAddress
		if authzAddr == "" {
			authzAddr = filtered.Authz.Server.Address
		}
		m := envoyMesh(filtered, authzAddr)
		for _, name := range affected {
			nr, err := envoy.TranslateAgent(m, name)
			if err != nil {
				return nil, fmt.Errorf("xds: %w", err)
			}
			nodes[name] = nr
		}
	}
	return newMeshModel(cfg, nodes, ids), nil
}
