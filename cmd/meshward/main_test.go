package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	_ "net/http/pprof" // the serve child's profile under a benchmark (envBenchPprof)
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		if addr := os.Getenv(envBenchPprof); addr != "" && len(os.Args) > 1 && os.Args[1] == "serve" {
			// Profiling a serve child under a benchmark: this test
			// binary only; meshward itself serves no pprof.
			go func() { _ = http.ListenAndServe(addr, nil) }() //nolint:gosec // G114: a test's loopback profile endpoint
		}
		main() // serveProcess: this binary as meshward
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/fsnotify/fsnotify.(*inotify).readEvents"))
}

var quickstartPath = filepath.Join("..", "..", "examples", "quickstart", "meshward.yaml")

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := run(ctx, args, &out, &errb)
	code = exitCode(err, &errb)
	return code, out.String(), errb.String()
}

func TestValidate(t *testing.T) {
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Relative schema files resolve from the config's folder.
	if err := os.MkdirAll(filepath.Join(dir, "schemas"), 0o700); err != nil {
		t.Fatal(err)
	}
	schema, _ := os.ReadFile(filepath.Join(filepath.Dir(quickstartPath), "schemas", "task.request.json"))
	write("schemas/task.request.json", string(schema))
	misspelled := strings.Replace(string(qs), "      match:\n        methods: [GET]", "      matchh:\n        methods: [GET]", 1)
	if misspelled == string(qs) {
		t.Fatal("test setup: could not misspell a key in the quickstart")
	}
	three := strings.Replace(strings.Replace(strings.Replace(string(qs),
		"trustDomain: mesh.local", "trustDomain: Mesh.Local", 1),
		"source: local", "source: floppy", 1),
		"address: 127.0.0.1:9090", "address: nowhere", 1)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  []string
	}{
		{name: "quickstart is valid", args: []string{"validate", "--config", quickstartPath}, wantOut: "ok"},
		{name: "misspelled key named by path", args: []string{"validate", "--config", write("typo.yaml", misspelled)}, wantCode: 1,
			wantErr: []string{"authz.rules[1].matchh: unknown field"}},
		{name: "three errors reported", args: []string{"validate", "--config", write("three.yaml", three)}, wantCode: 1,
			wantErr: []string{"trustDomain:", "secrets.source:", "admin.address:"}},
		{name: "missing file", args: []string{"validate", "--config", filepath.Join(dir, "nope.yaml")}, wantCode: 1, wantErr: []string{"no such file"}},
		{name: "config required", args: []string{"validate"}, wantCode: 1, wantErr: []string{"--config is required"}},
		{name: "unknown flag", args: []string{"validate", "--nope"}, wantCode: 1, wantErr: []string{"flag provided but not defined"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1, wantErr: []string{"unknown command \"frobnicate\""}},
		{name: "version", args: []string{"version"}, wantOut: "meshward "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, errs)
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("stdout = %q, want it to contain %q", out, tt.wantOut)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, errs)
				}
			}
		})
	}
}

func TestServeFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown component", []string{"serve", "--components", "authz,dns"}, `unknown component "dns"`},
		{"no component", []string{"serve", "--components", ","}, "enable at least one component"},
		{"bad log level", []string{"serve", "--log-level", "loud"}, "--log-level"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, "--log-format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := runCmd(t, tt.args...)
			if code != 1 || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errs, tt.want)
			}
		})
	}
}

// testConfig writes the quickstart with every listener on a free port.
// testConfigReplacing is testConfig with old (which must be there)
// replaced by new once.
func testConfigReplacing(t *testing.T, old, new string) string {
	t.Helper()
	path := testConfig(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), old) {
		t.Fatalf("test setup: %q not in the quickstart", old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(raw), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func testConfig(t testing.TB) string {
	t.Helper()
	qs, err := os.ReadFile(quickstartPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(qs)
	for _, port := range []string{"9090", "9191", "18000"} {
		s = strings.Replace(s, "127.0.0.1:"+port, "127.0.0.1:0", 1)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Dir(quickstartPath))); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "meshward.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logWatcher collects JSON log lines and finds listening addresses in them.
type logWatcher struct {
	mu    sync.Mutex
	lines []map[string]any
}

func newLogWatcher(r io.Reader) *logWatcher {
	lw := &logWatcher{}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lw.mu.Lock()
				lw.lines = append(lw.lines, m)
				lw.mu.Unlock()
			}
		}
	}()
	return lw
}

// waitFor returns field of the first line whose msg is msg.
func (lw *logWatcher) waitFor(t testing.TB, msg, field string) string {
	t.Helper()
	return lw.waitForWithin(t, 20*time.Second, msg, field)
}

// waitForWithin is waitFor with another deadline.
func (lw *logWatcher) waitForWithin(t testing.TB, within time.Duration, msg, field string) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		lw.mu.Lock()
		for _, l := range lw.lines {
			if l["msg"] == msg {
				v, _ := l[field].(string)
				lw.mu.Unlock()
				return v
			}
		}
		lw.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line %q within %v", msg, within)
	return ""
}

func waitReady(t *testing.T, ctx context.Context, admin string) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("/readyz never 200; last %d %s", resp.StatusCode, body)
			}
		} else if ctx.Err() != nil {
			t.Fatalf("/readyz never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveInProcess runs `meshward serve args...` in this process until ctx
// ends, watching its JSON logs. wait blocks until serve has returned and
// fails the test if it returned an error.
func serveInProcess(t *testing.T, ctx context.Context, stdout io.Writer, args ...string) (lw *logWatcher, wait func()) {
	t.Helper()
	pr, pw := io.Pipe()
	lw = newLogWatcher(pr)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve"}, args...), stdout, pw)
		pw.Close()
	}()
	return lw, func() {
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

// dialAuthz connects to the ext_authz server whose start lw saw.
func dialAuthz(t *testing.T, lw *logWatcher) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(lw.waitFor(t, "ext_authz server listening", "address"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// refRequest reads one of the reference workload's Check requests.
func refRequest(t testing.TB, name string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(refload, name))
	if err != nil {
		t.Fatal(err)
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, req); err != nil {
		t.Fatal(err)
	}
	return req
}

// checkStatus sends req and returns the HTTP status of the answer (200
// for an allow) and the deny body.
func checkStatus(t testing.TB, ctx context.Context, ac authv3.AuthorizationClient, req *authv3.CheckRequest) (int, string) {
	t.Helper()
	r, err := ac.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if dr := r.GetDeniedResponse(); dr != nil {
		return int(dr.GetStatus().GetCode()), dr.GetBody()
	}
	return 200, ""
}

// waitServing polls the gRPC health service until it reports SERVING.
func waitServing(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("ext_authz never SERVING")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeBinary is the README's promise end to end: the built binary
// becomes ready, and SIGINT stops it with exit status 0.
func TestServeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "meshward")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", testConfig(t))
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lw := newLogWatcher(pr)
	admin := lw.waitFor(t, "admin server listening", "address")
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	waitReady(t, rctx, admin)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("meshward exited with %v after SIGINT, want status 0", err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("meshward did not exit within 5s of SIGINT")
	}
	pw.Close()
}
