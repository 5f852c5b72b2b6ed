package policy_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/meshward/meshward/policy"
)

const schemaTaskBody = `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3,"args":{"doc":"q3-report"}}}`

// schemaStepConfig has one rule with a fixed schema (file) and one that
// selects by discriminator (file or inline).
func schemaStepConfig(t testing.TB) (policy.Config, fstest.MapFS) {
	task, err := os.ReadFile("../examples/quickstart/schemas/task.request.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := fstest.MapFS{"schemas/task.request.json": {Data: task}}
	planner := "spiffe://mesh.local/ns/default/sa/planner"
	return policy.Config{
		Identities: []policy.Identity{{SPIFFEID: planner, Roles: []string{"operator"}}},
		Rules: []policy.Rule{
			{Name: "create-task", Match: policy.Match{Methods: []string{"POST"}, Path: "/v1/tasks"},
				Require: policy.Require{AnyRole: []string{"operator"}}, Schema: "task.request"},
			{Name: "messages", Match: policy.Match{Methods: []string{"POST"}, Path: "/v1/messages"},
				Require: policy.Require{AnyRole: []string{"operator"}},
				SchemaBy: &policy.SchemaSelector{Field: "type", Schemas: map[string]string{
					"task.request": "task.request", "task.cancel": "task.cancel"}}},
		},
		Schemas: []policy.SchemaConfig{
			{Name: "task.request", File: "schemas/task.request.json"},
			{Name: "task.cancel", Inline: map[string]any{
				"type": "object", "required": []any{"type", "id"},
				"properties":           map[string]any{"type": map[string]any{"const": "task.cancel"}, "id": map[string]any{"type": "string"}},
				"additionalProperties": false,
			}},
		},
	}, dir
}

func schemaInput(path, body string, headers map[string]string) *policy.Input {
	h := map[string]string{"content-type": "application/json"}
	for k, v := range headers {
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return &policy.Input{Method: "POST", Host: "executor.mesh.local", Path: path, Headers: h, Body: []byte(body),
		Principal: "spiffe://mesh.local/ns/default/sa/planner"}
}

// TestSchemaStep runs SECURITY.md's body rows through a compiled revision.
func TestSchemaStep(t *testing.T) {
	cfg, dir := schemaStepConfig(t)
	rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir,
		NewBodyChecker: policy.NewSchemaBodyChecker(policy.BodyLimits{MaxDepth: 8, MaxValues: 100, Sensitive: []string{"secret"}})})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		in         *policy.Input
		status     int
		code       string
		violations []string
		message    string // substring
	}{
		{"valid body", schemaInput("/v1/tasks", schemaTaskBody, nil), 200, "", nil, ""},
		{"schema violation", schemaInput("/v1/tasks", strings.Replace(schemaTaskBody, `"priority":3`, `"priority":12`, 1), nil),
			400, "schema_violation", []string{"/task/priority"}, `/task/priority maximum: 12 > 9`},
		{"discriminator selects inline schema", schemaInput("/v1/messages", `{"type":"task.cancel","id":"x"}`, nil), 200, "", nil, ""},
		{"discriminator selects file schema", schemaInput("/v1/messages", schemaTaskBody, nil), 200, "", nil, ""},
		{"discriminated body fails its schema", schemaInput("/v1/messages", `{"type":"task.cancel","id":1}`, nil),
			400, "schema_violation", []string{"/id"}, "got number, want string"},
		{"unknown discriminator value", schemaInput("/v1/messages", `{"type":"task.delete"}`, nil),
			400, "schema_violation", []string{"/type"}, `unknown value "task.delete"`},
		{"partial body header", schemaInput("/v1/tasks", schemaTaskBody, map[string]string{"x-envoy-auth-partial-body": "true"}),
			413, "partial_body", nil, "cut"},
		{"missing content type", schemaInput("/v1/tasks", schemaTaskBody, map[string]string{"content-type": ""}),
			415, "unsupported_media_type", nil, "missing"},
		{"non-JSON content type", schemaInput("/v1/tasks", schemaTaskBody, map[string]string{"content-type": "text/plain"}),
			415, "unsupported_media_type", nil, "not JSON"},
		{"gzip", schemaInput("/v1/tasks", schemaTaskBody, map[string]string{"content-encoding": "gzip"}),
			415, "unsupported_content_encoding", nil, "gzip"},
		{"malformed JSON", schemaInput("/v1/tasks", `{"type":`, nil), 400, "invalid_json", nil, "line 1, column 9"},
		{"invalid UTF-8", schemaInput("/v1/tasks", "{\"type\":\"\xff\"}", nil), 400, "invalid_json", nil, "invalid UTF-8"},
		{"duplicate keys", schemaInput("/v1/tasks", `{"role":"user","role":"admin"}`, nil), 400, "invalid_json", nil, "duplicate key"},
		{"case-variant keys", schemaInput("/v1/tasks", `{"role":"user","Role":"admin"}`, nil), 400, "invalid_json", nil, "differ only in case"},
		{"too many values", schemaInput("/v1/tasks", "["+strings.Repeat("0,", 100)+"0]", nil), 400, "body_too_large", nil, "limit of 100"},
		{"too deep", schemaInput("/v1/tasks", strings.Repeat("[", 9)+strings.Repeat("]", 9), nil), 400, "invalid_json", nil, "limit of 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d := rev.Decide(c, tt.in)
			if d.Status != tt.status || d.Code != tt.code || d.Allow != (tt.status == 200) || d.Err != nil {
				t.Fatalf("Decide = allow %v status %d code %q err %v (%s); want status %d code %q",
					d.Allow, d.Status, d.Code, d.Err, d.Message, tt.status, tt.code)
			}
			var paths []string
			for _, v := range d.Violations {
				paths = append(paths, v.Path)
				if v.Keyword == "" || v.Message == "" {
					t.Errorf("violation %+v lacks keyword or message", v)
				}
			}
			if !reflect.DeepEqual(paths, tt.violations) {
				t.Errorf("violation paths %q, want %q", paths, tt.violations)
			}
			if _, ok := tt.in.ParsedBodyValue(); tt.status == 200 && !ok {
				t.Error("an accepted body was not kept for the next step")
			}
			if !strings.Contains(d.Message, tt.message) {
				t.Errorf("message %q does not say %q", d.Message, tt.message)
			}
		})
	}
}

func TestSchemaStepCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*policy.Config, fstest.MapFS)
		limits policy.BodyLimits
		want   string
	}{
		{"broken schema file names file and pointer", func(c *policy.Config, dir fstest.MapFS) {
			dir["schemas/task.request.json"] = &fstest.MapFile{Data: []byte(`{"properties":{"task":{"maximum":"nine"}}}`)}
		}, policy.BodyLimits{}, `schema "task.request" (schemas/task.request.json) at /properties/task/maximum`},
		{"missing schema file", func(c *policy.Config, dir fstest.MapFS) {
			delete(dir, "schemas/task.request.json")
		}, policy.BodyLimits{}, `schema "task.request" (schemas/task.request.json): open schemas/task.request.json`},
		{"broken inline schema", func(c *policy.Config, dir fstest.MapFS) {
			c.Schemas[1].Inline["required"] = "type"
		}, policy.BodyLimits{}, `schema "task.cancel" (authz.schemas[1].inline) at /required`},
		{"remote ref", func(c *policy.Config, dir fstest.MapFS) {
			c.Schemas[1].Inline["$ref"] = "https://schemas.example.com/cancel.json"
		}, policy.BodyLimits{}, "never fetched from the network"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, dir := schemaStepConfig(t)
			tt.edit(&cfg, dir)
			_, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir, NewBodyChecker: policy.NewSchemaBodyChecker(tt.limits)})
			if !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
}

func TestBodyLimitsValidate(t *testing.T) {
	tests := []struct {
		name string
		lim  policy.BodyLimits
		want string // "" valid
	}{
		{"defaults", policy.BodyLimits{}, ""},
		{"max depth 1000", policy.BodyLimits{MaxDepth: 1000}, ""},
		{"max depth over 1000", policy.BodyLimits{MaxDepth: 1001}, "b.maxDepth: must be between 1 and 1000"},
		{"negative bytes", policy.BodyLimits{MaxBytes: -1}, "b.maxBytes"},
		{"negative values", policy.BodyLimits{MaxValues: -1}, "b.maxValues"},
		{"negative violations", policy.BodyLimits{MaxViolations: -1}, "b.maxViolations"},
		{"empty sensitive", policy.BodyLimits{Sensitive: []string{""}}, "b.sensitive[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.lim
			l.SetDefaults()
			err := l.Validate("b")
			if (err == nil) != (tt.want == "") || err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSchemaStepRevisionID: schema file contents are part of the revision ID.
func TestSchemaStepRevisionID(t *testing.T) {
	cfg, dir := schemaStepConfig(t)
	opts := policy.Options{Dir: dir, NewBodyChecker: policy.NewSchemaBodyChecker(policy.BodyLimits{})}
	a, err := policy.Compile(&cfg, "mesh.local", opts)
	if err != nil {
		t.Fatal(err)
	}
	dir["schemas/task.request.json"] = &fstest.MapFile{Data: []byte(`{"type":"object"}`)}
	b, err := policy.Compile(&cfg, "mesh.local", opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() == b.ID() {
		t.Errorf("same revision ID %s after the schema file changed", a.ID())
	}
}

// BenchmarkDecideWithSchema is the reference workload's allowed POST
// /v1/tasks: rules, then the body step (headers, strict decode, validate).
func BenchmarkDecideWithSchema(b *testing.B) {
	cfg, dir := schemaStepConfig(b)
	rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir, NewBodyChecker: policy.NewSchemaBodyChecker(policy.BodyLimits{})})
	if err != nil {
		b.Fatal(err)
	}
	in := schemaInput("/v1/tasks", schemaTaskBody, nil)
	c := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := rev.Decide(c, in); !d.Allow {
			b.Fatal(d.Message)
		}
	}
}
