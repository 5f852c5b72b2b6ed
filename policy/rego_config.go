package policy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshward/meshward/policy/internal/opa"
)

// RegoConfig configures OPA policies, run with the same input document and
// decision shape as opa-envoy-plugin (see docs/rego.md).
type RegoConfig struct {
	// Files are .rego, .json and .yaml files or folders, relative to the
	// configuration file (or absolute). Inside folders, *_test.rego files
	// are left out (run them with `meshward policy test`).
	Files []string `yaml:"files"`
	// Bundle is an OPA bundle file (.tar.gz), relative to the
	// configuration file (or absolute). It may be combined with Files.
	Bundle string `yaml:"bundle"`
	// BundleURL is an OPA bundle served over HTTPS (plain HTTP only to a
	// loopback host), polled every PollInterval with ETag /
	// If-None-Match. Exclusive with Bundle; it may be combined with
	// Files, compiled together with every fetched bundle.
	BundleURL string `yaml:"bundleURL"`
	// PollInterval between fetches of BundleURL. Default 60s, minimum 1s.
	PollInterval time.Duration `yaml:"pollInterval"`
	// BundleTLS configures the TLS client that fetches BundleURL: the
	// authorities to trust and a client certificate. Read at start.
	BundleTLS *RegoBundleTLS `yaml:"bundleTLS"`
	// Verification requires the bundle (file or URL) to be signed.
	Verification *RegoVerification `yaml:"verification"`
	// Query is the decision to evaluate. Default data.envoy.authz.allow;
	// the path style envoy/authz/allow is accepted too.
	Query string `yaml:"query"`
	// V0Compatible parses policies as Rego v0 (OPA before 1.0), like
	// opa's --v0-compatible.
	V0Compatible bool `yaml:"v0Compatible"`
	// MaxBundleBytes bounds a bundle's size. Default 64 MiB.
	MaxBundleBytes int64 `yaml:"maxBundleBytes"`
}

// RegoBundleTLS configures the TLS client of a bundle URL. Files are PEM,
// relative to the configuration file (or absolute).
type RegoBundleTLS struct {
	// CA holds the certificate authorities that sign the bundle server's
	// certificate, trusted instead of the system's.
	CA string `yaml:"ca"`
	// Cert and Key are a client certificate and its private key, for a
	// bundle server that requires one. Set both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// RegoVerification configures OPA bundle signature verification.
type RegoVerification struct {
	// KeyID is the key's name (the signature's kid). Default "default".
	KeyID string `yaml:"keyID"`
	// KeyFile is the PEM public key file (RS*, PS*, ES*), or a file
	// holding the shared secret (HS*), relative to the configuration file.
	KeyFile string `yaml:"keyFile"`
	// Algorithm is the JWS algorithm. Default RS256.
	Algorithm string `yaml:"algorithm"`
	// Scope, when set, must match the signature's scope.
	Scope string `yaml:"scope"`
	// Exclude lists bundle files left out of verification.
	Exclude []string `yaml:"exclude"`
}

// DefaultRegoPollInterval is the default interval between fetches of a
// Rego bundle URL.
const DefaultRegoPollInterval = 60 * time.Second

// DefaultRegoQuery is opa-envoy-plugin's default decision.
const DefaultRegoQuery = opa.DefaultQuery

var regoAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true, "HS256": true, "HS384": true, "HS512": true,
}

// SetDefaults fills in defaults.
func (r *RegoConfig) SetDefaults() {
	if r.Query == "" {
		r.Query = DefaultRegoQuery
	}
	if r.BundleURL != "" && r.PollInterval == 0 {
		r.PollInterval = DefaultRegoPollInterval
	}
	if r.Verification != nil && r.Verification.Algorithm == "" {
		r.Verification.Algorithm = "RS256"
	}
}

