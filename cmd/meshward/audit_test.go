package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/extauthz/audit"
)

// writeAuditLog writes records through a real audit Logger to a file.
func writeAuditLog(t *testing.T, path string, opts []audit.Option, recs ...*audit.Record) {
	t.Helper()
	l, err := audit.New(audit.Config{Sinks: []audit.SinkConfig{{Type: "file", Path: path}}},
		append([]audit.Option{audit.WithHMACKey([]byte("0123456789abcdef-cli-test"))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	runLogger(t, l, recs...)
}

// runLogger runs l, audits recs and stops it.
func runLogger(t *testing.T, l *audit.Logger, recs ...*audit.Record) {
	t.Helper()
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

func auditRecords() []*audit.Record {
	return []*audit.Record{
		{Kind: audit.KindDecision, Decision: "allow", Principal: "spiffe://mesh.local/a", Reason: "allowed"},
		{Kind: audit.KindDecision, Decision: "deny", Principal: "spiffe://mesh.local/b", Reason: "missing_role"},
		{Kind: audit.KindDecision, Decision: "deny", Principal: "spiffe://mesh.local/b", Reason: "missing_role"},
		{Kind: audit.KindXDSNack, Message: "rejected"},
	}
}

func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := filepath.Join(dir, "good.log")
	writeAuditLog(t, good, nil, auditRecords()...)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n") // header, 4 records, final seal, ""
	if len(lines) != 7 || !strings.HasPrefix(lines[0], `{"meta":"segment"`) || !strings.HasPrefix(lines[5], `{"meta":"seal"`) {
		t.Fatalf("unexpected log %q", lines)
	}
	gap := write("gap.log", lines[0]+lines[1]+lines[3]+lines[4]+lines[5])
	torn := write("torn.log", lines[0]+lines[1]+lines[2][:20])
	// A rotated file and the current one, verified together in order:
	// the second logger continues the chain from the rotated file.
	rot := filepath.Join(dir, "cur.log")
	recs := auditRecords()
	writeAuditLog(t, rot, nil, recs[:2]...)
	if err := os.Rename(rot, rot+".20260101T000000.000000000Z"); err != nil {
		t.Fatal(err)
	}
	writeAuditLog(t, rot, nil, recs[2:]...)

	// A sealed and encrypted log, and its keys in files.
	sealKey := write("seal.key", "0123456789abcdef-seal-key\n")
	encKey := write("enc.key", strings.Repeat("ab", 32)+"\n")
	otherKey := write("other.key", strings.Repeat("cd", 32))
	sealed := filepath.Join(dir, "sealed.log")
	writeAuditLog(t, sealed, []audit.Option{audit.WithSealKey([]byte("0123456789abcdef-seal-key")),
		audit.WithEncryptionKey([]byte(strings.Repeat("ab", 32)))}, auditRecords()...)
	if b, _ := os.ReadFile(sealed); bytes.Contains(b, []byte("spiffe://")) || bytes.Contains(b, []byte("missing_role")) {
		t.Fatalf("the encrypted log holds record fields in clear:\n%s", b)
	}

	// Personal fields shredded per data subject; alice forgotten.
	store := filepath.Join(dir, "subjects")
	shredded := filepath.Join(dir, "shredded.log")
	shredRecs := auditRecords()
	shredRecs[0].Subject, shredRecs[1].Subject = "alice", "bob"
	l, err := audit.New(audit.Config{Shred: audit.Shred{KeyStore: store}, Encryption: audit.Encryption{KeyFile: encKey},
		Sinks: []audit.SinkConfig{{Type: "file", Path: shredded}}})
	if err != nil {
		t.Fatal(err)
	}
	runLogger(t, l, shredRecs...)
	if code, out, errs := runCmd(t, "audit", "forget", "--key", encKey, "--key-store", store, "--reason", "ticket 42", "alice"); code != 0 || !strings.Contains(out, "forgotten: subject id ") {
		t.Fatalf("forget: exit %d\n%s\n%s", code, out, errs)
	}

	// An Ed25519-sealed log, verified with the public key alone.
	seed := write("seed.key", strings.Repeat("07", 32))
	edLog := filepath.Join(dir, "ed.log")
	edL, err := audit.New(audit.Config{Seal: audit.Seal{Algorithm: audit.SealEd25519, KeyFile: seed}, Sinks: []audit.SinkConfig{{Type: "file", Path: edLog}}})
	if err != nil {
		t.Fatal(err)
	}
	runLogger(t, edL, auditRecords()...)
	code, pubOut, errs := runCmd(t, "audit", "pubkey", seed)
	if code != 0 || len(strings.TrimSpace(pubOut)) != 64 {
		t.Fatalf("pubkey: exit %d %q %s", code, pubOut, errs)
	}
	pub := write("seal.pub", pubOut)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		{name: "good log", args: []string{"audit", "verify", good}, wantOut: []string{
			"records:    4 (1 processes)", "decisions:  allow 1, deny 2", "kinds:      decision 3, xds_nack 1",
			"2  spiffe://mesh.local/b", "problems:   0", "1 segments, 1 seals", "signatures NOT checked", "ends with a final seal",
			// An allow's reason is no deny reason: missing_role is the only one.
			"top deny reasons:\n         2  missing_role\nchain:"}},
		{name: "record removed", args: []string{"audit", "verify", gap}, wantCode: 1, wantOut: []string{"gap: seq 3 after 1", "chain broken"}, wantErr: []string{"2 problem"}},
		{name: "torn last line", args: []string{"audit", "verify", torn}, wantCode: 1, wantOut: []string{"torn last line"}},
		{name: "current file alone: continues from the rotated file's head", args: []string{"audit", "verify", rot}, wantOut: []string{"records:    2", "continues from "}},
		{name: "with rotated files", args: []string{"audit", "verify", "--rotated", rot}, wantOut: []string{"records:    4", "problems:   0", "2 segments, 2 seals"}},
		{name: "rotated files in the wrong order", args: []string{"audit", "verify", rot, rot + ".20260101T000000.000000000Z"}, wantCode: 1, wantOut: []string{"chain broken"}},
		{name: "sealed and encrypted, with the keys", args: []string{"audit", "verify", "--seal-key", sealKey, "--key", encKey, sealed},
			wantOut: []string{"records:    4", "signatures checked", "4 records decrypted", "problems:   0", "2  spiffe://mesh.local/b"}},
		{name: "encrypted, no key", args: []string{"audit", "verify", "--seal-key", sealKey, sealed}, wantCode: 1, wantOut: []string{"no encryption key given"}},
		{name: "encrypted, wrong key", args: []string{"audit", "verify", "--key", otherKey, sealed}, wantCode: 1, wantOut: []string{"not the given key"}},
		{name: "sealed, wrong seal key", args: []string{"audit", "verify", "--seal-key", encKey, "--key", encKey, sealed}, wantCode: 1, wantOut: []string{"not the given hmac-sha256 key"}},
		{name: "unsigned log with a seal key", args: []string{"audit", "verify", "--seal-key", sealKey, good}, wantCode: 1, wantOut: []string{"segment is not signed"}},
		{name: "read decrypts", args: []string{"audit", "read", "--key", encKey, sealed}, wantOut: []string{`"principal":"spiffe://mesh.local/b"`, `"reason":"missing_role"`, `"kind":"xds_nack"`}},
		{name: "read without the key", args: []string{"audit", "read", sealed}, wantCode: 1, wantErr: []string{"no encryption key given"}},
		{name: "read after forget", args: []string{"audit", "read", "--key", encKey, "--key-store", store, shredded}, wantOut: []string{`"subject":"bob"`, `"subject":"forgotten:`}},
		{name: "verify after forget", args: []string{"audit", "verify", "--key", encKey, shredded}, wantOut: []string{"records:    4", "problems:   0"}},
		{name: "forget twice is no error", args: []string{"audit", "forget", "--key", encKey, "--key-store", store, "alice"}, wantOut: []string{"forgotten: subject id"}},
		{name: "forget without a key", args: []string{"audit", "forget", "--key-store", store, "alice"}, wantCode: 1, wantErr: []string{"--key and --key-store are required"}},
		{name: "forget without a subject", args: []string{"audit", "forget", "--key", encKey, "--key-store", store}, wantCode: 1, wantErr: []string{"one SUBJECT is required"}},
		{name: "read with a key store but no key", args: []string{"audit", "read", "--key-store", store, shredded}, wantCode: 1, wantErr: []string{"--key-store needs --key"}},
		{name: "query denies as a table", args: []string{"audit", "query", "--decision", "deny", good}, wantOut: []string{"TIME", "PRINCIPAL", "spiffe://mesh.local/b", "missing_role"}, wantErr: []string{"2 of 4 records matched"}},
		{name: "query by principal as JSON", args: []string{"audit", "query", "--principal", "*/a", "--format", "json", good}, wantOut: []string{`"principal":"spiffe://mesh.local/a"`}, wantErr: []string{"1 of 4 records matched"}},
		{name: "query by kind and reason", args: []string{"audit", "query", "--kind", "decision", "--reason", "missing_*", good}, wantErr: []string{"2 of 4 records matched"}},
		{name: "query by time", args: []string{"audit", "query", "--since", "1h", good}, wantErr: []string{"4 of 4 records matched"}},
		{name: "query before a time", args: []string{"audit", "query", "--until", "2020-01-01T00:00:00Z", good}, wantErr: []string{"0 of 4 records matched"}},
		{name: "query by tool", args: []string{"audit", "query", "--tool", "delete_repo", good}, wantErr: []string{"0 of 4 records matched"}},
		{name: "query a decrypted subject", args: []string{"audit", "query", "--key", encKey, "--key-store", store, "--subject", "bob", shredded}, wantOut: []string{"bob"}, wantErr: []string{"1 of 4 records matched"}},
		{name: "query an encrypted log without the key", args: []string{"audit", "query", shredded}, wantCode: 1, wantErr: []string{"no encryption key given"}},
		{name: "query with a bad decision", args: []string{"audit", "query", "--decision", "maybe", good}, wantCode: 1, wantErr: []string{"not allow, deny or error"}},
		{name: "query with a bad time", args: []string{"audit", "query", "--since", "yesterday", good}, wantCode: 1, wantErr: []string{"not an RFC 3339 time"}},
		{name: "ed25519 seals with the public key", args: []string{"audit", "verify", "--seal-alg", "ed25519", "--seal-key", pub, edLog}, wantOut: []string{"signatures checked", "problems:   0"}},
		{name: "ed25519 seals with another public key", args: []string{"audit", "verify", "--seal-alg", "ed25519", "--seal-key", encKey, edLog}, wantCode: 1, wantOut: []string{"not the given ed25519 key"}},
		{name: "pubkey of a bad seed", args: []string{"audit", "pubkey", sealKey}, wantCode: 1, wantErr: []string{"want 32 bytes"}},
		{name: "missing file", args: []string{"audit", "verify", filepath.Join(dir, "nope")}, wantCode: 1, wantErr: []string{"no such file"}},
		{name: "missing key file", args: []string{"audit", "verify", "--key", filepath.Join(dir, "nope"), good}, wantCode: 1, wantErr: []string{"--key"}},
		{name: "no file", args: []string{"audit", "verify"}, wantCode: 1, wantErr: []string{"a FILE is required"}},
		{name: "no subcommand", args: []string{"audit"}, wantCode: 1, wantErr: []string{"Usage: meshward audit verify"}},
		{name: "unknown subcommand", args: []string{"audit", "tail"}, wantCode: 1, wantErr: []string{`unknown subcommand "tail"`}},
		{name: "help", args: []string{"audit", "verify", "-h"}, wantOut: []string{"Usage: meshward audit verify", "-rotated", "-seal-key"}},
		{name: "help of audit", args: []string{"audit", "--help"}, wantOut: []string{"Usage: meshward audit verify", "meshward audit read"}},
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

// TestServeAuditKeysFromSecrets: serve reads the seal and encryption keys
// from the secrets source (keySecret) as it does the redaction key, and
// the file it writes verifies with them.
func TestServeAuditKeysFromSecrets(t *testing.T) {
	dir := t.TempDir()
	sealFile, encFile := filepath.Join(dir, "seal.key"), filepath.Join(dir, "enc.key")
	if err := os.WriteFile(sealFile, []byte("serve-seal-key-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(encFile, []byte(strings.Repeat("5a", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "audit.log")
	path := testConfigReplacing(t, "secrets:\n  source: local\n  certTTL: 1h\n\naudit:\n  sinks:\n    - type: stdout\n",
		"secrets:\n  source: local\n  certTTL: 1h\n  local:\n    secrets: {audit-seal: "+sealFile+", audit-enc: "+encFile+"}\n\n"+
			"audit:\n  seal: {keySecret: audit-seal}\n  encryption: {keySecret: audit-enc}\n  sinks:\n    - {type: file, path: "+logPath+"}\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--components", "authz")
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, refRequest(t, "allow.json")); err != nil {
		t.Fatal(err)
	}
	cancel()
	wait()
	code, out, errs := runCmd(t, "audit", "verify", "--seal-key", sealFile, "--key", encFile, logPath)
	if code != 0 || !strings.Contains(out, "signatures checked") || !strings.Contains(out, "records decrypted") || !strings.Contains(out, "ends with a final seal") {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, errs)
	}
	// The same keys, read from the configuration's secrets source.
	code, out, errs = runCmd(t, "audit", "verify", "--config", path, logPath)
	if code != 0 || !strings.Contains(out, "signatures checked") || !strings.Contains(out, "records decrypted") {
		t.Fatalf("verify --config: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := runCmd(t, "audit", "query", "--config", path, "--format", "json", logPath); code != 0 || !strings.Contains(out, `"decision":"allow"`) {
		t.Fatalf("query --config: exit %d\n%s", code, out)
	}
}
