package opa

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	allowGET  = "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == data.method\n"
	brokenSrc = "package envoy.authz\n\nallow if {\n"
)

type signer struct {
	priv, pub string
	alg       string
}

func newSigner(t *testing.T) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return signer{
		priv: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})),
		pub:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
		alg:  "ES256",
	}
}

// makeBundle writes a bundle .tar.gz with one module (raw, possibly
// broken) and data {"method": method}, signed when s is not nil.
func makeBundle(t *testing.T, revision, src, method string, s *signer) []byte {
	t.Helper()
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision},
		Data:     map[string]any{"method": method},
		Modules:  []bundle.ModuleFile{{URL: "/envoy/authz/p.rego", Path: "/envoy/authz/p.rego", Raw: []byte(src)}},
	}
	b.Manifest.Init()
	if s != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(s.priv, s.alg, ""), "meshward", false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleServer serves one bundle with a content ETag and honours
// If-None-Match.
type bundleServer struct {
	mu          sync.Mutex
	body        []byte
	status      int
	notModified int
}

func (s *bundleServer) set(body []byte, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = body, status
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != http.StatusOK {
		http.Error(w, "unavailable", s.status)
		return
	}
	sum := sha256.Sum256(s.body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		s.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/gzip")
	_, _ = w.Write(s.body)
}

func allows(t *testing.T, e *Engine, method string) bool {
	t.Helper()
	r, err := e.Eval(testContext(t), &Input{Check: checkRequest(method, "/", nil, "")})
	if err != nil {
		t.Fatal(err)
	}
	return r.Allowed
}

// TestPoller: a bundle URL served by an in-test server; ETag honoured;
// a broken bundle, a server error or a bad signature keeps the engine.
func TestPoller(t *testing.T) {
	ctx := testContext(t)
	srv := &bundleServer{}
	srv.set(makeBundle(t, "r1", allowGET, "GET", nil), http.StatusOK)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var updates []string
	p := NewPoller(hs.URL+"/bundle.tar.gz", 0, Config{Tuning: testTuning}, WithMetrics(m), WithHTTPClient(hs.Client()),
		WithOnUpdate(func(e *Engine) { updates = append(updates, e.Revision()) }))

	steps := []struct {
		name     string
		body     []byte
		status   int
		updated  bool
		err      bool
		revision string
		allowGET bool
	}{
		{name: "first fetch", updated: true, revision: "r1", allowGET: true},
		{name: "unchanged is 304", revision: "r1", allowGET: true},
		{name: "syntax error keeps r1", body: makeBundle(t, "r2", brokenSrc, "GET", nil), status: 200, err: true, revision: "r1", allowGET: true},
		{name: "server error keeps r1", status: 503, err: true, revision: "r1", allowGET: true},
		{name: "new revision", body: makeBundle(t, "r3", allowGET, "POST", nil), status: 200, updated: true, revision: "r3", allowGET: false},
		{name: "not a bundle keeps r3", body: []byte("not gzip"), status: 200, err: true, revision: "r3", allowGET: false},
	}
	for _, st := range steps {
		if st.status != 0 {
			srv.set(st.body, st.status)
		}
		updated, err := p.Poll(ctx)
		if (err != nil) != st.err || updated != st.updated {
			t.Fatalf("%s: updated=%v err=%v", st.name, updated, err)
		}
		if e := p.Engine(); e.Revision() != st.revision || allows(t, e, "GET") != st.allowGET {
			t.Fatalf("%s: serving %s", st.name, e.Revision())
		}
	}
	if srv.notModified != 1 {
		t.Errorf("304 answers = %d, want 1", srv.notModified)
	}
	if strings.Join(updates, ",") != "r1,r3" {
		t.Errorf("updates = %v", updates)
	}
	for result, want := range map[string]float64{"updated": 2, "not_modified": 1, "error": 3} {
		if got := testutil.ToFloat64(m.bundleFetches.WithLabelValues(result)); got != want {
			t.Errorf("fetches{result=%s} = %v, want %v", result, got, want)
		}
	}
}

func TestPollerRunStops(t *testing.T) {
	srv := &bundleServer{}
	srv.set(makeBundle(t, "r1", allowGET, "GET", nil), http.StatusOK)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithCancel(testContext(t))
	p := NewPoller(hs.URL, 0, Config{Tuning: testTuning}, WithHTTPClient(hs.Client()), WithOnUpdate(func(*Engine) { cancel() }))
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Engine() == nil {
		t.Fatal("no engine after Run")
	}
}

// TestBundleSignature: with verification configured only bundles signed
// by the configured key load.
func TestBundleSignature(t *testing.T) {
	good, other := newSigner(t), newSigner(t)
	verify := &Verification{KeyID: "meshward", Key: good.pub, Algorithm: "ES256"}
	for _, tc := range []struct {
		name   string
		bundle []byte
		verify *Verification
		err    string
	}{
		{"signed, verified", makeBundle(t, "r", allowGET, "GET", &good), verify, ""},
		{"unsigned, no verification", makeBundle(t, "r", allowGET, "GET", nil), nil, ""},
		{"unsigned rejected", makeBundle(t, "r", allowGET, "GET", nil), verify, "signature"},
		{"wrong key rejected", makeBundle(t, "r", allowGET, "GET", &other), verify, "verif"},
		{"bad key config", makeBundle(t, "r", allowGET, "GET", &good), &Verification{Key: "not a key", Algorithm: "ES256"}, "key"},
	} {
		// Read from a file, and fetched from a URL by the Poller (OPA's
		// downloader verifies those), alike.
		load := map[string]func(t *testing.T) (*Engine, error){
			"reader": func(t *testing.T) (*Engine, error) {
				return NewFromBundle(testContext(t), bytes.NewReader(tc.bundle), Config{Tuning: testTuning, Verification: tc.verify})
			},
			"poller": func(t *testing.T) (*Engine, error) {
				srv := &bundleServer{}
				srv.set(tc.bundle, http.StatusOK)
				hs := httptest.NewServer(srv)
				t.Cleanup(hs.Close)
				p := NewPoller(hs.URL+"/b.tar.gz", 0, Config{Tuning: testTuning, Verification: tc.verify}, WithHTTPClient(hs.Client()))
				_, err := p.Poll(testContext(t))
				return p.Engine(), err
			},
		}
		for how, load := range load {
			t.Run(tc.name+" "+how, func(t *testing.T) {
				e, err := load(t)
				if tc.err == "" {
					if err != nil {
						t.Fatal(err)
					}
					if !allows(t, e, "GET") {
						t.Fatal("bundle policy does not allow GET")
					}
					return
				}
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.err) || e != nil {
					t.Fatalf("err = %v (engine %v), want one mentioning %q and no engine", err, e != nil, tc.err)
				}
			})
		}
	}
}

