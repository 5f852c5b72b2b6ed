package secrets

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// TestVaultIssueAndBundle issues SVIDs from an intermediate in a real
// Vault with every auth method that needs no outside service, and checks
// the chain (leaf + intermediate, no root) against the bundle (the root).
func TestVaultIssueAndBundle(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 60*time.Second)
	c := e.srv.Client()

	tokenFile := t.TempDir() + "/token"
	tok := mustWrite(t, ctx, c, "auth/token/create", map[string]any{"policies": "meshward", "ttl": "1h"})
	writeFile(t, tokenFile, tok.Auth.ClientToken)
	t.Setenv("MESHWARD_TEST_VAULT_TOKEN", tok.Auth.ClientToken)

	wc, err := c.Clone()
	if err != nil {
		t.Fatal(err)
	}
	wc.SetToken(e.srv.Token)
	wc.SetWrappingLookupFunc(func(string, string) string { return "5m" })
	wrapped, err := wc.Logical().WriteWithContext(ctx, "auth/approle/role/meshward/secret-id", nil)
	if err != nil || wrapped.WrapInfo == nil {
		t.Fatalf("wrapped secret-id: %v %v", wrapped, err)
	}
	wrappedFile := t.TempDir() + "/wrapped"
	writeFile(t, wrappedFile, wrapped.WrapInfo.Token)

	tests := []struct {
		name string
		auth VaultAuth
	}{
		{"token from file", VaultAuth{Token: &VaultTokenAuth{File: tokenFile}}},
		{"token from env", VaultAuth{Token: &VaultTokenAuth{Env: "MESHWARD_TEST_VAULT_TOKEN"}}},
		{"approle", VaultAuth{AppRole: &VaultAppRoleAuth{RoleIDFile: e.roleIDFile, SecretIDFile: e.secretIDFile}}},
		{"approle inline role id", VaultAuth{AppRole: &VaultAppRoleAuth{RoleID: testRoleID, SecretIDFile: e.secretIDFile}}},
		{"approle wrapped secret id", VaultAuth{AppRole: &VaultAppRoleAuth{RoleIDFile: e.roleIDFile, SecretIDFile: wrappedFile, Wrapped: true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.Auth = tc.auth
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			v := newTestVault(t, cfg, 10*time.Minute, WithLogger(log))
			defer func() {
				// Credentials never reach the log.
				for _, secret := range []string{v.client.Token(), tok.Auth.ClientToken, testSecretID, wrapped.WrapInfo.Token} {
					if secret != "" && strings.Contains(logs.String(), secret) {
						t.Errorf("a credential was logged: %s", logs.String())
					}
				}
				if !strings.Contains(logs.String(), "vault login") {
					t.Errorf("login not logged: %s", logs.String())
				}
			}()
			const id = testTD + "ns/default/sa/planner"
			s, err := v.IssueSVID(ctx, id)
			if err != nil {
				t.Fatalf("IssueSVID: %v", err)
			}
			if len(s.Chain) != 2 {
				t.Fatalf("chain has %d certificates, want leaf + intermediate", len(s.Chain))
			}
			if s.Chain[1].Subject.CommonName != "mesh.local test intermediate" {
				t.Errorf("chain[1] = %q, want the intermediate", s.Chain[1].Subject.CommonName)
			}
			if life := s.Lifetime(); life < 10*time.Minute || life > 11*time.Minute {
				t.Errorf("lifetime %v, want the 10m asked for", life)
			}
			b, err := v.Bundle(ctx)
			if err != nil {
				t.Fatalf("Bundle: %v", err)
			}
			if len(b.Roots) != 1 || b.Roots[0].Subject.CommonName != "mesh.local test root" {
				t.Fatalf("bundle = %v, want the one root", b.Roots)
			}
			if err := s.Verify(b, time.Now()); err != nil {
				t.Fatalf("chain does not verify against the bundle: %v", err)
			}
			if err := s.Check(id, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}

	// A wrapping token works once: a second Vault value built on the same
	// file (a new process) cannot unwrap it again.
	cfg := e.config()
	cfg.Auth = VaultAuth{AppRole: &VaultAppRoleAuth{RoleIDFile: e.roleIDFile, SecretIDFile: wrappedFile, Wrapped: true}}
	if err := newTestVault(t, cfg, time.Hour).Login(ctx); err == nil || !strings.Contains(err.Error(), "unwrap") {
		t.Fatalf("second unwrap: err = %v, want an unwrap error", err)
	}

	// CA rotation: a second root in the root mount joins the bundle.
	mustWrite(t, ctx, c, "pki_root/root/rotate/internal", map[string]any{"common_name": "mesh.local test root 2", "key_type": "ec", "key_bits": 256, "issuer_name": "root-2"})
	cfg = e.config()
	cfg.PKI.RootMounts = []string{"pki_root"}
	b, err := newTestVault(t, cfg, time.Hour).Bundle(ctx)
	if err != nil {
		t.Fatalf("Bundle after rotation: %v", err)
	}
	var names []string
	for _, r := range b.Roots {
		names = append(names, r.Subject.CommonName)
	}
	if len(names) != 2 || names[0] != "mesh.local test root" || names[1] != "mesh.local test root 2" {
		t.Fatalf("bundle during rotation = %v, want both roots", names)
	}
}

// TestVaultChainWithoutRoot: an intermediate imported without its root
// (vault#8407) still yields leaf + intermediate; the bundle then needs the
// root's mount and says so.
func TestVaultChainWithoutRoot(t *testing.T) {
	e := startVault(t, envOpts{intermediateWithoutRoot: true})
	ctx := testContext(t, 60*time.Second)
	v := newTestVault(t, e.config(), 5*time.Minute)
	const id = testTD + "ns/default/sa/viewer"
	s, err := v.IssueSVID(ctx, id)
	if err != nil {
		t.Fatalf("IssueSVID: %v", err)
	}
	if len(s.Chain) != 2 {
		t.Fatalf("chain has %d certificates, want 2", len(s.Chain))
	}
	if _, err := v.Bundle(ctx); err == nil || !strings.Contains(err.Error(), "rootMounts") {
		t.Fatalf("Bundle without the root's mount: err = %v, want one naming rootMounts", err)
	}
	cfg := e.config()
	cfg.PKI.RootMounts = []string{"pki_root"}
	b, err := newTestVault(t, cfg, time.Hour).Bundle(ctx)
	if err != nil {
		t.Fatalf("Bundle with rootMounts: %v", err)
	}
	if err := s.Verify(b, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestVaultRefusals: Vault's refusals and bad configurations end in clear
// errors, are counted, and nothing is served.
func TestVaultRefusals(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 60*time.Second)
	tests := []struct {
		name    string
		mutate  func(*VaultConfig)
		id      string
		wantErr string
	}{
		{"unknown role", func(c *VaultConfig) { c.PKI.Role = "nope" }, testTD + "a", "nope"},
		{"SAN not allowed", func(*VaultConfig) {}, "spiffe://other.domain/a", "other.domain"},
		{"wrong secret id", func(c *VaultConfig) {
			f := t.TempDir() + "/bad"
			writeFile(t, f, "not-the-secret-id")
			c.Auth.AppRole.SecretIDFile = f
		}, testTD + "a", "vault login (approle)"},
		{"missing secret id file", func(c *VaultConfig) { c.Auth.AppRole.SecretIDFile = "/nonexistent/secret-id" }, testTD + "a", "/nonexistent/secret-id"},
		{"bad token", func(c *VaultConfig) {
			f := t.TempDir() + "/tok"
			writeFile(t, f, "hvs.not-a-token")
			c.Auth = VaultAuth{Token: &VaultTokenAuth{File: f}}
		}, testTD + "a", "look up token"},
		{"invalid spiffe id", func(*VaultConfig) {}, "spiffe://mesh.local/a/../b", "invalid SPIFFE ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			tc.mutate(&cfg)
			events := &eventLog{}
			v := newTestVault(t, cfg, time.Hour)
			m := NewManager(v, WithBackoff(time.Hour, time.Hour), WithEventSink(events))
			if _, err := v.IssueSVID(ctx, tc.id); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("IssueSVID: err = %v, want one containing %q", err, tc.wantErr)
			}
			if tc.name == "invalid spiffe id" {
				return
			}
			if err := m.Register(tc.id); err != nil {
				t.Fatal(err)
			}
			runManager(t, m)
			wctx := testContext(t, 20*time.Second)
			eventually(t, wctx, "issuance error counted", func() bool { return metricValue(t, m.o.metrics.issuance.WithLabelValues(resultError)) >= 1 })
			if events.count(EventIssuance) < 1 {
				t.Error("no security event for the failed issuance")
			}
			sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			if s, err := m.SVID(sctx, tc.id); err == nil || s != nil {
				t.Fatalf("SVID served after a refused issuance: %v", s)
			}
			if err := m.Ready(); !errors.Is(err, ErrNotReady) {
				t.Fatalf("Ready = %v, want ErrNotReady", err)
			}
		})
	}
}

// TestVaultCheckRole is what `meshward validate --live` runs.
func TestVaultCheckRole(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 30*time.Second)
	tests := []struct {
		name    string
		role    string
		ids     []string
		wantErr string
	}{
		{"allowed", "agent", []string{testTD + "ns/default/sa/planner", testTD + "x"}, ""},
		{"other trust domain", "agent", []string{testTD + "ok", "spiffe://evil.example/x"}, "does not allow spiffe://evil.example/x"},
		{"missing role", "ghost", []string{testTD + "x"}, "role not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config()
			cfg.PKI.Role = tc.role
			err := newTestVault(t, cfg, time.Hour).CheckRole(ctx, tc.ids)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("CheckRole = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestVaultTokenLifecycle: a short-TTL renewable token is renewed until
// its max TTL, then Run logs in again; a non-renewable (batch) token is
// replaced by a new login before it expires. Issuance keeps working.
func TestVaultTokenLifecycle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		role         map[string]any
		wantRenewals bool
	}{
		{"renewable", map[string]any{"token_ttl": "3s", "token_max_ttl": "7s"}, true},
		{"non-renewable", map[string]any{"token_type": "batch", "token_ttl": "4s", "token_max_ttl": "4s"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startVault(t, envOpts{role: tc.role})
			ctx := testContext(t, 60*time.Second)
			v := newTestVault(t, e.config(), time.Hour)
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); _ = v.Run(rctx) }()
			defer func() { cancel(); <-done }()
			logins := func() float64 { return metricValue(t, v.o.metrics.vaultLogin.WithLabelValues("success")) }
			eventually(t, ctx, "first login", func() bool { return logins() >= 1 })
			if tc.wantRenewals {
				eventually(t, ctx, "a renewal", func() bool { return metricValue(t, v.o.metrics.vaultRenewal.WithLabelValues("success")) >= 1 })
				if n := logins(); n != 1 {
					t.Fatalf("%v logins before the max TTL, want 1 (renewed, not replaced)", n)
				}
			}
			eventually(t, ctx, "a fresh login", func() bool { return logins() >= 2 })
			if !tc.wantRenewals {
				if n := metricValue(t, v.o.metrics.vaultRenewal.WithLabelValues("success")); n != 0 {
					t.Fatalf("%v renewals of a non-renewable token", n)
				}
			}
			if _, err := v.IssueSVID(ctx, testTD+"after-relogin"); err != nil {
				t.Fatalf("IssueSVID after re-login: %v", err)
			}
			if n := metricValue(t, v.o.metrics.vaultLogin.WithLabelValues("failure")); n != 0 {
				t.Fatalf("%v failed logins", n)
			}
		})
	}
}

// TestVaultKV: a change is seen at the next poll; a deleted secret keeps
// its last value and raises the alert gauge; a new version clears it.
func TestVaultKV(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 60*time.Second)
	c := e.srv.Client()
	put := func(v string) {
		mustWrite(t, ctx, c, "secret/data/agents/openai", map[string]any{"data": map[string]any{"apiKey": v, "other": 1}})
	}
	put("sk-1")
	cfg := e.config()
	cfg.KV = []VaultKV{{Name: "openai", Mount: "secret", Path: "agents/openai", Key: "apiKey"}}
	v := newTestVault(t, cfg, time.Hour)
	m := NewManager(v, WithPollInterval(200*time.Millisecond))
	sub := m.Subscribe()
	defer sub.Close()
	runManager(t, m)

	next := func(want string) {
		t.Helper()
		for {
			ch, err := sub.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for secret %q: %v", want, err)
			}
			if len(ch.Secrets) == 1 && ch.Secrets[0] == "openai" {
				break
			}
		}
		got, err := m.Secret(ctx, "openai")
		if err != nil || string(got) != want {
			t.Fatalf("Secret = %q, %v; want %q", got, err, want)
		}
	}
	next("sk-1")
	put("sk-2")
	next("sk-2")

	deleted := func() float64 { return metricValue(t, v.o.metrics.kvDeleted.WithLabelValues("openai")) }
	if _, err := c.Logical().DeleteWithContext(ctx, "secret/data/agents/openai"); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "deleted gauge", func() bool { return deleted() == 1 })
	if got, _ := m.Secret(ctx, "openai"); string(got) != "sk-2" {
		t.Fatalf("after delete Secret = %q, want the last value sk-2", got)
	}
	if _, err := c.Logical().DeleteWithContext(ctx, "secret/metadata/agents/openai"); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Secret(ctx, "openai"); err != nil || string(got) != "sk-2" {
		t.Fatalf("after metadata delete Secret = %q, %v, want sk-2", got, err)
	}
	put("sk-3")
	next("sk-3")
	if deleted() != 0 {
		t.Fatal("deleted gauge still 1 after a new version")
	}
	if _, err := m.Secret(ctx, "unknown"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown secret: err = %v, want ErrNotFound", err)
	}
}

