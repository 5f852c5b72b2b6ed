package xds

import (
	"errors"
	"fmt"
	"math"
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
	// MaxHeaderListBytes bounds the gRPC metadata (HTTP/2 header list) of
	// one stream; a longer one is reset. Envoy sends a few hundred bytes.
	// Default 64 KiB, at most 16 MiB.
	MaxHeaderListBytes int `yaml:"maxHeaderListBytes"`
	// MaxConcurrentStreams bounds the streams one connection may open.
	// Envoy opens one ADS stream per connection; a few more allow a hot
	// restart. Default 16.
	MaxConcurrentStreams int `yaml:"maxConcurrentStreams"`
	// MaxConnections bounds the open client connections (one per Envoy,
	// two during its hot restart); one more is closed as soon as it is
	// accepted, and counted. Default 10000.
	MaxConnections int `yaml:"maxConnections"`
}

// Defaults.
const (
	// DefaultAddress is where the xDS server listens by default.
	DefaultAddress              = "127.0.0.1:18000"
	DefaultMaxHeaderListBytes   = 64 << 10
	DefaultMaxConcurrentStreams = 16
	DefaultMaxConnections       = 10000
	// MaxHeaderListBytesLimit is the highest maxHeaderListBytes accepted
	// (grpc-go's own default).
	MaxHeaderListBytesLimit = 16 << 20
)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.MaxHeaderListBytes == 0 {
		c.MaxHeaderListBytes = DefaultMaxHeaderListBytes
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
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
	if c.MaxHeaderListBytes < 0 || c.MaxHeaderListBytes > MaxHeaderListBytesLimit {
		errs = append(errs, fmt.Errorf("%s.maxHeaderListBytes: must be between 1 and %d, not %d", path, MaxHeaderListBytesLimit, c.MaxHeaderListBytes))
	}
	if c.MaxConcurrentStreams < 0 || c.MaxConcurrentStreams > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("%s.maxConcurrentStreams: must be positive, not %d", path, c.MaxConcurrentStreams))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("%s.maxConnections: must be positive, not %d", path, c.MaxConnections))
	}
	return errors.Join(errs...)
}
