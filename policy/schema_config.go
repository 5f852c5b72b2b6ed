package policy

import (
	"errors"
	"fmt"
)

// SchemaConfig names one JSON Schema, from a file or inline.
type SchemaConfig struct {
	Name string `yaml:"name"`
	// File is read relative to the configuration file.
	File string `yaml:"file"`
	// Inline is the schema itself, as YAML or JSON.
	Inline map[string]any `yaml:"inline"`
}

// SchemaSelector picks a body's schema by one of its fields.
type SchemaSelector struct {
	// Field is a top-level field of the JSON body, e.g. "type".
	Field string `yaml:"field"`
	// Schemas maps the field's values to schema names; any other value is denied.
	Schemas map[string]string `yaml:"schemas"`
}

func (s SchemaConfig) validate(p string) error {
	if (s.File == "") == (s.Inline == nil) {
		return fmt.Errorf("%s: set exactly one of file and inline", p)
	}
	return nil
}

func (s *SchemaSelector) validate(p string, known map[string]bool) error {
	var errs []error
	if s.Field == "" {
		errs = append(errs, fmt.Errorf("%s.field: required", p))
	}
	if len(s.Schemas) == 0 {
		errs = append(errs, fmt.Errorf("%s.schemas: required", p))
	}
	for v, name := range s.Schemas {
		if !known[name] {
			errs = append(errs, fmt.Errorf("%s.schemas.%s: unknown schema %q", p, v, name))
		}
	}
	return errors.Join(errs...)
}
