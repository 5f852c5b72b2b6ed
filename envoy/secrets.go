package envoy

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TLSCertificateSecret is an SDS secret holding a certificate chain (leaf
// first, then intermediates) and its private key, both PEM. The xDS server
// serves the node's own one as SecretDefault.
func TLSCertificateSecret(name string, chainPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(chainPEM),
			PrivateKey:       inlineBytes(keyPEM),
		}},
	}
}

// ValidationSecret is an SDS secret holding a trust bundle (PEM roots).
// The xDS server serves it as SecretRootCA; which peer identities are
// accepted is decided by the listeners and clusters that reference it.
func ValidationSecret(name string, bundlePEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(bundlePEM),
		}},
	}
}

// GenericSecret is an SDS secret holding an opaque value, such as an API
// key the credential_injector filter puts in a header.
func GenericSecret(name string, value []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secret: inlineBytes(value),
		}},
	}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
