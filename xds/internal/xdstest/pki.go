package xdstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a throwaway certificate authority for tests.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	next atomic.Int64
}

// NewCA creates a CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{cert: cert, key: key, pool: pool}
	ca.next.Store(1)
	return ca, nil
}

// Pool is the CA's trust bundle.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Issue returns a leaf certificate with the given SPIFFE ID (if any) as
// URI SAN, valid for client and server auth on 127.0.0.1.
func (ca *CA) Issue(spiffeID string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.next.Add(1)),
		Subject:      pkix.Name{CommonName: "xdstest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if spiffeID != "" {
		u, err := url.Parse(spiffeID)
		if err != nil {
			return nil, fmt.Errorf("xdstest: %w", err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// TLSSource serves a fixed server certificate as the listener's X.509
// SVID and the CA as the trust bundle of the certificate's trust domain;
// it implements x509svid.Source and x509bundle.Source (xds.New's sources).
type TLSSource struct {
	Cert *tls.Certificate
	CA   *CA
}

// GetX509SVID implements x509svid.Source.
func (s TLSSource) GetX509SVID() (*x509svid.SVID, error) { return SVID(s.Cert) }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s TLSSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	own, err := SVID(s.Cert)
	if err != nil {
		return nil, err
	}
	if own.ID.TrustDomain() != td {
		return nil, fmt.Errorf("xdstest: no bundle for trust domain %q", td)
	}
	return s.CA.Bundle(td), nil
}

// Bundle is the CA's certificate as td's X.509 bundle.
func (ca *CA) Bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})
}

// SVID is c (issued with a SPIFFE ID) as an X.509 SVID.
func SVID(c *tls.Certificate) (*x509svid.SVID, error) {
	if c == nil {
		return nil, errors.New("xdstest: no certificate")
	}
	var chain []*x509.Certificate
	for _, der := range c.Certificate {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("xdstest: %w", err)
		}
		chain = append(chain, x)
	}
	if len(chain) == 0 {
		return nil, errors.New("xdstest: empty certificate")
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("xdstest: %w", err)
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("xdstest: private key is not a crypto.Signer")
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// ClientTLS is the TLS configuration of a node presenting cert.
func ClientTLS(ca *CA, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1"}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// MarshalPEM returns the CA certificate and key, for a test helper
// process that issues its own client certificates.
func (ca *CA) MarshalPEM() ([]byte, error) {
	key, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: key})...), nil
}

// LoadCA parses what MarshalPEM returned. Serial numbers of certificates
// it issues start at 1<<40 to stay apart from the original's.
func LoadCA(data []byte) (*CA, error) {
	ca := &CA{pool: x509.NewCertPool()}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var err error
		switch b.Type {
		case "CERTIFICATE":
			ca.cert, err = x509.ParseCertificate(b.Bytes)
		case "EC PRIVATE KEY":
			ca.key, err = x509.ParseECPrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("xdstest: load CA: %w", err)
		}
	}
	if ca.cert == nil || ca.key == nil {
		return nil, errors.New("xdstest: load CA: certificate or key missing")
	}
	ca.pool.AddCert(ca.cert)
	ca.next.Store(1 << 40)
	return ca, nil
}
