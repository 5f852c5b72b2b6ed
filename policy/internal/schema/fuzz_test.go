package schema

import (
	"os"
	"strings"
	"testing"

	"github.com/meshward/meshward/policy/internal/body"
)

// FuzzValidate: any body that decodes validates without panic, and its
// violations are few, sorted and point into the body.
func FuzzValidate(f *testing.F) {
	task, err := os.ReadFile(quickstartSchema)
	if err != nil {
		f.Fatal(err)
	}
	other := []byte(`{
		"type": "object",
		"properties": {
			"items": {"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "multipleOf": 3}]}, "uniqueItems": true},
			"n": {"exclusiveMaximum": 1e3, "minimum": -1.5},
			"nested": {"$ref": "#"}
		},
		"dependentRequired": {"a": ["b"]},
		"unevaluatedProperties": {"type": "boolean"}
	}`)
	set, err := Compile([]Source{{Name: "task", Data: task}, {Name: "other", Data: other}}, Options{MaxViolations: 5, Sensitive: []string{"sender"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`,
		`{"type":"x","id":1,"task":{"priority":1e400}}`,
		`{"items":["ab",3,"abcd",3],"n":1000,"nested":{"nested":{"a":true}},"z":1}`,
		`[1,{"a":[]}]`, `null`, `-0.0e-0`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := body.Decode(data, body.Limits{MaxDepth: 16})
		if err != nil {
			return
		}
		for _, name := range []string{"task", "other"} {
			vs := set.Validate(name, doc)
			if len(vs) > 5 {
				t.Fatalf("%d violations, want at most 5", len(vs))
			}
			for i, v := range vs {
				if v.Keyword == "" || v.Message == "" || (v.Path != "" && !strings.HasPrefix(v.Path, "/")) {
					t.Fatalf("bad violation %q", v)
				}
				if i > 0 && vs[i-1].Path > v.Path {
					t.Fatalf("violations not sorted: %q", vs)
				}
				if v.Keyword == "schema" {
					t.Fatalf("validator failure on %q: %q", data, v)
				}
			}
		}
	})
}
