package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/detect"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

// TestServeDetection: a serve with a detection rule in enforce mode
// quarantines the agent whose Checks fail their schema three times: the
// state file names the detector, the quarantine watch applies it (its
// next Check is denied 403 quarantined) and the audit stream has the
// detection and the quarantine by "detector".
func TestServeDetection(t *testing.T) {
	cfg := testConfigReplacing(t, "\naudit:\n", "\nquarantine:\n  file: state/quarantine.json\n\n"+
		"detection:\n  rules:\n    - name: schema-burst\n      match: schemaViolations\n      threshold: 3\n      window: 1m\n      quarantine: enforce\n\naudit:\n")
	file := filepath.Join(filepath.Dir(cfg), "state", "quarantine.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var auditOut lockedBuffer // the quickstart's audit sink is stdout
	lw, wait := serveInProcess(t, ctx, &auditOut, "--config", cfg, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	ac := authv3.NewAuthorizationClient(conn)
	bad, good := refRequest(t, "deny_schema.json"), refRequest(t, "allow.json") // both from planner
	body := func(r *authv3.CheckRequest) string {
		t.Helper()
		resp, err := ac.Check(ctx, r)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if dr := resp.GetDeniedResponse(); dr != nil {
			return dr.GetBody()
		}
		return "allowed"
	}
	if got := body(good); got != "allowed" {
		t.Fatalf("before: %s", got)
	}
	for range 2 {
		body(bad)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("quarantined below the threshold")
	}
	body(bad)
	for !strings.Contains(body(good), `"error":"quarantined"`) {
		if ctx.Err() != nil {
			t.Fatal("planner was never quarantined")
		}
		time.Sleep(10 * time.Millisecond) // polling, not timing
	}
	st, err := quarantine.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := st.Find(plannerID); !ok || e.By != detect.By || !strings.Contains(e.Reason, "schema-burst") {
		t.Fatalf("state file entry %+v %v", e, ok)
	}
	for {
		a := auditOut.String()
		if strings.Contains(a, `"kind":"`+audit.KindDetection+`"`) && strings.Contains(a, `"action":"quarantined"`) &&
			strings.Contains(a, `"kind":"`+audit.KindAgentQuarantined+`"`) && strings.Contains(a, `"by":"detector"`) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("audit stream lacks the detection and the quarantine by the detector:\n%s", a)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
