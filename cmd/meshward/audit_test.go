package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/extauthz/audit"
)

// writeAuditLog writes records through a real audit Logger to a file.
func writeAuditLog(t *testing.T, path string, recs ...*audit.Record) {
	t.Helper()
	l, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path}}},
		audit.WithHMACKey([]byte("0123456789abcdef-cli-test")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	for _, r := range recs {
		if err := l.Audit(r); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.log")
	writeAuditLog(t, good,
		&audit.Record{Kind: audit.KindDecision, Decision: "allow", Principal: "spiffe://mesh.local/a", Reason: "allowed"},
		&audit.Record{Kind: audit.KindDecision, Decision: "deny", Principal: "spiffe://mesh.local/b", Reason: "missing_role"},
		&audit.Record{Kind: audit.KindDecision, Decision: "deny", Principal: "spiffe://mesh.local/b", Reason: "missing_role"},
		&audit.Record{Kind: audit.KindXDSNack, Message: "rejected"},
	)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gap := write("gap.log", lines[0]+lines[2])
	torn := write("torn.log", lines[0]+lines[1][:20])
	// A rotated file and the current one, verified together in order.
	rot := filepath.Join(dir, "cur.log")
	write("cur.log.20260101T000000.000000000Z", lines[0]+lines[1])
	write("cur.log", lines[2]+lines[3])

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{name: "good log", args: []string{"audit", "verify", good}, wantOut: []string{
			"records:    4 (1 processes)", "decisions:  allow 1, deny 2", "kinds:      decision 3, xds_nack 1",
			"2  spiffe://mesh.local/b", "problems:   0",
			// An allow's reason is no deny reason: missing_role is the only one.
			"top deny reasons:\n         2  missing_role\nproblems:"}},
		{name: "gap", args: []string{"audit", "verify", gap}, wantCode: 1, wantOut: []string{"gap: seq 3 after 1"}, wantErr: []string{"1 problem"}},
		{name: "torn last line", args: []string{"audit", "verify", torn}, wantCode: 1, wantOut: []string{"torn last line"}},
		{name: "current file alone: first seq may be any", args: []string{"audit", "verify", rot}, wantOut: []string{"records:    2"}},
		{name: "with rotated files", args: []string{"audit", "verify", "--rotated", rot}, wantOut: []string{"records:    4", "problems:   0"}},
		{name: "rotated files in the wrong order", args: []string{"audit", "verify", rot, rot + ".20260101T000000.000000000Z"}, wantCode: 1, wantOut: []string{"goes back"}},
		{name: "missing file", args: []string{"audit", "verify", filepath.Join(dir, "nope")}, wantCode: 1, wantErr: []string{"no such file"}},
		{name: "no file", args: []string{"audit", "verify"}, wantCode: 1, wantErr: []string{"a FILE is required"}},
		{name: "no subcommand", args: []string{"audit"}, wantCode: 1, wantErr: []string{"Usage: meshward audit verify"}},
		{name: "unknown subcommand", args: []string{"audit", "tail"}, wantCode: 1, wantErr: []string{`unknown subcommand "tail"`}},
		{name: "help", args: []string{"audit", "verify", "-h"}, wantOut: []string{"Usage: meshward audit verify", "-rotated"}},
		{name: "help of audit", args: []string{"audit", "--help"}, wantOut: []string{"Usage: meshward audit verify"}},
		{name: "flag after the file", args: []string{"audit", "verify", rot, "--rotated"}, wantOut: []string{"records:    4", "problems:   0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.wantCode, out, errs)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
}