// TestVaultRotationOutageRestart: short-lived SVIDs are re-issued before
// they expire; with Vault stopped the last good one is served and
// readiness turns false only when it has less than 10 % life left; after
// a restart (PKI and AppRole re-created) issuance resumes.
func TestVaultRotationOutageRestart(t *testing.T) {
	t.Parallel()
	e := startVault(t, envOpts{})
	ctx := testContext(t, 120*time.Second)
	const id = testTD + "ns/default/sa/executor"
	cfg := e.config()
	cfg.PKI.RootMounts = []string{"pki_root"}
	events := &eventLog{}
	v := newTestVault(t, cfg, 8*time.Second)
	m := NewManager(v, WithBackoff(100*time.Millisecond, 500*time.Millisecond), WithPollInterval(200*time.Millisecond), WithEventSink(events))
	if err := m.Register(id); err != nil {
		t.Fatal(err)
	}
	sub := m.Subscribe()
	defer sub.Close()
	runManager(t, m)

	first, err := m.SVID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "ready", func() bool { return m.Ready() == nil })
	// Rotation: a new certificate arrives while the first is still valid.
	for {
		ch, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.SVIDs) == 0 {
			continue
		}
		cur, _ := m.SVID(ctx, id)
		if cur != first {
			if !time.Now().Before(first.NotAfter) {
				t.Fatalf("new certificate only after the old expired (%v)", first.NotAfter)
			}
			if cur.NotAfter.Before(first.NotAfter) || cur.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) == 0 {
				t.Fatal("rotation returned no newer certificate")
			}
			break
		}
	}

	// Outage.
	e.srv.Stop()
	lkg, _ := m.SVID(ctx, id)
	eventually(t, ctx, "an issuance failure", func() bool { return metricValue(t, m.o.metrics.issuance.WithLabelValues(resultError)) >= 1 })
	if s, _ := m.SVID(ctx, id); s != lkg {
		t.Fatal("the last good certificate was replaced during the outage")
	}
	if time.Until(lkg.NotAfter) > lkg.Lifetime()/5 {
		if err := m.Ready(); err != nil {
			t.Fatalf("not ready with plenty of life left: %v", err)
		}
	}
	eventually(t, ctx, "not ready near expiry", func() bool { return m.Ready() != nil })
	if left := time.Until(lkg.NotAfter); left > lkg.Lifetime()/10+time.Second {
		t.Fatalf("not ready with %v of %v left", left, lkg.Lifetime())
	}
	if b, err := m.Bundle(ctx); err != nil || len(b.Roots) != 1 {
		t.Fatalf("bundle during outage: %v, %v", b, err)
	}
	if events.count(EventIssuance) == 0 {
		t.Error("no security event during the outage")
	}

	// Restart: a new, empty Vault set up again. Issuance resumes, from a
	// new CA, and the bundle follows.
	e.srv.Restart()
	e.setup(t, envOpts{})
	eventually(t, ctx, "issuance resumed", func() bool {
		s, _ := m.SVID(ctx, id)
		return s != lkg && m.Ready() == nil
	})
	s, _ := m.SVID(ctx, id)
	eventually(t, ctx, "new bundle", func() bool {
		b, _ := m.Bundle(ctx)
		return s.Verify(b, time.Now()) == nil
	})
}

