package opa

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/util"
)

// BenchmarkEval measures one decision on the reference workload
// (policy.rego + data.json + allow.json), input build included: "fast" is
// the serving path (this package's direct input build, the decision
// compiled from the partially evaluated policy), "opa-evaluator" the same
// input decided by OPA's evaluator on the partially evaluated policy, and
// "naive" opa-envoy-plugin's protojson -> JSON -> map -> ast route
// decided by OPA's evaluator.
func BenchmarkEval(b *testing.B) {
	e, opaEval := bothWays(func() *Engine { return refloadEngine(b) })
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	ctx := context.Background()
	b.Run("opa-evaluator", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := opaEval.Eval(ctx, &Input{Check: req})
			if err != nil || !r.Allowed {
				b.Fatal(r, err)
			}
		}
	})
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

// BenchmarkEvalRatio alternates one fast and one naive decision per
// iteration and reports naive/fast time, so that load on the shared
// machine hits both sides alike. ns/op is the pair.
func BenchmarkEvalRatio(b *testing.B) {
	e := refloadEngine(b)
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	ctx := context.Background()
	var fast, naive time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		r, err := e.Eval(ctx, &Input{Check: req})
		if err != nil || !r.Allowed {
			b.Fatal(r, err)
		}
		t1 := time.Now()
		in, err := naiveInput(req)
		if err != nil {
			b.Fatal(err)
		}
		if r, err = e.EvalValue(ctx, in); err != nil || !r.Allowed {
			b.Fatal(r, err)
		}
		fast += t1.Sub(t0)
		naive += time.Since(t1)
	}
	b.ReportMetric(float64(fast.Microseconds())/float64(b.N), "fast-µs/op")
	b.ReportMetric(float64(naive.Microseconds())/float64(b.N), "naive-µs/op")
	b.ReportMetric(float64(naive)/float64(fast), "naive/fast")
}

// BenchmarkEvalFreshGoroutine runs each decision of OPA's evaluator (the
// compiled decision needs little stack) on a new goroutine, as
// gRPC runs each Check, so that stack growth during evaluation is counted
// (the other benchmarks reuse one goroutine whose stack has grown already):
// stack=reserved is the serving path, stack=grow-on-demand without
// growStack.
func BenchmarkEvalFreshGoroutine(b *testing.B) {
	_, e := bothWays(func() *Engine { return refloadEngine(b) })
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	ctx := context.Background()
	b.Cleanup(func() { reserveEvalStack = true })
	for _, reserve := range []bool{true, false} {
		name := "stack=reserved"
		if !reserve {
			name = "stack=grow-on-demand"
		}
		b.Run(name, func(b *testing.B) {
			reserveEvalStack = reserve
			b.ReportAllocs()
			done := make(chan error)
			for b.Loop() {
				go func() {
					r, err := e.Eval(ctx, &Input{Check: req})
					if err == nil && !r.Allowed {
						err = errors.New("denied")
					}
					done <- err
				}()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