// Validate reports problems in r under path.
func (r *RegoConfig) Validate(path string) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(r.Files) == 0 && r.Bundle == "" && r.BundleURL == "" {
		add("%s: set files, bundle or bundleURL", path)
	}
	for i, f := range r.Files {
		if strings.TrimSpace(f) == "" {
			add("%s.files[%d]: empty path", path, i)
		}
	}
	if r.Bundle != "" && !strings.HasSuffix(r.Bundle, ".tar.gz") {
		add("%s.bundle: %q is not a .tar.gz bundle", path, r.Bundle)
	}
	if r.BundleURL != "" {
		if err := checkBundleURL(r.BundleURL); err != nil {
			add("%s.bundleURL: %v", path, err)
		}
		if r.Bundle != "" {
			add("%s.bundleURL: set bundle or bundleURL, not both", path)
		}
	}
	if t := r.BundleTLS; t != nil {
		switch {
		case r.BundleURL == "":
			add("%s.bundleTLS: only applies with bundleURL", path)
		case (t.Cert == "") != (t.Key == ""):
			add("%s.bundleTLS: set cert and key together", path)
		case t.CA == "" && t.Cert == "":
			add("%s.bundleTLS: set ca, or cert and key", path)
		}
	}
	switch {
	case r.PollInterval != 0 && r.BundleURL == "":
		add("%s.pollInterval: only applies with bundleURL", path)
	case r.PollInterval < 0 || (r.BundleURL != "" && r.PollInterval < time.Second):
		add("%s.pollInterval: must be at least 1s, not %v", path, r.PollInterval)
	}
	if _, err := opa.ParseQuery(r.Query); err != nil {
		add("%s.query: %v", path, err)
	}
	if r.MaxBundleBytes < 0 {
		add("%s.maxBundleBytes: must not be negative", path)
	}
	if v := r.Verification; v != nil {
		p := path + ".verification"
		if r.Bundle == "" && r.BundleURL == "" {
			add("%s: only applies with bundle or bundleURL", p)
		}
		if v.KeyFile == "" {
			add("%s.keyFile: required", p)
		}
		if !regoAlgorithms[v.Algorithm] {
			add("%s.algorithm: %q is not one of RS256/384/512, PS256/384/512, ES256/384/512, HS256/384/512", p, v.Algorithm)
		}
	}
	return errors.Join(errs...)
}

// opaConfig returns the opa package's configuration for r, resolving
// relative file names in dir (nil: the working directory) and reading the
// verification key.
func (r *RegoConfig) opaConfig(dir fs.FS) (opa.Config, error) {
	cfg := opa.Config{
		FS:             dir,
		Files:          r.Files,
		BundleFile:     r.Bundle,
		Query:          r.Query,
		V0Compatible:   r.V0Compatible,
		MaxBundleBytes: r.MaxBundleBytes,
	}
	if v := r.Verification; v != nil {
		key, err := readConfigFile(dir, v.KeyFile)
		if err != nil {
			return opa.Config{}, fmt.Errorf("rego verification key: %w", err)
		}
		cfg.Verification = &opa.Verification{
			KeyID: v.KeyID, Key: string(key), Algorithm: v.Algorithm, Scope: v.Scope, Exclude: v.Exclude,
		}
	}
	return cfg, nil
}

// bundleTransport returns the HTTP transport that fetches BundleURL: a
// copy of http.DefaultTransport (proxy settings from the environment),
// with BundleTLS's authorities and client certificate, TLS 1.2 at least.
func (r *RegoConfig) bundleTransport(dir fs.FS) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	t := r.BundleTLS
	if t == nil {
		return tr, nil
	}
	if t.CA != "" {
		pem, err := readConfigFile(dir, t.CA)
		if err != nil {
			return nil, fmt.Errorf("rego bundleTLS.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("rego bundleTLS.ca: %s holds no PEM certificate", t.CA)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	if t.Cert != "" {
		certPEM, err := readConfigFile(dir, t.Cert)
		if err != nil {
			return nil, fmt.Errorf("rego bundleTLS.cert: %w", err)
		}
		keyPEM, err := readConfigFile(dir, t.Key)
		if err != nil {
			return nil, fmt.Errorf("rego bundleTLS.key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("rego bundleTLS: client certificate: %w", err)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{pair}
	}
	return tr, nil
}

// checkBundleURL accepts https URLs, and http ones only to a loopback host
// (a bundle is the policy: it must not travel in clear over a network).
func checkBundleURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
		return fmt.Errorf("%q: http only to a loopback host; use https", raw)
	default:
		return fmt.Errorf("%q: scheme must be https (or http to a loopback host)", raw)
	}
}

func readConfigFile(dir fs.FS, name string) ([]byte, error) {
	if dir == nil || filepath.IsAbs(name) {
		return os.ReadFile(name)
	}
	return fs.ReadFile(dir, filepath.ToSlash(filepath.Clean(name)))
}
