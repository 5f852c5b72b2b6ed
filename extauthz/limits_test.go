package extauthz

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets/mtls"
)

// countingDecider allows everything and counts the requests it saw.
type countingDecider struct{ n atomic.Int64 }

func (c *countingDecider) Decide(context.Context, *policy.Input) policy.Decision {
	c.n.Add(1)
	return policy.Decision{Allow: true, Reason: policy.ReasonAllowed, Rule: "all"}
}

func (*countingDecider) RevisionID() string { return "x" }

// h2Check is a raw HTTP/2 client (prior knowledge, no TLS) that sends
// one Check with padding metadata, as a client that ignores the server's
// SETTINGS_MAX_HEADER_LIST_SIZE would. grpc-go's own client refuses to
// send such a request, so only a raw client reaches the server's limit.
type h2Check struct {
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
}

func dialH2(addr string) (*h2Check, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &h2Check{conn: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
		c.Close()
		return nil, err
	}
	return h, nil
}

// h2Outcome is how the server answered a raw Check.
type h2Outcome struct {
	rst        http2.ErrCode // RST_STREAM code, when reset
	reset      bool
	grpcStatus string // grpc-status of the trailers, when answered
	goAway     bool
	closed     bool // the server closed the connection (err says how)
	err        error
}

// refused reports whether the server refused the request: reset it for
// its header list size, or closed the connection, without answering.
func (o h2Outcome) refused() bool {
	return o.grpcStatus == "" && (o.reset && o.rst == http2.ErrCodeFrameSize || o.closed)
}

// check sends a Check on stream 1 with padBytes of metadata in headers of
// 8 KiB each, streamed frame by frame so the client holds little, and
// reads until the stream ends.
func (h *h2Check) check(ctx context.Context, padBytes int) (h2Outcome, error) {
	defer h.conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = h.conn.SetDeadline(dl)
	}
	res := make(chan h2Outcome, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- h.read(res) }()

	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	first := true
	const maxFrame = 16 << 10
	// flush writes full frames of the block, and with end the rest with
	// END_HEADERS. The caller holds wmu for the whole header block: no
	// other frame may come between HEADERS and its CONTINUATIONs.
	flush := func(end bool) error {
		for block.Len() >= maxFrame || end {
			chunk := block.Next(maxFrame)
			last := end && block.Len() == 0
			var err error
			if first {
				err = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: chunk, EndHeaders: last})
				first = false
			} else {
				err = h.fr.WriteContinuation(1, last, chunk)
			}
			if err != nil || last {
				return err
			}
		}
		return nil
	}
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/" + ServiceName + "/Check"}, {Name: ":authority", Value: "meshward"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		_ = enc.WriteField(f)
	}
	pad := strings.Repeat("a", 8<<10)
	var err error
	h.wmu.Lock()
	for i := 0; i < padBytes/len(pad) && err == nil; i++ {
		_ = enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: pad, Sensitive: true})
		err = flush(false)
	}
	if err == nil {
		err = flush(true)
	}
	h.wmu.Unlock()
	if err == nil {
		msg, _ := proto.Marshal(checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
		frame := make([]byte, 5+len(msg))
		binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
		copy(frame[5:], msg)
		h.wmu.Lock()
		err = h.fr.WriteData(1, true, frame)
		h.wmu.Unlock()
	}
	// A write may fail because the server already reset or closed: the
	// outcome says what it did.
	select {
	case o := <-res:
		return o, nil
	case rerr := <-readErr:
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, syscall.ECONNRESET) || errors.Is(rerr, syscall.EPIPE) {
			return h2Outcome{closed: true, err: rerr}, nil
		}
		return h2Outcome{}, fmt.Errorf("read: %w (write: %w)", rerr, err)
	}
}

func (h *h2Check) read(res chan<- h2Outcome) error {
	var out h2Outcome
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return err
		}
		h.wmu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = h.fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				out.reset, out.rst = true, f.ErrCode
				res <- out
				h.wmu.Unlock()
				return nil
			}
		case *http2.GoAwayFrame:
			out.goAway = true
			out.closed = true
			res <- out
			h.wmu.Unlock()
			return nil
		case *http2.MetaHeadersFrame:
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					out.grpcStatus = hf.Value
				}
			}
			if f.StreamEnded() {
				res <- out
				h.wmu.Unlock()
				return nil
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				res <- out
				h.wmu.Unlock()
				return nil
			}
		}
		h.wmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// TestOversizedMetadataRefused: a Check whose gRPC metadata exceeds
