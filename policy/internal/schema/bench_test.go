package schema

import (
	"os"
	"testing"

	"github.com/meshward/meshward/policy/internal/body"
)

func benchSet(b *testing.B) (*Set, []byte) {
	schema, err := os.ReadFile(quickstartSchema)
	if err != nil {
		b.Fatal(err)
	}
	set, err := Compile([]Source{{Name: "task.request", Origin: "schemas/task.request.json", Data: schema}}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	msg, err := os.ReadFile("testdata/task.request.json")
	if err != nil {
		b.Fatal(err)
	}
	return set, msg
}

// BenchmarkDecodeValidate is the schema part of the reference workload's
// decision: decode the task.request body strictly, then validate it
// against the quickstart schema.
func BenchmarkDecodeValidate(b *testing.B) {
	set, msg := benchSet(b)
	b.ReportAllocs()
	for b.Loop() {
		doc, err := body.Decode(msg, body.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		if vs := set.Validate("task.request", doc); vs != nil {
			b.Fatal(vs)
		}
	}
}

// BenchmarkValidate validates an already decoded body.
func BenchmarkValidate(b *testing.B) {
	set, msg := benchSet(b)
	doc, err := body.Decode(msg, body.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if vs := set.Validate("task.request", doc); vs != nil {
			b.Fatal(vs)
		}
	}
}

// BenchmarkValidateInvalid measures a deny: priority 12 > 9.
func BenchmarkValidateInvalid(b *testing.B) {
	set, _ := benchSet(b)
	doc := mustDecode(b, `{"type":"task.request","id":"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11","sender":"planner","task":{"name":"summarize","priority":12,"args":{"doc":"q3-report"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if vs := set.Validate("task.request", doc); len(vs) != 1 {
			b.Fatal(vs)
		}
	}
}

// BenchmarkCompile is the cost per policy revision.
func BenchmarkCompile(b *testing.B) {
	schema, err := os.ReadFile(quickstartSchema)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile([]Source{{Name: "task.request", Data: schema}}, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSelect picks the schema by discriminator, as a rule with
// schemaBy does before validating.
func BenchmarkSelect(b *testing.B) {
	_, msg := benchSet(b)
	doc, err := body.Decode(msg, body.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	sel := Selector{Field: "type", Schemas: map[string]string{"task.request": "task.request", "task.cancel": "task.cancel"}}
	b.ReportAllocs()
	for b.Loop() {
		if n, err := sel.Select(doc); err != nil || n != "task.request" {
			b.Fatal(n, err)
		}
	}
}
