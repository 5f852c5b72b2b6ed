package opa

import (
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"
)

// TestDecisionCache runs with the residual decision left to OPA (the
// cache serves only decisions OPA evaluates; see
// TestCompiledDecisionBypassesCache).
func TestDecisionCache(t *testing.T) {
	withoutResiduals(t)
	ctx := testContext(t)
	fsys := fstest.MapFS{"p.rego": {Data: []byte(`package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
`)}}
	e, err := New(ctx, Config{FS: fsys, Files: []string{"p.rego"},
		DecisionCache: &DecisionCache{Inputs: []string{"input.attributes.request.http.method", "parsed_path[0]"}, TTL: time.Minute, MaxEntries: 2}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	e.decisions.now = func() time.Time { return now }

	steps := []struct {
		name          string
		method, path  string
		advance       time.Duration
		allow, cached bool
	}{
		{name: "miss", method: "GET", path: "/a", allow: true},
		{name: "hit", method: "GET", path: "/a?x=1", allow: true, cached: true},
		{name: "other method misses", method: "POST", path: "/a", allow: false},
		{name: "other segment misses", method: "GET", path: "/b", allow: true}, // cache full (2): emptied first
		{name: "hit after refill", method: "GET", path: "/b", allow: true, cached: true},
		{name: "expired", method: "GET", path: "/b", advance: time.Minute, allow: true},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		r, err := e.Eval(ctx, &Input{Check: checkRequest(st.method, st.path, nil, "")})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if r.Allowed != st.allow || r.Cached != st.cached {
			t.Fatalf("%s: allowed=%v cached=%v, want %v %v", st.name, r.Allowed, r.Cached, st.allow, st.cached)
		}
	}
}

func TestDecisionCacheConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		dc   DecisionCache
	}{
		{"no inputs", DecisionCache{TTL: time.Second}},
		{"no ttl", DecisionCache{Inputs: []string{"parsed_path"}}},
		{"bad path", DecisionCache{Inputs: []string{"parsed_path["}, TTL: time.Second}},
		{"variable path", DecisionCache{Inputs: []string{"parsed_path[x]"}, TTL: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(testContext(t), Config{FS: fstest.MapFS{"p.rego": {Data: []byte("package x\n")}}, Files: []string{"p.rego"}, DecisionCache: &tc.dc})
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestCompiledDecisionBypassesCache: a decision the compiled residual
// rules answer is not looked up in, nor stored into, the decision cache.
func TestCompiledDecisionBypassesCache(t *testing.T) {
	e := cachedRefloadEngine(t)
	if e.residual == nil {
		t.Fatal("reference policy not compiled")
	}
	req := loadCheck(t, filepath.Join("testdata", "refload", "allow.json"))
	for i := range 2 {
		r, err := e.Eval(testContext(t), &Input{Check: req})
		if err != nil || !r.Allowed || r.Cached {
			t.Fatalf("decision %d: %+v, %v", i, r, err)
		}
	}
	if n := len(e.decisions.entries); n != 0 {
		t.Fatalf("%d decisions cached", n)
	}
}

// BenchmarkEvalCached is BenchmarkEval's opa-evaluator path with the
// decision cache on and every request a hit.
func BenchmarkEvalCached(b *testing.B) {
	withoutResiduals(b)
	e := cachedRefloadEngine(b)
	req := loadCheck(b, filepath.Join("testdata", "refload", "allow.json"))
	ctx := testContext(b)
	b.ReportAllocs()
	for b.Loop() {
		r, err := e.Eval(ctx, &Input{Check: req})
		if err != nil || !r.Allowed {
			b.Fatal(r, err)
		}
	}
}

// cachedRefloadEngine is the reference policy with the decision cache on
// every path it reads.
func cachedRefloadEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(testContext(t), Config{
		FS:    os.DirFS(filepath.Join("testdata", "refload")),
		Files: []string{"policy.rego", "data.json"},
		DecisionCache: &DecisionCache{TTL: time.Minute, Inputs: []string{
			"attributes.source.principal", "attributes.request.http.method", "parsed_path", "parsed_body"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
