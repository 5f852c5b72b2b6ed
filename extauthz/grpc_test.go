package extauthz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/policy"
)

// startServer runs s until the test ends and returns its address.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return s.Addr().String()
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestGRPCHealthAndCheck(t *testing.T) {
	store := emptyStore(t)
	cfg := plainConfig()
	cfg.Reflection = true
	s := newServer(t, cfg, store, Options{})
	conn := dial(t, startServer(t, s), nil)
	ctx := testCtx(t)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", ServiceName} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health(%q) before a revision = %v, %v; want NOT_SERVING", svc, resp, err)
		}
	}
	if s.Ready() == nil {
		t.Error("Ready() = nil before a revision was loaded")
	}
	ac := authv3.NewAuthorizationClient(conn)
	resp, err := ac.Check(ctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
	if err != nil || resp.GetDeniedResponse() == nil {
		t.Fatalf("Check without a revision = %v, %v; want a deny", resp, err)
	}

	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	cfgPol := testPolicy()
	if err := store.Reload(ctx, func() (*policy.Revision, error) { return policy.Compile(&cfgPol, td, policy.Options{}) }); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if st.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready() = %v after a revision was loaded", err)
	}

	tests := []struct {
		name   string
		req    *authv3.CheckRequest
		code   codes.Code
		status int
	}{
		{"allow", checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil), codes.OK, 200},
		{"deny", checkReq(spiffe("viewer"), "POST", "/v1/tasks", nil), codes.PermissionDenied, 403},
		{"unauthenticated", checkReq("", "GET", "/v1/tasks", nil), codes.Unauthenticated, 401},
		{"bad request", checkReq(spiffe("viewer"), "GET", "/v1/%2e%2e/x", nil), codes.InvalidArgument, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := ac.Check(ctx, tt.req)
			if err != nil {
				t.Fatalf("Check RPC error %v", err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != tt.code || httpStatus(t, resp) != tt.status {
				t.Errorf("got %v / %d, want %v / %d", codes.Code(resp.GetStatus().GetCode()), httpStatus(t, resp), tt.code, tt.status)
			}
		})
	}

	// Reflection is on: the Authorization service is listed.
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, svc := range rr.GetListServicesResponse().GetService() {
		found = found || svc.GetName() == ServiceName
	}
	if !found {
		t.Errorf("reflection lists %v, want %s", rr.GetListServicesResponse().GetService(), ServiceName)
	}
	rc.CloseSend()
}

// TestClientCancelsMidCheck: a client that goes away while its Check is
// being decided leaves no goroutine behind and the server keeps serving.
func TestClientCancelsMidCheck(t *testing.T) {
	started := make(chan struct{}, 1)
	s := newServer(t, plainConfig(), slowDecider{started: started}, Options{})
	addr := startServer(t, s)
	conn := dial(t, addr, nil)
	ac := authv3.NewAuthorizationClient(conn)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := ac.Check(ctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled Check = %v, want Canceled", err)
	}
	// The server is still healthy for the next client.
	hc := healthpb.NewHealthClient(dial(t, addr, nil))
	if _, err := hc.Check(testCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health after a cancelled check: %v", err)
	}
}

