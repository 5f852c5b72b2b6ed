// Package audit records every authorization decision and security event
// as JSON lines: redacted with HMAC-SHA256, queued off the request path,
// written by sinks that never leave a torn line, and failing closed when
// a record cannot be kept.
package audit
