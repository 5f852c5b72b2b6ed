package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/bundle"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/policy"
)

// regoBundleBytes is an OPA bundle (.tar.gz) whose decision is allow.
func regoBundleBytes(t *testing.T, allow bool) []byte {
	t.Helper()
	src := "package envoy.authz\n\ndefault allow := false\n"
	if allow {
		src = "package envoy.authz\n\ndefault allow := true\n"
	}
	b := bundle.Bundle{
		Data:    map[string]any{},
		Modules: []bundle.ModuleFile{{URL: "/envoy/authz/p.rego", Path: "/envoy/authz/p.rego", Raw: []byte(src)}},
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleHTTP serves one bundle with a content ETag, honours If-None-Match
// and counts requests. Until gate is closed (if set) requests wait.
type bundleHTTP struct {
	gate chan struct{}

	mu          sync.Mutex
	body        []byte
	requests    int
	notModified int
}

func (s *bundleHTTP) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
}

func (s *bundleHTTP) counts() (requests, notModified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.notModified
}

func (s *bundleHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	sum := sha256.Sum256(s.body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		s.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	_, _ = w.Write(s.body)
}

// bundleConfigFile is the quickstart (free ports) deciding with Rego only,
// from the bundle at url.
func bundleConfigFile(t *testing.T, url string) string {
	t.Helper()
	path := testConfig(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "\nauthz:\n", "\nauthz:\n  mode: rego\n  rego:\n    bundleURL: "+url+"\n    pollInterval: 1s\n", 1)
	if s == string(raw) {
		t.Fatal("no authz section in the quickstart")
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func viewerInput() *policy.Input {
	return &policy.Input{
		Method: "POST", Host: "executor.mesh.local", Path: "/v1/tasks",
		Principal: "spiffe://mesh.local/ns/default/sa/viewer", Request: viewerPost(),
	}
}

// TestRegoBundleRevisions drives the bundle poller by hand through the
// same store.Reload path serve uses: no revision (deny) before the first
// fetch, then the bundle's decisions; a 304 rebuilds nothing; a broken
// bundle keeps the last good revision; a new bundle is a new revision.
func TestRegoBundleRevisions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := &bundleHTTP{}
	srv.set(regoBundleBytes(t, true))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	cfg, err := config.Load(bundleConfigFile(t, hs.URL+"/bundle.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var updates atomic.Int32
	var b *policy.RegoBundle
	compile := func(cfg *config.Config) (*policy.Revision, error) { return compileWithBundle(cfg, b) }
	b, err = policy.NewRegoBundle(cfg.Authz.Policy.Rego, cfg.Dir, policy.RegoBundleOptions{OnUpdate: func() {
		updates.Add(1)
		if err := store.Reload(ctx, func() (*policy.Revision, error) { return compile(cfg) }); err != nil {
			t.Errorf("reload after a new bundle: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}

	if id := store.RevisionID(); id != "" {
		t.Fatalf("revision %q before the first fetch", id)
	}
	if d := store.Decide(ctx, viewerInput()); d.Allow || !errors.Is(d.Err, policy.ErrNoRevision) {
		t.Fatalf("before the first fetch: allow %v err %v; want a deny with ErrNoRevision", d.Allow, d.Err)
	}
	if _, err := compile(cfg); err == nil {
		t.Error("compiled a revision with no bundle fetched")
	}

	type step struct {
		name      string
		body      []byte // nil: unchanged
		updated   bool
		pollErr   bool
		allow     bool
		newID     bool
		updatesTo int32
	}
	allowBundle, denyBundle := regoBundleBytes(t, true), regoBundleBytes(t, false)
	var lastID string
	for _, s := range []step{
		{name: "first fetch: allow", updated: true, allow: true, newID: true, updatesTo: 1},
		{name: "304 rebuilds nothing", allow: true, updatesTo: 1},
		{name: "broken bundle keeps allow", body: []byte("not a bundle"), pollErr: true, allow: true, updatesTo: 1},
		{name: "deny bundle", body: denyBundle, updated: true, allow: false, newID: true, updatesTo: 2},
		{name: "allow bundle again", body: allowBundle, updated: true, allow: true, newID: true, updatesTo: 3},
	} {
		if s.body != nil {
			srv.set(s.body)
		}
		updated, err := b.Poll(ctx)
		if updated != s.updated || (err != nil) != s.pollErr {
			t.Fatalf("%s: Poll = %v, %v; want updated %v, error %v", s.name, updated, err, s.updated, s.pollErr)
		}
		if got := updates.Load(); got != s.updatesTo {
			t.Errorf("%s: %d updates, want %d", s.name, got, s.updatesTo)
		}
		id := store.RevisionID()
		if id == "" || (id != lastID) != s.newID {
			t.Errorf("%s: revision %q after %q; want a new one: %v", s.name, id, lastID, s.newID)
		}
		lastID = id
		if d := store.Decide(ctx, viewerInput()); d.Allow != s.allow || d.Err != nil {
			t.Errorf("%s: allow %v (err %v), want %v", s.name, d.Allow, d.Err, s.allow)
		}
	}
	if _, notModified := srv.counts(); notModified != 1 {
		t.Errorf("%d 304 answers, want 1", notModified)
	}

	// The Rego section cannot change under a running poller.
	changed := *cfg
	rego := *cfg.Authz.Policy.Rego
	rego.Query = "data.envoy.authz.other"
	changed.Authz.Policy.Rego = &rego
	if _, err := compile(&changed); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Errorf("compile with a changed rego section: %v; want restart to apply", err)
	}
}

// TestServeRegoBundleURL serves the authz component with a bundle URL:
// not SERVING and denying until the first fetch completes, then the
// bundle decides, and a new bundle served by the URL is picked up.
func TestServeRegoBundleURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := &bundleHTTP{gate: make(chan struct{})}
	srv.set(regoBundleBytes(t, true))
	hs := httptest.NewServer(srv)
	defer hs.Close()
	gateOpen := false
	openGate := func() {
		if !gateOpen {
			gateOpen = true
			close(srv.gate)
		}
	}
	defer openGate()
	path := bundleConfigFile(t, hs.URL+"/bundle.tar.gz")

	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--components", "authz")
	defer func() {
		cancel()
		openGate()
		wait()
	}()
	conn := dialAuthz(t, lw)
	hc := healthpb.NewHealthClient(conn)
	ac := authv3.NewAuthorizationClient(conn)
	allowed := func() bool {
		t.Helper()
		r, err := ac.Check(ctx, viewerPost())
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return r.GetOkResponse() != nil
	}

	// The first fetch is held by the server: a Check answers (deny), and
	// health stays NOT_SERVING.
	if allowed() {
		t.Fatal("allowed before the first bundle fetch")
	}
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		t.Fatal("SERVING before the first bundle fetch")
	}
	openGate()
	waitServing(t, ctx, conn)
	if !allowed() {
		t.Fatal("the allow bundle denies")
	}

	// The server swaps the bundle: the next poll (1s) applies it.
	srv.set(regoBundleBytes(t, false))
	for allowed() {
		if ctx.Err() != nil {
			t.Fatal("the deny bundle never applied")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCompilePolicyBundleURL: validate and check (compilePolicy) fetch a
// bundle URL once; a broken bundle is an error, never a revision.
func TestCompilePolicyBundleURL(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  []byte
		err   bool
		allow bool
	}{
		{name: "allow bundle", body: regoBundleBytes(t, true), allow: true},
		{name: "deny bundle", body: regoBundleBytes(t, false)},
		{name: "broken bundle", body: []byte("not a bundle"), err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv := &bundleHTTP{}
			srv.set(tc.body)
			hs := httptest.NewServer(srv)
			defer hs.Close()
			cfg, err := config.Load(bundleConfigFile(t, hs.URL+"/bundle.tar.gz"))
			if err != nil {
				t.Fatal(err)
			}
			rev, err := compilePolicy(cfg)
			if (err != nil) != tc.err {
				t.Fatalf("compilePolicy: %v, want error %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if d := rev.Decide(ctx, viewerInput()); d.Allow != tc.allow || d.Err != nil {
				t.Errorf("allow %v (err %v), want %v", d.Allow, d.Err, tc.allow)
			}
		})
	}
}
