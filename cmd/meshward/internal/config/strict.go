package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// unknownFields walks a YAML node tree beside the Go type it will be decoded
// into and reports every mapping key that the type has no field for, each
// named by its path (e.g. "authz.rules[2].matchh: unknown field"). yaml.v3's
// own KnownFields reports them too, but names each by line and Go type
// ("field matchh not found in type policy.Rule"), which a user cannot map
// back to the file's keys; the walk names the config path.
func unknownFields(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return unknownFields(n.Content[0], t, path)
	}
	if n.Kind == yaml.AliasNode {
		return unknownFields(n.Alias, t, path)
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) || t.Implements(reflect.TypeFor[yaml.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return nil
	}
	var errs []error
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // type mismatches are reported by the decoder itself
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Value == "<<" {
				errs = append(errs, unknownFields(val, t, path)...)
				continue
			}
			ft, ok := fields[key.Value]
			if !ok {
				errs = append(errs, &lineError{msg: join(path, key.Value) + ": unknown field", line: key.Line})
				continue
			}
			errs = append(errs, unknownFields(val, ft, join(path, key.Value))...)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, unknownFields(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			errs = append(errs, unknownFields(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

// yamlFields maps the YAML keys of a struct type to their field types,
// following `yaml:",inline"` embedding the way yaml.v3 does.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
