package audit

import (
	"errors"
	"fmt"
)

// Config is the `audit` configuration section.
type Config struct {
	// Sinks receive every record. Default: one stdout sink.
	Sinks []SinkConfig `yaml:"sinks"`
	// FailClosed turns a decision into a deny when its record cannot be
	// kept. Default true.
	FailClosed *bool `yaml:"failClosed"`
}

// SinkConfig is one destination of audit records.
type SinkConfig struct {
	// Type is "stdout" or "file".
	Type string `yaml:"type"`
	// Path of the file sink.
	Path string `yaml:"path"`
}

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if len(c.Sinks) == 0 {
		c.Sinks = []SinkConfig{{Type: "stdout"}}
	}
	if c.FailClosed == nil {
		t := true
		c.FailClosed = &t
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	for i, s := range c.Sinks {
		p := fmt.Sprintf("%s.sinks[%d]", path, i)
		switch s.Type {
		case "stdout":
		case "file":
			if s.Path == "" {
				errs = append(errs, fmt.Errorf("%s.path: required for a file sink", p))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.type: must be stdout or file, not %q", p, s.Type))
		}
	}
	return errors.Join(errs...)
}
