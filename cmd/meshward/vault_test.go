package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	vault "github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshward/meshward/secrets/vaulttest"
)

// TestServeWithVault runs serve against a real Vault: an agent's Envoy
// asking over xDS for its certificate gets one issued by Vault's PKI with
// its SPIFFE ID, the trust bundle is Vault's root, the API key comes from
// Vault KV, and the audit redaction key is read from Vault KV too. The
// ext_authz listener (authz.tls.fromSecrets) serves mTLS with its own
// Vault-issued SVID, and the agent's certificate is what it accepts.
func TestServeWithVault(t *testing.T) {
	srv := vaulttest.Start(t)
	vc := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	setupVault(t, ctx, vc)

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(srv.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := testConfig(t)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "secrets:\n  source: local\n  certTTL: 1h\n", `secrets:
  source: vault
  certTTL: 10m
  vault:
    address: `+srv.Addr+`
    auth:
      token: {file: `+tokenFile+`}
    pki: {mount: pki, role: agent}
    kv:
      - {name: audit-key, mount: secret, path: meshward/audit, key: hmac}
      - {name: exec-api-key, mount: secret, path: agents/executor, key: apiKey}
`, 1)
	s = strings.Replace(s, "  insecure: true\n", "  insecure: true\n  authzAddress: meshward.mesh.local:9191\n", 1)
	s = strings.Replace(s, "  plaintext: true\n", "  tls: {fromSecrets: true}\n", 1)
	s = strings.Replace(s, "audit:\n  sinks:\n    - type: stdout\n", "audit:\n  redaction: {keySecret: audit-key}\n  sinks:\n    - {type: file, path: "+filepath.Join(dir, "audit.log")+"}\n", 1)
	s = strings.Replace(s, "      - name: executor\n        addresses: [127.0.0.1:15003]\n", "      - name: executor\n        addresses: [127.0.0.1:15003]\n        credential: {secret: exec-api-key, format: \"Bearer %s\"}\n", 1)
	if !strings.Contains(s, "source: vault") || !strings.Contains(s, "keySecret") || !strings.Contains(s, "exec-api-key, format") || !strings.Contains(s, "fromSecrets") {
		t.Fatal("test setup: could not rewrite the quickstart for Vault")
	}
	if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}

	sctx, stop := context.WithCancel(ctx)
	lw, wait := serveInProcess(t, sctx, io.Discard, "--config", cfgPath)
	admin := lw.waitFor(t, "admin server listening", "address")
	xdsAddr := lw.waitFor(t, "xds serving", "address")
	authzAddr := lw.waitFor(t, "ext_authz server listening", "address")
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	waitReady(t, rctx, admin)

	secretsGot := fetchSecrets(t, ctx, xdsAddr, "planner", "default", "ROOTCA", "exec-api-key")
	checkOverMTLS(t, ctx, authzAddr, secretsGot["default"], secretsGot["ROOTCA"])
	stop()
	wait()

	chain := secretsGot["default"].GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	leaf := firstCert(t, chain)
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://mesh.local/ns/default/sa/planner" {
		t.Errorf("planner certificate URI SANs = %v", leaf.URIs)
	}
	root := firstCert(t, secretsGot["ROOTCA"].GetValidationContext().GetTrustedCa().GetInlineBytes())
	if root.Subject.CommonName != "vault test root" {
		t.Errorf("trust bundle root = %q, want Vault's root", root.Subject.CommonName)
	}
	if err := leaf.CheckSignatureFrom(root); err != nil {
		t.Errorf("planner certificate not signed by Vault's root: %v", err)
	}
	if got := string(secretsGot["exec-api-key"].GetGenericSecret().GetSecret().GetInlineBytes()); got != "sk-test-123" {
		t.Errorf("generic secret = %q, want the value stored in Vault KV", got)
	}

	// validate --live checks every SPIFFE ID serve issues, the
	// listeners' included: fine with the role above, refused once the
	// role allows the agents' namespace only.
	if code, _, errs := runCmd(t, "validate", "--config", cfgPath, "--live"); code != 0 {
		t.Fatalf("validate --live = %d: %s", code, errs)
	}
	if _, err := vc.Logical().WriteWithContext(ctx, "pki/roles/agent", map[string]any{"allowed_uri_sans": "spiffe://mesh.local/ns/*",
		"require_cn": false, "key_type": "ec", "key_bits": 256, "max_ttl": "1h", "client_flag": true, "server_flag": true}); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "validate", "--config", cfgPath, "--live")
	if code == 0 || !strings.Contains(errs, "spiffe://mesh.local/meshward/authz") || !strings.Contains(errs, "spiffe://mesh.local/meshward/xds") {
		t.Errorf("validate --live with a role for ns/* only = %d: %s; want both listeners' IDs refused", code, errs)
	}
}

