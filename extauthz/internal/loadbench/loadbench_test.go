package loadbench

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun checks the harness itself (not any timing): every round of both
// servers is measured and both servers are stopped.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, decode := range []bool{false, true} {
		res, err := Run(ctx, Options{Subject: NoOp{}, Requests: []*authv3.CheckRequest{{}}, Concurrency: 4, PerRound: 50, Rounds: 3, DecodeResponses: decode})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Subject) != 3 || len(res.Baseline) != 3 {
			t.Fatalf("rounds = %d/%d, want 3/3", len(res.Subject), len(res.Baseline))
		}
		for _, s := range append(res.Subject, res.Baseline...) {
			if s.Errors != 0 || s.Throughput <= 0 || s.P99 < s.P50 {
				t.Errorf("round stats %+v", s)
			}
		}
		if res.ThroughputRatio() <= 0 || res.String() == "" {
			t.Errorf("ratio %v", res.ThroughputRatio())
		}
	}
	if _, err := Run(ctx, Options{}); err == nil {
		t.Error("Run without a subject succeeded")
	}
}
