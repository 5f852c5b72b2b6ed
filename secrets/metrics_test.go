package secrets

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsPresentFromStart: the counters' known label values are
// exported at 0 from the start, so that rate() alerts have a series.
func TestMetricsPresentFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"meshward_secrets_issuance_total":      3,
		"meshward_secrets_vault_login_total":   2,
		"meshward_secrets_vault_renewal_total": 3,
		"meshward_secrets_poll_errors_total":   2,
	} {
		if n := testutil.CollectAndCount(reg, name); n != want {
			t.Errorf("%s: %d series at start, want %d", name, n, want)
		}
	}
	const exp = `
# HELP meshward_secrets_poll_errors_total Failed polls of the trust bundle (what=bundle) or a generic secret (what=secret).
# TYPE meshward_secrets_poll_errors_total counter
meshward_secrets_poll_errors_total{what="bundle"} 0
meshward_secrets_poll_errors_total{what="secret"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "meshward_secrets_poll_errors_total"); err != nil {
		t.Error(err)
	}
}
