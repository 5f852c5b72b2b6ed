package opa

// Log field names.
const (
	logURL      = "url"
	logError    = "error"
	logRevision = "revision"
)