// TestVaultBadAnswers: answers a real Vault would not give (non-JSON,
// certificates that fail the checks) are errors; nothing is served.
func TestVaultBadAnswers(t *testing.T) {
	ca, err := NewLocalCA(LocalConfig{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 30*time.Second)
	const id = testTD + "ns/default/sa/planner"
	good, err := ca.IssueSVID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ca.IssueSVID(ctx, testTD+"someone-else")
	keyPEM, _ := good.KeyPEM()
	otherKey, _ := other.KeyPEM()
	rootPEM := string(certsPEM([]*x509.Certificate{ca.root}))
	caKey, _ := (&SVID{Key: ca.key}).KeyPEM()
	tests := []struct {
		name    string
		body    string
		wantErr string
	}{
		{"not json", "<html>oops</html>", "invalid character"},
		{"empty data", `{"data":{}}`, "certificate rejected"},
		{"wrong SAN", issueJSON(other.ChainPEM(), otherKey, rootPEM), "URI SANs"},
		{"key mismatch", issueJSON(good.ChainPEM(), otherKey, rootPEM), "does not match"},
		{"CA as leaf", issueJSON([]byte(rootPEM), caKey, rootPEM), "URI SANs"},
		{"garbage PEM", issueJSON([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), keyPEM, rootPEM), "certificate rejected"},
		{"valid", issueJSON(good.ChainPEM(), keyPEM, rootPEM), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakeVault(t, tc.body)
			f := t.TempDir() + "/tok"
			writeFile(t, f, "hvs.fake")
			v := newTestVault(t, VaultConfig{Address: srv, Auth: VaultAuth{Token: &VaultTokenAuth{File: f}}, PKI: VaultPKI{Role: "agent"}}, time.Hour)
			s, err := v.IssueSVID(ctx, id)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("IssueSVID: %v", err)
				}
				if len(s.Chain) != 1 {
					t.Fatalf("chain %d certificates, want the leaf only (root dropped)", len(s.Chain))
				}
				return
			}
			if err == nil || s != nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("IssueSVID = %v, %v; want error containing %q", s, err, tc.wantErr)
			}
		})
	}
}

