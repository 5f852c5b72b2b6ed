package opa

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// loadCheck reads a CheckRequest in protojson form.
func loadCheck(t testing.TB, path string) *authv3.CheckRequest {
	t.Helper()
	bs, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(bs, &req); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &req
}

func refloadEngine(t testing.TB) *Engine {
	t.Helper()
	e, err := New(testContext(t), Config{Tuning: testTuning,
		FS:    os.DirFS(filepath.Join("testdata", "refload")),
		Files: []string{"policy.rego", "data.json"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// testTuning is the Tuning of every engine the tests build; withTuning
// changes it for one test, so that the compatibility tests run again with
// each speed-up turned off.
var testTuning Tuning

// withTuning sets testTuning to t for the rest of tb (tests that use it
// are not parallel).
func withTuning(tb testing.TB, t Tuning) {
	saved := testTuning
	testTuning = t
	tb.Cleanup(func() { testTuning = saved })
}

func jsonNumber(s string) any { return json.Number(s) }
