// Package mtls builds the mutual TLS configuration of meshward's listeners
// that serve from the secrets manager (xDS, and ext_authz with
// authz.tls.fromSecrets) on go-spiffe's tlsconfig: the listener presents
// its X.509 SVID and admits only clients whose X.509 SVID chains to the
// trust bundle and passes an authorizer.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrUnavailable marks handshakes failed for want of the listener's own
// material (its SVID or the trust bundle), not because of the client.
var ErrUnavailable = errors.New("server TLS material unavailable")

// AEADSuites are the TLS 1.2 cipher suites served: ECDHE with AEAD
// ciphers only (SECURITY.md, secure defaults). TLS 1.3 suites are all AEAD.
var AEADSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig returns a listener's TLS configuration: TLS 1.2 or later,
// AEADSuites, and tlsconfig.HookMTLSServerConfig with svids, bundles and
// authorize. Both sources are asked at every handshake, so rotations apply
// to new connections without a restart.
//
// Errors keep the classification the refusal counters rely on: a client
// certificate that fails verification or authorize (no SPIFFE ID, another
// CA or trust domain, a CA leaf) is a *tls.CertificateVerificationError; a
// failure of either source wraps ErrUnavailable and is passed to
// unavailable (to log it), and the handshake fails: never an unverified
// client.
func ServerConfig(svids x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer, unavailable func(error)) *tls.Config {
	src := sources{svids: svids, bundles: bundles, unavailable: unavailable}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: AEADSuites,
		// A resumed session skips VerifyPeerCertificate, so it would
		// outlive a bundle rotation: every connection is verified anew.
		SessionTicketsDisabled: true,
	}
	tlsconfig.HookMTLSServerConfig(c, src, src, authorize)
	verify := c.VerifyPeerCertificate
	c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err == nil || errors.Is(err, ErrUnavailable) {
			return err
		}
		return &tls.CertificateVerificationError{Err: err}
	}
	return c
}

// sources wraps the listener's sources so that their failures wrap
// ErrUnavailable and are reported.
type sources struct {
	svids       x509svid.Source
	bundles     x509bundle.Source
	unavailable func(error)
}

func (s sources) GetX509SVID() (*x509svid.SVID, error) {
	v, err := s.svids.GetX509SVID()
	if err == nil && v == nil {
		err = errors.New("no SVID")
	}
	if err != nil {
		return nil, s.fail("server certificate", err)
	}
	return v, nil
}

func (s sources) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.bundles.GetX509BundleForTrustDomain(td)
	if err == nil && b == nil {
		err = errors.New("no trust bundle")
	}
	if err == nil {
		return b, nil
	}
	// No bundle for a trust domain other than the listener's own is the
	// client's fault, not a missing piece of the listener's material.
	if own, e := s.svids.GetX509SVID(); e == nil && own != nil && own.ID.TrustDomain() != td {
		return nil, err
	}
	return nil, s.fail("client trust bundle", err)
}

func (s sources) fail(what string, err error) error {
	err = fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	if s.unavailable != nil {
		s.unavailable(err)
	}
	return err
}
