package secrets

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound: no generic secret of that name is configured, or it has
	// no value yet.
	ErrNotFound = errors.New("secret not found")
	// ErrRejected: the source returned a certificate that failed the
	// checks every SVID must pass; it was not served.
	ErrRejected = errors.New("certificate rejected")
	// ErrNotReady: nothing has been issued yet.
	ErrNotReady = errors.New("not ready")
	// ErrInvalidID: not a valid SPIFFE ID.
	ErrInvalidID = errors.New("invalid SPIFFE ID")
)

// SVID is an X.509 SVID: a certificate chain whose leaf carries exactly
// one URI SAN, the SPIFFE ID, and the leaf's private key.
type SVID struct {
	// ID is the SPIFFE ID, e.g. spiffe://mesh.local/ns/default/sa/planner.
	ID string
	// Chain is the leaf followed by the intermediates; never the root.
	Chain []*x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
	// NotAfter is the leaf's expiry.
	NotAfter time.Time
}

// Leaf returns the leaf certificate.
func (s *SVID) Leaf() *x509.Certificate { return s.Chain[0] }

// Lifetime is the leaf's whole validity period.
func (s *SVID) Lifetime() time.Duration { return s.NotAfter.Sub(s.Chain[0].NotBefore) }

// ChainPEM encodes the chain (leaf first) as PEM.
func (s *SVID) ChainPEM() []byte { return certsPEM(s.Chain) }

// KeyPEM encodes the private key as a PKCS #8 PEM block.
func (s *SVID) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TLSCertificate returns the SVID as a tls.Certificate (for a listener's
// or a client's own certificate).
func (s *SVID) TLSCertificate() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: s.Key, Leaf: s.Chain[0]}
	for _, x := range s.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// Bundle is a trust bundle: the root certificates SVIDs chain to.
type Bundle struct {
	Roots []*x509.Certificate
}

// PEM encodes the roots.
func (b *Bundle) PEM() []byte { return certsPEM(b.Roots) }

// Pool returns the roots as an x509.CertPool.
func (b *Bundle) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range b.Roots {
		p.AddCert(r)
	}
	return p
}

// Equal reports whether two bundles hold the same roots in the same order.
func (b *Bundle) Equal(o *Bundle) bool {
	if b == nil || o == nil {
		return b == o
	}
	return slices.EqualFunc(b.Roots, o.Roots, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

func certsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// parseCertsPEM parses every CERTIFICATE block in data.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		return nil, errors.New("parse certificate: trailing data that is not PEM")
	}
	if len(out) == 0 {
		return nil, errors.New("parse certificate: no PEM certificate")
	}
	return out, nil
}

// parseKeyPEM parses a PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) private key.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("parse key: no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("parse key: unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("parse key: unsupported key type %T", k)
}

// ValidateID checks that id is a SPIFFE ID meshward can issue for:
// spiffe://<trust domain>/<path>, no query, fragment, user info or port,
// no empty, "." or ".." path segments.
func ValidateID(id string) error {
	u, err := url.Parse(id)
	if err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidID, id, err)
	}
	switch {
	case u.Scheme != "spiffe":
		return fmt.Errorf("%w %q: scheme must be spiffe", ErrInvalidID, id)
	case u.Host == "" || u.Port() != "" || u.User != nil || u.Opaque != "":
		return fmt.Errorf("%w %q: bad trust domain", ErrInvalidID, id)
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(id, "?#%"):
		return fmt.Errorf("%w %q: query, fragment and escapes are not allowed", ErrInvalidID, id)
	case u.Host != strings.ToLower(u.Host):
		return fmt.Errorf("%w %q: trust domain must be lowercase", ErrInvalidID, id)
	case u.Path == "" || u.Path == "/":
		return fmt.Errorf("%w %q: path required", ErrInvalidID, id)
	}
	for seg := range strings.SplitSeq(strings.TrimPrefix(u.Path, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q: empty, . or .. path segment", ErrInvalidID, id)
		}
	}
	return nil
}

// Check verifies s before it is served: a leaf and its key match, the
// leaf carries exactly one URI SAN equal to id, is not a CA, has the
// clientAuth and serverAuth EKUs and the digitalSignature key usage, is
// valid at now, and every certificate in the chain is signed by the next
// and none is self-signed (the root never travels in the chain).
func (s *SVID) Check(id string, now time.Time) error {
	if s == nil || len(s.Chain) == 0 || s.Chain[0] == nil {
		return fmt.Errorf("%w: empty chain", ErrRejected)
	}
	if s.Key == nil {
		return fmt.Errorf("%w: no private key", ErrRejected)
	}
	leaf := s.Chain[0]
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := leaf.PublicKey.(equaler); !ok || !pub.Equal(s.Key.Public()) {
		return fmt.Errorf("%w: private key does not match the certificate", ErrRejected)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		return fmt.Errorf("%w: URI SANs %v, want exactly [%s]", ErrRejected, leaf.URIs, id)
	}
	if leaf.IsCA {
		return fmt.Errorf("%w: leaf is a CA", ErrRejected)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("%w: leaf lacks the clientAuth and serverAuth EKUs", ErrRejected)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("%w: leaf lacks the digitalSignature key usage", ErrRejected)
	}
	if now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return fmt.Errorf("%w: not valid now (%v to %v)", ErrRejected, leaf.NotBefore, leaf.NotAfter)
	}
	if !s.NotAfter.Equal(leaf.NotAfter) {
		return fmt.Errorf("%w: NotAfter does not match the leaf", ErrRejected)
	}
	for i, c := range s.Chain {
		if i > 0 && !c.IsCA {
			return fmt.Errorf("%w: chain[%d] is not a CA", ErrRejected, i)
		}
		if i > 0 && isSelfSigned(c) {
			return fmt.Errorf("%w: chain[%d] is a root", ErrRejected, i)
		}
		if i+1 < len(s.Chain) {
			if err := c.CheckSignatureFrom(s.Chain[i+1]); err != nil {
				return fmt.Errorf("%w: chain[%d] not signed by chain[%d]: %w", ErrRejected, i, i+1, err)
			}
		}
	}
	return nil
}

// Verify checks that s chains to one of b's roots.
func (s *SVID) Verify(b *Bundle, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range s.Chain[1:] {
		inter.AddCert(c)
	}
	_, err := s.Chain[0].Verify(x509.VerifyOptions{
		Roots: b.Pool(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return nil
}

// VerifyPeer verifies a peer's certificate chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) against b and returns the peer's
// SPIFFE ID: the chain must lead to one of b's roots, and the leaf must be
// a non-CA clientAuth certificate with exactly one URI SAN, a valid SPIFFE
// ID. For mTLS listeners that authenticate nodes by SPIFFE ID.
func (b *Bundle) VerifyPeer(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 || chain[0] == nil {
		return "", fmt.Errorf("%w: no peer certificate", ErrRejected)
	}
	leaf := chain[0]
	if leaf.IsCA {
		return "", fmt.Errorf("%w: peer certificate is a CA", ErrRejected)
	}
	if len(leaf.URIs) != 1 {
		return "", fmt.Errorf("%w: peer certificate has %d URI SANs, want 1", ErrRejected, len(leaf.URIs))
	}
	id := leaf.URIs[0].String()
	if err := ValidateID(id); err != nil {
		return "", fmt.Errorf("%w: %w", ErrRejected, err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: b.Pool(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrRejected, err)
	}
	return id, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
