package xds

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

// Connection refusals, further values of the reason label of
// meshward_xds_refused_total (a handshake without any client certificate
// is ReasonNoClientCert). They happen before any stream, so there is no
// node to name; they are counted and logged, rate-limited, but not sent
// to the EventSink, which anyone reaching the port could flood otherwise.
const (
	// ReasonConnectionLimit: maxConnections connections were open.
	ReasonConnectionLimit = "connection_limit"
	// ReasonBadClientCert: the client certificate does not chain to the
	// trust bundle (another CA, expired, wrong key usage).
	ReasonBadClientCert = "bad_client_cert"
	// ReasonTLSVersion: the client offered only TLS versions below 1.2.
	ReasonTLSVersion = "tls_version"
	// ReasonNotTLS: the client did not speak TLS (e.g. plaintext gRPC).
	ReasonNotTLS = "not_tls"
	// ReasonHandshakeAborted: the client closed the connection during the
	// handshake, e.g. a TCP health probe. Counted, logged at debug only.
	ReasonHandshakeAborted = "handshake_aborted"
	// ReasonServerTLS: the listener had no certificate or trust bundle to
	// serve (logged at error where that happens).
	ReasonServerTLS = "server_tls_unavailable"
	// ReasonHandshake: any other failed handshake (no common cipher suite,
	// timeout, malformed messages).
	ReasonHandshake = "tls_handshake"
)

// connReasons are the reasons refusalLog counts.
var connReasons = []string{ReasonConnectionLimit, ReasonNoClientCert, ReasonBadClientCert,
	ReasonTLSVersion, ReasonNotTLS, ReasonHandshakeAborted, ReasonServerTLS, ReasonHandshake}

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
	r := &refusalLog{log: log, count: count, every: make(map[string]*rate.Sometimes, len(connReasons))}
	for _, reason := range connReasons {
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
	case ReasonConnectionLimit:
		r.every[reason].Do(func() {
			r.log.Warn("xds: connection refused: xds.maxConnections reached (further refusals are counted in meshward_xds_refused_total, logged at most every 10s)",
				logEvent, "security", logReason, reason, logRemote, addr)
		})
	case ReasonHandshakeAborted:
		r.log.Debug("xds: TLS handshake aborted by the client", logReason, reason, logRemote, addr, logError, err)
	case ReasonServerTLS:
		// Logged at error by the TLS configuration.
	default:
		r.every[reason].Do(func() {
			r.log.Warn("xds: security event: TLS handshake failed; connection refused (further failures are counted in meshward_xds_refused_total, logged at most every 10s)",
				logEvent, "security", logReason, reason, logRemote, addr, logError, err)
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
		return ReasonServerTLS
	case errors.As(err, &recErr):
		return ReasonNotTLS
	case errors.As(err, &verErr):
		return ReasonBadClientCert
	case strings.Contains(msg, "didn't provide a certificate"):
		return ReasonNoClientCert
	case strings.Contains(msg, "unsupported versions"):
		return ReasonTLSVersion
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed):
		return ReasonHandshakeAborted
	default:
		return ReasonHandshake
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
			l.r.refuse(ReasonConnectionLimit, c.RemoteAddr(), nil)
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
