package secrets

import (
	"errors"
	"fmt"
	"time"
)

// Config is the `secrets` configuration section.
type Config struct {
	// Source is "local" (default: an embedded CA) or "vault".
	Source string `yaml:"source"`
	// CertTTL is the lifetime of issued leaf certificates. Default 1h.
	CertTTL time.Duration `yaml:"certTTL"`
}

// Sources of key material.
const (
	SourceLocal = "local"
	SourceVault = "vault"
)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.Source == "" {
		c.Source = SourceLocal
	}
	if c.CertTTL == 0 {
		c.CertTTL = time.Hour
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	switch c.Source {
	case SourceLocal, SourceVault:
	default:
		errs = append(errs, fmt.Errorf("%s.source: must be %q or %q, not %q", path, SourceLocal, SourceVault, c.Source))
	}
	if c.CertTTL < time.Minute {
		errs = append(errs, fmt.Errorf("%s.certTTL: %v is shorter than the 1m minimum", path, c.CertTTL))
	}
	return errors.Join(errs...)
}
