package ui

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// TestEndpointsDocumented: docs/ui.md names every endpoint and every JSON
// field the endpoints answer, so the documented API cannot fall behind.
func TestEndpointsDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "ui.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, ep := range []string{"nodes", "certificates", "policy", "decisions", "denies", "quarantine"} {
		if !strings.Contains(doc, "`/ui/api/"+ep+"`") {
			t.Errorf("docs/ui.md does not list /ui/api/%s", ep)
		}
	}
	for _, v := range []any{NodesResponse{}, xds.NodeStatus{}, xds.AckStatus{}, xds.NACKStatus{},
		CertificatesResponse{}, secrets.CertStatus{}, PolicyResponse{}, policy.ReloadResult{},
		DecisionsResponse{}, RatePoint{}, ReasonCount{}, DeniesResponse{}, Deny{}, QuarantineResponse{}, Quarantined{}} {
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !strings.Contains(doc, "`"+name+"`") && !strings.Contains(doc, "`"+name+"[]`") {
				t.Errorf("docs/ui.md does not name field %q of %s", name, rt.Name())
			}
		}
	}
}
