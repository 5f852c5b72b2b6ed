package secrets

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLocalCAIssue(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	ca, err := NewLocalCA(LocalConfig{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	const id = testTD + "ns/default/sa/planner"
	s, err := ca.IssueSVID(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	leaf := s.Leaf()
	if err := s.Check(id, time.Now()); err != nil {
		t.Fatal(err)
	}
	b, _ := ca.Bundle(ctx)
	if err := s.Verify(b, time.Now()); err != nil {
		t.Fatal(err)
	}
	if k, ok := s.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key %T, want ECDSA P-256", s.Key)
	}
	if got := time.Until(leaf.NotAfter); got < 59*time.Minute || got > time.Hour {
		t.Fatalf("leaf expires in %v, want the 1h default", got)
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Fatalf("SANs: %v %v %v %v, want exactly one URI", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Fatal("leaf must be a non-CA with clientAuth and serverAuth")
	}
	if len(s.Chain) != 1 {
		t.Fatalf("chain has %d certificates, want the leaf only", len(s.Chain))
	}
	// PEM round trip.
	certs, err := parseCertsPEM(s.ChainPEM())
	if err != nil || !certs[0].Equal(leaf) {
		t.Fatalf("ChainPEM round trip: %v", err)
	}
	kp, err := s.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if k, err := parseKeyPEM(kp); err != nil || !k.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
		t.Fatalf("KeyPEM round trip: %v", err)
	}
	if tc := s.TLSCertificate(); len(tc.Certificate) != 1 || tc.Leaf != leaf {
		t.Fatal("TLSCertificate")
	}
	for _, bad := range []string{"", "https://mesh.local/x", "spiffe://mesh.local", "spiffe://mesh.local/", "spiffe://mesh.local/a//b",
		"spiffe://mesh.local/a/./b", "spiffe://mesh.local/a/..", "spiffe://Mesh.local/a", "spiffe://mesh.local:8080/a",
		"spiffe://u@mesh.local/a", "spiffe://mesh.local/a?b", "spiffe://mesh.local/a#b", "spiffe://mesh.local/a%2Fb"} {
		if _, err := ca.IssueSVID(ctx, bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("IssueSVID(%q): err = %v, want ErrInvalidID", bad, err)
		}
	}
	if _, err := ca.Secret(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Secret: %v, want ErrNotFound", err)
	}
}

func TestLocalCASecrets(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	f := filepath.Join(t.TempDir(), "key")
	writeFile(t, f, "v1")
	ca, err := NewLocalCA(LocalConfig{Secrets: map[string]string{"api": f}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ca, WithPollInterval(50*time.Millisecond))
	sub := m.Subscribe()
	defer sub.Close()
	runManager(t, m)
	for _, want := range []string{"v1", "v2"} {
		ch, err := sub.Next(ctx)
		for err == nil && !slices.Contains(ch.Secrets, "api") {
			ch, err = sub.Next(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, err := m.Secret(ctx, "api"); err != nil || string(got) != want {
			t.Fatalf("Secret = %q, %v, want %q", got, err, want)
		}
		writeFile(t, f, "v2")
	}
}

func TestLocalCAPersistence(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "ca")
	ca1, err := NewLocalCA(LocalConfig{DataDir: dir}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "ca.crt"): 0o600, filepath.Join(dir, "ca.key"): 0o600} {
		info, err := os.Stat(name)
		if err != nil || info.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %04o", name, info.Mode().Perm(), err, want)
		}
	}
	ca2, err := NewLocalCA(LocalConfig{DataDir: dir}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.root.Equal(ca2.root) {
		t.Fatal("second start made a new root instead of loading the persisted one")
	}
	s, _ := ca2.IssueSVID(ctx, testTD+"a")
	b, _ := ca1.Bundle(ctx)
	if err := s.Verify(b, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestLocalCARefusals(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		wantErr string
	}{
		{"dir readable by group", func(t *testing.T, dir string) { mustChmod(t, dir, 0o750) }, "mode 0750"},
		{"dir readable by others", func(t *testing.T, dir string) { mustChmod(t, dir, 0o705) }, "mode 0705"},
		{"key readable by group", func(t *testing.T, dir string) { mustChmod(t, filepath.Join(dir, "ca.key"), 0o640) }, "mode 0640"},
		{"cert readable by others", func(t *testing.T, dir string) { mustChmod(t, filepath.Join(dir, "ca.crt"), 0o604) }, "mode 0604"},
		{"key missing", func(t *testing.T, dir string) { _ = os.Remove(filepath.Join(dir, "ca.key")) }, "no such file"},
		{"key of another CA", func(t *testing.T, dir string) {
			other := filepath.Join(t.TempDir(), "other")
			if _, err := NewLocalCA(LocalConfig{DataDir: other}, time.Hour); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(filepath.Join(other, "ca.key"))
			writeFile(t, filepath.Join(dir, "ca.key"), string(data))
		}, "does not match"},
		{"garbage cert", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "ca.crt"), "junk") }, "ca.crt"},
		{"not a folder", func(t *testing.T, dir string) {
			_ = os.RemoveAll(dir)
			writeFile(t, dir, "x")
		}, "not a folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			if _, err := NewLocalCA(LocalConfig{DataDir: dir}, time.Hour); err != nil {
				t.Fatal(err)
			}
			tc.prepare(t, dir)
			_, err := NewLocalCA(LocalConfig{DataDir: dir}, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func mustChmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestCheckRejects: every way an issued certificate can be wrong is
// refused by SVID.Check.
func TestCheckRejects(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	ca, err := NewLocalCA(LocalConfig{}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const id = testTD + "a"
	good, _ := ca.IssueSVID(ctx, id)
	other, _ := ca.IssueSVID(ctx, testTD+"b")
	now := time.Now()
	rootSVID := &SVID{ID: id, Chain: []*x509.Certificate{ca.root}, Key: ca.key, NotAfter: ca.root.NotAfter}
	tests := []struct {
		name    string
		svid    *SVID
		id      string
		now     time.Time
		wantErr string
	}{
		{"good", good, id, now, ""},
		{"nil", nil, id, now, "empty chain"},
		{"no key", &SVID{ID: id, Chain: good.Chain, NotAfter: good.NotAfter}, id, now, "no private key"},
		{"other key", &SVID{ID: id, Chain: good.Chain, Key: other.Key, NotAfter: good.NotAfter}, id, now, "does not match"},
		{"other id", good, testTD + "b", now, "URI SANs"},
		{"CA leaf", rootSVID, id, now, "URI SANs"},
		{"expired", good, id, good.NotAfter.Add(time.Second), "not valid now"},
		{"not yet valid", good, id, good.Leaf().NotBefore.Add(-time.Second), "not valid now"},
		{"root in chain", &SVID{ID: id, Chain: []*x509.Certificate{good.Leaf(), ca.root}, Key: good.Key, NotAfter: good.NotAfter}, id, now, "chain[1] is a root"},
		{"unrelated intermediate", &SVID{ID: id, Chain: []*x509.Certificate{good.Leaf(), other.Leaf()}, Key: good.Key, NotAfter: good.NotAfter}, id, now, "not signed by"},
		{"NotAfter lies", &SVID{ID: id, Chain: good.Chain, Key: good.Key, NotAfter: good.NotAfter.Add(time.Hour)}, id, now, "NotAfter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.svid.Check(tc.id, tc.now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check = %v, want ErrRejected containing %q", err, tc.wantErr)
			}
		})
	}
}

// BenchmarkLocalCAIssue measures P-256 leaf issuance (target >= 2,000/s).
func BenchmarkLocalCAIssue(b *testing.B) {
	ca, err := NewLocalCA(LocalConfig{}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	ctx := testContext(b, time.Hour)
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := ca.IssueSVID(ctx, testTD+"ns/default/sa/bench"); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "certs/s")
}

func TestBundleVerifyPeer(t *testing.T) {
	ctx := testContext(t, 10*time.Second)
	ca, _ := NewLocalCA(LocalConfig{}, time.Hour)
	otherCA, _ := NewLocalCA(LocalConfig{}, time.Hour)
	b, _ := ca.Bundle(ctx)
	const id = testTD + "ns/default/sa/planner"
	good, _ := ca.IssueSVID(ctx, id)
	foreign, _ := otherCA.IssueSVID(ctx, id)
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		now     time.Time
		wantErr string
	}{
		{"good", good.Chain, time.Now(), ""},
		{"empty", nil, time.Now(), "no peer certificate"},
		{"other CA", foreign.Chain, time.Now(), "unknown authority"},
		{"expired", good.Chain, good.NotAfter.Add(time.Minute), "expired"},
		{"CA as peer", []*x509.Certificate{ca.root}, time.Now(), "is a CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.VerifyPeer(tc.chain, tc.now)
			if tc.wantErr == "" {
				if err != nil || got != id {
					t.Fatalf("VerifyPeer = %q, %v; want %q", got, err, id)
				}
				return
			}
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.wantErr) || got != "" {
				t.Fatalf("VerifyPeer = %q, %v; want ErrRejected containing %q", got, err, tc.wantErr)
			}
		})
	}
}
