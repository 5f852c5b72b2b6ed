package extauthz

// Log field names.
const (
	logAddress    = "address"
	logDecisionID = "decision_id"
	logError      = "error"
	logPanic      = "panic"
	logPlaintext  = "plaintext"
	logReason     = "reason"
	logRemote     = "remote"
)
