package extauthz

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/extauthz/internal/loadbench"
	"github.com/meshward/meshward/policy"
)

// BenchmarkLoad drives concurrent Checks of the reference workload (the
// four refload requests) over one real gRPC connection, alternating in
// short rounds between a subject and a baseline so that both see the same
// machine load; each iteration is ten rounds of each. Run with
// -benchtime 3x for more rounds. ratio_rps is the median over rounds of
// subject/baseline throughput. Variants:
//
//   - rules: declarative rules, schema step stubbed (accept-all), vs no-op;
//     client=decode also decodes every response.
//   - rules+schema: rules and the real JSON Schema step, vs no-op (target >= 0.80).
//   - rego: the reference Rego policy (mode rego, schema in Rego), vs no-op
//     (target >= 0.60).
//   - audit=file/vs=off: rules with a file audit sink vs the same server
//     without audit (target >= 0.90).
func BenchmarkLoad(b *testing.B) {
	srvCfg, pol := quickstartPolicy(b)
	srvCfg.Address = "127.0.0.1:0"
	reqs := []*authv3.CheckRequest{
		loadRefRequest(b, "allow.json"), loadRefRequest(b, "deny_abac.json"),
		loadRefRequest(b, "deny_schema.json"), loadRefRequest(b, "allow_get.json"),
	}
	rules := newServer(b, srvCfg, newStore(b, pol, withAcceptBodies()), Options{})
	for _, decode := range []bool{false, true} {
		name := "rules/client=bytes"
		if decode {
			name = "rules/client=decode"
		}
		b.Run(name, func(b *testing.B) { loadRounds(b, rules, nil, reqs, decode) })
	}
	b.Run("rules+schema", func(b *testing.B) {
		s := newServer(b, srvCfg, newStore(b, pol, quickstartOptions(pol)), Options{})
		loadRounds(b, s, nil, reqs, false)
	})
	b.Run("rego", func(b *testing.B) {
		rego, dir := refloadRego()
		cfg := policy.Config{Identities: pol.Identities, Rego: rego, Mode: policy.ModeRego}
		s := newServer(b, srvCfg, newStore(b, cfg, policy.Options{Dir: dir, NewRego: policy.NewOPARego}), Options{})
		loadRounds(b, s, nil, reqs, false)
	})
	b.Run("audit=file/vs=off", func(b *testing.B) {
		log, stop := runAuditFile(b)
		defer stop()
		s := newServer(b, srvCfg, newStore(b, pol, withAcceptBodies()), Options{Auditor: log})
		loadRounds(b, s, rules, reqs, false)
	})
}

// runAuditFile runs an audit logger writing a file (default fsync policy)
// until stop.
func runAuditFile(b *testing.B) (*audit.Logger, func()) {
	log, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: filepath.Join(b.TempDir(), "audit.log")}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- log.Run(ctx) }()
	for log.Ready() != nil {
		time.Sleep(time.Millisecond)
	}
	return log, func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("audit Run = %v", err)
		}
	}
}

// loadRounds serves both sides with meshward's own gRPC server options;
// a nil baseline is the no-op server.
func loadRounds(b *testing.B, s, baseline *Server, reqs []*authv3.CheckRequest, decode bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	opts := loadbench.Options{Subject: s, Requests: reqs, Rounds: 10, PerRound: 4000, Concurrency: 64, DecodeResponses: decode,
		ServerOptions: serverOptions(Config{})}
	if baseline != nil {
		opts.Baseline = baseline
	}
	var all loadbench.Result
	for b.Loop() {
		r, err := loadbench.Run(ctx, opts)
		if err != nil {
			b.Fatal(err)
		}
		all.Subject = append(all.Subject, r.Subject...)
		all.Baseline = append(all.Baseline, r.Baseline...)
	}
	subj, base := loadbench.Median(all.Subject), loadbench.Median(all.Baseline)
	if subj.Errors+base.Errors > 0 {
		b.Fatalf("RPC errors: subject %d, baseline %d", subj.Errors, base.Errors)
	}
	b.ReportMetric(subj.Throughput, "subject_checks/s")
	b.ReportMetric(base.Throughput, "baseline_checks/s")
	b.ReportMetric(all.ThroughputRatio(), "ratio_rps")
	b.ReportMetric(float64(subj.P99.Microseconds()), "subject_p99_µs")
	b.ReportMetric(float64(base.P99.Microseconds()), "baseline_p99_µs")
	b.ReportMetric(all.P99Ratio(), "ratio_p99")
	b.ReportMetric(all.CPURatio(), "ratio_cpu_per_check")
	b.Log("\n" + all.String())
}