func issueJSON(cert, key []byte, ca string) string {
	q := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\n", `\n`), `"`, `\"`) }
	return `{"data":{"certificate":"` + q(string(cert)) + `","private_key":"` + q(string(key)) + `","ca_chain":["` + q(ca) + `"],"issuing_ca":"` + q(ca) + `"}}`
}

func TestVaultConfigFromEnvIgnored(t *testing.T) {
	// VAULT_TOKEN and VAULT_SKIP_VERIFY in the environment must not change
	// what meshward does: no implicit token, TLS always verified.
	t.Setenv("VAULT_TOKEN", "hvs.from-env")
	t.Setenv("VAULT_SKIP_VERIFY", "true")
	f := t.TempDir() + "/tok"
	writeFile(t, f, "x")
	v := newTestVault(t, VaultConfig{Address: "https://127.0.0.1:1", Auth: VaultAuth{Token: &VaultTokenAuth{File: f}}, PKI: VaultPKI{Role: "r"}}, time.Hour)
	if v.client.Token() != "" {
		t.Fatal("client picked up VAULT_TOKEN")
	}
	tr, ok := v.client.CloneConfig().HttpClient.Transport.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil || tr.TLSClientConfig.InsecureSkipVerify {
		t.Fatal("VAULT_SKIP_VERIFY turned TLS verification off")
	}
}

