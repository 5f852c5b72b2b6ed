package xds

import (
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshward/meshward/secrets/mtls"
)

// Connection refusals, further values of the reason label of
// meshward_xds_refused_total (a handshake without any client certificate
// is ReasonNoClientCert). They happen before any stream, so there is no
// node to name; they are counted and logged, rate-limited, but not sent
// to the EventSink, which anyone reaching the port could flood otherwise.
const (
	// ReasonConnectionLimit: maxConnections connections were open.
	ReasonConnectionLimit = mtls.RefusedConnectionLimit
	// ReasonBadClientCert: the client certificate does not chain to the
	// trust bundle (another CA, expired, wrong key usage).
	ReasonBadClientCert = mtls.RefusedBadClientCert
	// ReasonTLSVersion: the client offered only TLS versions below 1.2.
	ReasonTLSVersion = mtls.RefusedTLSVersion
	// ReasonNotTLS: the client did not speak TLS (e.g. plaintext gRPC).
	ReasonNotTLS = mtls.RefusedNotTLS
	// ReasonHandshakeAborted: the client closed the connection during the
	// handshake, e.g. a TCP health probe. Counted, logged at debug only.
	ReasonHandshakeAborted = mtls.RefusedHandshakeAborted
	// ReasonServerTLS: the listener had no certificate or trust bundle to
	// serve (logged at error where that happens).
	ReasonServerTLS = mtls.RefusedServerTLS
	// ReasonHandshake: any other failed handshake (no common cipher suite,
	// timeout, malformed messages).
	ReasonHandshake = mtls.RefusedHandshake
)

// connReasons are the reasons refusalLog counts.
var connReasons = []string{ReasonConnectionLimit, ReasonNoClientCert, ReasonBadClientCert,
	ReasonTLSVersion, ReasonNotTLS, ReasonHandshakeAborted, ReasonServerTLS, ReasonHandshake}

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
