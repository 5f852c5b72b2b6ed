package xds_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

// A stream is refused unless its node id belongs to the SPIFFE ID of the
// verified client certificate; nothing is built for the claimed node.
func TestStreamRefusedUnlessNodeMatchesCertificate(t *testing.T) {
	e := startEnv(t, envOpts{})
	otherCA, err := xdstest.NewCA("other root")
	if err != nil {
		t.Fatal(err)
	}
	tlsWith := func(t *testing.T, ca *xdstest.CA, spiffeID string, withCert bool) credentials.TransportCredentials {
		t.Helper()
		if !withCert {
			return credentials.NewTLS(xdstest.ClientTLS(e.ca, nil))
		}
		cert, err := ca.Issue(spiffeID)
		if err != nil {
			t.Fatal(err)
		}
		cfg := xdstest.ClientTLS(e.ca, cert) // trusts the server; presents cert
		return credentials.NewTLS(cfg)
	}
	for _, tc := range []struct {
		name     string
		creds    func(t *testing.T) credentials.TransportCredentials
		node     string
		delta    bool
		wantCode codes.Code
		// reason is counted in meshward_xds_refused_total; with wantCode
		// Unavailable the TLS handshake refused the client, so no stream
		// (and no security event) exists.
		reason string
	}{
		{"another node's id (delta)", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, xdstest.SPIFFEID(td, "a"), true)
		}, "b", true, codes.PermissionDenied, xds.ReasonNodeMismatch},
		{"another node's id (sotw)", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, xdstest.SPIFFEID(td, "a"), true)
		}, "b", false, codes.PermissionDenied, xds.ReasonNodeMismatch},
		{"node not in the mesh", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, xdstest.SPIFFEID(td, "zed"), true)
		}, "zed", true, codes.PermissionDenied, xds.ReasonUnknownNode},
		{"no node id", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, xdstest.SPIFFEID(td, "a"), true)
		}, "", false, codes.PermissionDenied, xds.ReasonMissingNode},
		// A certificate of the bundle's CA that is no X.509 SVID, or of
		// another trust domain, is refused at the handshake (go-spiffe's
		// verification), before any stream.
		{"certificate without SPIFFE ID", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, "", true)
		}, "a", true, codes.Unavailable, xds.ReasonBadClientCert},
		{"certificate of another trust domain", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, e.ca, xdstest.SPIFFEID("other.test", "a"), true)
		}, "a", true, codes.Unavailable, xds.ReasonBadClientCert},
		{"no client certificate", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, nil, "", false)
		}, "a", true, codes.Unavailable, xds.ReasonNoClientCert},
		{"certificate from another CA", func(t *testing.T) credentials.TransportCredentials {
			return tlsWith(t, otherCA, xdstest.SPIFFEID(td, "a"), true)
		}, "a", true, codes.Unavailable, xds.ReasonBadClientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, e.reg, "meshward_xds_refused_total", "reason", tc.reason)
			cc := dialCreds(t, e.addr, tc.creds(t))
			ctx := testCtx(t)
			var err error
			if tc.delta {
				var c *xdsclient.Delta
				if c, err = xdsclient.NewDelta(ctx, cc, tc.node); err == nil {
					if err = c.Subscribe(resource.SecretType, secretNames("b")...); err == nil || errors.Is(err, io.EOF) {
						_, err = c.Recv()
					}
				}
			} else {
				var c *xdsclient.SotW
				if c, err = xdsclient.NewSotW(ctx, cc, tc.node); err == nil {
					if err = c.Subscribe(resource.SecretType, secretNames("b")...); err == nil || errors.Is(err, io.EOF) {
						_, err = c.Recv()
					}
				}
			}
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("stream error %v (code %v), want code %v", err, got, tc.wantCode)
			}
			if tc.wantCode == codes.Unavailable {
				// The server counts after the client saw the alert.
				waitFor(ctx, t, "a handshake refusal counted as "+tc.reason, func() bool {
					return metric(t, e.reg, "meshward_xds_refused_total", "reason", tc.reason)-before >= 1
				})
			} else {
				if got := metric(t, e.reg, "meshward_xds_refused_total", "reason", tc.reason) - before; got != 1 {
					t.Errorf("refused{%s} grew by %v, want 1", tc.reason, got)
				}
				if !slices.Contains(e.events.reasons(), tc.reason) {
					t.Errorf("no security event %q in %v", tc.reason, e.events.reasons())
				}
				if strings.Contains(status.Convert(err).Message(), "spiffe") {
					t.Errorf("refusal leaks details: %v", err)
				}
			}
			if len(e.srv.Status()) != 0 {
				t.Errorf("a refused stream left node state: %+v", e.srv.Status())
			}
		})
	}
}

