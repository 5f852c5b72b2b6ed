package secrets

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/meshward/meshward/secrets/vaulttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testContext(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// metricValue reads one counter or gauge series.
func metricValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

// eventLog records security events.
type eventLog struct {
	mu    sync.Mutex
	kinds []string
}

func (e *eventLog) SecurityEvent(kind, _ string, _ ...slog.Attr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.kinds = append(e.kinds, kind)
}

func (e *eventLog) count(kind string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, k := range e.kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or ctx ends.
func eventually(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for: %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

const (
	testTD       = "spiffe://mesh.local/"
	testRoleID   = "meshward-test-role-id"
	testSecretID = "meshward-test-secret-id"
	testPolicy   = `
path "pki/issue/agent" { capabilities = ["create", "update"] }
path "pki/roles/*" { capabilities = ["read"] }
path "pki/issuers" { capabilities = ["list"] }
path "pki/issuer/*" { capabilities = ["read"] }
path "pki_root/issuers" { capabilities = ["list"] }
path "pki_root/issuer/*" { capabilities = ["read"] }
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
`
)

// vaultEnv is a real Vault dev server set up the way meshward expects:
// a root CA in pki_root, an intermediate in pki with the role `agent`
// allowing spiffe://mesh.local/*, and an AppRole `meshward` whose role_id
// and secret_id are in files.
type vaultEnv struct {
	srv          *vaulttest.Server
	roleIDFile   string
	secretIDFile string
}

type envOpts struct {
	intermediateWithoutRoot bool
	role                    map[string]any // AppRole role overrides
}

func startVault(t testing.TB, o envOpts) *vaultEnv {
	t.Helper()
	e := &vaultEnv{srv: vaulttest.Start(t)}
	dir := t.TempDir()
	e.roleIDFile, e.secretIDFile = filepath.Join(dir, "role-id"), filepath.Join(dir, "secret-id")
	writeFile(t, e.roleIDFile, testRoleID)
	writeFile(t, e.secretIDFile, testSecretID)
	e.setup(t, o)
	return e
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t testing.TB, ctx context.Context, c *vault.Client, path string, data map[string]any) *vault.Secret {
	t.Helper()
	s, err := c.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		t.Fatalf("vault write %s: %v", path, err)
	}
	return s
}

// setup (re)creates PKI, policy and AppRole (after a Restart too).
func (e *vaultEnv) setup(t testing.TB, o envOpts) {
	t.Helper()
	ctx := testContext(t, 60*time.Second)
	c := e.srv.Client()
	mount := vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}
	for _, m := range []string{"pki_root", "pki"} {
		if err := c.Sys().MountWithContext(ctx, m, &mount); err != nil {
			t.Fatalf("mount %s: %v", m, err)
		}
	}
	root := mustWrite(t, ctx, c, "pki_root/root/generate/internal", map[string]any{
		"common_name": "mesh.local test root", "key_type": "ec", "key_bits": 256, "ttl": "8760h", "issuer_name": "root-1",
	})
	rootPEM, _ := root.Data["certificate"].(string)
	csr := mustWrite(t, ctx, c, "pki/intermediate/generate/internal", map[string]any{
		"common_name": "mesh.local test intermediate", "key_type": "ec", "key_bits": 256,
	})
	signed := mustWrite(t, ctx, c, "pki_root/root/sign-intermediate", map[string]any{
		"csr": csr.Data["csr"], "format": "pem", "ttl": "4380h", "common_name": "mesh.local test intermediate",
	})
	interPEM, _ := signed.Data["certificate"].(string)
	bundle := interPEM + "\n" + rootPEM
	if o.intermediateWithoutRoot {
		bundle = interPEM
	}
	mustWrite(t, ctx, c, "pki/intermediate/set-signed", map[string]any{"certificate": bundle})
	mustWrite(t, ctx, c, "pki/roles/agent", map[string]any{
		"allowed_uri_sans": "spiffe://mesh.local/*", "require_cn": false, "allow_any_name": false,
		"enforce_hostnames": false, "key_type": "ec", "key_bits": 256, "max_ttl": "1h",
		"not_before_duration": "1s", "no_store": true,
	})
	if err := c.Sys().PutPolicyWithContext(ctx, "meshward", testPolicy); err != nil {
		t.Fatalf("policy: %v", err)
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &vault.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	role := map[string]any{"token_policies": "meshward", "token_ttl": "1h", "token_max_ttl": "2h"}
	for k, v := range o.role {
		role[k] = v
	}
	mustWrite(t, ctx, c, "auth/approle/role/meshward", role)
	mustWrite(t, ctx, c, "auth/approle/role/meshward/role-id", map[string]any{"role_id": testRoleID})
	mustWrite(t, ctx, c, "auth/approle/role/meshward/custom-secret-id", map[string]any{"secret_id": testSecretID})
}

// config is an AppRole configuration for the env.
func (e *vaultEnv) config() VaultConfig {
	return VaultConfig{
		Address: e.srv.Addr,
		Auth:    VaultAuth{AppRole: &VaultAppRoleAuth{RoleIDFile: e.roleIDFile, SecretIDFile: e.secretIDFile}},
		PKI:     VaultPKI{Mount: "pki", Role: "agent"},
	}
}

func newTestVault(t testing.TB, cfg VaultConfig, ttl time.Duration, opts ...Option) *Vault {
	t.Helper()
	v, err := NewVault(cfg, ttl, opts...)
	if err != nil {
		t.Fatalf("NewVault: %v", err)
	}
	return v
}

// runManager runs m until the test ends.
func runManager(t testing.TB, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}
