package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
)

// TestQuarantineWatch: a file serve cannot parse stops it at start; while
// serving, a broken file keeps the last good set, and removing the file
// releases everyone.
func TestQuarantineWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarantine.json")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newQuarantineWatch(path, log, nil); err == nil {
		t.Fatal("serve would start on a broken quarantine file")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := quarantine.Quarantine(path, quarantine.Entry{SPIFFEID: plannerID, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	w, err := newQuarantineWatch(path, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur *quarantineSnapshot
	w.subscribe(func(s *quarantineSnapshot) { cur = s })
	if !cur.set.Has(plannerID) || !strings.Contains(logs.String(), "by=alice") {
		t.Fatalf("at start: planner quarantined %v; logs %s", cur.set.Has(plannerID), logs.String())
	}
	good := cur
	if err := os.WriteFile(path, []byte(`{"version":1,"quarantined":[{"spiffeID":"bad"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	w.check()
	if cur != good || !strings.Contains(logs.String(), "keeping the current quarantine") {
		t.Errorf("a broken file was applied; logs %s", logs.String())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	w.check()
	if cur.set.Has(plannerID) || !strings.Contains(logs.String(), "agent released from quarantine") {
		t.Errorf("removing the file did not release: %v; logs %s", cur.set.Has(plannerID), logs.String())
	}
}
