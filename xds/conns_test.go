package xds_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshward/meshward/xds"
	"github.com/meshward/meshward/xds/internal/xdsclient"
	"github.com/meshward/meshward/xds/internal/xdstest"
)

// Failed mTLS handshakes on the xDS listener leave a trace: each is
// counted in meshward_xds_refused_total by reason and logged at most once
// per interval and reason.
func TestRefusedHandshakesCounted(t *testing.T) {
	e := startEnv(t, envOpts{})
	foreignCA, err := xdstest.NewCA("foreign root")
	if err != nil {
		t.Fatal(err)
	}
	// A certificate of another CA for a SPIFFE ID that is a node's.
	foreign, err := foreignCA.Issue(xdstest.SPIFFEID(td, "a"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := e.ca.Issue(xdstest.SPIFFEID(td, "a"))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(c *tls.Config) func() {
		return func() { tlsAttempt(e.addr, c) }
	}
	noCert := xdstest.ClientTLS(e.ca, nil)
	foreignCfg := xdstest.ClientTLS(e.ca, nil)
	// GetClientCertificate: with Certificates, Go's client sends none when
	// the server's acceptable CAs do not include the issuer.
	foreignCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return foreign, nil }
	old := xdstest.ClientTLS(e.ca, own)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	for _, tc := range []struct {
		name    string
		attempt func()
		reason  string
	}{
		{"no client certificate", handshake(noCert), xds.ReasonNoClientCert},
		{"foreign CA with a node's SPIFFE ID", handshake(foreignCfg), xds.ReasonBadClientCert},
		{"TLS 1.1", handshake(old), xds.ReasonTLSVersion},
		{"plaintext gRPC", func() { openStream(t, e.addr, insecure.NewCredentials()) }, xds.ReasonNotTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, e.reg, "meshward_xds_refused_total", "reason", tc.reason)
			for range 3 {
				tc.attempt()
			}
			waitFor(testCtx(t), t, "3 refusals counted as "+tc.reason, func() bool {
				return metric(t, e.reg, "meshward_xds_refused_total", "reason", tc.reason)-before >= 3
			})
			if n := strings.Count(e.logs.String(), "reason="+tc.reason); n != 1 {
				t.Errorf("%d log lines with reason %s, want 1 (rate-limited):\n%s", n, tc.reason, e.logs)
			}
			if len(e.srv.Status()) != 0 {
				t.Errorf("a refused connection left node state: %+v", e.srv.Status())
			}
		})
	}
	// A node with its own certificate is served, and adds no refusal.
	sum := func() float64 {
		var s float64
		for _, r := range []string{xds.ReasonNoClientCert, xds.ReasonBadClientCert, xds.ReasonTLSVersion, xds.ReasonNotTLS,
			xds.ReasonHandshake, xds.ReasonHandshakeAborted, xds.ReasonServerTLS, xds.ReasonConnectionLimit} {
			s += metric(t, e.reg, "meshward_xds_refused_total", "reason", r)
		}
		return s
	}
	before := sum()
	if err := openStream(t, e.addr, credentials.NewTLS(xdstest.ClientTLS(e.ca, own))); err != nil {
		t.Fatalf("own certificate: %v", err)
	}
	if after := sum(); after != before {
		t.Fatalf("a valid node changed the refusal counts from %v to %v", before, after)
	}
}

