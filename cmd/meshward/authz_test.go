package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/envoy"
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

// TestServeAuthzReload serves the quickstart's authz component, checks the
// reference workload (allow / 403 / 400 / allow), then edits the config file: a valid change is picked up without a restart, a broken
// one is refused while the last good revision keeps deciding.
func TestServeAuthzReload(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var auditOut lockedBuffer // the quickstart's audit sink is stdout
	lw, wait := serveInProcess(t, ctx, &auditOut, "--config", path, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	ac := authv3.NewAuthorizationClient(conn)
	// The reference workload through the served quickstart: rules, the
	// real schema step, and the deny body's structured violations.
	for _, c := range []struct {
		file   string
		status int
		want   string
	}{
		{"allow.json", 200, ""},
		{"deny_abac.json", 403, `"error":"missing_role"`},
		{"deny_schema.json", 400, `"violations":[{"path":"/task/priority","keyword":"maximum","message":"12 > 9"}]`},
		{"allow_get.json", 200, ""},
	} {
		status, body := checkStatus(t, ctx, ac, refRequest(t, c.file))
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: status %d body %s; want %d with %s", c.file, status, body, c.status, c.want)
		}
	}
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

	// The audit stream has the reload failure and the decisions, each
	// kind as its outcome says.
	for _, kind := range []string{`"kind":"policy_reload_failure"`, `"kind":"decision"`, `"kind":"authz_denial"`, `"/task/priority"`} {
		for !strings.Contains(auditOut.String(), kind) {
			if ctx.Err() != nil {
				t.Fatalf("audit stream lacks %s:\n%s", kind, auditOut.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for one writer and one reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestValidateCompilesUnusedSchemas: `meshward validate` refuses a broken
// schema even when no rule names it yet.
func TestValidateCompilesUnusedSchemas(t *testing.T) {
	path := testConfig(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// No rule names a schema: the revision itself compiles none.
	noRule := strings.Replace(string(orig), "      schema: task.request\n", "", 1)
	broken := strings.Replace(noRule, "  schemas:\n", "  schemas:\n    - name: unused\n      inline: {type: 12}\n", 1)
	if noRule == string(orig) || broken == noRule {
		t.Fatal("test setup: could not add a schema")
	}
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, "validate", "--config", path)
	if code != 1 || !strings.Contains(errs, "unused") {
		t.Errorf("validate = exit %d, stderr %q; want 1 naming the schema", code, errs)
	}
}

// TestAuthzFromSecretsPinsTheEnvoySAN: with authz.tls.fromSecrets, the
// Envoys are told to accept only the ext_authz listener's own SPIFFE ID;
// with files, any SPIFFE ID of the trust domain (the files' certificate
// is the operator's).
func TestAuthzFromSecretsPinsTheEnvoySAN(t *testing.T) {
	for _, tc := range []struct {
		tls, want, notWant string
	}{
		{"  tls: {fromSecrets: true}\n", `"exact":"spiffe://mesh.local/meshward/authz"`, ""},
		{"  tls: {certFile: c.pem, keyFile: k.pem, caFile: ca.pem}\n", `"prefix":"spiffe://mesh.local/"`, "meshward/authz"},
	} {
		cfg, err := config.Load(testConfigReplacing(t, "  plaintext: true\n", tc.tls))
		if err != nil {
			t.Fatal(err)
		}
		cfg.XDS.AuthzAddress = "meshward.mesh.local:9191"
		m, err := translateMesh(cfg)
		if err != nil || m.err != nil {
			t.Fatalf("translateMesh: %v %v", err, m.err)
		}
		var authz string
		for _, c := range m.nodes["planner"].Clusters {
			if c.GetName() == envoy.ClusterAuthz {
				b, err := protojson.Marshal(c)
				if err != nil {
					t.Fatal(err)
				}
				authz = strings.ReplaceAll(string(b), " ", "")
			}
		}
		if !strings.Contains(authz, tc.want) || tc.notWant != "" && strings.Contains(authz, tc.notWant) {
			t.Errorf("%s: authz cluster %s\nwant %s", strings.TrimSpace(tc.tls), authz, tc.want)
		}
	}
}

// TestAuthzFromSecretsAlone: ext_authz alone takes its SVID from the
// secrets manager serve runs for it (ready once issued), and warns that an
// in-memory local CA is not the Envoys' CA.
func TestAuthzFromSecretsAlone(t *testing.T) {
	path := testConfigReplacing(t, "  plaintext: true\n", "  tls: {fromSecrets: true}\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", path, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	admin := lw.waitFor(t, "admin server listening", "address")
	lw.waitFor(t, warnAuthzOwnCA, "level")
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	waitReady(t, rctx, admin)
}
