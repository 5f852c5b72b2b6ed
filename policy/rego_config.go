package policy

import (
	"errors"
	"fmt"
)

// RegoConfig configures OPA policies.
type RegoConfig struct {
	// Files are .rego, .json and .yaml files or folders, relative to the
	// configuration file.
	Files []string `yaml:"files"`
	// Query is the decision to evaluate. Default data.envoy.authz.allow;
	// the path style envoy/authz/allow is accepted too.
	Query string `yaml:"query"`
}

// DefaultRegoQuery is opa-envoy-plugin's default decision.
const DefaultRegoQuery = "data.envoy.authz.allow"

// SetDefaults fills in defaults.
func (r *RegoConfig) SetDefaults() {
	if r.Query == "" {
		r.Query = DefaultRegoQuery
	}
}

// Validate reports problems in r under path.
func (r *RegoConfig) Validate(path string) error {
	var errs []error
	if len(r.Files) == 0 {
		errs = append(errs, fmt.Errorf("%s.files: at least one policy file or folder is required", path))
	}
	return errors.Join(errs...)
}
