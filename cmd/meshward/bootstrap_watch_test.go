package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/secrets"
)

// mtlsQuickstart writes the quickstart with mTLS xDS, a persisted local CA
// in dir/ca, every listener on a free port and xds.authzAddress set.
func mtlsQuickstart(t *testing.T, dir string) string {
	t.Helper()
	path := testConfig(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "  insecure: true\n", "", 1)
	s = strings.Replace(s, "  source: local\n", "  source: local\n  local:\n    dataDir: "+filepath.Join(dir, "ca")+"\n", 1)
	// ext_authz listens on port 0 here: tell the Envoys some address.
	s = strings.Replace(s, "\nxds:\n", "\nxds:\n  authzAddress: 127.0.0.1:9191\n", 1)
	if !strings.Contains(s, "dataDir") || !strings.Contains(s, "authzAddress") || strings.Contains(s, "insecure: true") {
		t.Fatal("test setup: could not edit the quickstart")
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dirTLS is an Envoy's xDS client TLS from a bootstrap folder: the client
// certificate read from cert.pem and key.pem, the server verified against
// ca.pem and required to carry the xDS server's SPIFFE ID.
func dirTLS(t *testing.T, certPEM, keyPEM, caPEM []byte, serverID string) credentials.TransportCredentials {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("empty ca.pem")
	}
	return credentials.NewTLS(&tls.Config{
		Certificates:       []tls.Certificate{pair},
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate, by SAN as Envoy does
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, r := range raw[1:] {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != serverID {
				return errors.New("xDS server certificate does not carry " + serverID)
			}
			return nil
		},
	})
}

// fetchClusters opens a delta ADS stream as node and waits for its
// clusters: what an Envoy's reconnect does first.
func fetchClusters(ctx context.Context, addr, node string, creds credentials.TransportCredentials) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resourcev3.ClusterType}); err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetResources()) == 0 {
		return errors.New("no clusters")
	}
	return nil
}

func notAfterOf(t *testing.T, certPEM []byte) time.Time {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no certificate PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.NotAfter
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestBootstrapWatchRenewsBeforeExpiry: with --watch the xDS client
// certificate in --out is renewed at half its lifetime, so that a
// reconnect after the first certificate expired still gets through, while
// the expired one is refused by meshward's xDS listener. The certificates
// last 3 s here (the configuration's minimum is 1 min, so the TTL is set
// for the CA that issues the client certificates; the configuration's
// minimum is 1 min), the xDS server is `meshward serve` with the same CA.
func TestBootstrapWatchRenewsBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	path := mtlsQuickstart(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--components", "xds")
	defer func() {
		cancel()
		wait()
	}()
	xdsAddr := lw.waitFor(t, "xds serving", "address")
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	waitReady(t, rctx, lw.waitFor(t, "admin server listening", "address"))

	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ca3s, err := secrets.NewLocalCA(cfg.Secrets.Local, 3*time.Second) // the CA serve uses, 3 s leaves
	if err != nil {
		t.Fatal(err)
	}
	const plannerID = "spiffe://mesh.local/ns/default/sa/planner"
	issue := func(ctx context.Context) (map[string][]byte, time.Time, error) {
		return issueFrom(ctx, ca3s, plannerID)
	}
	out := filepath.Join(dir, "planner")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	files, notAfter, err := issue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(out, files); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	firstCert, firstKey, ca := read(envoy.XDSCertFile), read(envoy.XDSKeyFile), read(envoy.XDSCAFile)
	if got := notAfterOf(t, firstCert); !got.Equal(notAfter) {
		t.Fatalf("issueFrom returned expiry %v, the certificate says %v", notAfter, got)
	}
	serverID := xdsServerID(cfg.TrustDomain)
	if err := fetchClusters(ctx, xdsAddr, "planner", dirTLS(t, firstCert, firstKey, ca, serverID)); err != nil {
		t.Fatalf("first certificate: %v", err)
	}

	wctx, wcancel := context.WithCancel(ctx)
	var stderr syncWriter
	done := make(chan error, 1)
	go func() { done <- watchXDSClient(wctx, issue, "planner", out, notAfter, &stderr) }()
	defer func() {
		wcancel()
		if err := <-done; err != nil {
			t.Errorf("watchXDSClient: %v", err)
		}
	}()

	// Past the first certificate's expiry.
	time.Sleep(time.Until(notAfter) + 500*time.Millisecond)
	if err := fetchClusters(ctx, xdsAddr, "planner", dirTLS(t, firstCert, firstKey, ca, serverID)); err == nil {
		t.Fatal("the expired first certificate was accepted; the test proves nothing")
	}
	cur, key := read(envoy.XDSCertFile), read(envoy.XDSKeyFile)
	if bytes.Equal(cur, firstCert) {
		t.Fatalf("cert.pem was not renewed; stderr: %s", stderr.String())
	}
	if !notAfterOf(t, cur).After(time.Now()) {
		t.Fatalf("the renewed certificate has expired too (renewal not at half-life?); stderr: %s", stderr.String())
	}
	if err := fetchClusters(ctx, xdsAddr, "planner", dirTLS(t, cur, key, read(envoy.XDSCAFile), serverID)); err != nil {
		t.Fatalf("reconnect with the renewed certificate: %v", err)
	}
	if !strings.Contains(stderr.String(), "renewed the xDS client certificate of planner") {
		t.Errorf("no renewal reported on stderr: %q", stderr.String())
	}
	if info, err := os.Stat(filepath.Join(out, envoy.XDSKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("renewed key.pem: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
}

// TestBootstrapWatchCommand: `bootstrap --out DIR --watch` writes the
// folder, prints the bootstrap, keeps running and ends without error when
// its context does (the signal that stops it).
func TestBootstrapWatchCommand(t *testing.T) {
	dir := t.TempDir()
	path := mtlsQuickstart(t, dir)
	out := filepath.Join(dir, "planner")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := run(ctx, []string{"bootstrap", "--config", path, "--node", "planner", "--admin-port", "19001", "--xds-address", "meshward.internal:18000", "--out", out, "--watch"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v; stderr: %s", err, stderr.String())
	}
	if time.Since(start) < time.Second {
		t.Error("--watch returned before its context ended")
	}
	if !strings.Contains(stdout.String(), "node:") {
		t.Error("no bootstrap printed")
	}
	checkIssued(t, out, "spiffe://mesh.local/ns/default/sa/planner")
}
