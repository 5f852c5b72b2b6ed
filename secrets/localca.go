package secrets

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meshward/meshward/internal/atrest"
)

// Files of a persisted local CA, inside LocalConfig.DataDir.
const (
	localCACertFile = "ca.crt"
	localCAKeyFile  = "ca.key"
	localCARootTTL  = 10 * 365 * 24 * time.Hour
	// leafBackdate absorbs clock skew between peers.
	leafBackdate = 10 * time.Second
)

// LocalCA is the embedded certificate authority: an ECDSA P-256 root that
// signs leaf SVIDs directly (their chain is the leaf alone). It is for a
// single process; replicas need Vault.
type LocalCA struct {
	root    *x509.Certificate
	key     *ecdsa.PrivateKey
	ttl     time.Duration
	secrets map[string]string
	o       options
}

// NewLocalCA builds the local CA: from cfg.DataDir when it holds one,
// else a new root, persisted there when DataDir is set. ttl is the leaf
// lifetime (0: 1h).
func NewLocalCA(cfg LocalConfig, ttl time.Duration, opts ...Option) (*LocalCA, error) {
	o := buildOptions(opts)
	if ttl <= 0 {
		ttl = DefaultCertTTL
	}
	ca := &LocalCA{ttl: ttl, secrets: cfg.Secrets, o: o}
	var err error
	if cfg.DataDir == "" {
		ca.root, ca.key, err = newRoot(o.now())
	} else {
		var encKey []byte
		if f := cfg.CAKeyEncryption.KeyFile; f != "" {
			raw, rerr := readPrivate(f)
			if rerr != nil {
				return nil, fmtErr("local ca: caKeyEncryption.keyFile", rerr)
			}
			if encKey, err = atrest.DecodeKey(raw); err != nil {
				return nil, fmtErr("local ca: caKeyEncryption.keyFile "+f, err)
			}
		}
		ca.root, ca.key, err = loadOrCreateRoot(cfg.DataDir, o.now(), encKey)
	}
	if err != nil {
		return nil, fmtErr("local ca", err)
	}
	return ca, nil
}

func newRoot(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmtErr("generate root key", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{"meshward"}, CommonName: "meshward local CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(localCARootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmtErr("create root", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmtErr("parse root", err)
	}
	return cert, key, nil
}

// checkPrivate refuses a file or folder that group or others may access.
func checkPrivate(path string, info fs.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = 0o700
		}
		return fmt.Errorf("%s has mode %04o: refusing it, group and others must have no access (want %04o)", path, perm, want)
	}
	return nil
}

func loadOrCreateRoot(dir string, now time.Time, encKey []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmtErr("create data dir", err)
		}
		if info, err = os.Stat(dir); err != nil {
			return nil, nil, fmtErr("data dir", err)
		}
	case err != nil:
		return nil, nil, fmtErr("data dir", err)
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("data dir: %s is not a folder", dir)
	}
	if err := checkPrivate(dir, info); err != nil {
		return nil, nil, fmtErr("data dir", err)
	}
	certPath, keyPath := filepath.Join(dir, localCACertFile), filepath.Join(dir, localCAKeyFile)
	certPEM, certErr := readPrivate(certPath)
	keyPEM, keyErr := readPrivate(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createRoot(certPath, keyPath, now, encKey)
	case certErr != nil:
		return nil, nil, certErr
	case keyErr != nil:
		return nil, nil, keyErr
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: want exactly one certificate (%w)", certPath, err)
	}
	if len(certs) != 1 {
		return nil, nil, fmt.Errorf("%s: want exactly one certificate, found %d", certPath, len(certs))
	}
	plainPEM, encrypted, err := openCAKey(keyPEM, encKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	signer, err := parseKeyPEM(plainPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, nil, fmt.Errorf("%s: want an ECDSA P-256 key", keyPath)
	}
	root := certs[0]
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", keyPath, certPath)
	}
	if !root.IsCA || !isSelfSigned(root) {
		return nil, nil, fmt.Errorf("%s: not a self-signed CA certificate", certPath)
	}
	if !now.Before(root.NotAfter) {
		return nil, nil, fmt.Errorf("%s: expired at %v", certPath, root.NotAfter)
	}
	if encKey != nil && !encrypted {
		// A key configured for a plaintext ca.key: encrypt it in place.
		if err := writeCAKey(keyPath, key, encKey); err != nil {
			return nil, nil, err
		}
	}
	return root, key, nil
}

// readPrivate reads a file after checking that only its owner can access it.
func readPrivate(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkPrivate(path, info); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

func createRoot(certPath, keyPath string, now time.Time, encKey []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	root, key, err := newRoot(now)
	if err != nil {
		return nil, nil, err
	}
	if err := writeCAKey(keyPath, key, encKey); err != nil {
		return nil, nil, err
	}
	if err := writePrivate(certPath, certsPEM([]*x509.Certificate{root})); err != nil {
		return nil, nil, err
	}
	return root, key, nil
}

// writePrivate writes a 0600 file atomically (temp file + rename).
func writePrivate(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmtErr("write "+path, err)
	}
	defer func() { _ = os.Remove(f.Name()) }() // fails harmlessly once renamed
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close() // the error above is the one to report
		return fmtErr("write "+path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmtErr("write "+path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmtErr("write "+path, err)
	}
	if err := f.Close(); err != nil {
		return fmtErr("write "+path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmtErr("write "+path, err)
	}
	return nil
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, always 16 bytes
	return new(big.Int).SetBytes(b)
}

// IssueSVID signs a new P-256 leaf for id.
func (ca *LocalCA) IssueSVID(_ context.Context, id string) (*SVID, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmtErr("local ca: issue", err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmtErr("local ca: issue", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmtErr("local ca: issue", err)
	}
	now := ca.o.now()
	notAfter := now.Add(ca.ttl)
	if notAfter.After(ca.root.NotAfter) {
		notAfter = ca.root.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmtErr("local ca: issue", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmtErr("local ca: issue", err)
	}
	return &SVID{ID: id, Chain: []*x509.Certificate{leaf}, Key: key, NotAfter: leaf.NotAfter}, nil
}

// Bundle returns the root.
func (ca *LocalCA) Bundle(context.Context) (*Bundle, error) {
	return &Bundle{Roots: []*x509.Certificate{ca.root}}, nil
}

// Secret reads the file configured for name in secrets.local.secrets.
func (ca *LocalCA) Secret(_ context.Context, name string) ([]byte, error) {
	file, ok := ca.secrets[name]
	if !ok {
		return nil, fmt.Errorf("local ca: secret %q: %w (the local source serves only secrets.local.secrets)", name, ErrNotFound)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("local ca: secret %q: %w", name, err)
	}
	return b, nil
}

// SecretNames lists the configured generic secrets.
func (ca *LocalCA) SecretNames() []string {
	names := make([]string, 0, len(ca.secrets))
	for n := range ca.secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
