// Package audit records every authorization decision and security event
// as JSON lines: redacted with HMAC-SHA256, queued off the request path,
// written by sinks that never leave a torn line, and failing closed when
// a record cannot be kept. File sinks hash-chain their records and seal
// the chain (HMAC-SHA256 or Ed25519), can encrypt them at rest
// (AES-256-GCM) and encrypt personal fields per data subject so that one
// can be forgotten (crypto-shredding); VerifyFilesWith checks all of it.
// The otlp sink exports records as OpenTelemetry logs.
package audit
