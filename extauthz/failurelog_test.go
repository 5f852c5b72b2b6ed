package extauthz

import (
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshward/meshward/extauthz/audit"
)

// queueFullAuditor refuses every record as a full audit queue does.
type queueFullAuditor struct{ n atomic.Int64 }

func (a *queueFullAuditor) Audit(*audit.Record) error { a.n.Add(1); return audit.ErrQueueFull }

// TestFailedCheckWarningRateLimited: when every Check fails (a full audit
// queue here; clients cancelling behave alike) each is denied and counted,
// but the warning is logged once per interval; the others go to debug.
func TestFailedCheckWarningRateLimited(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			logs := &logBuffer{}
			reg := prometheus.NewRegistry()
			a := &queueFullAuditor{}
			s := newServer(t, plainConfig(), &countingDecider{}, Options{Auditor: a, Registry: reg,
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))})
			const n = 50
			for range n {
				resp, err := s.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
				if err != nil || resp.GetDeniedResponse() == nil {
					t.Fatalf("Check with a full audit queue = %v, %v; want a deny", resp, err)
				}
			}
			if got := testutil.ToFloat64(s.m.errors.WithLabelValues(ReasonAudit)); got != n {
				t.Fatalf("errors{audit_failure} = %v, want %d", got, n)
			}
			if got := logs.count("level=WARN"); got != 1 {
				t.Fatalf("%d warnings for %d failed Checks, want 1:\n%s", got, n, logs)
			}
			wantDebug := 0
			if level == slog.LevelDebug {
				wantDebug = n - 1
			}
			if got := logs.count("level=DEBUG msg=\"ext_authz check failed; denying\""); got != wantDebug {
				t.Fatalf("%d debug lines, want %d", got, wantDebug)
			}
			if strings.Contains(logs.String(), "audit: audit:") {
				t.Fatalf("doubled prefix in:\n%s", logs)
			}
			if !strings.Contains(logs.String(), "record decision: audit: queue full") {
				t.Fatalf("the warning does not say what failed:\n%s", logs)
			}
		})
	}
}
