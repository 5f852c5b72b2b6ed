package extauthz

import (
	"errors"
	"fmt"
	"net"
)

// Config is the ext_authz server part of the `authz` configuration section.
type Config struct {
	// Address the gRPC server listens on. Default 127.0.0.1:9191.
	Address string `yaml:"address"`
	// Plaintext serves without TLS. Only for local setups; the default is
	// mTLS with TLS set.
	Plaintext bool `yaml:"plaintext"`
	// TLS names the server certificate, key and client CA files.
	TLS *TLSFiles `yaml:"tls"`
}

// TLSFiles are PEM files for the gRPC listener's mTLS.
type TLSFiles struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	CAFile   string `yaml:"caFile"`
}

// DefaultAddress is where the ext_authz server listens by default.
const DefaultAddress = "127.0.0.1:9191"

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("%s.address: %v", path, err))
	}
	if c.TLS != nil && c.Plaintext {
		errs = append(errs, fmt.Errorf("%s: plaintext and tls are exclusive", path))
	}
	return errors.Join(errs...)
}