// fakeVault answers token lookups and PKI issuance with body.
func fakeVault(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/auth/token/lookup-self":
			_, _ = io.WriteString(w, `{"data":{"ttl":0,"renewable":false}}`)
		case "/v1/pki/issue/agent":
			_, _ = io.WriteString(w, body)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// BenchmarkVaultIssue measures SVID issuance from the Vault dev server
// (EC P-256, no_store role) at 1, 8 and 32 requests in flight.
func BenchmarkVaultIssue(b *testing.B) {
	e := startVault(b, envOpts{})
	v := newTestVault(b, e.config(), time.Hour)
	ctx := testContext(b, time.Hour)
	if err := v.Login(ctx); err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			b.ReportAllocs()
			start := time.Now()
			n := 0
			for b.Loop() {
				var wg sync.WaitGroup
				errs := make(chan error, conc)
				for i := range conc {
					wg.Go(func() {
						if _, err := v.IssueSVID(ctx, fmt.Sprintf("%sns/bench/sa/a%d", testTD, i)); err != nil {
							errs <- err
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				n += conc
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "certs/s")
		})
	}
}

// TestCheckLive is `meshward validate --live`.
func TestCheckLive(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 30*time.Second)
	mustWrite(t, ctx, e.srv.Client(), "secret/data/k", map[string]any{"data": map[string]any{"v": "x"}})
	ok := Config{Source: SourceVault, Vault: e.config()}
	ok.Vault.PKI.RootMounts = []string{"pki_root"}
	ok.Vault.KV = []VaultKV{{Name: "k", Path: "k", Key: "v"}}
	tests := []struct {
		name    string
		mutate  func(*Config)
		ids     []string
		wantErr []string
	}{
		{"ok", func(*Config) {}, []string{testTD + "ns/a/sa/b"}, nil},
		{"local", func(c *Config) { *c = Config{} }, []string{testTD + "x"}, nil},
		{"id not allowed and missing secret", func(c *Config) { c.Vault.KV = append(c.Vault.KV, VaultKV{Name: "gone", Path: "gone", Key: "v"}) },
			[]string{testTD + "ok", "spiffe://other.example/x"}, []string{"does not allow spiffe://other.example/x", `secret "gone"`}},
		{"login fails", func(c *Config) { c.Vault.Auth.AppRole.SecretIDFile = "/nonexistent" }, nil, []string{"vault login (approle)"}},
		{"bad config", func(c *Config) { c.Vault.PKI.Role = "" }, nil, []string{"secrets.vault.pki.role: required"}},
		{"wrapped secret id", func(c *Config) { c.Vault.Auth.AppRole.Wrapped = true }, nil, []string{"wrapping token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			cfg.Vault.Auth.AppRole = &VaultAppRoleAuth{RoleIDFile: e.roleIDFile, SecretIDFile: e.secretIDFile}
			cfg.Vault.KV = slices.Clone(ok.Vault.KV)
			tc.mutate(&cfg)
			err := CheckLive(ctx, cfg, tc.ids)
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("CheckLive = %v", err)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("CheckLive = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// TestVaultKubernetesAuth logs in with a service-account JWT through the
// real Vault Kubernetes auth method; Vault reviews the token with an
// in-test Kubernetes TokenReview endpoint that accepts only that token.
func TestVaultKubernetesAuth(t *testing.T) {
	e := startVault(t, envOpts{})
	ctx := testContext(t, 30*time.Second)
	jwt := testServiceAccountJWT(t, "mesh", "meshward", "uid-1")
	kube := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Authorization") != "Bearer "+jwt {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`)
			return
		}
		_, _ = io.WriteString(w, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"authenticated":true,"user":{"username":"system:serviceaccount:mesh:meshward","uid":"uid-1"}}}`)
	}))
	defer kube.Close()
	c := e.srv.Client()
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "k8s", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, ctx, c, "auth/k8s/config", map[string]any{
		"kubernetes_host": kube.URL, "disable_local_ca_jwt": true, "kubernetes_ca_cert": string(certsPEM([]*x509.Certificate{kube.Certificate()})),
	})
	mustWrite(t, ctx, c, "auth/k8s/role/meshward", map[string]any{
		"bound_service_account_names": "meshward", "bound_service_account_namespaces": "mesh", "token_policies": "meshward", "token_ttl": "1h",
	})
	tests := []struct {
		name    string
		jwt     string
		role    string
		wantErr string
	}{
		{"good", jwt, "meshward", ""},
		{"unknown role", jwt, "nobody", "vault login (kubernetes)"},
		{"other service account", testServiceAccountJWT(t, "mesh", "intruder", "uid-2"), "meshward", "not authorized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := t.TempDir() + "/jwt"
			writeFile(t, f, tc.jwt)
			cfg := e.config()
			cfg.Auth = VaultAuth{Kubernetes: &VaultKubernetesAuth{Mount: "k8s", Role: tc.role, JWTFile: f}}
			_, err := newTestVault(t, cfg, time.Hour).IssueSVID(ctx, testTD+"ns/mesh/sa/meshward")
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("IssueSVID = %v, want error %q", err, tc.wantErr)
			}
		})
	}
}

// testServiceAccountJWT signs (ES256) a legacy Kubernetes service-account token.
func testServiceAccountJWT(t *testing.T, ns, name, uid string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	claims, _ := json.Marshal(map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + ns + ":" + name,
		"kubernetes.io/serviceaccount/namespace": ns,
		"kubernetes.io/serviceaccount/service-account.name": name,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
		"kubernetes.io/serviceaccount/secret.name":          name + "-token",
	})
	signing := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig)
}
