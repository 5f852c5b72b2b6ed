package main

import (
	"bytes"
	"errors"
	"io/fs"
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

// TestQuarantineWatchFailsClosed: no broken content of the state file
// releases anyone, each is reported as the watch's problem (the status
// page's error) until a content loads again, and the problem names the
// file.
func TestQuarantineWatchFailsClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quarantine.json")
	if _, err := quarantine.Quarantine(path, quarantine.Entry{SPIFFEID: plannerID, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := newQuarantineWatch(path, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur *quarantineSnapshot
	w.subscribe(func(s *quarantineSnapshot) { cur = s })
	for _, c := range []struct{ name, content, want string }{
		// Each but the first two would, read naively, be the empty state.
		{"not json", "{not json", "invalid character"},
		{"torn write", string(good[:len(good)/2]), "unexpected EOF"},
		{"empty", "", "EOF"},
		{"an empty state and more", `{"version":1,"quarantined":[]}{"version":1}`, "data after the JSON document"},
		{"another version", `{"version":2,"quarantined":[]}`, "version 2"},
		{"a misspelt field", `{"version":1,"quarantine":[]}`, "unknown field"},
		{"no version", `{"quarantined":[]}`, "version 0"},
		{"a folder", "", "is a directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if c.name == "a folder" {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
				defer os.Remove(path) //nolint:errcheck // the next case writes a file
			} else if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			w.check()
			if !cur.set.Has(plannerID) {
				t.Fatal("a broken file released planner")
			}
			p := w.problem()
			if p == nil || !strings.Contains(p.err.Error(), c.want) || !strings.Contains(p.err.Error(), path) {
				t.Fatalf("problem %v, want one naming %s with %q", p, path, c.want)
			}
			since := p.since
			w.check() // the same content: the same problem, since the same time
			if p := w.problem(); p == nil || !p.since.Equal(since) {
				t.Errorf("the same content re-reported: %v", p)
			}
		})
	}
	// Good again: the problem is gone, and the state is what the file says.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	w.check()
	if p := w.problem(); p != nil || !cur.set.Has(plannerID) {
		t.Fatalf("after a good file: problem %v, planner quarantined %v", p, cur.set.Has(plannerID))
	}
	if _, err := quarantine.Release(path, quarantine.Entry{SPIFFEID: plannerID, By: "alice"}); err != nil {
		t.Fatal(err)
	}
	w.check()
	if cur.set.Has(plannerID) {
		t.Error("a release written after a broken file was not applied")
	}
}
