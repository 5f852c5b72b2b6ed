package opa

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/util"
)

// BenchmarkEval measures one decision on the reference workload
// (policy.rego + data.json + allow.json), input build included: "fast" is
// this package's direct ast build, "naive" opa-envoy-plugin's protojson ->
// JSON -> map -> ast route, both evaluated by the same prepared query.
func BenchmarkEval(b *testing.B) {
	e := refloadEngine(b)
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	ctx := context.Background()
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := e.Eval(ctx, &Input{Check: req})
			if err != nil || !r.Allowed {
				b.Fatal(r, err)
			}
		}
	})
	// The serving path: the schema step decoded the body once already and
	// hands it over (its decoding is not counted here).
	var body any
	if err := util.UnmarshalJSON([]byte(req.GetAttributes().GetRequest().GetHttp().GetBody()), &body); err != nil {
		b.Fatal(err)
	}
	b.Run("fast-shared-body", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := e.Eval(ctx, &Input{Check: req, ParsedBody: body, HasParsedBody: true})
			if err != nil || !r.Allowed {
				b.Fatal(r, err)
			}
		}
	})
	b.Run("naive", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			in, err := naiveInput(req)
			if err != nil {
				b.Fatal(err)
			}
			r, err := e.EvalValue(ctx, in)
			if err != nil || !r.Allowed {
				b.Fatal(r, err)
			}
		}
	})
}

// BenchmarkInput measures the input build alone.
func BenchmarkInput(b *testing.B) {
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := BuildInput(&Input{Check: req}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("naive", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := naiveInput(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
