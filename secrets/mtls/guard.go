package mtls

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"
)

// Reasons a listener refuses a connection before any RPC: the values of
// the reason label of each listener's refusal counter.
const (
	// RefusedConnectionLimit: maxConnections connections were open.
	RefusedConnectionLimit = "connection_limit"
	// RefusedNoClientCert: the TLS client sent no certificate.
	RefusedNoClientCert = "no_client_cert"
	// RefusedBadClientCert: the client certificate does not chain to the
	// trust bundle, or is no X.509 SVID the authorizer admits.
	RefusedBadClientCert = "bad_client_cert"
	// RefusedTLSVersion: the client offered only TLS versions below 1.2.
	RefusedTLSVersion = "tls_version"
	// RefusedNotTLS: the client did not speak TLS (e.g. plaintext gRPC).
	RefusedNotTLS = "not_tls"
	// RefusedHandshakeAborted: the client closed the connection during the
	// handshake (a TCP probe, a cancelled dial).
	RefusedHandshakeAborted = "handshake_aborted"
	// RefusedServerTLS: the listener had no certificate or trust bundle to
	// serve (ErrUnavailable).
	RefusedServerTLS = "server_tls_unavailable"
	// RefusedHandshake: any other failed handshake (no common cipher
	// suite, timeout, malformed messages).
	RefusedHandshake = "tls_handshake"
)

// RefusedReasons are every reason above, for counters that export each
// at 0 from the start.
var RefusedReasons = []string{RefusedConnectionLimit, RefusedNoClientCert, RefusedBadClientCert,
	RefusedTLSVersion, RefusedNotTLS, RefusedHandshakeAborted, RefusedServerTLS, RefusedHandshake}

// RefuseFunc records one refused connection: its reason, the client's
// address and, for a failed handshake, the error.
type RefuseFunc func(reason string, remote net.Addr, err error)

// HandshakeReason classifies a failed server-side TLS handshake. crypto/tls
// types only some of its errors; the rest are told apart by their text,
// which tests with real clients pin.
func HandshakeReason(err error) string {
	var recErr tls.RecordHeaderError
	var verErr *tls.CertificateVerificationError
	msg := err.Error()
	switch {
	case errors.Is(err, ErrUnavailable):
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

// RefusingCreds wraps c so that every failed server handshake is recorded
// by refuse; the handshake's outcome is unchanged.
func RefusingCreds(c credentials.TransportCredentials, refuse RefuseFunc) credentials.TransportCredentials {
	return refusingCreds{c, refuse}
}

type refusingCreds struct {
	credentials.TransportCredentials
	refuse RefuseFunc
}

func (c refusingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.refuse(HandshakeReason(err), raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c refusingCreds) Clone() credentials.TransportCredentials {
	return refusingCreds{c.TransportCredentials.Clone(), c.refuse}
}

// LimitListener admits at most maxConns open connections of l: one
// accepted beyond that is closed at once and recorded by refuse as
// RefusedConnectionLimit (a closed connection costs nothing more, where a
// queued one would hold its buffers).
func LimitListener(l net.Listener, maxConns int, refuse RefuseFunc) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, maxConns), refuse: refuse}
}

type limitListener struct {
	net.Listener
	slots  chan struct{}
	refuse RefuseFunc
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
			l.refuse(RefusedConnectionLimit, c.RemoteAddr(), nil)
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

// RefusalMessages are a listener's log lines for refused connections.
type RefusalMessages struct {
	// Limit is logged (at most every RefusalLogInterval) when
	// maxConnections turned a connection away.
	Limit string
	// Aborted is logged at debug for a handshake the client gave up.
	Aborted string
	// Failed is logged (at most every RefusalLogInterval per reason) for
	// any other failed handshake.
	Failed string
}

// RefusalLogInterval is the least time between two log lines of one
// reason.
const RefusalLogInterval = 10 * time.Second

// RefusalLog counts refused connections and logs them, at most one line
// per interval and reason, so that a scanner or a misconfigured fleet
// cannot flood the log; the counts are in the listener's metric. Its
// Refuse method is a RefuseFunc.
type RefusalLog struct {
	log   *slog.Logger
	count func(reason string)
	msgs  RefusalMessages
	attrs []any // leading attributes of every warning
	// every limits the log lines of each reason.
	every map[string]*rate.Sometimes
}

// NewRefusalLog returns a RefusalLog counting with count and logging msgs
// to log, each warning led by attrs.
func NewRefusalLog(log *slog.Logger, count func(reason string), msgs RefusalMessages, attrs ...any) *RefusalLog {
	r := &RefusalLog{log: log, count: count, msgs: msgs, attrs: attrs, every: make(map[string]*rate.Sometimes, len(RefusedReasons))}
	for _, reason := range RefusedReasons {
		r.every[reason] = &rate.Sometimes{Interval: RefusalLogInterval}
	}
	return r
}

// Log attribute keys of the refusal lines.
const (
	logReason = "reason"
	logRemote = "remote"
	logError  = "error"
)

// Refuse counts and logs one refused connection.
func (r *RefusalLog) Refuse(reason string, remote net.Addr, err error) {
	r.count(reason)
	addr := ""
	if remote != nil {
		addr = remote.String()
	}
	switch reason {
	case RefusedConnectionLimit:
		r.every[reason].Do(func() {
			r.log.Warn(r.msgs.Limit, append(slices.Clip(r.attrs), logReason, reason, logRemote, addr)...)
		})
	case RefusedHandshakeAborted:
		r.log.Debug(r.msgs.Aborted, logReason, reason, logRemote, addr, logError, err)
	case RefusedServerTLS:
		// Logged at error by the TLS configuration.
	default:
		r.every[reason].Do(func() {
			r.log.Warn(r.msgs.Failed, append(slices.Clip(r.attrs), logReason, reason, logRemote, addr, logError, err)...)
		})
	}
}
