package main

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/ui"
)

// TestUIQuarantine: /ui/api/quarantine of a running serve shows what
// `meshward quarantine` wrote, with the agent's name, and follows the
// state file: a release empties it, a file that does not parse leaves the
// last good state.
func TestUIQuarantine(t *testing.T) {
	cfg, file := quarantineConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", cfg)
	defer func() {
		cancel()
		wait()
	}()
	admin := lw.waitFor(t, "admin server listening", "address")
	waitReady(t, ctx, admin)

	// waitFor polls the endpoint until ok holds.
	waitFor := func(what string, ok func(ui.QuarantineResponse) bool) ui.QuarantineResponse {
		t.Helper()
		for {
			var q ui.QuarantineResponse
			err := getUIJSON(ctx, admin, "quarantine", &q)
			if err == nil && ok(q) {
				return q
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: never; last %v %+v", what, err, q)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	q := waitFor("enabled and empty", func(q ui.QuarantineResponse) bool { return q.Enabled && q.Quarantined != nil })
	if len(q.Quarantined) != 0 || q.File != file {
		t.Fatalf("before any quarantine: %+v, want none and file %s", q, file)
	}

	me, err := operator()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(-time.Second)
	if out, err := runCLI(ctx, "quarantine", "--config", cfg, "--reason", "leaked key", "planner"); err != nil {
		t.Fatalf("quarantine: %v\n%s", err, out)
	}
	q = waitFor("planner quarantined", func(q ui.QuarantineResponse) bool { return len(q.Quarantined) == 1 })
	got := q.Quarantined[0]
	if got.SPIFFEID != plannerID || !slices.Equal(got.Agents, []string{"planner"}) || got.Reason != "leaked key" || got.By != me || got.At.Before(before) {
		t.Errorf("quarantined: %+v, want planner (%s), reason, by %s, at after %v", got, plannerID, me, before)
	}

	if q.Error != "" || q.ErrorSince != nil {
		t.Errorf("a good file shown with an error: %q %v", q.Error, q.ErrorSince)
	}

	// A broken file (here an empty state with more after it, which read
	// naively would release planner) is logged and shown with what is
	// wrong; the page keeps showing what serve still enforces, and
	// planner's Checks are still denied.
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	brokenAt := time.Now().Add(-time.Second)
	// Renamed into place: written in place, the watch may read it empty
	// (truncated, not yet written) and show that error instead.
	if err := os.WriteFile(file+".tmp", []byte(`{"version":1,"quarantined":[]} {`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".tmp", file); err != nil {
		t.Fatal(err)
	}
	q = waitFor("the broken file shown", func(q ui.QuarantineResponse) bool { return q.Error != "" })
	if !strings.Contains(q.Error, file) || !strings.Contains(q.Error, "data after the JSON document") ||
		q.ErrorSince == nil || q.ErrorSince.Before(brokenAt) {
		t.Errorf("error %q since %v, want the file, what is wrong and a time after %v", q.Error, q.ErrorSince, brokenAt)
	}
	if len(q.Quarantined) != 1 || q.Quarantined[0].SPIFFEID != plannerID {
		t.Errorf("after a broken state file: %+v, want planner still quarantined", q.Quarantined)
	}
	conn := dialAuthz(t, lw)
	if code, body := checkStatus(t, ctx, authv3.NewAuthorizationClient(conn), refRequest(t, "allow.json")); code != 403 || !strings.Contains(body, `"error":"quarantined"`) {
		t.Errorf("planner's Check with a broken state file: %d %s, want 403 quarantined", code, body)
	}
	if out, err := runCLI(ctx, "release", "--config", cfg, "planner"); err == nil {
		t.Errorf("release over a broken state file succeeded: %s", out)
	}
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the error cleared", func(q ui.QuarantineResponse) bool { return q.Error == "" && len(q.Quarantined) == 1 })

	if out, err := runCLI(ctx, "release", "--config", cfg, "planner"); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	waitFor("planner released", func(q ui.QuarantineResponse) bool { return q.Enabled && len(q.Quarantined) == 0 })
}

// TestUIQuarantineOff: without a state file the panel says so.
func TestUIQuarantineOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lw, wait := serveInProcess(t, ctx, io.Discard, "--config", testConfig(t))
	defer func() {
		cancel()
		wait()
	}()
	admin := lw.waitFor(t, "admin server listening", "address")
	waitReady(t, ctx, admin)
	var q ui.QuarantineResponse
	if err := getUIJSON(ctx, admin, "quarantine", &q); err != nil {
		t.Fatal(err)
	}
	if q.Enabled || q.File != "" || q.Quarantined == nil || len(q.Quarantined) != 0 {
		t.Errorf("without a state file: %+v, want enabled=false, no file, []", q)
	}
}
