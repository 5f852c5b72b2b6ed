package schema

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"go.yaml.in/yaml/v3"

	"github.com/meshward/meshward/policy/internal/body"
)

const quickstartSchema = "../../../examples/quickstart/schemas/task.request.json"

func mustDecode(t testing.TB, s string) any {
	t.Helper()
	v, err := body.Decode([]byte(s), body.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func yamlDoc(t *testing.T, s string) any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCompileAndValidate(t *testing.T) {
	common := []byte(`{
		"$id": "https://example.test/schemas/common.json",
		"$defs": {"priority": {"type": "integer", "minimum": 0, "maximum": 9}}
	}`)
	inline := yamlDoc(t, `
type: object
required: [kind, priority]
properties:
  kind: {const: event}
  priority: {$ref: "https://example.test/schemas/common.json#/$defs/priority"}
  ratio: {type: number, maximum: 0.5}
  big: {type: integer, maximum: 9007199254740992}
`)
	draft7 := []byte(`{
		"$schema": "http://json-schema.org/draft-07/schema#",
		"type": "array",
		"items": [{"type": "string"}],
		"additionalItems": false
	}`)
	relative := []byte(`{"$ref": "common.json#/$defs/priority"}`)
	siblings := fstest.MapFS{"schemas/common.json": {Data: []byte(`{"$defs": {"priority": {"maximum": 3}}}`)}}
	task, err := os.ReadFile(quickstartSchema)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile([]Source{
		{Name: "common", Origin: "schemas/common2.json", Data: common},
		{Name: "event", Origin: "authz.schemas[1].inline", Doc: inline},
		{Name: "pair", Origin: "schemas/pair.json", Data: draft7},
		{Name: "relative", Origin: "schemas/relative.json", Data: relative},
		{Name: "task.request", Origin: "schemas/task.request.json", Data: task},
	}, Options{Local: map[string]fs.FS{"file:///": siblings}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := set.Names(), []string{"common", "event", "pair", "relative", "task.request"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}

	tests := []struct {
		name   string
		schema string
		doc    string
		want   []Violation
	}{
		{"task ok", "task.request", `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":3}}`, nil},
		{"task priority too high", "task.request", `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":12}}`,
			[]Violation{{"/task/priority", "maximum", "12 > 9"}}},
		{"task many problems", "task.request", `{"type":"task.result","id":"nope","sender":"","task":{"priority":1.5},"extra":1}`,
			[]Violation{
				{"", "additionalProperties", `property "extra" not allowed`},
				{"/id", "pattern", `"nope" does not match ^[a-f0-9-]{36}$`},
				{"/sender", "minLength", "shorter than 1 characters"},
				{"/task", "required", `missing property "name"`},
				{"/task/priority", "type", "got number, want integer"},
				{"/type", "const", `must be "task.request"`},
			}},
		{"task not an object", "task.request", `[1]`, []Violation{{"", "type", "got array, want object"}}},
		{"inline via $ref by $id", "event", `{"kind":"event","priority":10}`, []Violation{{"/priority", "maximum", "10 > 9"}}},
		{"inline ok", "event", `{"kind":"event","priority":9,"ratio":0.5,"big":9007199254740992}`, nil},
		{"inline float bound", "event", `{"kind":"event","priority":1,"ratio":0.75}`, []Violation{{"/ratio", "maximum", "0.75 > 0.5"}}},
		{"big integers compared exactly", "event", `{"kind":"event","priority":1,"big":9007199254740993}`,
			[]Violation{{"/big", "maximum", "9007199254740993 > 9007199254740992"}}},
		{"inline missing", "event", `{}`, []Violation{{"", "required", `missing properties "kind", "priority"`}}},
		{"draft-07 items array", "pair", `["a"]`, nil},
		{"draft-07 additionalItems", "pair", `["a", 1]`, []Violation{{"", "additionalItems", "1 more item than allowed"}}},
		{"relative ref to a local sibling file", "relative", `4`, []Violation{{"", "maximum", "4 > 3"}}},
		{"unknown schema name", "nope", `{}`, []Violation{{"", "schema", `no schema named "nope"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := set.Validate(tt.schema, mustDecode(t, tt.doc))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate = %q\nwant       %q", got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	// A listener that counts connections proves no fetch is attempted.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	remote := "http://" + ln.Addr().String() + "/schemas/other.json"

	tests := []struct {
		name string
		srcs []Source
		opts Options
		want []string // substrings of the error
	}{
		{"remote $ref is never fetched", []Source{{Name: "a", Origin: "schemas/a.json",
			Data: []byte(`{"properties":{"x":{"$ref":"` + remote + `"}}}`)}}, Options{},
			[]string{`schema "a" (schemas/a.json) at /properties/x/$ref`, "never fetched from the network"}},
		{"relative $ref with no local folder", []Source{{Name: "a", Origin: "schemas/a.json",
			Data: []byte(`{"$ref":"missing.json"}`)}}, Options{},
			[]string{`at /$ref`, "file:///schemas/missing.json", "never fetched"}},
		{"relative $ref missing from the local folder", []Source{{Name: "a", Origin: "a.json",
			Data: []byte(`{"$ref":"missing.json"}`)}}, Options{Local: map[string]fs.FS{"file:///": fstest.MapFS{}}},
			[]string{`at /$ref`, "file does not exist"}},
		{"$ref escaping the local folder", []Source{{Name: "a", Origin: "a.json",
			Data: []byte(`{"$ref":"http://localhost:1234/%2e%2e/x.json"}`)}}, Options{Local: map[string]fs.FS{"http://localhost:1234/": fstest.MapFS{}}},
			[]string{"not a valid file name"}},
		{"metaschema violation", []Source{{Name: "a", Origin: "schemas/a.json",
			Data: []byte(`{"properties":{"p":{"maximum":"nine"}}}`)}}, Options{},
			[]string{`schema "a" (schemas/a.json) at /properties/p/maximum: not a valid schema: type: got string, want number`}},
		{"draft-07 metaschema violation", []Source{{Name: "a", Origin: "a.json",
			Data: []byte(`{"$schema":"http://json-schema.org/draft-07/schema#","required":"x"}`)}}, Options{},
			[]string{`at /required: not a valid schema: type: got string, want array`}},
		{"bad regex", []Source{{Name: "a", Origin: "a.json", Data: []byte(`{"pattern":"(?<x"}`)}}, Options{},
			[]string{`at /pattern`, "regex"}},
		{"invalid JSON file", []Source{{Name: "a", Origin: "schemas/a.json", Data: []byte("{\n\"type\":\"object\",\n\"type\":\"array\"}")}}, Options{},
			[]string{`schema "a" (schemas/a.json): invalid JSON at line 3, column 1`, `duplicate key "type"`}},
		{"inline YAML with a timestamp", []Source{{Name: "a", Origin: "authz.schemas[0].inline",
			Doc: yamlDoc(t, "properties: {d: {const: 2001-12-14}}")}}, Options{},
			[]string{`schema "a" (authz.schemas[0].inline) at /properties/d/const: a time.Time is not a JSON value (quote it)`}},
		{"inline YAML with a number key", []Source{{Name: "a", Origin: "authz.schemas[0].inline",
			Doc: yamlDoc(t, "properties: {1: {type: string}}")}}, Options{},
			[]string{`schema "a" (authz.schemas[0].inline) at /properties: key 1 is not a string`}},
		{"unknown draft", []Source{{Name: "a", Data: []byte(`{"$schema":"https://example.test/my-meta"}`)}}, Options{},
			[]string{"never fetched"}},
		{"two schemas with one $id", []Source{
			{Name: "a", Data: []byte(`{"$id":"https://example.test/x.json"}`)},
			{Name: "b", Data: []byte(`{"$id":"https://example.test/x.json"}`)}}, Options{},
			[]string{`schema "b"`, "already has the URL https://example.test/x.json"}},
		{"no name, defined twice, neither doc nor data", []Source{
			{Data: []byte(`{}`)}, {Name: "a", Data: []byte(`{}`)}, {Name: "a", Data: []byte(`{}`)}, {Name: "b"}}, Options{},
			[]string{"no name", `schema "a": defined twice`, `schema "b": set exactly one of Doc and Data`}},
		{"all problems reported", []Source{
			{Name: "a", Data: []byte(`{"type":"nope"}`)}, {Name: "b", Data: []byte(`{"minimum":"x"}`)}}, Options{},
			[]string{`schema "a" at /type`, `schema "b" at /minimum`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile(tt.srcs, tt.opts)
			if err == nil {
				t.Fatalf("Compile = %v, want an error", set.Names())
			}
			if !errors.Is(err, ErrInvalidSchema) {
				t.Errorf("error %v does not wrap ErrInvalidSchema", err)
			}
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *CompileError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 0 {
		t.Errorf("%d connections to the remote $ref's server, want none", conns)
	}
}

func TestValidateRedaction(t *testing.T) {
	src := []byte(`{
		"type": "object",
		"properties": {
			"password": {"type": "string", "pattern": "^[a-z]+$"},
			"credentials": {"type": "object", "properties": {"pin": {"maximum": 9999}}},
			"note": {"type": "string", "pattern": "^[a-z]*$"},
			"n": {"maximum": 1}
		},
		"additionalProperties": false
	}`)
	set, err := Compile([]Source{{Name: "s", Data: src}}, Options{
		Sensitive:   []string{"Password", "/credentials"},
		MaxValueLen: 12,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		doc  string
		want []Violation
	}{
		{"sensitive by name", `{"password":"Hunter2"}`, []Violation{{"/password", "pattern", "value does not match ^[a-z]+$"}}},
		{"sensitive by pointer, below it", `{"credentials":{"pin":123456}}`, []Violation{{"/credentials/pin", "maximum", "value > 9999"}}},
		{"long value not echoed", `{"note":"THIS IS MUCH TOO LONG"}`, []Violation{{"/note", "pattern", "value does not match ^[a-z]*$"}}},
		{"short value echoed", `{"note":"ABC"}`, []Violation{{"/note", "pattern", `"ABC" does not match ^[a-z]*$`}}},
		{"long number not echoed", `{"n":123456789012345}`, []Violation{{"/n", "maximum", "value > 1"}}},
		{"additional sensitive key not named", `{"PASSWORD":"x"}`, []Violation{{"", "additionalProperties", "1 property not allowed"}}},
		{"additional long key not named", `{"averyveryverylongkey":1}`, []Violation{{"", "additionalProperties", "1 property not allowed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := set.Validate("s", mustDecode(t, tt.doc))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate = %q\nwant       %q", got, tt.want)
			}
		})
	}
}

func TestValidateMaxViolations(t *testing.T) {
	src := []byte(`{"type":"array","items":{"type":"string"}}`)
	doc := mustDecode(t, "["+strings.Repeat("1,", 5000)+"1]")
	tests := []struct {
		name string
		max  int
		want int
	}{
		{"default", 0, DefaultMaxViolations},
		{"configured", 3, 3},
		{"more than there are", 6000, maxCollect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile([]Source{{Name: "s", Data: src}}, Options{MaxViolations: tt.max})
			if err != nil {
				t.Fatal(err)
			}
			got := set.Validate("s", doc)
			if len(got) != tt.want {
				t.Fatalf("%d violations, want %d", len(got), tt.want)
			}
			if got[0] != (Violation{"/0", "type", "got number, want string"}) {
				t.Errorf("first violation %q", got[0])
			}
		})
	}
}

func TestValidateKeywords(t *testing.T) {
	tests := []struct {
		name   string
		schema string
		doc    string
		want   Violation
	}{
		{"anyOf", `{"anyOf":[{"type":"string"},{"type":"integer"}]}`, `true`, Violation{"", "anyOf", "matches none of the alternatives"}},
		{"oneOf two", `{"oneOf":[{"type":"integer"},{"minimum":0}]}`, `1`, Violation{"", "oneOf", "matches alternatives 0 and 1, want exactly one"}},
		{"enum", `{"enum":["a","b"]}`, `"c"`, Violation{"", "enum", `must be one of "a", "b"`}},
		{"unevaluatedProperties", `{"properties":{"a":true},"unevaluatedProperties":false}`, `{"a":1,"b":2}`, Violation{"/b", "unevaluatedProperties", "property not allowed"}},
		{"false property", `{"properties":{"a":false}}`, `{"a":1}`, Violation{"/a", "false", "not allowed"}},
		{"not", `{"not":{"type":"string"}}`, `"x"`, Violation{"", "not", "matches the schema under not"}},
		{"exclusiveMinimum", `{"exclusiveMinimum":0}`, `0`, Violation{"", "exclusiveMinimum", "0 <= 0"}},
		{"multipleOf", `{"multipleOf":2}`, `7`, Violation{"", "multipleOf", "7 is not a multiple of 2"}},
		{"uniqueItems", `{"uniqueItems":true}`, `[1,2,1]`, Violation{"", "uniqueItems", "items 0 and 2 are equal"}},
		{"dependentRequired", `{"dependentRequired":{"a":["b"]}}`, `{"a":1}`, Violation{"", "dependentRequired", `property "b" required when "a" is present`}},
		{"maxItems", `{"maxItems":1}`, `[1,2]`, Violation{"", "maxItems", "2 items, want at most 1"}},
		{"pointer escaping", `{"properties":{"a/b":{"properties":{"c~d":{"type":"string"}}}}}`, `{"a/b":{"c~d":1}}`, Violation{"/a~1b/c~0d", "type", "got number, want string"}},
		{"format asserted by draft-07", `{"$schema":"http://json-schema.org/draft-07/schema#","format":"email"}`, `"nope"`, Violation{"", "format", `"nope" is not a valid email`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile([]Source{{Name: "s", Data: []byte(tt.schema)}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := set.Validate("s", mustDecode(t, tt.doc))
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("Validate = %q, want [%q]", got, tt.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	sel := Selector{Field: "type", Schemas: map[string]string{"task.request": "task.request", "task.result": "task.result"}}
	tests := []struct {
		name    string
		doc     string
		want    string
		wantErr Violation
	}{
		{"known", `{"type":"task.result"}`, "task.result", Violation{}},
		{"unknown value", `{"type":"task.delete"}`, "", Violation{"/type", "discriminator", `unknown value "task.delete"`}},
		{"long unknown value not echoed", `{"type":"` + strings.Repeat("x", 100) + `"}`, "", Violation{"/type", "discriminator", "unknown value"}},
		{"missing", `{"kind":"task.result"}`, "", Violation{"/type", "discriminator", `missing property "type"`}},
		{"not a string", `{"type":["task.result"]}`, "", Violation{"/type", "discriminator", "want a string"}},
		{"not an object", `"task.result"`, "", Violation{"", "discriminator", `want a JSON object with a "type" field`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sel.Select(mustDecode(t, tt.doc))
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("Select = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var se *SelectError
			if !errors.As(err, &se) || !errors.Is(err, ErrNoSchema) || got != "" {
				t.Fatalf("Select = %q, %v; want a *SelectError", got, err)
			}
			if se.Violation != tt.wantErr {
				t.Errorf("violation %q, want %q", se.Violation, tt.wantErr)
			}
		})
	}
}

// TestValidateConcurrent: a Set is shared by all requests (run with -race).
func TestValidateConcurrent(t *testing.T) {
	data, err := os.ReadFile(quickstartSchema)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Compile([]Source{{Name: "task.request", Data: data}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := mustDecode(t, `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"p","task":{"name":"n","priority":3}}`)
	bad := mustDecode(t, `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"p","task":{"name":"n","priority":30}}`)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if vs := set.Validate("task.request", good); vs != nil {
					t.Errorf("good: %v", vs)
					return
				}
				if vs := set.Validate("task.request", bad); len(vs) != 1 {
					t.Errorf("bad: %v", vs)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestViolationJSON(t *testing.T) {
	b, err := json.Marshal(Violation{"/task/priority", "maximum", "12 > 9"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"path":"/task/priority","keyword":"maximum","message":"12 \u003e 9"}`; got != want {
		t.Errorf("JSON %s, want %s", got, want)
	}
}
