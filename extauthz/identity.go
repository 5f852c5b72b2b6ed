package extauthz

import (
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// identity returns the caller's SPIFFE ID from what Envoy verified: the
// peer certificate (when Envoy includes it) or source.principal. With both,
// they must agree.
func (s *Server) identity(src *authv3.AttributeContext_Peer) (string, *rejection) {
	principal := src.GetPrincipal()
	if cert := src.GetCertificate(); cert != "" {
		id, ok := s.certs.lookup(cert, s.idFromCert)
		if !ok {
			return "", s.badIdentity("peer certificate is not an X.509-SVID of trust domain " + s.quotedTD() + " (one spiffe:// URI SAN, not a CA, clientAuth usage)")
		}
		if principal != "" && principal != id {
			return "", s.badIdentity("peer certificate identity " + quoteSeen(id) + " does not match source.principal " + quoteSeen(principal) + " (trust domain " + s.quotedTD() + ")")
		}
		return id, nil
	}
	if principal == "" {
		return "", rejNoIdentity
	}
	if !s.validID(principal) {
		return "", s.badIdentity("peer identity " + quoteSeen(principal) + " is not a valid SPIFFE ID of trust domain " + s.quotedTD())
	}
	return principal, nil
}

// badIdentity is the 401 for an identity Envoy verified but meshward does
// not accept; msg names what was seen and the trust domain expected. It
// allocates, which only this deny path does; rejBadIdentity's status and
// reason are kept.
func (s *Server) badIdentity(msg string) *rejection {
	return &rejection{status: rejBadIdentity.status, reason: rejBadIdentity.reason, msg: msg}
}

func (s *Server) quotedTD() string { return strconv.Quote(s.td.String()) }

// maxSeenIdentity bounds how much of an identity a deny message repeats.
const maxSeenIdentity = 256

// quoteSeen quotes an identity for a message, cut to maxSeenIdentity bytes.
func quoteSeen(v string) string {
	if len(v) > maxSeenIdentity {
		return strconv.Quote(v[:maxSeenIdentity]) + "..."
	}
	return strconv.Quote(v)
}

// validID accepts a workload SPIFFE ID of the configured trust domain;
// go-spiffe rejects empty and dot path segments.
func (s *Server) validID(v string) bool {
	id, err := spiffeid.FromString(v)
	return err == nil && id.TrustDomain() == s.td && id.Path() != "" && id.String() == v
}

// idFromCert parses the (URL-encoded) PEM peer certificate and checks it is
// an X.509-SVID leaf of this trust domain: exactly one URI SAN, no CA flag,
// the clientAuth extended key usage.
func (s *Server) idFromCert(pemText string) (string, bool) {
	// Envoy percent-encodes it; raw PEM never holds '%' (and '+' is base64).
	if strings.IndexByte(pemText, '%') >= 0 {
		dec, err := url.PathUnescape(pemText)
		if err != nil {
			return "", false
		}
		pemText = dec
	}
	// With a chain, the leaf comes first; the rest is not identity.
	block, _ := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", false
	}
	if cert.IsCA {
		return "", false
	}
	clientAuth := false
	for _, eku := range cert.ExtKeyUsage {
		if eku == x509.ExtKeyUsageClientAuth {
			clientAuth = true
		}
	}
	if !clientAuth {
		return "", false
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil || id.TrustDomain() != s.td || id.Path() == "" {
		return "", false
	}
	return id.String(), true
}

// maxCachedCerts bounds the certificate cache (copied on each insert, so
// kept small: one entry per peer certificate); when full it starts over.
const maxCachedCerts = 1024

type certResult struct {
	id string
	ok bool
}

// certCache remembers the outcome of validating a peer certificate, keyed
// by its exact text: Envoy sends the same certificate on every Check of a
// connection, and parsing it each time would dominate the decision.
type certCache struct {
	m cowMap[string, certResult]
}

func (c *certCache) lookup(cert string, validate func(string) (string, bool)) (string, bool) {
	if r, hit := c.m.get(cert); hit {
		return r.id, r.ok
	}
	id, ok := validate(cert)
	c.m.put(cert, certResult{id: id, ok: ok})
	return id, ok
}
