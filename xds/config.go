package xds

import (
	"errors"
	"fmt"
	"net"
)

// Config is the `xds` configuration section.
type Config struct {
	// Address the xDS gRPC server listens on. Default 127.0.0.1:18000.
	Address string `yaml:"address"`
	// Insecure serves xDS without mTLS node authentication. Local demos
	// only: any process that reaches the port gets any node's secrets.
	Insecure bool `yaml:"insecure"`
	// AuthzAddress is the ext_authz address the agents' Envoys dial
	// (host:port). Default: authz.address, which is right when Envoys reach
	// meshward where it listens; set it when they reach it through a
	// Service name or load balancer, or when ext_authz runs elsewhere.
	AuthzAddress string `yaml:"authzAddress"`
}

// DefaultAddress is where the xDS server listens by default.
const DefaultAddress = "127.0.0.1:18000"

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
		errs = append(errs, fmt.Errorf("%s.address: %w", path, err))
	}
	if c.AuthzAddress != "" {
		if _, port, err := net.SplitHostPort(c.AuthzAddress); err != nil {
			errs = append(errs, fmt.Errorf("%s.authzAddress: %w", path, err))
		} else if port == "0" {
			errs = append(errs, fmt.Errorf("%s.authzAddress: port 0 cannot be dialled", path))
		}
	}
	return errors.Join(errs...)
}