// A node that changes its id on an admitted stream is refused.
func TestStreamRefusedWhenNodeIDChanges(t *testing.T) {
	e := startEnv(t, envOpts{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testCtx(t)
			c, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), p.delta, "a")
			syncTypes(t, c, allSubs("a")[:1], nil)
			if err := c.SubscribeAs("b", resource.SecretType, secretNames("b")...); err != nil {
				t.Fatal(err)
			}
			for {
				r, err := c.Next()
				if err != nil {
					if status.Code(err) != codes.PermissionDenied {
						t.Fatalf("got %v, want PermissionDenied", err)
					}
					break
				}
				if slices.Contains(r.names, xdstest.APIKeyName("b")) {
					t.Fatal("node a received b's secret")
				}
			}
			if !slices.Contains(e.events.reasons(), xds.ReasonNodeChanged) {
				t.Errorf("no %s event", xds.ReasonNodeChanged)
			}
			waitFor(ctx, t, "node state gone", func() bool { return len(e.srv.Status()) == 0 })
		})
	}
}

// Node a asking for b's secret by name never receives it; the request is
// reported and counted, and a keeps its own configuration.
func TestNodeNeverReceivesAnotherNodesSecret(t *testing.T) {
	e := startEnv(t, envOpts{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := testCtx(t)
			b, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "b")), p.delta, "b")
			syncTypes(t, b, allSubs("b"), nil)
			before := metric(t, e.reg, "meshward_xds_refused_total", "reason", xds.ReasonUnknownSecret)

			a, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), p.delta, "a")
			subs := allSubs("a")
			subs[3].names = append(subs[3].names, xdstest.APIKeyName("b"))
			got, _ := syncTypes(t, a, subs, nil)
			if slices.Contains(got[resource.SecretType], xdstest.APIKeyName("b")) {
				t.Fatal("node a received b's secret")
			}
			if !slices.Contains(got[resource.SecretType], xdstest.APIKeyName("a")) {
				t.Fatalf("node a did not receive its own secrets: %v", got[resource.SecretType])
			}
			// Sync point: a change after the request arrives in order.
			e.mesh.Change("a")
			if err := e.srv.Update(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			r, err := a.Next()
			if err != nil {
				t.Fatal(err)
			}
			if r.typ != resource.ListenerType || slices.Contains(r.names, xdstest.APIKeyName("b")) {
				t.Fatalf("got %s %v, want only a's changed listeners", r.typ, r.names)
			}
			if got := metric(t, e.reg, "meshward_xds_refused_total", "reason", xds.ReasonUnknownSecret) - before; got != 1 {
				t.Errorf("refused{unknown_secret} grew by %v, want 1", got)
			}
		})
	}
}

// Plaintext only with Insecure, announced by a warning; unknown nodes are
// still refused.
func TestInsecureMode(t *testing.T) {
	e := startEnv(t, envOpts{insecure: true})
	if !strings.Contains(e.logs.String(), "PLAINTEXT") {
		t.Errorf("no plaintext warning in %q", e.logs.String())
	}
	c, _ := connect(t, e.dial(t, ""), true, "a")
	syncTypes(t, c, allSubs("a"), nil)

	z, _ := connect(t, e.dial(t, ""), true, "zed")
	if err := z.Subscribe(resource.ClusterType); err != nil {
		t.Fatal(err)
	}
	if _, err := z.Next(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unknown node: got %v, want PermissionDenied", err)
	}
}

// rotatingSource serves whatever certificate it currently holds.
type rotatingSource struct {
	mu   sync.Mutex
	cert *tls.Certificate
	ca   *xdstest.CA
}

func (r *rotatingSource) GetX509SVID() (*x509svid.SVID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return xdstest.SVID(r.cert)
}

func (r *rotatingSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return r.ca.Bundle(td), nil
}

// The listener's certificate is read at every handshake: a rotation applies
// to the next connection without a restart.
func TestServerCertificateRotation(t *testing.T) {
	ca, err := xdstest.NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	issue := func() *tls.Certificate {
		c, err := ca.Issue("spiffe://" + td + "/meshward/xds")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	src := &rotatingSource{cert: issue(), ca: ca}
	mesh := xdstest.NewMesh(td, "a")
	srv, err := xds.New(xds.Config{Address: "127.0.0.1:0"}, mesh, mesh, src, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	client, err := ca.Issue(xdstest.SPIFFEID(td, "a"))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		cfg := xdstest.ClientTLS(ca, client)
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{Config: cfg}
		conn, err := d.DialContext(ctx, "tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()

	// Secure defaults (SECURITY.md): TLS 1.2 at least, and in TLS 1.2
	// ECDHE with AEAD ciphers only (set explicitly; gRPC's credentials
	// would also refuse CBC, which HTTP/2 forbids).
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
		cfg := xdstest.ClientTLS(ca, client)
		cfg.MinVersion, cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS10, tc.version, []uint16{tc.suite}
		d := tls.Dialer{Config: cfg}
		conn, err := d.DialContext(ctx, "tcp", srv.Addr().String())
		if err == nil {
			_ = conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
	}

	src.mu.Lock()
	src.cert = issue()
	want := src.cert.Leaf.SerialNumber.String()
	src.mu.Unlock()
	if got := serial(); got == first || got != want {
		t.Fatalf("after rotation the server presented serial %s, want %s (was %s)", got, want, first)
	}
}