// maxHeaderListBytes never reaches Check (grpc-go resets the stream, or
// closes the connection when the sender overshoots the limit, without
// reading the rest), and the limit is announced so that a well-behaved
// client refuses to send such a request.
func TestOversizedMetadataRefused(t *testing.T) {
	d := &countingDecider{}
	s := newServer(t, plainConfig(), d, Options{})
	addr := startServer(t, s)

	// Under the limit: answered OK over the raw client too (the client
	// works, so the reset below is the limit's doing).
	h, err := dialH2(addr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.check(testCtx(t), 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	if out.reset || out.grpcStatus != "0" || d.n.Load() != 1 {
		t.Fatalf("32 KiB of metadata: %+v, decisions %d; want grpc-status 0 and one decision", out, d.n.Load())
	}

	for _, size := range []int{96 << 10, 15 << 20} {
		h, err := dialH2(addr)
		if err != nil {
			t.Fatal(err)
		}
		out, err := h.check(testCtx(t), size)
		if err != nil {
			t.Fatalf("%d bytes of metadata: %v", size, err)
		}
		if !out.refused() {
			t.Fatalf("%d bytes of metadata: %+v, want RST_STREAM FRAME_SIZE_ERROR or the connection closed", size, out)
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Fatalf("decider saw %d requests, want only the one under the limit", n)
	}

	// grpc-go's client learns the limit from SETTINGS and refuses locally.
	ac := authv3.NewAuthorizationClient(dial(t, addr, insecure.NewCredentials()))
	if _, err := ac.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil)); err != nil {
		t.Fatalf("a normal Check: %v", err)
	}
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-pad", strings.Repeat("a", 1<<20))
	_, err = ac.Check(ctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "header list size") {
		t.Fatalf("1 MiB of metadata over grpc-go = %v, want Internal naming the header list size", err)
	}
	if n := d.n.Load(); n != 2 {
		t.Fatalf("decider saw %d requests, want 2", n)
	}
}

// TestConnectionLimit: beyond maxConnections a connection is closed at
// accept and counted; once one closes, a new one is served.
func TestConnectionLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	cfg := plainConfig()
	cfg.MaxConnections = 1
	s := newServer(t, cfg, &countingDecider{}, Options{Registry: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	addr := startServer(t, s)
	refused := func() float64 {
		return testutil.ToFloat64(s.m.refused.WithLabelValues(RefusedConnectionLimit))
	}

	first := dial(t, addr, nil)
	ac := authv3.NewAuthorizationClient(first)
	if _, err := ac.Check(testCtx(t), checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil)); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	for i := range 3 {
		err := checkOver(t, addr, nil)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("connection %d beyond the limit: Check = %v, want Unavailable", i+2, err)
		}
	}
	if n := refused(); n < 3 {
		t.Fatalf("refused{connection_limit} = %v, want >= 3", n)
	}
	if n := logs.count("maxConnections reached"); n != 1 {
		t.Fatalf("%d log lines for refused connections, want 1 (rate-limited):\n%s", n, logs)
	}

	// Closing the first frees its slot.
	first.Close()
	ctx := testCtx(t)
	for {
		conn := dial(t, addr, nil)
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := authv3.NewAuthorizationClient(conn).Check(cctx, checkReq(spiffe("viewer"), "GET", "/v1/tasks", nil))
		cancel()
		conn.Close()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no connection served after the first closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRefusedHandshakes: failed mTLS handshakes on the ext_authz listener
// are counted by reason and logged at most once per interval and reason.
func TestRefusedHandshakes(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	ca := newTestCA(t, "mesh root")
	src := &rotatingSource{}
	src.set(t, ca)
	cfg := Config{Address: "127.0.0.1:0", TLS: &TLSFiles{FromSecrets: true}}
	s := newServer(t, cfg, &countingDecider{}, Options{SVIDSource: src, BundleSource: src, Registry: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	addr := startServer(t, s)

	// A foreign CA's certificate with a SPIFFE ID that would be valid.
	foreign := newTestCA(t, "foreign root")
	foreignPair := spiffePair(t, foreign, spiffe("planner"))
	tlsClient := func(c *tls.Config) func() error {
		return func() error { return tlsAttempt(addr, c) }
	}
	tests := []struct {
		name    string
		attempt func() error
		reason  string
	}{
		{"no client certificate", tlsClient(&tls.Config{RootCAs: ca.pool()}), RefusedNoClientCert},
		// GetClientCertificate: with Certificates, Go's client would send
		// none, as the server's acceptable CAs do not include the issuer.
		{"foreign CA with a valid SPIFFE ID", tlsClient(&tls.Config{RootCAs: ca.pool(),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreignPair, nil }}), RefusedBadClientCert},
		// The bundle's CA, but no X.509 SVID, or not of the trust domain:
		// go-spiffe's verification and authorizer refuse them.
		{"mesh CA without SPIFFE ID", tlsClient(&tls.Config{RootCAs: ca.pool(),
			Certificates: []tls.Certificate{ca.keyPair(t, "envoy", x509.ExtKeyUsageClientAuth)}}), RefusedBadClientCert},
		{"mesh CA, another trust domain", tlsClient(&tls.Config{RootCAs: ca.pool(),
			Certificates: []tls.Certificate{spiffePair(t, ca, "spiffe://other.local/ns/default/sa/planner")}}), RefusedBadClientCert},
		{"TLS 1.1", tlsClient(&tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
			Certificates: []tls.Certificate{spiffePair(t, ca, spiffe("planner"))}}), RefusedTLSVersion},
		{"plaintext gRPC", func() error { return checkOver(t, addr, insecure.NewCredentials()) }, RefusedNotTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.m.refused.WithLabelValues(tt.reason)
			before := testutil.ToFloat64(c)
			for range 3 {
				_ = tt.attempt() // the server's count is what is checked
			}
			waitFor(t, func() bool { return testutil.ToFloat64(c) >= before+3 },
				func() string {
					return fmt.Sprintf("refused{%s} = %v, want %v", tt.reason, testutil.ToFloat64(c), before+3)
				})
			if n := logs.count("reason=" + tt.reason); n != 1 {
				t.Fatalf("%d log lines for reason %s, want 1 (rate-limited):\n%s", n, tt.reason, logs)
			}
		})
	}
	// A valid client is served and counts nothing.
	total := func() float64 {
		var sum float64
		for _, r := range mtls.RefusedReasons {
			sum += testutil.ToFloat64(s.m.refused.WithLabelValues(r))
		}
		return sum
	}
	before := total()
	if err := checkOver(t, addr, ca.clientCreds(t, ca)); err != nil {
		t.Fatalf("valid client: %v", err)
	}
	if after := total(); after != before {
		t.Fatalf("a valid client changed the refusal counts from %v to %v", before, after)
	}
	// The metric is on the registry given.
	if n, err := testutil.GatherAndCount(reg, "meshward_authz_refused_connections_total"); err != nil || n != len(mtls.RefusedReasons) {
		t.Fatalf("registry has %d series of meshward_authz_refused_connections_total (%v), want %d", n, err, len(mtls.RefusedReasons))
	}
}

// tlsAttempt handshakes with c and reads until the server closes: in TLS
// 1.3 the server judges the client's certificate after the client's
// handshake has returned.
func tlsAttempt(addr string, c *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// spiffePair issues a client certificate of ca for a SPIFFE ID.
func spiffePair(t *testing.T, ca testCA, id string) tls.Certificate {
	t.Helper()
	return svidPair(t, ca, id, x509.ExtKeyUsageClientAuth)
}

// svidPair issues a certificate of ca for a SPIFFE ID and eku.
func svidPair(t *testing.T, ca testCA, id string, eku x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	pair := ca.keyPair(t, "envoy", eku)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	leaf.URIs = []*url.URL{u}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, leaf.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pair.Certificate[0], pair.Leaf = der, nil
	return pair
}

// waitFor polls cond until it holds or the test context ends.
func waitFor(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal(msg())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(substr string) int { return strings.Count(l.String(), substr) }

// A plaintext listener warns at start, as xds.insecure does; mTLS does not.
func TestPlaintextWarns(t *testing.T) {
	ca := newTestCA(t, "mesh root")
	src := &rotatingSource{}
	src.set(t, ca)
	for _, tc := range []struct {
		name string
		cfg  Config
		warn bool
	}{
		{"plaintext", plainConfig(), true},
		{"mTLS", Config{Address: "127.0.0.1:0", TLS: &TLSFiles{FromSecrets: true}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			s := newServer(t, tc.cfg, &countingDecider{}, Options{SVIDSource: src, BundleSource: src, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			startServer(t, s)
			if got := logs.count("authz.plaintext"); got != map[bool]int{true: 1, false: 0}[tc.warn] {
				t.Fatalf("%d plaintext warnings, want warn=%v:\n%s", got, tc.warn, logs)
			}
		})
	}
}

// The limits default when unset and are validated by field path.
func TestLimitsConfig(t *testing.T) {
	c := plainConfig()
	c.SetDefaults()
	if c.MaxHeaderListBytes != 64<<10 || c.MaxConcurrentStreams != 1024 || c.MaxConnections != 4096 {
		t.Fatalf("defaults = %d, %d, %d; want 64 KiB, 1024, 4096", c.MaxHeaderListBytes, c.MaxConcurrentStreams, c.MaxConnections)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"negative header list", func(c *Config) { c.MaxHeaderListBytes = -1 }, "authz.maxHeaderListBytes"},
		{"header list above 16 MiB", func(c *Config) { c.MaxHeaderListBytes = 16<<20 + 1 }, "authz.maxHeaderListBytes"},
		{"negative streams", func(c *Config) { c.MaxConcurrentStreams = -1 }, "authz.maxConcurrentStreams"},
		{"negative connections", func(c *Config) { c.MaxConnections = -1 }, "authz.maxConnections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := plainConfig()
			tc.edit(&c)
			c.SetDefaults()
			if err := c.Validate("authz"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
