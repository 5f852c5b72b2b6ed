package extauthz

import (
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
