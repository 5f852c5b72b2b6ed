package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
)

// clientCert returns a throwaway CA and a client certificate it signs,
// as PEM: the CA certificate, the client certificate and its key.
func clientCert(t *testing.T) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bundle client CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "meshward"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// TestBundleTLS: a bundle URL on a server with a private CA that
// requires a client certificate is fetched only with authz.rego.bundleTLS
// naming both.
func TestBundleTLS(t *testing.T) {
	caPEM, certPEM, keyPEM := clientCert(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	srv := &bundleHTTP{}
	srv.set(regoBundleBytes(t, true))
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	defer hs.Close()
	serverCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})

	for _, tc := range []struct {
		name, tls string
		err       string // "" for a fetched bundle
		loadErr   string // refused by config.Load already
	}{
		{name: "system roots", err: "certificate"},
		{name: "server CA, no client certificate", tls: "      ca: server-ca.pem\n", err: "certificate"},
		{name: "server CA and client certificate", tls: "      ca: server-ca.pem\n      cert: client.pem\n      key: client.key\n"},
		{name: "missing CA file", tls: "      ca: nowhere.pem\n", loadErr: "authz.rego.bundleTLS.ca: open nowhere.pem: no such file"},
		{name: "not PEM", tls: "      ca: client.key.txt\n", err: "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := bundleConfigFile(t, hs.URL+"/bundle.tar.gz")
			dir := filepath.Dir(path)
			for name, data := range map[string][]byte{"server-ca.pem": serverCA, "client.pem": certPEM, "client.key": keyPEM, "client.key.txt": []byte("not pem")} {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.tls != "" {
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				s := strings.Replace(string(raw), "    pollInterval: 1s\n", "    pollInterval: 1s\n    bundleTLS:\n"+tc.tls, 1)
				if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := config.Load(path)
			if tc.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.loadErr) {
					t.Fatalf("config.Load = %v, want an error with %q", err, tc.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rev, err := compilePolicy(cfg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("compilePolicy = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("compilePolicy: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if d := rev.Decide(ctx, viewerInput()); !d.Allow || d.Err != nil {
				t.Errorf("allow %v (err %v), want the fetched bundle's allow", d.Allow, d.Err)
			}
		})
	}
}
