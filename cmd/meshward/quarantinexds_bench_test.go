package main

import (
	"fmt"
	"testing"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/extauthz"
)

// BenchmarkQuarantineTranslate5000 is the part of applying a quarantine
// that grows with the mesh, without the push: the set built and the
// 5,000 agents (3 peers each) translated again without the quarantined
// one's peer entries. The push to connected Envoys (srv.Update) is not
// measured.
func BenchmarkQuarantineTranslate5000(b *testing.B) {
	cfg := syntheticMesh(b, 5000)
	b.ReportAllocs()
	for b.Loop() {
		q := extauthz.NewQuarantine([]string{"spiffe://mesh.local/ns/default/sa/a42"})
		if _, err := translateMesh(withoutQuarantinedPeers(cfg, q)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuarantineApply5000 is what applyQuarantineXDS does now for
// the same change: the model built from the previous one, translating
// again only the three agents that peer with a42 (requarantineMesh).
// The push (srv.Update) is not measured.
func BenchmarkQuarantineApply5000(b *testing.B) {
	cfg := syntheticMesh(b, 5000)
	prev, err := translateMesh(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		q := extauthz.NewQuarantine([]string{"spiffe://mesh.local/ns/default/sa/a42"})
		if _, err := requarantineMesh(cfg, prev, nil, q); err != nil {
			b.Fatal(err)
		}
	}
}

// syntheticMesh is the quickstart with n agents a0..a(n-1), each with the
// next three as peers (a ring).
func syntheticMesh(tb testing.TB, n int) *config.Config {
	tb.Helper()
	cfg, err := config.Quickstart()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Authz.Server.Address = "127.0.0.1:9191"
	cfg.Agents = make([]envoy.Agent, n)
	for i := range n {
		a := envoy.Agent{
			Name: fmt.Sprintf("a%d", i), SPIFFEID: fmt.Sprintf("spiffe://mesh.local/ns/default/sa/a%d", i),
			Host: fmt.Sprintf("pod-%d", i), InboundPort: 15001, OutboundPort: 15101, App: "127.0.0.1:8081",
		}
		for j := 1; j <= 3; j++ {
			a.Peers = append(a.Peers, envoy.Peer{Name: fmt.Sprintf("a%d", (i+j)%n), Addresses: []string{fmt.Sprintf("10.0.%d.%d:15001", ((i+j)%n)/250, ((i+j)%n)%250+1)}})
		}
		cfg.Agents[i] = a
	}
	if err := envoy.ValidateAgents("agents", cfg.Agents); err != nil {
		tb.Fatal(err)
	}
	return cfg
}
