package vaulttest_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshward/meshward/secrets/vaulttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestServerIssuesSPIFFECertificate proves the helper starts a real Vault:
// PKI is mounted, a role allowing spiffe://mesh.local/* URI SANs is made,
// and a certificate issued through vault/api carries exactly that SAN.
func TestServerIssuesSPIFFECertificate(t *testing.T) {
	srv := vaulttest.Start(t)
	c := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := c.Sys().MountWithContext(ctx, "pki", &vaultMount); err != nil {
		t.Fatalf("mount pki: %v", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "pki/root/generate/internal", map[string]any{
		"common_name": "mesh.local test root", "key_type": "ec", "key_bits": 256, "ttl": "24h",
	}); err != nil {
		t.Fatalf("generate root: %v", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "pki/roles/agent", map[string]any{
		"allowed_uri_sans": "spiffe://mesh.local/*", "require_cn": false, "allow_any_name": false,
		"key_type": "ec", "key_bits": 256, "max_ttl": "1h",
	}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	const id = "spiffe://mesh.local/ns/default/sa/planner"
	sec, err := c.Logical().WriteWithContext(ctx, "pki/issue/agent", map[string]any{"uri_sans": id, "ttl": "10m"})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	certPEM, _ := sec.Data["certificate"].(string)
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatalf("issue returned no PEM certificate: %v", sec.Data)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != id {
		t.Fatalf("URI SANs = %v, want exactly [%s]", cert.URIs, id)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > 11*time.Minute {
		t.Errorf("lifetime %v, want the 10m TTL asked for", life)
	}

	// A SPIFFE ID outside the role's pattern is refused by Vault.
	if _, err := c.Logical().WriteWithContext(ctx, "pki/issue/agent", map[string]any{"uri_sans": "spiffe://other.domain/x"}); err == nil {
		t.Fatal("issuing for another trust domain succeeded, want Vault to refuse it")
	}
}
