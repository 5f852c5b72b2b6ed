// Package extauthz is meshward's Envoy external-authorization service:
// the gRPC envoy.service.auth.v3.Authorization/Check server. Each Check
// becomes a canonical request, the verified caller identity is extracted,
// the current policy revision decides, and the decision is shaped into a
// CheckResponse and audited. A deny is a successful RPC; every failure
// path ends in deny.
package extauthz