// checkOverMTLS calls Check on the ext_authz listener as an agent's Envoy
// does: presenting the agent's SVID, and accepting only a server
// certificate that chains to the bundle and carries the ext_authz SPIFFE
// ID (Envoy's SAN match, not a host name).
func checkOverMTLS(t *testing.T, ctx context.Context, addr string, svid, bundle *tlsv3.Secret) {
	t.Helper()
	tc := svid.GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle.GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		t.Fatal("empty trust bundle")
	}
	var serverID string
	cfg := &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS12,
		// Verified below as Envoy does: chain to the bundle, SAN match.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if len(certs[0].URIs) == 1 {
				serverID = certs[0].URIs[0].String()
			}
			return nil
		},
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := refRequest(t, "allow_get.json")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(cctx, req)
	if err != nil {
		t.Fatalf("Check over mTLS with the agent's Vault-issued SVID: %v", err)
	}
	if resp.GetOkResponse() == nil {
		t.Errorf("allow_get.json over mTLS: %v", resp)
	}
	if want := "spiffe://mesh.local/meshward/authz"; serverID != want {
		t.Errorf("ext_authz server SPIFFE ID = %q, want %q", serverID, want)
	}
	// Without a client certificate the listener refuses.
	plainCfg := cfg.Clone()
	plainCfg.Certificates = nil
	conn2, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(plainCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := authv3.NewAuthorizationClient(conn2).Check(cctx, req); err == nil {
		t.Error("Check without a client certificate succeeded")
	}
}

func setupVault(t *testing.T, ctx context.Context, c *vault.Client) {
	t.Helper()
	if err := c.Sys().MountWithContext(ctx, "pki", &vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		path string
		data map[string]any
	}{
		{"pki/root/generate/internal", map[string]any{"common_name": "vault test root", "key_type": "ec", "key_bits": 256, "ttl": "24h"}},
		{"pki/roles/agent", map[string]any{"allowed_uri_sans": "spiffe://mesh.local/*", "require_cn": false, "allow_any_name": false,
			"key_type": "ec", "key_bits": 256, "max_ttl": "1h", "client_flag": true, "server_flag": true}},
		{"secret/data/meshward/audit", map[string]any{"data": map[string]any{"hmac": "0123456789abcdef0123456789abcdef"}}},
		{"secret/data/agents/executor", map[string]any{"data": map[string]any{"apiKey": "sk-test-123"}}},
	}
	for _, s := range steps {
		if _, err := c.Logical().WriteWithContext(ctx, s.path, s.data); err != nil {
			t.Fatalf("vault write %s: %v", s.path, err)
		}
	}
}

// fetchSecrets subscribes over delta ADS as node and returns the named secrets.
func fetchSecrets(t *testing.T, ctx context.Context, addr, node string, names ...string) map[string]*tlsv3.Secret {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node, Cluster: node},
		TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	got := map[string]*tlsv3.Secret{}
	for len(got) < len(names) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("xDS stream: %v (have %d of %v)", err, len(got), names)
		}
		for _, r := range resp.GetResources() {
			var s tlsv3.Secret
			if err := r.GetResource().UnmarshalTo(&s); err != nil {
				t.Fatal(err)
			}
			got[r.GetName()] = &s
		}
		_ = stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
	}
	return got
}

func firstCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatalf("no PEM certificate in %q", pemBytes)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
