package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// TestSecurityEventsReachAudit: the xDS server's and the secrets source's
// security events land in the audit file with the kinds issue 8 names.
func TestSecurityEventsReachAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path}}},
		audit.WithHMACKey([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	for l.Ready() != nil {
		if ctx.Err() != nil {
			t.Fatal("audit logger never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}

	se := secretsEvents{l}
	se.SecurityEvent(secrets.EventVaultLogin, "login failed", slog.String("method", "approle"))
	se.SecurityEvent(secrets.EventIssuance, "issue failed")
	xe := xdsEvents{l}
	xe.SecurityEvent(ctx, xds.SecurityEvent{Kind: xds.EventRefused, Reason: xds.ReasonNodeMismatch, Node: "viewer",
		PeerID: "spiffe://mesh.local/ns/default/sa/planner", Remote: "127.0.0.1:5"})
	xe.SecurityEvent(ctx, xds.SecurityEvent{Kind: xds.EventNACK, Node: "planner", Type: "listener", Version: "v1", Detail: "bad"})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var kinds []string
	var refused audit.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if audit.IsMetaLine(sc.Bytes()) { // segment header or seal
			continue
		}
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds = append(kinds, r.Kind)
		if r.Kind == audit.KindXDSRefused {
			refused = r
		}
	}
	want := []string{audit.KindVaultAuthFailure, audit.KindCertIssueFailure, audit.KindXDSRefused, audit.KindXDSNack}
	if len(kinds) != len(want) {
		t.Fatalf("kinds = %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Errorf("record %d kind = %q, want %q", i, kinds[i], want[i])
		}
	}
	if refused.Node != "viewer" || refused.Reason != xds.ReasonNodeMismatch || refused.Principal == "" || refused.Detail["remote"] == "" {
		t.Errorf("refused record = %+v, want node, reason, principal and remote", refused)
	}
}
