package secrets

import (
	"crypto/x509"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// FuzzValidateID: no panic, and an accepted ID has a spiffe scheme and a
// path without empty or dot segments.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"spiffe://mesh.local/ns/a/sa/b", "spiffe://mesh.local/a/../b", "spiffe://x/%2e", "spiffe://[::1]/a", "spiffe://mesh.local:1/a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateID(id) != nil {
			return
		}
		if len(id) < len("spiffe://a/b") || id[:9] != "spiffe://" {
			t.Fatalf("accepted %q", id)
		}
	})
}

// FuzzParseIssued: whatever a PKI answer holds, parsing and checking it
// never panics, and nothing that passes Check lacks a key or the ID.
func FuzzParseIssued(f *testing.F) {
	ca, err := NewLocalCA(LocalConfig{}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	const id = "spiffe://mesh.local/a"
	s, _ := ca.IssueSVID(f.Context(), id)
	key, _ := s.KeyPEM()
	f.Add(string(s.ChainPEM()), string(key), string(certsPEM([]*x509.Certificate{ca.root})))
	f.Add("", "", "")
	f.Add("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n", "x")
	f.Fuzz(func(t *testing.T, cert, key, chain string) {
		sec := &vault.Secret{Data: map[string]any{"certificate": cert, "private_key": key, "ca_chain": []any{chain}}}
		svid, err := parseIssued(sec, id)
		if err != nil {
			return
		}
		if svid.Check(id, time.Now()) == nil && (svid.Key == nil || svid.Leaf().URIs[0].String() != id) {
			t.Fatal("an SVID without its key or ID passed Check")
		}
	})
}
