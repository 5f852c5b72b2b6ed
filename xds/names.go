package xds

// Log field names.
const (
	logAddress = "address"
	logError   = "error"
	logNode    = "node"
	logPeer    = "peer_spiffe_id"
	logRemote  = "remote"
	logReason  = "reason"
	logDetail  = "detail"
	logEvent   = "event"
	logType    = "type"
	logVersion = "version"
)
