package opa

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// TestRefload: the reference workload's policy gives exactly the expected
// decisions on its four requests, unchanged.
func TestRefload(t *testing.T) {
	e := refloadEngine(t)
	for _, tc := range []struct {
		file  string
		allow bool
	}{
		{"allow.json", true},
		{"deny_abac.json", false},
		{"deny_schema.json", false}, // priority 12 > maximum 9
		{"allow_get.json", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			in := &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", tc.file))}
			r, err := e.Eval(testContext(t), in)
			if err != nil {
				t.Fatal(err)
			}
			if r.Allowed != tc.allow {
				t.Fatalf("allowed = %v, want %v", r.Allowed, tc.allow)
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{"default", "", "data.envoy.authz.allow", ""},
		{"ref", "data.envoy.authz.allow", "data.envoy.authz.allow", ""},
		{"path", "envoy/authz/allow", "data.envoy.authz.allow", ""},
		{"path leading slash", "/envoy/authz/allow", "data.envoy.authz.allow", ""},
		{"path odd segment", "envoy/authz-v2/allow", `data.envoy["authz-v2"].allow`, ""},
		{"bare data", "data", "", "names no decision"},
		{"broken ref", "data.envoy..allow", "", "query"},
		{"only slashes", "//", "", "names no decision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuery(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestLoadErrors: broken policies fail to load with file:line, and
// nothing is served from them.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files fstest.MapFS
		want  []string
	}{
		{
			name:  "syntax error",
			files: fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\nallow if {\n  input.x ==\n}\n")}},
			want:  []string{"p.rego:", "rego_parse_error"},
		},
		{
			name:  "type error",
			files: fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\nallow if {\n\tcount(1)\n}\n")}},
			want:  []string{"p.rego:4", "rego_type_error"},
		},
		{
			name:  "unsafe var",
			files: fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\nallow if x\n")}},
			want:  []string{"p.rego:3", "unsafe"},
		},
		{
			name:  "no modules",
			files: fstest.MapFS{"d.json": {Data: []byte(`{"a":1}`)}},
			want:  []string{"no policy modules"},
		},
		{
			name:  "bad json",
			files: fstest.MapFS{"p.rego": {Data: []byte("package x\n")}, "d.json": {Data: []byte(`{"a":`)}},
			want:  []string{"d.json"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for n := range tc.files {
				names = append(names, n)
			}
			e, err := New(testContext(t), Config{Tuning: testTuning, FS: tc.files, Files: names})
			if err == nil {
				t.Fatalf("loaded %v, want an error", e.Modules())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestUndefinedIsError(t *testing.T) {
	fsys := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\nallow if input.parsed_path[0] == \"ok\"\n")}}
	e, err := New(testContext(t), Config{Tuning: testTuning, FS: fsys, Files: []string{"p.rego"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Eval(testContext(t), &Input{Check: checkRequest("GET", "/nope", nil, "")})
	if !errors.Is(err, ErrUndefined) {
		t.Fatalf("err = %v, want ErrUndefined", err)
	}
}

// TestLoadFolder: a folder loads its policy and data, leaving out tests
// and other files (examples/rego holds a README and policy_test.rego).
func TestLoadFolder(t *testing.T) {
	e, err := New(testContext(t), Config{Tuning: testTuning, FS: os.DirFS(filepath.Join("..", "..", "..", "examples")), Files: []string{"rego/"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(e.Modules(), ","); got != "rego/policy.rego" {
		t.Fatalf("modules %s", got)
	}
	// An absolute folder is read from the operating system, whatever FS is.
	abs, err := filepath.Abs(filepath.Join("..", "..", "..", "examples", "rego"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(testContext(t), Config{Tuning: testTuning, FS: fstest.MapFS{}, Files: []string{abs}}); err != nil {
		t.Fatalf("absolute folder: %v", err)
	}
	for file, allow := range map[string]bool{"allow.json": true, "deny_abac.json": false, "deny_schema.json": false, "allow_get.json": true} {
		r, err := e.Eval(testContext(t), &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", file))})
		if err != nil || r.Allowed != allow {
			t.Fatalf("%s: %+v, %v; want allowed=%v", file, r, err, allow)
		}
	}
}

// TestConcurrentEval: one engine serves many goroutines (run with -race).
func TestConcurrentEval(t *testing.T) {
	concurrentEval(t, refloadEngine(t))
}

func concurrentEval(t *testing.T, e *Engine) {
	files := map[string]bool{"allow.json": true, "deny_abac.json": false, "deny_schema.json": false, "allow_get.json": true}
	reqs := map[string]*Input{}
	for f := range files {
		reqs[f] = &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", f))}
	}
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				for f, in := range reqs {
					r, err := e.Eval(ctx, in)
					if err == nil && r.Allowed != files[f] {
						err = fmt.Errorf("%s: allowed=%v", f, r.Allowed)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestV0Compatible(t *testing.T) {
	fsys := fstest.MapFS{"p.rego": {Data: []byte("package envoy.authz\n\ndefault allow = false\n\nallow { input.attributes.request.http.method == \"GET\" }\n")}}
	if _, err := New(testContext(t), Config{Tuning: testTuning, FS: fsys, Files: []string{"p.rego"}}); err == nil {
		t.Fatal("v0 syntax accepted as Rego v1")
	}
	e, err := New(testContext(t), Config{Tuning: testTuning, FS: fsys, Files: []string{"p.rego"}, V0Compatible: true})
	if err != nil {
		t.Fatal(err)
	}
	if !allows(t, e, "GET") || allows(t, e, "POST") {
		t.Fatal("v0 policy decides wrongly")
	}
}

// TestCanceledContext: a deadline or cancellation is an error (a deny),
// never a decision.
func TestCanceledContext(t *testing.T) {
	e := refloadEngine(t)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	r, err := e.Eval(ctx, &Input{Check: loadCheck(t, filepath.Join("testdata", "refload", "allow.json"))})
	if err == nil {
		t.Fatalf("canceled evaluation decided %+v", r)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error does not wrap context.Canceled: %v", err)
	}
}
