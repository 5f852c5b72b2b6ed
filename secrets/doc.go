// Package secrets is where meshward's key material comes from: X.509
// SVIDs (certificate chains with a SPIFFE ID as URI SAN), trust bundles
// and generic secrets, from Vault (PKI, KV v2) or from an embedded local
// CA, kept fresh by rotation at half-life. It knows nothing of Envoy.
package secrets
