// Package envoy translates meshward's mesh model (agents, their peers and
// secrets) into Envoy v3 resources and bootstraps with hardened defaults.
// It is pure: no I/O, no sockets; every resource it returns passes the
// Envoy API's own validation.
package envoy
