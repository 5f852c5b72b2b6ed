package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var td = spiffeid.RequireTrustDomainFromString("mesh.test")

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert, key}
}

// issue returns a leaf of ca with id ("" for none) as its URI SAN.
func (ca testCA) issue(t *testing.T, id string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	if id != "" {
		u, _ := url.Parse(id)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

type svidFunc func() (*x509svid.SVID, error)

func (f svidFunc) GetX509SVID() (*x509svid.SVID, error) { return f() }

type bundleFunc func(spiffeid.TrustDomain) (*x509bundle.Bundle, error)

func (f bundleFunc) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return f(td)
}

// handshake runs a server with conf against a client presenting cert
// (none if nil) and returns the server's handshake error.
func handshake(t *testing.T, conf *tls.Config, cert *tls.Certificate) error {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	client := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // the server is what is tested
	if cert != nil {
		client.Certificates = []tls.Certificate{*cert}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cc := tls.Client(c, client)
		if cc.Handshake() == nil {
			_, _ = cc.Read(make([]byte, 1)) // TLS 1.3: the server judges after the client's handshake
		}
		_ = c.Close()
	}()
	err := tls.Server(s, conf).Handshake()
	_ = s.Close()
	<-done
	return err
}

// ServerConfig keeps the error classes the refusal counters rely on:
// verification failures are *tls.CertificateVerificationError, missing
// material wraps ErrUnavailable and is reported, nothing else is either.
func TestServerConfigErrors(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	srvCert, srvKey := ca.issue(t, "spiffe://mesh.test/meshward")
	svid := &x509svid.SVID{ID: spiffeid.RequireFromString("spiffe://mesh.test/meshward"), Certificates: []*x509.Certificate{srvCert}, PrivateKey: srvKey}
	bundle := x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
	goodSVID := svidFunc(func() (*x509svid.SVID, error) { return svid, nil })
	goodBundle := bundleFunc(func(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
		if d != td {
			return nil, errors.New("no bundle")
		}
		return bundle, nil
	})
	down := errors.New("vault down")
	pair := func(ca testCA, id string) *tls.Certificate {
		c, k := ca.issue(t, id)
		return &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	}
	for _, tc := range []struct {
		name        string
		svids       x509svid.Source
		bundles     x509bundle.Source
		client      *tls.Certificate
		verify      bool // want a *tls.CertificateVerificationError
		unavailable bool // want ErrUnavailable, reported
	}{
		{"member of the trust domain", goodSVID, goodBundle, pair(ca, "spiffe://mesh.test/ns/a/sa/b"), false, false},
		{"no SPIFFE ID", goodSVID, goodBundle, pair(ca, ""), true, false},
		{"another trust domain", goodSVID, goodBundle, pair(ca, "spiffe://other.test/a"), true, false},
		{"another CA", goodSVID, goodBundle, pair(other, "spiffe://mesh.test/a"), true, false},
		{"no client certificate", goodSVID, goodBundle, nil, false, false},
		{"no SVID", svidFunc(func() (*x509svid.SVID, error) { return nil, down }), goodBundle, pair(ca, "spiffe://mesh.test/a"), false, true},
		{"no bundle", goodSVID, bundleFunc(func(spiffeid.TrustDomain) (*x509bundle.Bundle, error) { return nil, down }),
			pair(ca, "spiffe://mesh.test/a"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reported error
			conf := ServerConfig(tc.svids, tc.bundles, tlsconfig.AuthorizeMemberOf(td), func(err error) { reported = err })
			err := handshake(t, conf, tc.client)
			var verr *tls.CertificateVerificationError
			if got := errors.As(err, &verr); got != tc.verify {
				t.Errorf("handshake error %v: CertificateVerificationError %v, want %v", err, got, tc.verify)
			}
			if got := errors.Is(err, ErrUnavailable); got != tc.unavailable {
				t.Errorf("handshake error %v: ErrUnavailable %v, want %v", err, got, tc.unavailable)
			}
			if (reported != nil) != tc.unavailable {
				t.Errorf("reported %v, want a report %v", reported, tc.unavailable)
			}
			if tc.name == "member of the trust domain" && err != nil {
				t.Errorf("member refused: %v", err)
			}
			if tc.client == nil && err == nil {
				t.Error("a client without a certificate was admitted")
			}
		})
	}
}

// The served configuration keeps TLS 1.2 as its minimum and the AEAD
// suites, and verifies every connection anew.
func TestServerConfigBase(t *testing.T) {
	c := ServerConfig(svidFunc(nil), bundleFunc(nil), tlsconfig.AuthorizeAny(), nil)
	if c.MinVersion != tls.VersionTLS12 || len(c.CipherSuites) != len(AEADSuites) || !c.SessionTicketsDisabled ||
		c.ClientAuth != tls.RequireAnyClientCert || c.GetCertificate == nil || c.VerifyPeerCertificate == nil {
		t.Fatalf("config = min %x, %d suites, tickets disabled %v, client auth %v", c.MinVersion, len(c.CipherSuites), c.SessionTicketsDisabled, c.ClientAuth)
	}
}
