package extauthz

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/policy"
)

// BenchmarkDecision is the full in-process decision on the reference
// workload: canonical request, identity, declarative rules, response
// shaping and metrics. The schema step is stubbed out (accept-all) here;
// the schema/ cases run the real JSON Schema step (target <= 15 µs/op).
func BenchmarkDecision(b *testing.B) {
	srvCfg, pol := quickstartPolicy(b)
	srvCfg.Address = "127.0.0.1:0"
	s := newServer(b, srvCfg, newStore(b, pol, withAcceptBodies()), Options{})
	withCert := loadRefRequest(b, "allow.json")
	withPeer(spiffe("planner"), makeCert(b, certSpec{uris: []string{spiffe("planner")}, ekus: clientEKU, urlEnc: true}))(withCert)
	cases := map[string]*authv3.CheckRequest{"allow.json+peer-cert": withCert}
	for _, name := range []string{"allow.json", "allow_get.json", "deny_abac.json"} {
		cases[name] = loadRefRequest(b, name)
	}
	for _, name := range []string{"allow.json", "allow_get.json", "deny_abac.json", "allow.json+peer-cert"} {
		req := cases[name]
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	withSchema := newServer(b, srvCfg, newStore(b, pol, quickstartOptions(pol)), Options{})
	rego, dir := refloadRego()
	regoCfg := policy.Config{Identities: pol.Identities, Rego: rego, Mode: policy.ModeRego}
	withRego := newServer(b, srvCfg, newStore(b, regoCfg, policy.Options{Dir: dir, NewRego: policy.NewOPARego}), Options{})
	for _, c := range []struct {
		step, file string
		s          *Server
	}{{"schema", "allow.json", withSchema}, {"schema", "deny_schema.json", withSchema}, {"rego", "allow.json", withRego}} {
		req := loadRefRequest(b, c.file)
		b.Run(c.step+"/"+c.file, func(b *testing.B) {
			s := c.s
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPolicyDecide is the declarative policy evaluation alone.
func BenchmarkPolicyDecide(b *testing.B) {
	_, pol := quickstartPolicy(b)
	rev, err := policy.Compile(&pol, td, withAcceptBodies())
	if err != nil {
		b.Fatal(err)
	}
	in := &policy.Input{Method: "POST", Path: "/v1/tasks", Host: "executor.mesh.local", Principal: spiffe("planner")}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := rev.Decide(ctx, in); !d.Allow {
			b.Fatal(d.Message)
		}
	}
}
