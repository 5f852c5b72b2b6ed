package extauthz

import (
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshward/meshward/secrets/mtls"
)

// Connection refusals: the values of the reason label of
// meshward_authz_refused_connections_total. They are refused before any
// Check, so no decision is made or audited for them.
const (
	// RefusedConnectionLimit: maxConnections connections were open.
	RefusedConnectionLimit = mtls.RefusedConnectionLimit
	// RefusedNoClientCert: the TLS client sent no certificate.
	RefusedNoClientCert = mtls.RefusedNoClientCert
	// RefusedBadClientCert: the client certificate does not chain to the
	// trust bundle (another CA, expired, wrong key usage).
	RefusedBadClientCert = mtls.RefusedBadClientCert
	// RefusedTLSVersion: the client offered only TLS versions below 1.2.
	RefusedTLSVersion = mtls.RefusedTLSVersion
	// RefusedNotTLS: the client did not speak TLS (e.g. plaintext gRPC).
	RefusedNotTLS = mtls.RefusedNotTLS
	// RefusedHandshakeAborted: the client closed the connection during the
	// handshake, e.g. a TCP health probe. Counted, logged at debug only.
	RefusedHandshakeAborted = mtls.RefusedHandshakeAborted
	// RefusedServerTLS: the listener had no certificate or trust bundle to
	// serve (logged at error where that happens).
	RefusedServerTLS = mtls.RefusedServerTLS
	// RefusedHandshake: any other failed handshake (no common cipher
	// suite, timeout, malformed messages).
	RefusedHandshake = mtls.RefusedHandshake
)

// refusedReasons are pre-registered so that a zero count is visible.
var refusedReasons = []string{RefusedConnectionLimit, RefusedNoClientCert, RefusedBadClientCert,
	RefusedTLSVersion, RefusedNotTLS, RefusedHandshakeAborted, RefusedServerTLS, RefusedHandshake}

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