// Beyond xds.maxConnections a connection is closed as soon as it is
// accepted, counted as connection_limit; the open one is unaffected.
func TestConnectionLimit(t *testing.T) {
	mesh := xdstest.NewMesh(td, "a", "b")
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	srv, err := xds.New(xds.Config{Address: "127.0.0.1:0", Insecure: true, MaxConnections: 1}, mesh, mesh, nil, nil,
		xds.WithRegisterer(reg), xds.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	addr := srv.Addr().String()
	waitFor(testCtx(t), t, "server ready", func() bool { return srv.Ready() == nil })

	// The first node holds its connection with an open stream.
	cc := dialCreds(t, addr, insecure.NewCredentials())
	sctx, stop := context.WithCancel(testCtx(t))
	defer stop()
	c, err := xdsclient.NewDelta(sctx, cc, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Subscribe(resource.ClusterType); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(); err != nil {
		t.Fatalf("first node: %v", err)
	}
	for range 3 {
		if err := openStream(t, addr, insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
			t.Fatalf("a connection beyond the limit: %v, want Unavailable", err)
		}
	}
	if got := metric(t, reg, "meshward_xds_refused_total", "reason", xds.ReasonConnectionLimit); got < 3 {
		t.Fatalf("refused{connection_limit} = %v, want >= 3", got)
	}
	if n := strings.Count(logs.String(), "maxConnections reached"); n != 1 {
		t.Fatalf("%d log lines for the connection limit, want 1 (rate-limited):\n%s", n, logs)
	}
}

// Oversized gRPC metadata on a stream is refused by the header list limit
// (grpc-go's client learns it from SETTINGS and does not send).
func TestOversizedMetadataRefused(t *testing.T) {
	e := startEnv(t, envOpts{insecure: true})
	cc := dialCreds(t, e.addr, insecure.NewCredentials())
	// A first stream, so that the client has the server's SETTINGS.
	if err := openStreamOn(testCtx(t), cc, "a", nil); err != nil {
		t.Fatalf("normal stream: %v", err)
	}
	err := openStreamOn(testCtx(t), cc, "a", map[string]string{"x-pad": strings.Repeat("a", 1<<20)})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "header list size") {
		t.Fatalf("1 MiB of metadata = %v, want Internal naming the header list size", err)
	}
}

// openStream dials addr and opens a delta stream as node "a", returning
// the first error (nil once a response arrived).
func openStream(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	cc := dialCreds(t, addr, creds)
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	return openStreamOn(ctx, cc, "a", nil)
}

// openStreamOn opens a delta stream on cc as node with the metadata md
// and waits for the first response.
func openStreamOn(ctx context.Context, cc grpc.ClientConnInterface, node string, md map[string]string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))
	}
	c, err := xdsclient.NewDelta(ctx, cc, node)
	if err != nil {
		return err
	}
	if err := c.Subscribe(resource.ClusterType); err != nil {
		return err
	}
	_, err = c.Recv()
	return err
}

// tlsAttempt handshakes with c and reads until the server closes: in TLS
// 1.3 the server judges the client's certificate after the client's
// handshake returned.
func tlsAttempt(addr string, c *tls.Config) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Read(make([]byte, 1))
}

// A failed build says what the node is served: nothing before its first
// snapshot, its previous snapshot after.
func TestFailedBuildSaysWhatIsServed(t *testing.T) {
	e := startEnv(t, envOpts{})
	e.mesh.Break("b", true)
	b, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "b")), true, "b")
	if err := b.Subscribe(resource.ListenerType); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Next(); status.Code(err) != codes.Unavailable {
		t.Fatalf("broken node: got %v, want Unavailable", err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "no snapshot yet") || strings.Contains(logs, "previous snapshot kept") {
		t.Fatalf("first build failed; log:\n%s", logs)
	}
	a, _ := connect(t, e.dial(t, xdstest.SPIFFEID(td, "a")), true, "a")
	syncTypes(t, a, allSubs("a"), nil)
	e.mesh.Break("a", true)
	if err := e.srv.Update(testCtx(t), "a"); err == nil {
		t.Fatal("Update of a broken node succeeded")
	}
	if !strings.Contains(e.logs.String(), "previous snapshot kept") {
		t.Fatalf("failed rebuild of a served node; log:\n%s", e.logs)
	}
}

// The limits default when unset and are validated by field path.
func TestLimitsConfig(t *testing.T) {
	var c xds.Config
	c.SetDefaults()
	if c.MaxHeaderListBytes != 64<<10 || c.MaxConcurrentStreams != 16 || c.MaxConnections != 10000 {
		t.Fatalf("defaults = %d, %d, %d; want 64 KiB, 16, 10000", c.MaxHeaderListBytes, c.MaxConcurrentStreams, c.MaxConnections)
	}
	for _, tc := range []struct {
		name string
		edit func(*xds.Config)
		want string
	}{
		{"negative header list", func(c *xds.Config) { c.MaxHeaderListBytes = -1 }, "xds.maxHeaderListBytes"},
		{"header list above 16 MiB", func(c *xds.Config) { c.MaxHeaderListBytes = 16<<20 + 1 }, "xds.maxHeaderListBytes"},
		{"negative streams", func(c *xds.Config) { c.MaxConcurrentStreams = -1 }, "xds.maxConcurrentStreams"},
		{"negative connections", func(c *xds.Config) { c.MaxConnections = -1 }, "xds.maxConnections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c xds.Config
			tc.edit(&c)
			c.SetDefaults()
			if err := c.Validate("xds"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// New refuses an invalid configuration rather than serve without limits.
func TestNewValidatesConfig(t *testing.T) {
	mesh := xdstest.NewMesh(td, "a")
	if _, err := xds.New(xds.Config{Address: "127.0.0.1:0", Insecure: true, MaxConnections: -1}, mesh, mesh, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "xds.maxConnections") {
		t.Fatalf("New with maxConnections -1 = %v, want an error naming it", err)
	}
}
