package extauthz

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"

	"github.com/meshward/meshward/secrets/mtls"
)

// Connection refusals: the values of the reason label of
// meshward_authz_refused_connections_total. They are refused before any
// Check, so no decision is made or audited for them.
const (
	// RefusedConnectionLimit: maxConnections connections were open.
	RefusedConnectionLimit = "connection_limit"
	// RefusedNoClientCert: the TLS client sent no certificate.
	RefusedNoClientCert = "no_client_cert"
	// RefusedBadClientCert: the client certificate does not chain to the
	// trust bundle (another CA, expired, wrong key usage).
	RefusedBadClientCert = "bad_client_cert"
	// RefusedTLSVersion: the client offered only TLS versions below 1.2.
	RefusedTLSVersion = "tls_version"
	// RefusedNotTLS: the client did not speak TLS (e.g. plaintext gRPC).
	RefusedNotTLS = "not_tls"
	// RefusedHandshakeAborted: the client closed the connection during the
	// handshake, e.g. a TCP health probe. Counted, logged at debug only.
	RefusedHandshakeAborted = "handshake_aborted"
	// RefusedServerTLS: the listener had no certificate or trust bundle to
	// serve (logged at error where that happens).
	RefusedServerTLS = "server_tls_unavailable"
	// RefusedHandshake: any other failed handshake (no common cipher
	// suite, timeout, malformed messages).
	RefusedHandshake = "tls_handshake"
)

// refusedReasons are pre-registered so that a zero count is visible.
var refusedReasons = []string{RefusedConnectionLimit, RefusedNoClientCert, RefusedBadClientCert,
	RefusedTLSVersion, RefusedNotTLS, RefusedHandshakeAborted, RefusedServerTLS, RefusedHandshake}

// errServerTLS marks handshakes failed for want of the listener's own
// material, not because of the client.
var errServerTLS = mtls.ErrUnavailable

// refusalLog counts refused connections and logs them, at most one line
// per interval and reason, so that a scanner or a misconfigured fleet cannot
// flood the log; the counts are in the metric.
type refusalLog struct {
	log   *slog.Logger
	count func(reason string)
	// every limits the log lines of each reason.
	every map[string]*rate.Sometimes
}

// refusalLogInterval is the least time between two log lines of one kind.
const refusalLogInterval = 10 * time.Second

func newRefusalLog(log *slog.Logger, count func(string)) *refusalLog {
	r := &refusalLog{log: log, count: count, every: make(map[string]*rate.Sometimes, len(refusedReasons))}
	for _, reason := range refusedReasons {
		r.every[reason] = &rate.Sometimes{Interval: refusalLogInterval}
	}
	return r
}

func (r *refusalLog) refuse(reason string, remote net.Addr, err error) {
	r.count(reason)
	addr := ""
	if remote != nil {
		addr = remote.String()
	}
	switch reason {
	case RefusedConnectionLimit:
		r.every[reason].Do(func() {
			r.log.Warn("ext_authz connection refused: maxConnections reached (further refusals are counted in meshward_authz_refused_connections_total, logged at most every 10s)",
				logReason, reason, logRemote, addr)
		})
	case RefusedHandshakeAborted:
		r.log.Debug("ext_authz TLS handshake aborted by the client", logReason, reason, logRemote, addr, logError, err)
	case RefusedServerTLS:
		// Logged at error by the TLS configuration.
	default:
		r.every[reason].Do(func() {
			r.log.Warn("ext_authz TLS handshake failed; connection refused (further failures are counted in meshward_authz_refused_connections_total, logged at most every 10s)",
				logReason, reason, logRemote, addr, logError, err)
		})
	}
}

// handshakeReason classifies a failed server-side TLS handshake. crypto/tls
// types only some of its errors; the rest are told apart by their text,
// which tests with real clients pin.
func handshakeReason(err error) string {
	var recErr tls.RecordHeaderError
	var verErr *tls.CertificateVerificationError
	msg := err.Error()
	switch {
	case errors.Is(err, errServerTLS):
		return RefusedServerTLS
	case errors.As(err, &recErr):
		return RefusedNotTLS
	case errors.As(err, &verErr):
		return RefusedBadClientCert
	case strings.Contains(msg, "didn't provide a certificate"):
		return RefusedNoClientCert
	case strings.Contains(msg, "unsupported versions"):
		return RefusedTLSVersion
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed):
		return RefusedHandshakeAborted
	default:
		return RefusedHandshake
	}
}

// refusingCreds counts and logs failed handshakes of the credentials it
// wraps; the handshake's outcome is unchanged.
type refusingCreds struct {
	credentials.TransportCredentials
	r *refusalLog
}

func (c refusingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.r.refuse(handshakeReason(err), raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c refusingCreds) Clone() credentials.TransportCredentials {
	return refusingCreds{c.TransportCredentials.Clone(), c.r}
}

// limitListener admits at most cap(slots) open connections: one accepted
// beyond that is closed at once and counted (a closed connection costs
// nothing more, where a queued one would hold its buffers).
type limitListener struct {
	net.Listener
	slots chan struct{}
	r     *refusalLog
}

func newLimitListener(l net.Listener, maxConns int, r *refusalLog) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, maxConns), r: r}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			l.r.refuse(RefusedConnectionLimit, c.RemoteAddr(), nil)
			_ = c.Close()
		}
	}
}

// limitConn frees its slot when first closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
