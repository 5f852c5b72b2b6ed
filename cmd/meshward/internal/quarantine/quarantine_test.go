package quarantine

import (
	"fmt"
	"go.uber.org/goleak"
	"sync"

	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	planner = "spiffe://mesh.local/ns/default/sa/planner"
	viewer  = "spiffe://mesh.local/ns/default/sa/viewer"
)

func TestQuarantineRelease(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "quarantine.json") // the folder is made
	at := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	if s, err := Load(path); err != nil || len(s.Quarantined) != 0 {
		t.Fatalf("Load of a missing file = %+v, %v; want the empty state", s, err)
	}
	if _, err := Quarantine(path, Entry{SPIFFEID: viewer, Reason: "leaked key", By: "alice", At: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := Quarantine(path, Entry{SPIFFEID: planner, By: "bob", At: at}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.IDs(), " "); got != planner+" "+viewer {
		t.Errorf("IDs = %s, want sorted planner viewer", got)
	}
	if e, ok := s.Find(viewer); !ok || e.Reason != "leaked key" || e.By != "alice" || !e.At.Equal(at) {
		t.Errorf("Find(viewer) = %+v %v", e, ok)
	}
	if _, err := Quarantine(path, Entry{SPIFFEID: viewer, By: "carol"}); !errors.Is(err, ErrNoChange) {
		t.Errorf("second quarantine: %v, want ErrNoChange", err)
	}
	if _, err := Release(path, Entry{SPIFFEID: viewer, By: "dave", At: at}); err != nil {
		t.Fatal(err)
	}
	if _, err := Release(path, Entry{SPIFFEID: viewer, By: "dave"}); !errors.Is(err, ErrNoChange) {
		t.Errorf("second release: %v, want ErrNoChange", err)
	}
	s, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(s.IDs(), " "); got != planner {
		t.Errorf("after release IDs = %s, want planner", got)
	}
	if r, ok := s.LastRelease(viewer); !ok || r.By != "dave" {
		t.Errorf("LastRelease(viewer) = %+v %v", r, ok)
	}
	// Only the state file and its lock are left: the temporary ones were
	// renamed.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != ".quarantine.json.lock quarantine.json" {
		t.Errorf("folder holds %s, want only the state file and its lock", got)
	}
}

func TestReleasedBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.json")
	for range maxReleased + 5 {
		if _, err := Quarantine(path, Entry{SPIFFEID: viewer, By: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := Release(path, Entry{SPIFFEID: viewer, By: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Released) != maxReleased {
		t.Errorf("%d releases kept, want %d", len(s.Released), maxReleased)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"not json", "{", "unexpected EOF"},
		{"empty", "", "EOF"},
		{"unknown field", `{"version":1,"quarantined":[],"extra":1}`, "unknown field"},
		{"version", `{"version":2,"quarantined":[]}`, "version 2"},
		{"two documents", `{"version":1,"quarantined":[]}{"version":1,"quarantined":[{"spiffeID":"spiffe://d/a","by":"a","at":"2026-12-02T15:00:00Z"}]}`, "data after the JSON document"},
		{"trailing garbage", `{"version":1,"quarantined":[]} x`, "data after the JSON document"},
		{"not a SPIFFE ID", `{"version":1,"quarantined":[{"spiffeID":"planner","by":"a","at":"2026-12-02T15:00:00Z"}]}`, "quarantined[0].spiffeID"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.in), "f.json")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse: %v, want an error with %q", err, c.want)
			}
		})
	}
	// A broken file is never overwritten by an edit.
	path := filepath.Join(t.TempDir(), "q.json")
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Quarantine(path, Entry{SPIFFEID: viewer, By: "a"}); err == nil {
		t.Error("Quarantine over a broken file succeeded")
	}
	if raw, _ := os.ReadFile(path); string(raw) != "{" {
		t.Errorf("broken file rewritten: %q", raw)
	}
}

// TestConcurrentEdits: edits at the same moment all apply (the lock).
func TestConcurrentEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.json")
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("spiffe://mesh.local/a%d", i)
			if _, err := Quarantine(path, Entry{SPIFFEID: id, By: "a"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Quarantined) != n {
		t.Errorf("%d of %d concurrent quarantines kept", len(s.Quarantined), n)
	}
}