// TestGracefulStopFinishesInFlight: stopping the server lets a Check in
// flight complete with a response.
func TestGracefulStopFinishesInFlight(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	s := newServer(t, plainConfig(), gateDecider{started: started, release: release}, Options{})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	ac := authv3.NewAuthorizationClient(dial(t, s.Addr().String(), nil))
	respc := make(chan error, 1)
	go func() {
		resp, err := ac.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
		if err == nil && resp.GetOkResponse() == nil {
			err = errors.New("not allowed")
		}
		respc <- err
	}()
	<-started
	stop()
	close(release)
	if err := <-respc; err != nil {
		t.Fatalf("in-flight Check during graceful stop: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

type gateDecider struct {
	started chan struct{}
	release chan struct{}
}

func (g gateDecider) Decide(context.Context, *policy.Input) policy.Decision {
	g.started <- struct{}{}
	<-g.release
	return policy.Decision{Allow: true, Status: 200}
}
func (gateDecider) RevisionID() string { return "x" }

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca testCA) issue(t *testing.T, name string, eku x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca testCA) clientCreds(t *testing.T, serverCA testCA) credentials.TransportCredentials {
	t.Helper()
	return credentials.NewTLS(ca.clientTLS(t, serverCA))
}

// clientTLS is the TLS configuration of a client with a certificate of ca.
func (ca testCA) clientTLS(t *testing.T, serverCA testCA) *tls.Config {
	t.Helper()
	return &tls.Config{RootCAs: serverCA.pool(), Certificates: []tls.Certificate{spiffePair(t, ca, spiffe("envoy"))}}
}

// keyPair issues a certificate of ca and returns it with its key.
func (ca testCA) keyPair(t *testing.T, name string, eku x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(ca.issue(t, name, eku))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// pool holds ca's certificate alone.
func (ca testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func TestMTLSListener(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := newTestCA(t, "ca one")
	sc, sk := ca.issue(t, "server", x509.ExtKeyUsageServerAuth)
	cfg := Config{Address: "127.0.0.1:0", TLS: &TLSFiles{
		CertFile: write("server.pem", sc), KeyFile: write("server.key", sk), CAFile: write("ca.pem", ca.pem),
	}}
	s := newServer(t, cfg, newStore(t, testPolicy(), policy.Options{}), Options{})
	addr := startServer(t, s)
	pool := ca.pool()
	try := func(t *testing.T, creds credentials.TransportCredentials) error { return checkOver(t, addr, creds) }
	tests := []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"client certificate", ca.clientCreds(t, ca), true},
		{"no client certificate", credentials.NewTLS(&tls.Config{RootCAs: pool}), false},
		{"client certificate from another CA", newTestCA(t, "other").clientCreds(t, ca), false},
		{"plaintext client", insecure.NewCredentials(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := try(t, tt.creds); (err == nil) != tt.ok {
				t.Fatalf("Check = %v, want success %v", err, tt.ok)
			}
		})
	}

	// Secure defaults (SECURITY.md): TLS 1.2 at least, and in TLS 1.2
	// ECDHE with AEAD ciphers only.
	for _, tc := range []struct {
		name    string
		version uint16
		suite   uint16
		ok      bool
	}{
		{"TLS 1.2 ECDHE-ECDSA-AES128-GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true},
		{"TLS 1.2 ECDHE-ECDSA-CHACHA20", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true},
		{"TLS 1.2 ECDHE-ECDSA-AES128-CBC-SHA", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
		{"TLS 1.1", tls.VersionTLS11, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false},
	} {
		c := ca.clientTLS(t, ca)
		c.MinVersion, c.MaxVersion, c.CipherSuites = tls.VersionTLS10, tc.version, []uint16{tc.suite}
		conn, err := tls.Dial("tcp", addr, c)
		if err == nil {
			_ = conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
	}

	// Rotation: new CA, server certificate and key on disk are used by
	// the next handshake, without a restart.
	ca2 := newTestCA(t, "ca two")
	sc2, sk2 := ca2.issue(t, "server", x509.ExtKeyUsageServerAuth)
	write("server.pem", sc2)
	write("server.key", sk2)
	write("ca.pem", ca2.pem)
	if err := try(t, ca2.clientCreds(t, ca2)); err != nil {
		t.Fatalf("after rotation, a client of the new CA: %v", err)
	}
	if err := try(t, ca.clientCreds(t, ca)); err == nil {
		t.Fatal("after rotation, a client of the old CA still connects")
	}
	// A broken file keeps the last good material.
	write("server.key", []byte("garbage"))
	if err := try(t, ca2.clientCreds(t, ca2)); err != nil {
		t.Fatalf("with a broken key file the last good material must serve: %v", err)
	}
}

func TestTLSRequiredUnlessPlaintext(t *testing.T) {
	if _, err := New(Config{}, td, emptyStore(t), Options{}); err == nil {
		t.Fatal("New without tls and without plaintext succeeded")
	}
	s := newServer(t, Config{Address: "127.0.0.1:0", TLS: &TLSFiles{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k", CAFile: "/nonexistent/ca"}}, emptyStore(t), Options{})
	if err := s.Listen(); err == nil {
		t.Fatal("Listen with missing TLS files succeeded")
	}
}

// TestConcurrentChecks: responses share cached parts; concurrent Checks
// (and their concurrent marshalling) must neither race nor mix them up.
func TestConcurrentChecks(t *testing.T) {
	cfg := plainConfig()
	cfg.DryRun = true // dry-run allows append to the shared header slice
	s := newServer(t, cfg, newStore(t, testPolicy(), policy.Options{}), Options{})
	ac := authv3.NewAuthorizationClient(dial(t, startServer(t, s), nil))
	ctx := testCtx(t)
	errc := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 50 {
				who, method := "viewer", "GET"
				if (g+i)%2 == 0 {
					who, method = "planner", "POST"
				}
				if i%3 == 0 {
					who = "viewer"
				}
				resp, err := ac.Check(ctx, checkReq(spiffe(who), method, "/v1/tasks", nil))
				if err != nil {
					errc <- err
					return
				}
				ok := resp.GetOkResponse()
				var principal string
				dry := 0
				for _, h := range ok.GetHeaders() {
					switch h.GetHeader().GetKey() {
					case DefaultPrincipalHeader:
						principal = h.GetHeader().GetValue()
					case DryRunHeader:
						dry++
					}
				}
				wantDry := 0
				if who == "viewer" && method == "POST" {
					wantDry = 1
				}
				if principal != spiffe(who) || dry != wantDry || len(ok.GetHeaders()) != 2+wantDry {
					errc <- fmt.Errorf("%s %s: headers %v", who, method, ok.GetHeaders())
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// checkOver sends an allowed Check to addr with creds: nil when allowed.
func checkOver(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	ac := authv3.NewAuthorizationClient(dial(t, addr, creds))
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	resp, err := ac.Check(ctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
	if err == nil && resp.GetOkResponse() == nil {
		err = errors.New("not allowed")
	}
	return err
}

// rotatingSource is an SVID and bundle source whose SVID and bundle tests
// swap.
type rotatingSource struct {
	mu     sync.Mutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	err    error
}

func (r *rotatingSource) set(t *testing.T, ca testCA) {
	t.Helper()
	pair := svidPair(t, ca, "spiffe://"+td+"/meshward/authz", x509.ExtKeyUsageServerAuth)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		t.Fatal(err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: pair.PrivateKey.(crypto.Signer)}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.svid, r.bundle, r.err = svid, x509bundle.FromX509Authorities(id.TrustDomain(), []*x509.Certificate{ca.cert}), nil
}

func (r *rotatingSource) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func (r *rotatingSource) GetX509SVID() (*x509svid.SVID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svid, r.err
}

// GetX509BundleForTrustDomain serves the bundle for every trust domain, so
// that the authorizer is what refuses other trust domains.
func (r *rotatingSource) GetX509BundleForTrustDomain(spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bundle, r.err
}

// TestTLSFromSecrets: with tls.fromSecrets the listener serves the
// source's certificate and verifies clients against its bundle, asking at
// every handshake; without material it refuses connections.
func TestTLSFromSecrets(t *testing.T) {
	cfg := Config{Address: "127.0.0.1:0", TLS: &TLSFiles{FromSecrets: true}}
	if err := newServer(t, cfg, emptyStore(t), Options{}).Listen(); err == nil || !strings.Contains(err.Error(), "TLS source") {
		t.Fatalf("Listen with fromSecrets and no source = %v, want an error naming the TLS source", err)
	}
	ca := newTestCA(t, "mesh root")
	src := &rotatingSource{}
	src.set(t, ca)
	s := newServer(t, cfg, newStore(t, testPolicy(), policy.Options{}), Options{SVIDSource: src, BundleSource: src})
	addr := startServer(t, s)
	check := func(creds credentials.TransportCredentials) error { return checkOver(t, addr, creds) }
	if err := check(ca.clientCreds(t, ca)); err != nil {
		t.Fatalf("client of the mesh CA: %v", err)
	}
	if err := check(newTestCA(t, "other").clientCreds(t, ca)); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	// Of the mesh CA but no X.509 SVID of the trust domain: refused at the
	// handshake (TestRefusedHandshakes pins the reason).
	for name, pair := range map[string]tls.Certificate{
		"without SPIFFE ID":       ca.keyPair(t, "envoy", x509.ExtKeyUsageClientAuth),
		"of another trust domain": spiffePair(t, ca, "spiffe://other.local/ns/default/sa/planner"),
	} {
		if err := check(credentials.NewTLS(&tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{pair}})); err == nil {
			t.Fatalf("a client certificate %s was accepted", name)
		}
	}
	if err := check(insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was served")
	}

	// Rotation reaches the next connection.
	ca2 := newTestCA(t, "mesh root 2")
	src.set(t, ca2)
	if err := check(ca2.clientCreds(t, ca2)); err != nil {
		t.Fatalf("after rotation, a client of the new CA: %v", err)
	}
	if err := check(ca.clientCreds(t, ca)); err == nil {
		t.Fatal("after rotation, a client of the old CA still connects")
	}
	// No material: the handshake fails rather than serve without it, and
	// is counted as the listener's failure, not the client's.
	src.fail(errors.New("vault down"))
	unavailable := s.m.refused.WithLabelValues(RefusedServerTLS)
	before := testutil.ToFloat64(unavailable)
	if err := check(ca2.clientCreds(t, ca2)); err == nil {
		t.Fatal("served while the source had no certificate")
	}
	waitFor(t, func() bool { return testutil.ToFloat64(unavailable) > before },
		func() string { return "a handshake without material was not counted as " + RefusedServerTLS })
}

func TestConfigTLSValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"plaintext", Config{Plaintext: true}, ""},
		{"files", Config{TLS: &TLSFiles{CertFile: "c", KeyFile: "k", CAFile: "ca"}}, ""},
		{"fromSecrets", Config{TLS: &TLSFiles{FromSecrets: true}}, ""},
		{"neither", Config{}, "authz.tls: required unless plaintext"},
		{"both plaintext and tls", Config{Plaintext: true, TLS: &TLSFiles{FromSecrets: true}}, "plaintext and tls are exclusive"},
		{"missing file", Config{TLS: &TLSFiles{CertFile: "c", KeyFile: "k"}}, "certFile, keyFile and caFile are all required"},
		{"fromSecrets and files", Config{TLS: &TLSFiles{FromSecrets: true, CertFile: "c"}}, "fromSecrets and certFile/keyFile/caFile are exclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate("authz")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
