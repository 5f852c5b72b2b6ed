package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// configField is one key of the configuration file.
type configField struct {
	path string // e.g. authz.rules[].require.attributes.<name>.atLeast
	key  string // the key itself: atLeast
}

// configFields walks the yaml tags of t the way the strict decoder does,
// listing every key a configuration file may hold.
func configFields(t reflect.Type, path string, seen map[reflect.Type]bool) []configField {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) || t.Implements(reflect.TypeFor[yaml.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) || seen[t] {
		return nil
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return configFields(t.Elem(), path+"[]", seen)
	case reflect.Map:
		return configFields(t.Elem(), path+".<name>", seen)
	case reflect.Struct:
	default:
		return nil
	}
	seen[t] = true
	defer delete(seen, t)
	var out []configField
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
			out = append(out, configFields(f.Type, path, seen)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		p := join(path, name)
		out = append(out, configField{path: p, key: name})
		out = append(out, configFields(f.Type, p, seen)...)
	}
	return out
}

// sectionDocs are the documents that describe each top-level section.
var sectionDocs = map[string][]string{
	"trustDomain": {"configuration.md"},
	"admin":       {"configuration.md"},
	"authz":       {"configuration.md", "authz.md", "schemas.md", "rego.md"},
	"xds":         {"xds.md"},
	"agents":      {"envoy.md"},
	"envoy":       {"envoy.md"},
	"secrets":     {"secrets.md"},
	"audit":       {"audit.md"},
	"quarantine":  {"configuration.md", "incident-response.md"},
	"detection":   {"configuration.md", "incident-response.md"},
}

// TestEveryConfigFieldDocumented: every key of the configuration file is
// named in the documentation of its section, in code (`key`, `a.b.key`)
// or as a YAML key in an example (`key:`, `{key: ...}`, `# key:`).
func TestEveryConfigFieldDocumented(t *testing.T) {
	docsDir := filepath.Join("..", "..", "..", "..", "docs")
	text := map[string]string{}
	fields := configFields(reflect.TypeFor[Config](), "", map[reflect.Type]bool{})
	if len(fields) < 100 {
		t.Fatalf("found only %d configuration keys: is the walk still right?", len(fields))
	}
	for _, f := range fields {
		top, _, _ := strings.Cut(f.path, ".")
		top, _, _ = strings.Cut(top, "[")
		docs, ok := sectionDocs[top]
		if !ok {
			t.Errorf("top-level key %q has no documents in sectionDocs", top)
			continue
		}
		re := regexp.MustCompile("(`[^`\n]*\\b" + regexp.QuoteMeta(f.key) + "\\b[^`\n]*`)|(?m)(^|[\\s{,#])" + regexp.QuoteMeta(f.key) + ":")
		found := false
		for _, d := range docs {
			if _, ok := text[d]; !ok {
				b, err := os.ReadFile(filepath.Join(docsDir, d))
				if err != nil {
					t.Fatal(err)
				}
				text[d] = string(b)
			}
			if re.MatchString(text[d]) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: key %q is not named in docs/%s", f.path, f.key, strings.Join(docs, ", docs/"))
		}
	}
}

func TestConfigFieldsWalk(t *testing.T) {
	got := map[string]bool{}
	for _, f := range configFields(reflect.TypeFor[Config](), "", map[reflect.Type]bool{}) {
		got[f.path] = true
	}
	for _, want := range []string{"trustDomain", "admin.address", "authz.plaintext", "authz.rules[].require.attributes.<name>.atLeast",
		"authz.rules[].schemaBy", "authz.rego.bundleTLS.ca", "secrets.vault.auth.appRole.secretIDFile", "audit.sinks[].maxAge"} {
		if !got[want] {
			t.Errorf("walk does not list %s", want)
		}
	}
	if got["Dir"] || got["dir"] || got["source"] {
		t.Error("walk lists fields with yaml:\"-\"")
	}
}
