// Package xds serves meshward's Envoy configuration: a go-control-plane
// ADS server (state-of-the-world and delta) with one snapshot per node,
// content-hash versions, NACK detection and mTLS node authentication so
// that a node receives only its own resources and secrets.
package xds
