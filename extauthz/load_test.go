package extauthz

import (
	"context"
	"time"

	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/extauthz/internal/loadbench"
)

// BenchmarkLoad drives concurrent Checks of the reference workload over one
// real gRPC connection against meshward (declarative path, schema step
// stubbed) and against a no-op server, alternating in short rounds so that
// both see the same machine load; each iteration is ten rounds of each.
// Run with -benchtime 3x for more rounds. ratio_rps is the median over
// rounds of meshward/no-op throughput (target >= 0.85); the client only
// receives response bytes (loadbench.Options.DecodeResponses).
func BenchmarkLoad(b *testing.B) {
	srvCfg, pol := quickstartPolicy(b)
	srvCfg.Address = "127.0.0.1:0"
	s := newServer(b, srvCfg, newStore(b, pol, withAcceptBodies()), Options{})
	reqs := []*authv3.CheckRequest{
		loadRefRequest(b, "allow.json"), loadRefRequest(b, "deny_abac.json"), loadRefRequest(b, "allow_get.json"),
	}
	for _, decode := range []bool{false, true} {
		name := "client=bytes"
		if decode {
			name = "client=decode"
		}
		b.Run(name, func(b *testing.B) { loadRounds(b, s, reqs, decode) })
	}
}

// loadRounds serves both sides with meshward's own gRPC server options.
func loadRounds(b *testing.B, s *Server, reqs []*authv3.CheckRequest, decode bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var all loadbench.Result
	for b.Loop() {
		r, err := loadbench.Run(ctx, loadbench.Options{Subject: s, Requests: reqs, Rounds: 10, PerRound: 4000, Concurrency: 64, DecodeResponses: decode,
			ServerOptions: ServerOptions(Config{})})
		if err != nil {
			b.Fatal(err)
		}
		all.Subject = append(all.Subject, r.Subject...)
		all.Baseline = append(all.Baseline, r.Baseline...)
	}
	subj, base := loadbench.Median(all.Subject), loadbench.Median(all.Baseline)
	if subj.Errors+base.Errors > 0 {
		b.Fatalf("RPC errors: meshward %d, no-op %d", subj.Errors, base.Errors)
	}
	b.ReportMetric(subj.Throughput, "meshward_checks/s")
	b.ReportMetric(base.Throughput, "noop_checks/s")
	b.ReportMetric(all.ThroughputRatio(), "ratio_rps")
	b.ReportMetric(float64(subj.P99.Microseconds()), "meshward_p99_µs")
	b.ReportMetric(float64(base.P99.Microseconds()), "noop_p99_µs")
	b.ReportMetric(all.P99Ratio(), "ratio_p99")
	b.ReportMetric(all.CPURatio(), "ratio_cpu_per_check")
	b.Log("\n" + all.String())
}
