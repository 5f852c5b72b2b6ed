package main

import (
	"bytes"
	"context"
	"errors"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

const (
	plannerID = "spiffe://mesh.local/ns/default/sa/planner"
	viewerID  = "spiffe://mesh.local/ns/default/sa/viewer"
)

// quarantineConfig is the quickstart with a quarantine state file in its
// folder; it returns the configuration and the state file.
func quarantineConfig(t *testing.T) (cfgPath, file string) {
	t.Helper()
	p := testConfigReplacing(t, "\naudit:\n", "\nquarantine:\n  file: state/quarantine.json\n\naudit:\n")
	return p, filepath.Join(filepath.Dir(p), "state", "quarantine.json")
}

func runCLI(ctx context.Context, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(ctx, args, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestQuarantineCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg, file := quarantineConfig(t)
	me, err := operator()
	if err != nil {
		t.Fatal(err)
	}
	if u, err := user.Current(); err == nil && me != u.Username {
		t.Errorf("operator() = %q, want the OS user %q", me, u.Username)
	}
	// By agent name and by SPIFFE ID.
	if out, err := runCLI(ctx, "quarantine", "--config", cfg, "planner", "--reason", "exfiltration alert"); err != nil {
		t.Fatalf("quarantine planner: %v\n%s", err, out)
	}
	if out, err := runCLI(ctx, "quarantine", "--config", cfg, viewerID); err != nil {
		t.Fatalf("quarantine %s: %v\n%s", viewerID, err, out)
	}
	s, err := quarantine.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := s.Find(plannerID)
	if !ok || e.Reason != "exfiltration alert" || e.By != me || time.Since(e.At) > time.Minute {
		t.Errorf("planner entry = %+v %v, want reason, by %q, now", e, ok, me)
	}
	if _, ok := s.Find(viewerID); !ok {
		t.Errorf("viewer not quarantined: %+v", s)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"twice", []string{"quarantine", "--config", cfg, "planner"}, "already quarantined"},
		{"unknown agent", []string{"quarantine", "--config", cfg, "nobody"}, `"nobody" is neither a SPIFFE ID nor the name of an agent`},
		{"other trust domain", []string{"quarantine", "--config", cfg, "spiffe://other.org/x"}, "not a workload SPIFFE ID of trust domain"},
		{"meshward's own", []string{"quarantine", "--config", cfg, "spiffe://mesh.local/meshward/xds"}, "meshward's own identity"},
		{"no argument", []string{"quarantine", "--config", cfg}, "Usage: meshward quarantine"},
		{"no state file", []string{"quarantine", "planner"}, "no quarantine state file"},
		{"release no reason flag", []string{"release", "--config", cfg, "--reason", "x", "planner"}, "flag provided but not defined"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := runCLI(ctx, c.args...)
			if err == nil {
				t.Fatalf("succeeded: %s", out)
			}
			if msg := out + err.Error(); !strings.Contains(msg, c.want) {
				t.Errorf("error %v, output %q; want %q", err, out, c.want)
			}
		})
	}

	if out, err := runCLI(ctx, "release", "--config", cfg, "planner"); err != nil {
		t.Fatalf("release planner: %v\n%s", err, out)
	}
	if _, err := runCLI(ctx, "release", "--config", cfg, "planner"); !errors.Is(err, quarantine.ErrNoChange) {
		t.Errorf("second release: %v, want ErrNoChange", err)
	}
	if s, err = quarantine.Load(file); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.IDs(), " "); got != viewerID {
		t.Errorf("after release: %s, want only viewer", got)
	}
	if r, ok := s.LastRelease(plannerID); !ok || r.By != me {
		t.Errorf("release of planner = %+v %v, want by %q", r, ok, me)
	}
}

// TestQuarantineFileDefault: without quarantine.file the state file is in
// secrets.local.dataDir; with neither there is none.
func TestQuarantineFileDefault(t *testing.T) {
	c := &config.Config{}
	if f := c.QuarantineFile(); f != "" {
		t.Errorf("no data dir: %q, want none", f)
	}
	c.Secrets.Local.DataDir = "/var/lib/meshward"
	if f := c.QuarantineFile(); f != "/var/lib/meshward/quarantine.json" {
		t.Errorf("data dir: %q", f)
	}
	cfgPath, file := quarantineConfig(t)
	loaded, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := loaded.QuarantineFile(); got != file {
		t.Errorf("quarantine.file relative to the configuration: %q, want %q", got, file)
	}
}

// TestServeQuarantine: a running serve applies `meshward quarantine`
// within a short poll (403 quarantined for Checks from the agent and to
// it), audits it with who did it, and `meshward release` allows again.
func TestServeQuarantine(t *testing.T) {
	cfg, _ := quarantineConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var auditOut lockedBuffer // the quickstart's audit sink is stdout
	lw, wait := serveInProcess(t, ctx, &auditOut, "--config", cfg, "--components", "authz")
	defer func() {
		cancel()
		wait()
	}()
	conn := dialAuthz(t, lw)
	waitServing(t, ctx, conn)
	ac := authv3.NewAuthorizationClient(conn)
	allow := refRequest(t, "allow.json") // planner -> executor
	// status is the Check's HTTP status and its deny body.
	status := func() (int, string) {
		t.Helper()
		return checkStatus(t, ctx, ac, allow)
	}
	waitStatus := func(want int, what string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			code, body := status()
			if code == want && (want == 200 || strings.Contains(body, `"error":"quarantined"`)) {
				return time.Since(start)
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: still %d %s", what, code, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if code, body := status(); code != 200 {
		t.Fatalf("before: %d %s", code, body)
	}
	me, err := operator()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"planner", "spiffe://mesh.local/ns/default/sa/executor"} { // the caller, then the destination
		if out, err := runCLI(ctx, "quarantine", "--config", cfg, "--reason", "test", target); err != nil {
			t.Fatalf("quarantine %s: %v\n%s", target, err, out)
		}
		took := waitStatus(403, "quarantine of "+target)
		t.Logf("quarantine of %s applied within %v", target, took)
		if out, err := runCLI(ctx, "release", "--config", cfg, target); err != nil {
			t.Fatalf("release %s: %v\n%s", target, err, out)
		}
		waitStatus(200, "release of "+target)
	}
	// Audited: the denies with reason quarantined, and who quarantined
	// and released.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := auditOut.String()
		ok := strings.Contains(a, `"reason":"quarantined"`) && strings.Contains(a, `"status":403`)
		for _, kind := range []string{audit.KindAgentQuarantined, audit.KindAgentReleased} {
			ok = ok && strings.Contains(a, `"kind":"`+kind+`"`)
		}
		ok = ok && strings.Contains(a, `"by":"`+me+`"`) && strings.Contains(a, `"spiffe_id":"`+plannerID+`"`)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit stream lacks the quarantine records:\n%s", a)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lw.waitFor(t, "agent quarantined: every Check from or to it is denied", "by")
}