// TestBundleFile: a bundle file plus extra files, and a module in both.
func TestBundleFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "b.tar.gz"), makeBundle(t, "file-rev", allowGET, "GET", nil), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := New(testContext(t), Config{Tuning: testTuning, FS: os.DirFS(dir), BundleFile: "b.tar.gz"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Revision() != "file-rev" || !allows(t, e, "GET") || allows(t, e, "POST") {
		t.Fatalf("bundle file engine: %s", e.Revision())
	}
	// Absolute path, no FS.
	if _, err := New(testContext(t), Config{Tuning: testTuning, BundleFile: filepath.Join(dir, "b.tar.gz")}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(testContext(t), Config{Tuning: testTuning, FS: os.DirFS(dir), BundleFile: "missing.tar.gz"}); err == nil || errors.Is(err, ErrUndefined) {
		t.Fatalf("missing bundle: %v", err)
	}
}

// TestBundleWithFiles: files are compiled together with the bundle.
func TestBundleWithFiles(t *testing.T) {
	files := fstest.MapFS{
		"helpers.rego": {Data: []byte("package envoy.helpers\n\nis_get if input.attributes.request.http.method == \"GET\"\n")},
		"extra.json":   {Data: []byte(`{"extra": {"k": "v"}}`)},
	}
	src := "package envoy.authz\n\nimport data.envoy.helpers\n\ndefault allow := false\n\nallow if {\n\thelpers.is_get\n\tdata.extra.k == \"v\"\n\tdata.method == \"GET\"\n}\n"
	e, err := NewFromBundle(testContext(t), bytes.NewReader(makeBundle(t, "r", src, "GET", nil)),
		Config{Tuning: testTuning, FS: files, Files: []string{"helpers.rego", "extra.json"}})
	if err != nil {
		t.Fatal(err)
	}
	if !allows(t, e, "GET") || allows(t, e, "POST") {
		t.Fatal("bundle + files decide wrongly")
	}

}

// TestPollerSizeLimit: a bundle URL answering more than MaxBundleBytes is
// refused and the served engine stays.
func TestPollerSizeLimit(t *testing.T) {
	small := makeBundle(t, "r1", allowGET, "GET", nil)
	srv := &bundleServer{}
	srv.set(small, http.StatusOK)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	p := NewPoller(hs.URL+"/b.tar.gz", 0, Config{Tuning: testTuning, MaxBundleBytes: int64(len(small)) + 64}, WithHTTPClient(hs.Client()))
	if _, err := p.Poll(testContext(t)); err != nil {
		t.Fatalf("bundle within the limit: %v", err)
	}
	big := makeBundle(t, "r2", allowGET+"\n# "+strings.Repeat("x", 8<<10)+"\n", "GET", nil)
	srv.set(big, http.StatusOK)
	if _, err := p.Poll(testContext(t)); err == nil || !strings.Contains(err.Error(), "size") {
		t.Fatalf("a %d-byte bundle over a %d-byte limit: %v, want a size error", len(big), len(small)+64, err)
	}
	if r := p.Engine().Revision(); r != "r1" {
		t.Errorf("serving %q after the refused bundle, want r1", r)
	}
}
