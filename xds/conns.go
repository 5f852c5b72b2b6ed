package xds

import (
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
