package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

// apiCall is one request to the quarantine API and its decoded answer.
type apiCall struct {
	code int
	body map[string]any
	hdr  http.Header
}

func callAPI(t *testing.T, ctx context.Context, method, url, token, body string) apiCall {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	c := apiCall{code: resp.StatusCode, hdr: resp.Header}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: %d Content-Type %q, want application/json: %s", method, url, c.code, ct, raw)
	}
	if err := json.Unmarshal(raw, &c.body); err != nil {
		t.Fatalf("%s %s: %d body %q is not a JSON object: %v", method, url, c.code, raw, err)
	}
	return c
}

// apiConfig is the quickstart with a state file and the quarantine API
// behind the token file token.txt (mode 0600) in its folder.
func apiConfig(t *testing.T, token string) (cfgPath, file, tokenFile string) {
	t.Helper()
	p := testConfigReplacing(t, "\naudit:\n", "\nquarantine:\n  file: state/quarantine.json\n  api:\n    tokenFile: token.txt\n\naudit:\n")
	dir := filepath.Dir(p)
	tokenFile = filepath.Join(dir, "token.txt")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, filepath.Join(dir, "state", "quarantine.json"), tokenFile
}

// TestServeQuarantineAPI: over a real serve, the admin API quarantines
// (Checks from the agent are then denied 403 quarantined, the state file
// and the audit stream say by admin-api), lists and releases; a request
// without the token, with a wrong one, a bad body, an unknown identity or
// the wrong method is refused with a JSON error and changes nothing.
func TestServeQuarantineAPI(t *testing.T) {
	const token = "s3cret-token-for-the-test"
	cfg, file, tokenFile := apiConfig(t, token)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var auditOut lockedBuffer
	lw, wait := serveInProcess(t, ctx, &auditOut, "--config", cfg, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	base := "http://" + lw.waitFor(t, "admin server listening", "address")
	ac := authv3.NewAuthorizationClient(conn)
	allow := refRequest(t, "allow.json") // planner -> executor
	check := func() (int, string) {
		t.Helper()
		return checkStatus(t, ctx, ac, allow)
	}
	waitCheck := func(want int, what string) {
		t.Helper()
		for {
			code, body := check()
			if code == want && (want == 200 || strings.Contains(body, `"error":"quarantined"`)) {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: still %d %s", what, code, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if code, body := check(); code != 200 {
		t.Fatalf("before: %d %s", code, body)
	}
	stateIDs := func() string {
		t.Helper()
		s, err := quarantine.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(s.IDs(), " ")
	}
	plannerBody := `{"identity":"planner","reason":"INC-7"}`

	// Refusals first: none of them may write the state file.
	for _, c := range []struct {
		name, method, path, token, body string
		code                            int
		kind                            string
	}{
		{"no token", "POST", "/admin/quarantine", "", plannerBody, 401, "unauthorized"},
		{"wrong token", "POST", "/admin/quarantine", "wrong", plannerBody, 401, "unauthorized"},
		{"token prefix", "POST", "/admin/quarantine", token[:len(token)-1], plannerBody, 401, "unauthorized"},
		{"no token list", "GET", "/admin/quarantine", "", "", 401, "unauthorized"},
		{"no token release", "POST", "/admin/release", "", plannerBody, 401, "unauthorized"},
		{"wrong method", "PUT", "/admin/quarantine", token, plannerBody, 405, "method_not_allowed"},
		{"GET release", "GET", "/admin/release", token, "", 405, "method_not_allowed"},
		{"not JSON", "POST", "/admin/quarantine", token, "planner", 400, "bad_request"},
		{"unknown field", "POST", "/admin/quarantine", token, `{"identity":"planner","who":"x"}`, 400, "bad_request"},
		{"two values", "POST", "/admin/quarantine", token, plannerBody + plannerBody, 400, "bad_request"},
		{"no identity", "POST", "/admin/quarantine", token, `{"reason":"x"}`, 400, "bad_request"},
		{"unknown identity", "POST", "/admin/quarantine", token, `{"identity":"nobody"}`, 400, "unknown_identity"},
		{"other trust domain", "POST", "/admin/quarantine", token, `{"identity":"spiffe://other.org/x"}`, 400, "unknown_identity"},
		{"meshward's own", "POST", "/admin/quarantine", token, `{"identity":"spiffe://mesh.local/meshward/xds"}`, 400, "unknown_identity"},
		{"release not quarantined", "POST", "/admin/release", token, plannerBody, 409, "no_change"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := callAPI(t, ctx, c.method, base+c.path, c.token, c.body)
			if got.code != c.code || got.body["error"] != c.kind || got.body["message"] == "" {
				t.Errorf("%d %v, want %d error %q with a message", got.code, got.body, c.code, c.kind)
			}
			if c.code == 401 && !strings.HasPrefix(got.hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer: %v", got.hdr)
			}
			if c.code == 405 && got.hdr.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
			if ids := stateIDs(); ids != "" {
				t.Fatalf("state file changed by a refused request: %s", ids)
			}
		})
	}
	if code, _ := check(); code != 200 {
		t.Fatalf("a refused request quarantined: Check %d", code)
	}

	// Quarantine through the API: the Checks from planner are denied.
	got := callAPI(t, ctx, "POST", base+"/admin/quarantine", token, plannerBody)
	if got.code != 200 || got.body["status"] != "quarantined" || got.body["spiffeID"] != plannerID || got.body["by"] != quarantineAPIBy {
		t.Fatalf("quarantine: %d %v", got.code, got.body)
	}
	waitCheck(403, "quarantine through the API")
	s, err := quarantine.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := s.Find(plannerID); !ok || e.By != quarantineAPIBy || e.Reason != "INC-7" {
		t.Errorf("state file entry %+v %v, want by %q reason INC-7", e, ok, quarantineAPIBy)
	}
	if got := callAPI(t, ctx, "POST", base+"/admin/quarantine", token, plannerBody); got.code != 409 || got.body["error"] != "no_change" {
		t.Errorf("second quarantine: %d %v, want 409 no_change", got.code, got.body)
	}
	list := callAPI(t, ctx, "GET", base+"/admin/quarantine", token, "")
	if q, _ := list.body["quarantined"].([]any); list.code != 200 || len(q) != 1 || q[0].(map[string]any)["spiffeID"] != plannerID {
		t.Errorf("list: %d %v, want planner", list.code, list.body)
	}

	// The token file is read at each request: a rotated token replaces
	// the old one at once.
	const rotated = "rotated-token"
	if err := os.WriteFile(tokenFile, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := callAPI(t, ctx, "POST", base+"/admin/release", token, plannerBody); got.code != 401 {
		t.Fatalf("release with the old token: %d %v, want 401", got.code, got.body)
	}
	if ids := stateIDs(); ids != plannerID {
		t.Fatalf("refused release changed the state: %q", ids)
	}
	got = callAPI(t, ctx, "POST", base+"/admin/release", rotated, `{"identity":"`+plannerID+`"}`)
	if got.code != 200 || got.body["status"] != "released" || got.body["by"] != quarantineAPIBy {
		t.Fatalf("release: %d %v", got.code, got.body)
	}
	waitCheck(200, "release through the API")
	if s, err = quarantine.Load(file); err != nil {
		t.Fatal(err)
	}
	if r, ok := s.LastRelease(plannerID); !ok || r.By != quarantineAPIBy || len(s.Quarantined) != 0 {
		t.Errorf("state after release: %+v", s)
	}

	// Audited with who did it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := auditOut.String()
		ok := strings.Contains(a, `"by":"`+quarantineAPIBy+`"`) && strings.Contains(a, `"spiffe_id":"`+plannerID+`"`)
		for _, kind := range []string{audit.KindAgentQuarantined, audit.KindAgentReleased} {
			ok = ok && strings.Contains(a, `"kind":"`+kind+`"`)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit stream lacks the API's quarantine and release by %s:\n%s", quarantineAPIBy, a)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQuarantineAPIOff: without quarantine.api the routes are not served.
func TestQuarantineAPIOff(t *testing.T) {
	cfg, _ := quarantineConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", cfg, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	base := "http://" + lw.waitFor(t, "admin server listening", "address")
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/admin/quarantine", strings.NewReader(`{"identity":"planner"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("API not configured: %d, want 404", resp.StatusCode)
	}
}

// TestQuarantineAPIConfig: the configurations the API refuses, and a
// token secret of the local source that serve reads.
func TestQuarantineAPIConfig(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"both", "quarantine:\n  file: q.json\n  api:\n    tokenFile: t\n    tokenSecret: s\n", "set tokenFile or tokenSecret, not both"},
		{"unknown secret", "quarantine:\n  file: q.json\n  api:\n    tokenSecret: nope\n", `quarantine.api.tokenSecret: "nope" is not a secret`},
		{"admin off", "admin:\n  address: \"off\"\nquarantine:\n  file: q.json\n  api:\n    tokenFile: t\n", "admin server that serves the API is off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte("trustDomain: mesh.local\n"+c.yaml), os.DirFS(t.TempDir()), "test.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

// TestQuarantineAPINoStateFile: without a state file serve --source file
// refuses the API (and enforcing detection); --source kubernetes needs none.
func TestQuarantineAPINoStateFile(t *testing.T) {
	cfg := &config.Config{Source: "test.yaml", Quarantine: config.Quarantine{API: config.QuarantineAPI{TokenFile: "t"}}}
	if err := cfg.ValidateQuarantineFile(); err == nil || !strings.Contains(err.Error(), "no quarantine state file for the API") {
		t.Errorf("error %v, want no quarantine state file for the API", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := testConfigReplacing(t, "\naudit:\n", "\nquarantine:\n  api:\n    tokenFile: token.txt\n\naudit:\n")
	if out, err := runCLI(ctx, "serve", "--config", p, "--components", "authz"); err == nil || !strings.Contains(err.Error(), "no quarantine state file for the API") {
		t.Errorf("serve --source file without a state file: %v\n%s", err, out)
	}
	cfg.Quarantine.File = "q.json"
	if err := cfg.ValidateQuarantineFile(); err != nil {
		t.Errorf("with a state file: %v", err)
	}
}

// TestQuarantineAPITokenSecret: the token may come from the secrets
// source; serve refuses to start with an empty token.
func TestQuarantineAPITokenSecret(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := testConfigReplacing(t, "\naudit:\n", "\nquarantine:\n  file: state/quarantine.json\n  api:\n    tokenSecret: qtoken\n\naudit:\n")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(filepath.Dir(p), "qtoken.txt")
	if err := os.WriteFile(p, []byte(strings.Replace(string(raw), "  source: local\n", "  source: local\n  local:\n    secrets:\n      qtoken: "+secretFile+"\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	// Empty: serve does not start.
	if err := os.WriteFile(secretFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(ctx, "serve", "--config", p, "--components", "authz"); err == nil || !strings.Contains(err.Error(), "token is empty") {
		t.Fatalf("serve with an empty token: %v\n%s", err, out)
	}

	if err := os.WriteFile(secretFile, []byte("from-the-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	lw, wait := serveInProcess(t, sctx, io.Discard, "--config", p, "--components", "authz")
	defer func() {
		stop()
		wait()
	}()
	base := "http://" + lw.waitFor(t, "admin server listening", "address")
	if got := callAPI(t, ctx, "GET", base+"/admin/quarantine", "wrong", ""); got.code != 401 {
		t.Errorf("wrong token: %d %v", got.code, got.body)
	}
	if got := callAPI(t, ctx, "GET", base+"/admin/quarantine", "from-the-secret", ""); got.code != 200 {
		t.Errorf("the secret's token: %d %v", got.code, got.body)
	}
}
