package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func viewerPost() *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Principal: "spiffe://mesh.local/ns/default/sa/viewer"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/v1/tasks", Host: "executor.mesh.local",
			Headers: map[string]string{":authority": "executor.mesh.local"},
		}},
	}}
}

// TestServeAuthzReload serves the quickstart's authz component, then edits
// the config file: a valid change is picked up without a restart, a broken
// one is refused while the last good revision keeps deciding.
func TestServeAuthzReload(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	lw := newLogWatcher(pr)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", path, "--components", "authz"}, io.Discard, pw)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve = %v", err)
		}
		pw.Close()
	}()
	addr := lw.waitFor(t, "ext_authz server listening", "address")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("ext_authz never SERVING")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ac := authv3.NewAuthorizationClient(conn)
	allowed := func() bool {
		t.Helper()
		r, err := ac.Check(ctx, viewerPost())
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return r.GetOkResponse() != nil
	}
	if allowed() {
		t.Fatal("viewer may create tasks before the change")
	}

	// A valid change: viewers may create tasks (a rule without a schema).
	changed := strings.Replace(string(orig), "  rules:\n", "  rules:\n    - name: viewer-create\n      match: {methods: [POST], path: /v1/tasks}\n      require: {anyRole: [viewer]}\n", 1)
	if changed == string(orig) {
		t.Fatal("test setup: could not add a rule")
	}
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	for !allowed() {
		if ctx.Err() != nil {
			t.Fatal("valid config change never applied")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A broken change is refused; the last good revision keeps deciding.
	if err := os.WriteFile(path, []byte(changed+"\n  bogus: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lw.waitFor(t, "policy reload failed; keeping the current revision", "error")
	if !allowed() {
		t.Fatal("a broken config replaced the last good revision")
	}
}
